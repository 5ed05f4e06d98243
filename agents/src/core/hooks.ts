// Gum's listener and replace() hooks, made and taken away safely.
//
// Taking a hook away (Interceptor.detachAll, revert) makes Gum put the
// function's first bytes back and, when no thread is counted inside it, free
// the hook's state and trampoline at once. A thread counts itself only once
// it is in Gum's dispatch (_gum_function_context_begin_invocation): one that
// has jumped into the hook's trampoline and is saving its registers is not
// counted yet, and if it is preempted there while the hook goes, it resumes
// in freed memory. Seen under load with a thread calling malloc in a loop
// while `instr trace -i malloc` left: a SIGSEGV reading the freed list of
// listeners (docs/leaving.md, "Listeners and replace() under load").
//
// So every such hook goes through here, which keeps the function's bytes
// from before and after Gum wrote them. Before anything is taken away,
// `quiesce()` puts the original bytes back itself (no new call can enter
// the trampoline), then waits until no program thread can still be on its
// way in: a thread seen blocked in a system call, scheduled in twice, or
// that has run for 30 ms of CPU since, has passed (the way in makes no
// system call and takes nanoseconds of CPU). No thread is stopped for it
// (no ptrace): /proc says all of it. Then Gum's own revert finds its bytes
// already there and frees what nobody can reach.

import { blockedAt } from "./leave.js";
import { StoppedWrite, writeStopped } from "./stopper.js";
import { dirEntries, inForkedChild } from "./util.js";

const SPAN = 16; // bytes compared: more than any prologue Gum overwrites
const RAN_NS = 30e6; // CPU time that proves a running thread went on (3+ ticks at HZ=100)
const QUIESCE_MS = 1000; // the bound of the whole wait
const STEP_S = 0.002;

interface Written {
    address: NativePointer;
    before: Uint8Array;
    /** Gum's bytes, read at the first `commit` after the hook was made. */
    after: Uint8Array | null;
}

const written = new Map<string, Written>();

function bytesAt(address: NativePointer): Uint8Array | null {
    try {
        return new Uint8Array(address.readByteArray(SPAN) ?? new ArrayBuffer(0));
    } catch {
        return null;
    }
}

/** Keeps ADDRESS's bytes from before its first hook (a later hook on it shares Gum's). */
function note(address: NativePointer): void {
    const key = address.toString();
    if (written.has(key)) return;
    const before = bytesAt(address);
    if (before !== null && before.length === SPAN) written.set(key, { address, before, after: null });
}

/** The PC of a thread blocked in a system call, or null (running, or gone). */
function blockedPc(tid: number): NativePointer | null {
    return blockedAt(tid)?.[1] ?? null;
}

/** How each arming's hooks were written (the leave report shows them with --debug). */
const armings: StoppedWrite[] = [];

export function armingsSeen(): StoppedWrite[] {
    return armings;
}

/**
 * Makes hooks (ARM: the Interceptor calls only, on ADDRESSES, resolved
 * before) and has Gum write them, with the program's running threads stopped
 * outside the first bytes of ADDRESSES (core/stopper.ts): a thread between
 * two of a function's first instructions when the jump is written resumes in
 * its middle (seen: 1 in about 40 arms of a malloc trace on a thread calling
 * malloc in a loop, under load). Gum writes pending hooks whenever the
 * script sends, calls out cooperatively or looks up a module's export
 * (measured): so the hooks are made in the window, after everything else
 * of the arming, and nothing in ARM may look anything up.
 */
export function armStopped<T>(addresses: NativePointer[], arm: () => T): T {
    if (inForkedChild() || addresses.length === 0) return arm();
    const [result, stats] = writeStopped(
        addresses,
        SPAN,
        () => {
            const r = arm();
            Interceptor.flush();
            return r;
        },
        blockedPc,
    );
    if (armings.length < 16) armings.push(stats);
    return result;
}

/** Takes hooks away (REVERT: the Interceptor calls and a flush) with the running threads stopped outside ADDRESSES' first bytes. */
export function unhookStopped(addresses: NativePointer[], revert: () => void): void {
    if (inForkedChild()) return revert();
    writeStopped(addresses, SPAN, revert, blockedPc);
}

/**
 * Keeps the bytes Gum wrote for the hooks made so far, committing any it has
 * not written yet first. Called once an instrument has armed.
 */
export function commit(): void {
    if (![...written.values()].some((w) => w.after === null)) return;
    Interceptor.flush();
    for (const w of written.values()) {
        if (w.after !== null) continue;
        // Unchanged: not written yet (another thread inside a JS callback
        // holds the transaction open: a later commit reads it), or the
        // function was hooked already in this Gum (Frida's own exit hook):
        // then nothing of ours is to put back.
        const now = bytesAt(w.address);
        if (now !== null && !same(now, w.before)) w.after = now;
    }
}

/** Interceptor.attach, with the function's bytes kept for `quiesce`. */
export function attach(
    address: NativePointer,
    callbacks: InvocationListenerCallbacks | NativeInvocationListenerCallbacks,
    data?: NativePointerValue,
): InvocationListener {
    note(address);
    return data === undefined ? Interceptor.attach(address, callbacks) : Interceptor.attach(address, callbacks, data);
}

/** Interceptor.replace, likewise. */
export function replace(address: NativePointer, replacement: NativePointerValue, data?: NativePointerValue): void {
    note(address);
    if (data === undefined) Interceptor.replace(address, replacement);
    else Interceptor.replace(address, replacement, data);
}

function same(a: Uint8Array, b: Uint8Array): boolean {
    return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Puts back the first bytes of every hooked function that still holds what Gum
 * wrote for our hook; how many. Bytes someone else has written since (another
 * agent's hook on the same function, laid over ours or put back under it) are
 * left alone: Gum's revert deals with them as it always has. */
function unhook(): number {
    let n = 0;
    for (const w of written.values()) {
        if (w.after === null) continue; // never seen written (commit keeps only changed bytes)
        const now = bytesAt(w.address);
        if (now === null || !same(now, w.after)) continue;
        let lo = 0;
        let hi = SPAN - 1;
        while (lo < SPAN && w.before[lo] === now[lo]) lo++;
        while (hi > lo && w.before[hi] === now[hi]) hi--;
        const original = w.before.slice(lo, hi + 1);
        Memory.patchCode(w.address.add(lo), original.length, (code) => code.writeByteArray(original.buffer as ArrayBuffer));
        n++;
    }
    return n;
}

interface Seen {
    /** Nanoseconds on a CPU, and times scheduled in (/proc/.../schedstat). */
    runtime: number;
    slices: number;
}

/** Where a thread stands: blocked in a system call, or its CPU use so far; null: gone. */
function threadNow(tid: number): { blocked: boolean; seen: Seen } | null {
    try {
        const blocked = blockedAt(tid) !== null;
        const [runtime, , slices] = File.readAllText(`/proc/self/task/${tid}/schedstat`).trim().split(/\s+/).map(Number);
        return { blocked, seen: { runtime, slices } };
    } catch {
        return null;
    }
}

/** A thread has passed the way in once it has been seen in a system call (the way in
 * makes none), scheduled in twice, or run for RAN_NS more (the kernel adds a running
 * thread's time at each tick, so a reading can lag by one tick: 4-10 ms). */
function passed(before: Seen, now: { blocked: boolean; seen: Seen }): boolean {
    return now.blocked || now.seen.slices >= before.slices + 2 || now.seen.runtime >= before.runtime + RAN_NS;
}

export interface Quiesced {
    /** Functions whose first bytes were put back. */
    restored: number;
    /** Milliseconds waited for threads on their way in. */
    waited_ms: number;
    /** Threads still possibly on their way in when the bound passed. */
    unsure: number[];
}

/**
 * Before Gum's hooks are taken away: put the functions' bytes back, then wait
 * until no program thread can be on its way into a trampoline (see above).
 */
export function quiesce(): Quiesced {
    if (inForkedChild() || Process.platform !== "linux") return { restored: 0, waited_ms: 0, unsure: [] };
    // With the running threads stopped: a thread fetching a function's first
    // instructions while they are rewritten could decode half of each.
    const ours = [...written.values()].filter((w) => w.after !== null).map((w) => w.address);
    const [restored] = writeStopped(ours, SPAN, unhook, blockedPc);
    if (restored === 0) return { restored, waited_ms: 0, unsure: [] };
    const me = Process.getCurrentThreadId();
    const pending = new Map<number, Seen>();
    for (const name of dirEntries("/proc/self/task") ?? []) {
        const tid = Number(name);
        if (!(tid > 0) || tid === me || Cloak.hasThread(tid)) continue;
        const now = threadNow(tid);
        if (now === null || now.blocked) continue; // gone, or in a system call: not on the way in
        pending.set(tid, now.seen);
    }
    const start = Date.now();
    while (pending.size > 0 && Date.now() - start < QUIESCE_MS) {
        Thread.sleep(STEP_S);
        for (const [tid, before] of pending) {
            const now = threadNow(tid);
            if (now === null || passed(before, now)) pending.delete(tid);
        }
    }
    return { restored, waited_ms: Date.now() - start, unsure: [...pending.keys()] };
}
