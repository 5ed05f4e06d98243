// Module names given through a symlink.
//
// Frida names a module after the file that is mapped, which the kernel
// reports with symlinks resolved: Debian's /usr/bin/redis-server is a symlink
// to redis-check-rdb, so redis-server's main module is `redis-check-rdb`, and
// a library opened as libsystemd.so.0 is `libsystemd.so.0.35.0`. A module part
// that is a plain name (no wildcard, no `/`) and matches no module's name
// still names module `m` when the file of that name beside m's file is a
// symlink to m's file: the name the user ran or linked with.

import { isGlob } from "./util.js";

let realpathFn: NativeFunction<NativePointer, [NativePointer, NativePointer]> | null = null;
const PATH_MAX = 4096;
const cache = new Map<string, boolean>();

/** The canonical path of `path` (libc's realpath), or null when it cannot be resolved. */
function realpath(path: string): string | null {
    if (realpathFn === null) {
        const at = Module.findGlobalExportByName("realpath");
        if (at === null) return null;
        realpathFn = new NativeFunction(at, "pointer", ["pointer", "pointer"]);
    }
    const buf = Memory.alloc(PATH_MAX); // realpath writes here rather than malloc
    const r = realpathFn(Memory.allocUtf8String(path), buf);
    return r.isNull() ? null : buf.readUtf8String();
}

/** Whether `name` is a plain module name that could be a symlink's. */
export function aliasable(name: string): boolean {
    return name !== "" && !isGlob(name) && !name.includes("/");
}

/** Is `name` (not `m.name`) a symlink beside `m`'s file that resolves to it? */
export function isAliasOf(name: string, m: Module): boolean {
    if (!aliasable(name) || name === m.name || !m.path.startsWith("/")) return false;
    const key = `${name}\0${m.path}`;
    let yes = cache.get(key);
    if (yes === undefined) {
        const dir = m.path.slice(0, m.path.lastIndexOf("/") + 1);
        yes = realpath(dir + name) === m.path;
        cache.set(key, yes);
    }
    return yes;
}

/** What a probe's status says when `name` matched `m` through a symlink. */
export function aliasNote(name: string, m: Module): string {
    return `module '${name}' is loaded as ${m.name} (a symlink to it)`;
}
