// Capture writers for the JS tier: each writes one slot of a record (the
// same layout as the native tier) and, when a predicate needs it, the value.

import {
    Capture,
    IntType,
    ProbePlan,
    STATUS_NULL,
    STATUS_OK,
    STATUS_TRUNCATED,
    STATUS_UNREADABLE,
    VAR_HEADER_SIZE,
    pad8,
} from "../protocol.js";
import { JsBatch } from "../core/buffer.js";
import { Layout, NATIVE_MAX_ARG, NATIVE_MAX_CAPTURES } from "../core/layout.js";
import { K_ARG, K_CALLER, K_DURATION, K_RETVAL, K_STASHED, SW_V, ValueLists, ValueSpec } from "../ctier/native.js";
import { Value } from "./predicate.js";
import { decodeUtf8 } from "../core/util.js";
import { fpBacktrace } from "../core/frames.js";
import { isFunctionStart } from "../core/symbols.js";

/** Where a capture writer reads from, for one call. */
export interface Src {
    args: NativePointer[];
    retval: NativePointer | null;
    ic: InvocationContext;
    duration: bigint;
    addrs: string[]; // caller/backtrace addresses to symbolise once committed
    /** Word index of the thread's staging slot, or -1: read values in JS. */
    sw: number;
    stage: NativePointer;
    st32: Uint32Array;
    st64: BigUint64Array;
}

export type Writer = (b: JsBatch, off: number, src: Src, vals: Value[] | null, i: number) => number;

export const NO_ARGS: NativePointer[] = [];

/**
 * One Src reused by every call: callbacks run one at a time under the script
 * lock and nothing they call releases it, so no call sees another's state.
 */
export const scratch: Src = {
    args: NO_ARGS,
    retval: null,
    ic: null as unknown as InvocationContext,
    duration: 0n,
    addrs: [],
    sw: -1,
    stage: NULL,
    st32: new Uint32Array(0),
    st64: new BigUint64Array(0),
};

const PAGE = Process.pageSize;

function writeRaw(b: JsBatch, off: number, p: NativePointer): void {
    const i = off >> 2;
    b.u32[i] = p.toUInt32();
    b.u32[i + 1] = p.shr(32).toUInt32();
}

/** Types whose value is in the low 32 bits (the host applies width and sign). */
const NARROW = new Set<string>(["i8", "i16", "i32", "u8", "u16", "u32", "bool"]);

function rawBig(b: JsBatch, off: number): bigint {
    return b.u64[off >> 3];
}

/** The value a predicate sees for an integer capture of type `t`. */
export function typed(t: IntType, raw: bigint): bigint {
    switch (t) {
        case "i8":
            return BigInt.asIntN(8, raw);
        case "i16":
            return BigInt.asIntN(16, raw);
        case "i32":
            return BigInt.asIntN(32, raw);
        case "i64":
            return BigInt.asIntN(64, raw);
        case "u8":
            return BigInt.asUintN(8, raw);
        case "u16":
            return BigInt.asUintN(16, raw);
        case "u32":
            return BigInt.asUintN(32, raw);
        case "bool":
            return (raw & 0xffn) !== 0n ? 1n : 0n;
        default:
            return raw;
    }
}

/** Read up to `n` bytes, page by page; stops at the first fault or (cstr) NUL. */
export function readChunked(p: NativePointer, n: number, stopAtNul: boolean): { data: Uint8Array; fault: boolean; nul: boolean } {
    const parts: Uint8Array[] = [];
    let total = 0;
    let cur = p;
    let fault = false;
    let nul = false;
    while (total < n) {
        const left = PAGE - (cur.and(PAGE - 1).toUInt32() >>> 0);
        const want = Math.min(n - total, left);
        let ab: ArrayBuffer | null;
        try {
            ab = cur.readByteArray(want);
        } catch {
            ab = null;
        }
        if (ab === null) {
            fault = true;
            break;
        }
        const u = new Uint8Array(ab);
        if (stopAtNul) {
            const z = u.indexOf(0);
            if (z >= 0) {
                parts.push(u.subarray(0, z));
                total += z;
                nul = true;
                break;
            }
        }
        parts.push(u);
        total += want;
        cur = cur.add(want);
    }
    if (parts.length === 1) return { data: parts[0], fault, nul };
    const data = new Uint8Array(total);
    let o = 0;
    for (const part of parts) {
        data.set(part, o);
        o += part.length;
    }
    return { data, fault, nul };
}

function writeVar(b: JsBatch, off: number, data: Uint8Array, status: number): number {
    b.u32[off >> 2] = data.length;
    b.u32[(off >> 2) + 1] = status;
    const start = off + VAR_HEADER_SIZE;
    b.u8.set(data, start);
    const end = start + pad8(data.length);
    b.u8.fill(0, start + data.length, end);
    return end;
}

const EMPTY = new Uint8Array(0);

/** Value list positions a capture reads from the stage (-1: none). */
export interface StagePlan {
    lists: ValueLists;
    entry: { j: number; jl: number }[];
    exit: { j: number; jl: number }[];
}

/** What the JS tier's native pre-listener collects, or null when it cannot. */
export function stagePlan(p: ProbePlan, layout: Layout): StagePlan | null {
    const lists: ValueLists = { entry: [], exit: [] };
    const plan = (caps: Capture[] | null, phase: "entry" | "exit"): { j: number; jl: number }[] => {
        const out: { j: number; jl: number }[] = [];
        const list = phase === "entry" ? lists.entry : lists.exit;
        const argSpec = (index: number): ValueSpec =>
            phase === "entry" ? { kind: K_ARG, idx: index } : { kind: K_STASHED, idx: layout.stash.indexOf(index) };
        const add = (v: ValueSpec): number => list.push(v) - 1;
        for (const c of caps ?? []) {
            let j = -1;
            let jl = -1;
            if (c.src === "arg") {
                j = add(argSpec(c.index));
                if (c.type === "bytes" && "arg" in c.len) jl = add(argSpec(c.len.arg));
            } else if (c.src === "retval") {
                j = add({ kind: K_RETVAL, idx: 0 });
            } else if (c.src === "caller") {
                j = add({ kind: K_CALLER, idx: 0 });
            } else if (c.src === "duration") {
                j = add({ kind: K_DURATION, idx: 0 });
            }
            out.push({ j, jl });
        }
        return out;
    };
    const entry = plan(p.entry, "entry");
    const exit = plan(p.exit, "exit");
    if (lists.entry.length > NATIVE_MAX_CAPTURES || lists.exit.length > NATIVE_MAX_CAPTURES) return null;
    if (layout.stash.length > NATIVE_MAX_CAPTURES || layout.stash.some((a) => a > NATIVE_MAX_ARG)) return null;
    if ([...lists.entry, ...lists.exit].some((v) => v.kind === K_ARG && v.idx > NATIVE_MAX_ARG)) return null;
    return { lists, entry, exit };
}

/** Word index of staged value `j` in the current call's slot. */
function vw(src: Src, j: number): number {
    return src.sw + SW_V + 2 * j;
}

function stagedPointer(src: Src, j: number): NativePointer {
    return src.stage.add(vw(src, j) * 4).readPointer();
}

function copyStaged(b: JsBatch, off: number, src: Src, j: number): void {
    const w = src.sw + SW_V + 2 * j;
    const k = off >> 2;
    const st = src.st32;
    const u32 = b.u32;
    u32[k] = st[w];
    u32[k + 1] = st[w + 1];
}

type Getter = (s: Src) => NativePointer;

/**
 * Return addresses, innermost first. From an Interceptor context the
 * accurate backtracer lists the caller twice (once from the stack pointer,
 * once from unwinding the hooked function's entry); drop the duplicate.
 */
export function backtrace(ic: InvocationContext, depth: number): NativePointer[] {
    let frames = Thread.backtrace(ic.context, Backtracer.ACCURATE);
    if (frames.length >= 2 && frames[0].equals(frames[1]) && frames[0].equals(ic.returnAddress)) frames.shift();
    // On x86_64 Linux the accurate (unwind-table) walk from an Interceptor
    // context often stops after the caller; the fuzzy walk (stack scanning for
    // return addresses) then gives the rest, at the risk of a stale frame.
    // Pointers to a function's first instruction are never return addresses
    // (main's own address, kept by __libc_start_main, read as two more `main`
    // frames): they are left out, all but the first frame (the caller).
    if (frames.length <= 1 && depth > 1) {
        const fuzzy = Thread.backtrace(ic.context, Backtracer.FUZZY);
        if (fuzzy.length > frames.length) frames = fuzzy.filter((f, i) => i === 0 || !isFunctionStart(f));
    }
    return frames.slice(0, depth);
}

function cstrWriter(j: number, get: Getter, max: number): Writer {
    return (b, off, src, vals, i) => {
        const p = src.sw >= 0 && j >= 0 ? stagedPointer(src, j) : get(src);
        if (p.isNull()) {
            if (vals !== null) vals[i] = null;
            return writeVar(b, off, EMPTY, STATUS_NULL);
        }
        const r = readChunked(p, max + 1, true);
        let data = r.data;
        let status = STATUS_OK;
        if (r.fault && !r.nul) status = STATUS_UNREADABLE;
        else if (!r.nul) status = STATUS_TRUNCATED;
        if (data.length > max) data = data.subarray(0, max);
        if (vals !== null) vals[i] = status === STATUS_UNREADABLE && data.length === 0 ? null : decodeUtf8(data);
        return writeVar(b, off, data, status);
    };
}

function bytesWriter(j: number, get: Getter, len: (s: Src) => bigint, max: number): Writer {
    return (b, off, src, vals, i) => {
        const p = src.sw >= 0 && j >= 0 ? stagedPointer(src, j) : get(src);
        if (p.isNull()) {
            if (vals !== null) vals[i] = null;
            return writeVar(b, off, EMPTY, STATUS_NULL);
        }
        const want = len(src);
        const n = want > BigInt(max) ? max : Number(want);
        const r = readChunked(p, n, false);
        const status = r.fault ? STATUS_UNREADABLE : want > BigInt(max) ? STATUS_TRUNCATED : STATUS_OK;
        if (vals !== null) vals[i] = r.data.slice();
        return writeVar(b, off, r.data, status);
    };
}

/** An integer value: copied raw from the stage, or read in JS (fallback). */
function intWriter(j: number, get: Getter, t: IntType): Writer {
    const narrow = NARROW.has(t);
    return (b, off, src, vals, i) => {
        if (src.sw >= 0 && j >= 0) {
            copyStaged(b, off, src, j);
        } else if (narrow) {
            const k = off >> 2;
            b.u32[k] = get(src).toUInt32();
            b.u32[k + 1] = 0;
        } else {
            writeRaw(b, off, get(src));
        }
        if (vals !== null) vals[i] = typed(t, rawBig(b, off));
        return off + 8;
    };
}

/** `fp`: backtraces by frame pointers (core/frames.ts), as the native tier walks them. */
export function captureWriter(c: Capture, phase: "entry" | "exit", layout: Layout, pos: { j: number; jl: number }, fp = false): Writer {
    const argAt = (index: number): Getter => {
        const k = phase === "entry" ? index : layout.stash.indexOf(index);
        return (s) => s.args[k];
    };
    const { j, jl } = pos;
    switch (c.src) {
        case "arg":
            if (c.type === "cstr") return cstrWriter(j, argAt(c.index), c.max);
            if (c.type === "bytes") {
                const lenSpec = c.len;
                let len: (s: Src) => bigint;
                if ("const" in lenSpec) {
                    const n = BigInt(lenSpec.const);
                    len = () => n;
                } else {
                    const g = argAt(lenSpec.arg);
                    len = (s) => (s.sw >= 0 && jl >= 0 ? s.st64[vw(s, jl) >> 1] : BigInt.asUintN(64, BigInt(g(s).toString())));
                }
                return bytesWriter(j, argAt(c.index), len, c.max);
            }
            return intWriter(j, argAt(c.index), c.type);
        case "retval":
            return intWriter(j, (s) => s.retval ?? NULL, c.type);
        case "caller":
            return (b, off, src, vals, i) => {
                if (src.sw >= 0 && j >= 0) copyStaged(b, off, src, j);
                else writeRaw(b, off, src.ic.returnAddress);
                const v = rawBig(b, off);
                src.addrs.push("0x" + v.toString(16));
                if (vals !== null) vals[i] = v;
                return off + 8;
            };
        case "duration":
            return (b, off, src, vals, i) => {
                if (src.sw >= 0 && j >= 0) copyStaged(b, off, src, j);
                else b.u64[off >> 3] = src.duration;
                if (vals !== null) vals[i] = rawBig(b, off);
                return off + 8;
            };
        case "backtrace": {
            const depth = c.depth;
            return (b, off, src, vals, i) => {
                const frames = depth <= 0 ? [] : fp ? fpBacktrace(src.ic, depth) : backtrace(src.ic, depth);
                b.u32[off >> 2] = frames.length;
                b.u32[(off >> 2) + 1] = 0;
                let o = off + VAR_HEADER_SIZE;
                const list: bigint[] = [];
                for (const f of frames) {
                    writeRaw(b, o, f);
                    src.addrs.push(f.toString());
                    if (vals !== null) list.push(rawBig(b, o));
                    o += 8;
                }
                if (vals !== null) vals[i] = list;
                return o;
            };
        }
    }
}
