// Capture writers for the JS tier: each writes one slot of a record (the
// same layout as the native tier) and, when a predicate needs it, the value.

import {
    Capture,
    IntType,
    STATUS_NULL,
    STATUS_OK,
    STATUS_TRUNCATED,
    STATUS_UNREADABLE,
    VAR_HEADER_SIZE,
    pad8,
} from "./protocol.js";
import { JsBatch } from "./buffer.js";
import { Layout } from "./layout.js";
import { Value } from "./predicate.js";
import { decodeUtf8 } from "./util.js";

/** Where a capture writer reads from, for one call. */
export interface Src {
    args: NativePointer[];
    retval: NativePointer | null;
    ic: InvocationContext;
    duration: bigint;
    addrs: string[]; // caller/backtrace addresses to symbolise once committed
}

export type Writer = (b: JsBatch, off: number, src: Src, vals: Value[] | null, i: number) => number;

export const NO_ARGS: NativePointer[] = [];

/**
 * One Src reused by every call: callbacks run one at a time under the script
 * lock and nothing they call releases it, so no call sees another's state.
 */
export const scratch: Src = { args: NO_ARGS, retval: null, ic: null as unknown as InvocationContext, duration: 0n, addrs: [] };

const PAGE = Process.pageSize;

function writeRaw(b: JsBatch, off: number, p: NativePointer): void {
    b.dv.setUint32(off, p.toUInt32() >>> 0, true);
    b.dv.setUint32(off + 4, p.shr(32).toUInt32() >>> 0, true);
}

/** Types whose value is in the low 32 bits (the host applies width and sign). */
const NARROW = new Set<string>(["i8", "i16", "i32", "u8", "u16", "u32", "bool"]);

function rawBig(b: JsBatch, off: number): bigint {
    return b.dv.getBigUint64(off, true);
}

/** The value a predicate sees for an integer capture of type `t`. */
function typed(t: IntType, raw: bigint): bigint {
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
function readChunked(p: NativePointer, n: number, stopAtNul: boolean): { data: Uint8Array; fault: boolean; nul: boolean } {
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
    b.dv.setUint32(off, data.length, true);
    b.dv.setUint32(off + 4, status, true);
    const start = off + VAR_HEADER_SIZE;
    b.u8.set(data, start);
    const end = start + pad8(data.length);
    b.u8.fill(0, start + data.length, end);
    return end;
}

const EMPTY = new Uint8Array(0);

function cstrWriter(get: (s: Src) => NativePointer, max: number): Writer {
    return (b, off, src, vals, i) => {
        const p = get(src);
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

function bytesWriter(get: (s: Src) => NativePointer, len: (s: Src) => bigint, max: number): Writer {
    return (b, off, src, vals, i) => {
        const p = get(src);
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

function intWriter(get: (s: Src) => NativePointer, t: IntType): Writer {
    if (NARROW.has(t)) {
        return (b, off, src, vals, i) => {
            b.dv.setUint32(off, get(src).toUInt32() >>> 0, true);
            b.dv.setUint32(off + 4, 0, true);
            if (vals !== null) vals[i] = typed(t, rawBig(b, off));
            return off + 8;
        };
    }
    return (b, off, src, vals, i) => {
        writeRaw(b, off, get(src));
        if (vals !== null) vals[i] = typed(t, rawBig(b, off));
        return off + 8;
    };
}

export function captureWriter(c: Capture, phase: "entry" | "exit", layout: Layout): Writer {
    const argAt = (index: number): ((s: Src) => NativePointer) => {
        const k = phase === "entry" ? index : layout.stash.indexOf(index);
        return (s) => s.args[k];
    };
    switch (c.src) {
        case "arg":
            if (c.type === "cstr") return cstrWriter(argAt(c.index), c.max);
            if (c.type === "bytes") {
                const lenSpec = c.len;
                let len: (s: Src) => bigint;
                if ("const" in lenSpec) {
                    const n = BigInt(lenSpec.const);
                    len = () => n;
                } else {
                    const g = argAt(lenSpec.arg);
                    len = (s) => BigInt.asUintN(64, BigInt(g(s).toString()));
                }
                return bytesWriter(argAt(c.index), len, c.max);
            }
            return intWriter(argAt(c.index), c.type);
        case "retval": {
            const t = c.type;
            return intWriter((s) => s.retval ?? NULL, t);
        }
        case "caller":
            return (b, off, src, vals, i) => {
                const a = src.ic.returnAddress;
                writeRaw(b, off, a);
                src.addrs.push(a.toString());
                if (vals !== null) vals[i] = rawBig(b, off);
                return off + 8;
            };
        case "duration":
            return (b, off, src, vals, i) => {
                b.dv.setBigUint64(off, src.duration, true);
                if (vals !== null) vals[i] = src.duration;
                return off + 8;
            };
        case "backtrace": {
            const depth = c.depth;
            return (b, off, src, vals, i) => {
                const frames = depth > 0 ? backtrace(src.ic, depth) : [];
                b.dv.setUint32(off, frames.length, true);
                b.dv.setUint32(off + 4, 0, true);
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

/**
 * Return addresses, innermost first. From an Interceptor context the
 * accurate backtracer lists the caller twice (once from the stack pointer,
 * once from unwinding the hooked function's entry); drop the duplicate.
 */
function backtrace(ic: InvocationContext, depth: number): NativePointer[] {
    const frames = Thread.backtrace(ic.context, Backtracer.ACCURATE);
    if (frames.length >= 2 && frames[0].equals(frames[1]) && frames[0].equals(ic.returnAddress)) frames.shift();
    return frames.slice(0, depth);
}
