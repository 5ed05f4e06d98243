// Safe leaving: no program thread may run or return into code that instr
// frees. See docs/leaving.md.
//
// Every hook kind is reverted first (so no new call enters instr's code);
// then the threads of the program are scanned: a thread whose instruction
// pointer, or a word on whose live stack, lies in code instr owns (its
// CModules, the trampolines of its replaceFast hooks) is still inside a hook,
// usually blocked in the original function below it (read on an idle pipe, a
// sleep). Threads that only pass through leave within the settle time. For
// those that are blocked, the agent is held: a thread of leave_c.ts sits in
// a listener Gum counts, so the script's unload (whoever started it: the
// host's detach, a lost connection, instr killed) waits until the last held
// thread has returned, and only then frees the code. The host does not wait
// for that (instr/lifecycle.py): it says that the agent stays, and why.
//
// Listeners (Interceptor.attach) and replace() are counted by Gum itself and
// need nothing here but the host's not waiting; our replaceFast hooks and
// CModules are not counted. The holding thread sits in a replace() of
// instr_hold, made when the first code is owned (see leaveModule).

import { LEAVE_C_SOURCE } from "./leave_c.js";
import { Mapping, mappingOf, mappings } from "./maps.js";
import { withStopped } from "./stopper.js";
import { dirEntries, inForkedChild } from "./util.js";

const SETTLE_MS = 100; // threads that merely pass through our code leave within this
const RUNNING_MS = 500; // then threads that ran in every look are stopped and read (stopper.ts)
const STEP_S = 0.005;
const STACK_SCAN_BYTES = 256 * 1024;
const MAX_RANGES = 512;
const MAX_HELD = 128;
// struct leave_state in leave_c.ts
const OFF_N_RANGES = 0;
const OFF_N_HELD = 4;
const OFF_RANGES = 16;
const OFF_HELD_TID = OFF_RANGES + 16 * MAX_RANGES;
const OFF_HELD_END = OFF_HELD_TID + 4 * MAX_HELD;
const OFF_HELD_FLAG = OFF_HELD_END + 8 * MAX_HELD;
const OFF_HELD_GROUP = OFF_HELD_FLAG + 8 * MAX_HELD;
const MAX_FOREIGN = 256;
const OFF_N_FOREIGN = OFF_HELD_GROUP + 4 * MAX_HELD;
const OFF_FOREIGN = OFF_N_FOREIGN + 8;
const OFF_HELD_SLOT = OFF_FOREIGN + 16 * MAX_FOREIGN;
const OFF_HELD_PAD = OFF_HELD_SLOT + 8 * MAX_HELD;
const STATE_SIZE = OFF_HELD_PAD + 8 * MAX_HELD;
// Landing pads (x64): a code page, then a data page of flags and return addresses.
const PAGE = 4096;
const PAD_STRIDE = 16;
const PAD_FLAGS = PAGE; // one byte per pad
const PAD_TARGETS = PAGE + 1024; // one pointer per pad

export interface LeaveReport {
    /** Program threads still inside instr's code: the agent stays until they return. */
    held: number[];
    /** Why the hold could not be set up, if it could not (the agent then leaves at once). */
    error: string | null;
    /** Program threads inside functions hooked by listeners or replace(): Gum's unload waits for them. */
    waiting?: number[];
    /** Per held slot: tid, slot, return address, group, pad flag (for --debug). */
    detail?: string[];
    /** Threads that ran through the settle: how many, and how many were read stopped (for --debug). */
    read?: { running: number; stopped: number };
}

const readRunning = { running: 0, stopped: 0 };

interface Range {
    base: NativePointer;
    end: NativePointer;
}

const ranges: Range[] = [];
let module: CModule | null = null;
const state = Memory.alloc(STATE_SIZE);

function leaveModule(): CModule {
    if (module === null) {
        const symbols: Record<string, NativePointer> = { lv: state };
        for (const name of ["open", "read", "pread", "close", "usleep", "pthread_create", "pthread_detach"]) {
            symbols[name] = Module.getGlobalExportByName(name);
        }
        module = new CModule(LEAVE_C_SOURCE, symbols);
        // Replaced now, while instr arms: a replacement is not undone by
        // Interceptor.detachAll, and its trampoline is not taken from the
        // slices that reverting our replaceFast hooks frees later (a thread
        // blocked in one, in a relocated prologue, must find its code there).
        Interceptor.replace(module.instr_hold, module.instr_hold_body);
        Interceptor.flush();
    }
    return module;
}

const TRAMPOLINE_BYTES = 128; // a relocated prologue and its jump back, with room

/**
 * Whether `a` can be instr's code: executable anonymous memory (CModules and
 * Gum's trampolines are; a symbol a CModule imports, in libc or in Frida's
 * agent, is file-backed and is not). Where /proc/self/maps cannot be read:
 * anything outside the modules the process lists.
 */
function ourKind(a: NativePointer): boolean {
    return anonymousCode(a);
}

function anonymousCode(a: NativePointer): boolean {
    const isAnonCode = (m: Mapping | null): boolean => m !== null && m.path === "" && m.perms.includes("x");
    let m = mappingOf(a);
    // A "no" from the cached list is read again: it may predate this code
    // (a CModule whose pages were not executable when the list was read was
    // not registered, and its threads were not held: SIGSEGV, 6 of 10).
    if (!isAnonCode(m)) m = mappingOf(a, true);
    if (m !== null) return isAnonCode(m);
    return Process.platform !== "linux" && Process.findModuleByAddress(a) === null;
}

function own(base: NativePointer, end: NativePointer): void {
    if (ranges.some((r) => r.base.equals(base) && r.end.equals(end))) return;
    ranges.push({ base, end });
}

/**
 * Build the leave's C and replace its holding function, when the agent
 * loads: never while an instrument arms, where the Interceptor.flush this
 * needs would commit a replaceFast before its original is stored (a thread
 * calling the function then jumps to NULL).
 */
export function prepareLeave(): void {
    try {
        leaveModule();
    } catch {
        // Said at the leave (leave() builds it again and reports why not).
    }
}

/**
 * The trampolines of our replaceFast hooks: a small window at each (Gum
 * allocates them in slabs next to the library they hook).
 */
export function ownCode(...trampolines: (NativePointer | null | undefined)[]): void {
    for (const a of trampolines) {
        if (a === null || a === undefined || a.isNull() || !ourKind(a)) continue;
        own(a, a.add(TRAMPOLINE_BYTES));
    }
}

/** A CModule's code: from its first function's page to a page past its last. */
export function ownModule(cm: CModule): void {
    const symbols = cm as unknown as Record<string, unknown>;
    const code = Object.keys(symbols)
        .map((k) => symbols[k])
        .filter((v): v is NativePointer => v instanceof NativePointer && ourKind(v));
    if (code.length === 0) return;
    let low = code[0];
    let high = code[0];
    for (const a of code) {
        if (a.compare(low) < 0) low = a;
        if (a.compare(high) > 0) high = a;
    }
    const page = Process.pageSize;
    own(low.and(ptr(page - 1).not()), high.add(2 * page - 1).and(ptr(page - 1).not()));
}

/** One stack slot of a thread inside instr's code; `group` is one return address (leave_c.ts). */
interface Held {
    tid: number;
    /** The end of its stack scan; NULL for a thread held by its pc alone. */
    top: NativePointer;
    /** NULL: the thread's pc is in our code (a system call inside a trampoline's relocated prologue). */
    slot: NativePointer;
    /** The return address the slot held when found. */
    ret: NativePointer;
    group: number;
}

interface Seen {
    id: number;
    pc: NativePointer;
    sp: NativePointer;
}

/** Every thread of the process, Frida's included ([] where there is no /proc). */
function taskIds(): number[] {
    return (dirEntries("/proc/self/task") ?? []).map(Number).filter((n) => n > 0);
}

/** [sp, pc] of a thread blocked in a system call, from /proc; null when running or gone. */
export function blockedAt(tid: number): [NativePointer, NativePointer] | null {
    let text: string;
    try {
        text = File.readAllText(`/proc/self/task/${tid}/syscall`).trim();
    } catch {
        return null;
    }
    const fields = text.split(" ");
    if (fields.length < 3 || fields[0] === "running") return null;
    return [ptr(fields[fields.length - 2]), ptr(fields[fields.length - 1])];
}

interface Natives {
    scanAll: NativeFunction<number, [NativePointer, NativePointer, NativePointer, number]>;
    scanGum: NativeFunction<number, [NativePointer, NativePointer]>;
}

function inOurCode(a: NativePointer): boolean {
    return ranges.some((r) => a.compare(r.base) >= 0 && a.compare(r.end) < 0);
}

/**
 * One look at the threads of the process, through /proc only (no ptrace):
 * each thread blocked in a system call (/proc/self/task/TID/syscall gives its
 * stack and instruction pointers) is classified. Its live stack is scanned
 * for return addresses into instr's code (x64: words into our code that
 * follow a call instruction), all of one thread in one group: the thread has
 * left once one of them has been returned through (a stale copy never is).
 * A blocked thread with none, and its pc outside our code, is out for good
 * (the hooks are reverted: it cannot come back in). Running threads cannot
 * be read without stopping them; they stay `pending` until a later look.
 */
interface Look {
    /** Slots of threads inside our code, by return address (see Held). */
    held: Held[];
    /** Threads whose pc is in our code (a system call a relocated prologue makes). */
    atPc: number[];
}

function look(n: Natives, threads: Map<number, "pending" | "in" | "out">, slots: NativePointer, only?: Seen[]): Look {
    const found: Held[] = [];
    const atPc: number[] = [];
    let group = 0;
    const seen: Seen[] = only ?? [];
    if (only === undefined) {
        for (const [tid, state] of threads) {
            if (state === "out") continue;
            const at = blockedAt(tid);
            if (at === null) {
                // Running, or gone: a gone thread is out; a running one that
                // was inside stays in with its last slots (scanned again later).
                if (!taskAlive(tid)) threads.set(tid, "out");
                continue;
            }
            seen.push({ id: tid, sp: at[0], pc: at[1] });
        }
    }
    for (const t of seen) {
        const top = stackTop(t.sp);
        const pcIn = inOurCode(t.pc);
        if (pcIn) atPc.push(t.id);
        const count = n.scanAll(t.sp, top, slots, MAX_HELD - found.length);
        for (let i = 0; i < count; i++) {
            const slot = slots.add(8 * i).readPointer();
            found.push({ tid: t.id, top, slot, ret: slot.readPointer(), group });
        }
        if (count > 0) group++;
        threads.set(t.id, count > 0 || pcIn ? "in" : "out");
    }
    return { held: found, atPc };
}

function taskAlive(tid: number): boolean {
    try {
        const stat = File.readAllText(`/proc/self/task/${tid}/stat`);
        const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
        return state !== "Z" && state !== "X";
    } catch {
        return false;
    }
}

function stackTop(sp: NativePointer): NativePointer {
    const stack = mappingOf(sp);
    const end = stack === null ? sp : stack.end;
    return end.compare(sp.add(STACK_SCAN_BYTES)) > 0 ? sp.add(STACK_SCAN_BYTES) : end;
}

const GUM_RECHECK_S = 0.02;

/**
 * The threads blocked inside a function hooked by a listener with onLeave or
 * by replace(), which Gum counts and the script's unload waits for (x64):
 * blocked in a system call (/proc/self/task/TID/syscall), with one of Gum's
 * on-leave trampolines in place of a return address on the live stack, and
 * still so, unchanged, a moment later. A busy thread is never reported (its
 * stack may hold such a word in a frame that is being built or left); only
 * a blocked one makes the host not wait for the unload (instr/unload.py).
 */
function gumWaiting(n: Natives): number[] {
    if (Process.arch !== "x64") return [];
    const me = Process.getCurrentThreadId();
    const look = (): Map<number, string> => {
        const found = new Map<number, string>();
        for (const tid of taskIds()) {
            if (tid === me) continue;
            const at = blockedAt(tid);
            if (at === null) continue;
            const [sp, pc] = at;
            if (n.scanGum(sp, stackTop(sp)) > 0) found.set(tid, `${sp} ${pc}`);
        }
        return found;
    };
    const first = look();
    if (first.size === 0) return [];
    Thread.sleep(GUM_RECHECK_S);
    const again = look();
    return [...first].filter(([tid, at]) => again.get(tid) === at).map(([tid]) => tid);
}

/**
 * Look at every thread until each is known to be out of our code, or the
 * settle time has passed (threads that only pass through leave within it);
 * returns the slots of those still inside. Threads that ran in every look
 * are read once more at RUNNING_MS, stopped by a signal (core/stopper.ts);
 * not with Gum's ptrace-based reading, whose helper once waited for ever on
 * a thread that never stopped (a jemalloc thread of redis-server under load;
 * one of Frida's own in the concurrent patch test), and the agent with it.
 */
function settle(n: Natives): Held[] {
    const me = Process.getCurrentThreadId();
    const threads = new Map<number, "pending" | "in" | "out">();
    for (const tid of taskIds()) if (tid !== me) threads.set(tid, "pending");
    const slots = Memory.alloc(8 * MAX_HELD);
    const start = Date.now();
    const carried = new Map<number, Held[]>();
    const atPc = new Set<number>();
    const keep = (l: Look): void => {
        // A thread inside when last blocked, running now: its slots stand.
        for (const h of l.held) carried.set(h.tid, []);
        for (const h of l.held) carried.get(h.tid)?.push(h);
        for (const tid of l.atPc) atPc.add(tid);
        for (const [tid, state] of threads) {
            if (state !== "out") continue;
            carried.delete(tid);
            atPc.delete(tid);
        }
    };
    for (;;) {
        keep(look(n, threads, slots));
        const inside = [...threads.values()].some((s) => s === "in");
        const pending = [...threads.values()].some((s) => s === "pending");
        const waited = Date.now() - start;
        if (!inside && !pending) break;
        if (waited >= SETTLE_MS && !pending) break;
        if (waited >= RUNNING_MS) break;
        Thread.sleep(STEP_S);
    }
    // Frida's own (cloaked) threads are not listed by Gum, and never run in
    // our code for long (uncounted calls tail-call the original).
    const stillPending = [...threads].filter(([tid, s]) => s === "pending" && !Cloak.hasThread(tid)).map(([tid]) => tid);
    if (stillPending.length > 0) {
        // Read where they are with the threads stopped by a signal (x64
        // Linux: core/stopper.ts), their stacks scanned before they go on.
        // The maps are read first: nothing is read from /proc meanwhile.
        mappings();
        readRunning.running = stillPending.length;
        const read = withStopped(stillPending, (seen) => {
            readRunning.stopped = seen.length;
            keep(look(n, threads, slots, seen));
        });
        if (read === null && !(Process.platform === "linux" && Process.arch === "x64")) {
            const want = new Set(stillPending);
            const seen = Process.enumerateThreads()
                .filter((t) => want.has(t.id))
                .map((t) => ({ id: t.id, pc: t.context.pc, sp: t.context.sp }));
            keep(look(n, threads, slots, seen));
        }
    }
    const held: Held[] = [];
    let group = 0;
    for (const [, hs] of carried) {
        const groups = new Map<number, number>();
        for (const h of hs) {
            if (held.length >= MAX_HELD) break;
            if (!groups.has(h.group)) groups.set(h.group, group++);
            held.push({ ...h, group: groups.get(h.group) ?? 0 });
        }
    }
    const withSlots = new Set(held.map((h) => h.tid));
    for (const tid of atPc) {
        if (withSlots.has(tid) || held.length >= MAX_HELD) continue;
        held.push({ tid, top: NULL, slot: NULL, ret: NULL, group: group++ });
    }
    return held;
}

/**
 * Called once every hook of this agent is reverted. Returns at once when no
 * thread is inside; else, after SETTLE_MS, holds the agent for those left.
 */
let left: LeaveReport | null = null;

export function leaveSafely(): LeaveReport {
    if (left === null) left = leave();
    return left;
}

function leave(): LeaveReport {
    // A forked child's copy of this script, which Frida unloads there: the
    // child's only thread is held by Frida's fork handling, and Frida's own
    // threads do not exist in it; reading threads there is not safe (and
    // under -F, the only hooks are listeners, which Gum counts).
    if (inForkedChild()) return { held: [], error: null };
    let cm: CModule;
    try {
        cm = leaveModule();
    } catch (e) {
        return { held: [], error: `the leave's C did not build: ${String(e)}` };
    }
    const owned = ranges.slice(0, MAX_RANGES);
    owned.forEach((r, i) => {
        state.add(OFF_RANGES + 16 * i).writePointer(r.base);
        state.add(OFF_RANGES + 16 * i + 8).writePointer(r.end);
    });
    state.add(OFF_N_RANGES).writeS32(owned.length);
    const natives: Natives = {
        scanAll: new NativeFunction(cm.instr_scan_all, "int", ["pointer", "pointer", "pointer", "int"]),
        scanGum: new NativeFunction(cm.instr_scan_gum, "int", ["pointer", "pointer"]),
    };
    // Anonymous code that is not ours: Gum's trampolines (and a JIT's code).
    const foreign = mappings().filter((m) => m.path === "" && m.perms.includes("x")).slice(0, MAX_FOREIGN);
    foreign.forEach((m, i) => {
        state.add(OFF_FOREIGN + 16 * i).writePointer(m.base);
        state.add(OFF_FOREIGN + 16 * i + 8).writePointer(m.end);
    });
    state.add(OFF_N_FOREIGN).writeS32(foreign.length);
    let held: Held[] = [];
    let waiting: number[] = [];
    try {
        held = settle(natives);
    } catch (e) {
        return { held: [], error: `the program's threads could not be read: ${String(e)}` };
    }
    try {
        waiting = gumWaiting(natives);
    } catch {
        waiting = []; // the host then waits its bounded time for the unload
    }
    if (held.length === 0) return { held: [], error: null, waiting, read: readRunning };
    const pads = landingPads(cm, held);
    const flags = pads.map((p) => p.flag);
    held.forEach((h, i) => {
        state.add(OFF_HELD_TID + 4 * i).writeS32(h.tid);
        state.add(OFF_HELD_END + 8 * i).writePointer(h.top);
        state.add(OFF_HELD_FLAG + 8 * i).writePointer(flags[i]);
        state.add(OFF_HELD_GROUP + 4 * i).writeS32(h.group);
        state.add(OFF_HELD_SLOT + 8 * i).writePointer(pads[i].slot);
        state.add(OFF_HELD_PAD + 8 * i).writePointer(pads[i].pad);
    });
    state.add(OFF_N_HELD).writeS32(held.length);
    const start = new NativeFunction(cm.instr_hold_start, "int", []);
    const rc = start();
    const ids = [...new Set(held.map((h) => h.tid))];
    const detail = held.map((h, i) => `tid ${h.tid} slot ${h.slot} ret ${h.ret} group ${h.group} flag ${flags[i]}`);
    if (rc !== 0) return { held: ids, error: `the holding thread did not start (${rc})`, detail, waiting, read: readRunning };
    return { held: ids, error: null, detail, waiting, read: readRunning };
}

/**
 * x64: each held thread's return address into instr's code is swapped for a
 * landing pad that sets the thread's flag and jumps to that address; the
 * hold ends when one pad of each return address has fired. The pads live in
 * two pages mapped with mmap(2) directly, which no script owns and nothing
 * frees (the documented remainder of a leave that had to hold). Elsewhere the
 * flag is NULL (leave_c.ts scans the thread's stack instead).
 */
interface Pad {
    flag: NativePointer;
    /** The stack slot now holding `pad` (NULL: not swapped, or no pad). */
    slot: NativePointer;
    pad: NativePointer;
}

function landingPads(cm: CModule, held: Held[]): Pad[] {
    const none = held.map(() => ({ flag: NULL, slot: NULL, pad: NULL }));
    if (Process.arch !== "x64") return none;
    const mmap = new NativeFunction(Module.getGlobalExportByName("mmap"), "pointer", ["pointer", "size_t", "int", "int", "int", "int64"]);
    const mprotect = new NativeFunction(Module.getGlobalExportByName("mprotect"), "int", ["pointer", "size_t", "int"]);
    const PROT_RW = 3;
    const PROT_RX = 5;
    const MAP_PRIVATE_ANON = 0x22;
    const pages = mmap(NULL, 2 * PAGE, PROT_RW, MAP_PRIVATE_ANON, -1, 0);
    if (pages.equals(ptr("-1"))) return none;
    const swap = new NativeFunction(cm.instr_swap, "int", ["pointer", "pointer", "pointer"]);
    const flags = held.map((t, i) => {
        const pad = pages.add(PAD_STRIDE * i);
        const flag = pages.add(PAD_FLAGS + i);
        const target = pages.add(PAD_TARGETS + 8 * i);
        target.writePointer(t.ret);
        // mov byte [rip+flag], 1 (7 bytes); jmp [rip+target] (6 bytes)
        const code = [0xc6, 0x05, ...rel32(flag.sub(pad.add(7))), 0x01, 0xff, 0x25, ...rel32(target.sub(pad.add(13)))];
        pad.writeByteArray(code);
        return flag;
    });
    if (mprotect(pages, PAGE, PROT_RX) !== 0) return none;
    return held.map((t, i) => {
        if (t.slot.isNull()) return { flag: NULL, slot: NULL, pad: NULL };
        const pad = pages.add(PAD_STRIDE * i);
        // Not swapped: the thread took its return meanwhile and has left.
        if (swap(t.slot, t.ret, pad) === 0) {
            pages.add(PAD_FLAGS + i).writeU8(1);
            return { flag: flags[i], slot: NULL, pad: NULL };
        }
        return { flag: flags[i], slot: t.slot, pad };
    });
}

function rel32(delta: NativePointer): number[] {
    const v = delta.toInt32();
    return [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff];
}
