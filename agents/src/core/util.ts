// Small helpers shared by every area of the agent: the message envelope,
// per-probe error reporting, globs and UTF-8 decoding.

import { PROTOCOL_VERSION } from "../protocol.js";

let getpid: NativeFunction<number, []> | null = null;

/**
 * True in a child forked from the process this script was loaded in: the
 * script is the parent's copy (Process.id is the parent's), and Frida is
 * about to unload it. Under child gating a `send()` from it crashed the child
 * inside Frida's agent (NULL g_object_ref, measured: nearly every child whose
 * parent had anything unsent at the fork); its messages have nowhere to go.
 */
export function inForkedChild(): boolean {
    getpid ??= new NativeFunction(Module.getGlobalExportByName("getpid"), "int", [], { scheduling: "exclusive" });
    return getpid() !== Process.id;
}

let held: [Record<string, unknown>, ArrayBuffer | null][] | null = null;

/** Send one envelope (adds `v`). Binary payloads go in `data`. Nothing in a forked child. */
export function post(type: string, fields: Record<string, unknown>, data?: ArrayBuffer | null): void {
    if (inForkedChild()) return;
    const message = { v: PROTOCOL_VERSION, type, ...fields };
    if (held !== null) held.push([message, data ?? null]);
    else send(message, data ?? null);
}

/**
 * Run FN with messages held back, then send them in order. Gum writes the
 * hooks made so far whenever the script sends (so that a host told "armed"
 * finds them in place): while hooks are being made, that must wait for the
 * moment core/hooks.ts has chosen, with the program's threads stopped.
 */
export function holdingPosts<T>(fn: () => T): T {
    if (held !== null) return fn();
    held = [];
    try {
        return fn();
    } finally {
        const out = held;
        held = null;
        for (const [message, data] of out) send(message, data);
    }
}

/** A short, human-readable text for anything thrown. */
export function describe(e: unknown): string {
    const text = e instanceof Error ? e.message : String(e);
    // Gum's words for a prologue it cannot relocate, said as what it means.
    return text.replace(
        /^unable to intercept function at (0x[0-9a-f]+); please file a bug$/,
        "cannot hook the function at $1: its first instructions cannot be moved aside for a hook (too short, or they branch)",
    );
}

const reportedProbes = new Set<number>();
const errorCounts = new Map<number, number>();
let agentErrors = 0;

/**
 * Count an exception raised while handling a call of `probe` (or inside the
 * agent itself, `probe` null) and report the first one per probe to the host.
 */
export function reportError(probe: number | null, e: unknown): void {
    if (probe === null) {
        agentErrors++;
        if (agentErrors > 20) return; // an agent bug in a loop must not flood the host
    } else {
        errorCounts.set(probe, (errorCounts.get(probe) ?? 0) + 1);
        if (reportedProbes.has(probe)) return;
        reportedProbes.add(probe);
    }
    const stack = e instanceof Error && typeof e.stack === "string" ? e.stack : null;
    try {
        post("error", { probe, message: describe(e), stack });
    } catch {
        // Nothing sensible is left to do.
    }
}

/** True when `s` contains glob metacharacters (`*`, `?`, `[`). */
export function isGlob(s: string): boolean {
    return /[*?[]/.test(s);
}

const globCache = new Map<string, RegExp>();

/** fnmatch-style glob (`*`, `?`, `[abc]`, `[!abc]`) compiled to an anchored RegExp. */
export function globToRegExp(glob: string): RegExp {
    const cached = globCache.get(glob);
    if (cached !== undefined) return cached;
    let re = "^";
    for (let i = 0; i < glob.length; i++) {
        const c = glob[i];
        if (c === "*") {
            re += ".*";
        } else if (c === "?") {
            re += ".";
        } else if (c === "[") {
            const end = glob.indexOf("]", i + 2);
            if (end < 0) {
                re += "\\[";
                continue;
            }
            let body = glob.slice(i + 1, end);
            if (body.startsWith("!")) body = "^" + body.slice(1);
            re += "[" + body.replace(/\\/g, "\\\\") + "]";
            i = end;
        } else {
            re += c.replace(/[.+^${}()|\\\]]/g, "\\$&");
        }
    }
    const out = new RegExp(re + "$");
    globCache.set(glob, out);
    return out;
}

export function globMatch(glob: string, s: string): boolean {
    return globToRegExp(glob).test(s);
}

/** Lenient UTF-8 decoding (invalid sequences become U+FFFD); never throws. */
export function decodeUtf8(bytes: Uint8Array): string {
    let out = "";
    let i = 0;
    const n = bytes.length;
    while (i < n) {
        const b = bytes[i];
        if (b < 0x80) {
            out += String.fromCharCode(b);
            i++;
            continue;
        }
        let need = 0;
        let cp = 0;
        if (b >= 0xc2 && b <= 0xdf) {
            need = 1;
            cp = b & 0x1f;
        } else if (b >= 0xe0 && b <= 0xef) {
            need = 2;
            cp = b & 0x0f;
        } else if (b >= 0xf0 && b <= 0xf4) {
            need = 3;
            cp = b & 0x07;
        } else {
            out += "\ufffd";
            i++;
            continue;
        }
        if (i + need > n - 1) {
            out += "\ufffd";
            break;
        }
        let ok = true;
        for (let k = 1; k <= need; k++) {
            const c = bytes[i + k];
            if (c === undefined || (c & 0xc0) !== 0x80) {
                ok = false;
                break;
            }
            cp = (cp << 6) | (c & 0x3f);
        }
        if (!ok || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            out += "\ufffd";
            i++;
            continue;
        }
        out += String.fromCodePoint(cp);
        i += need + 1;
    }
    return out;
}

/**
 * The process's threads, from /proc/self/task, split into Frida's (cloaked)
 * and the program's; null where there is no /proc (then the caller falls back
 * to Process.enumerateThreads()). Not enumerateThreads() here: it reads every
 * thread's registers, each through a helper process that ptrace-attaches the
 * thread, and in a forked child under child gating such a helper waited for
 * ever on a Frida thread that never stopped: arming hung (measured under CPU
 * load, `instr syscalls -F`).
 */
export function processThreads(): { frida: number[]; program: number[] } | null {
    const names = dirEntries("/proc/self/task");
    if (names === null) return null;
    const out = { frida: [] as number[], program: [] as number[] };
    for (const tid of names.map((n) => parseInt(n, 10))) {
        if (!Number.isNaN(tid)) (Cloak.hasThread(tid) ? out.frida : out.program).push(tid);
    }
    return out;
}

/** The entry names of a directory (opendir/readdir; "." and ".." too); null
 * when it cannot be opened. */
export function dirEntries(path: string): string[] | null {
    const opendir = new NativeFunction(Module.getGlobalExportByName("opendir"), "pointer", ["pointer"]);
    const readdir = new NativeFunction(Module.getGlobalExportByName("readdir"), "pointer", ["pointer"]);
    const closedir = new NativeFunction(Module.getGlobalExportByName("closedir"), "int", ["pointer"]);
    const dir = opendir(Memory.allocUtf8String(path));
    if (dir.isNull()) return null;
    const names: string[] = [];
    try {
        // struct dirent: d_ino (8), d_off (8), d_reclen (2), d_type (1), d_name.
        for (let e = readdir(dir); !e.isNull(); e = readdir(dir)) names.push(e.add(19).readUtf8String() ?? "");
    } finally {
        closedir(dir);
    }
    return names;
}
