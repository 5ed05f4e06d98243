// The JS tier: Interceptor callbacks in JS that write the same binary records
// as the native tier into the JS batch. Everything works here: C strings,
// bytes, backtraces, predicates. A record is written at the batch's current
// offset and only committed (offset advanced) when its predicate holds.

import {
    Capture,
    FLAG_NO_ENTRY,
    HEADER_SIZE,
    IntType,
    OFF_FLAGS,
    OFF_PHASE,
    OFF_PROBE,
    OFF_SITE,
    OFF_SIZE,
    OFF_TID,
    OFF_TS,
    PHASE_ENTRY,
    PHASE_EXIT,
    ProbePlan,
    STATUS_NULL,
    STATUS_OK,
    STATUS_TRUNCATED,
    STATUS_UNREADABLE,
    VAR_HEADER_SIZE,
    pad8,
} from "./protocol.js";
import { Flusher, JsBatch } from "./buffer.js";
import { Layout } from "./layout.js";
import { Compiled, Env, Value, compile, maxCapIndex, truthy } from "./predicate.js";
import { decodeUtf8, reportError } from "./util.js";

/** Where a capture writer reads from, for one call. */
interface Src {
    args: NativePointer[];
    retval: NativePointer | null;
    ic: InvocationContext;
    duration: bigint;
    addrs: string[]; // caller/backtrace addresses to symbolise once committed
}

type Writer = (b: JsBatch, off: number, src: Src, vals: Value[] | null, i: number) => number;

const PAGE = Process.pageSize;

function writeRaw(b: JsBatch, off: number, p: NativePointer): void {
    b.dv.setUint32(off, p.toUInt32() >>> 0, true);
    b.dv.setUint32(off + 4, p.shr(32).toUInt32() >>> 0, true);
}

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
    return (b, off, src, vals, i) => {
        writeRaw(b, off, get(src));
        if (vals !== null) vals[i] = typed(t, rawBig(b, off));
        return off + 8;
    };
}

function captureWriter(c: Capture, phase: "entry" | "exit", layout: Layout): Writer {
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

function writeHeader(b: JsBatch, off: number, size: number, phase: number, flags: number, probe: number, site: number, tid: number): void {
    b.dv.setUint16(off + OFF_SIZE, size, true);
    b.dv.setUint8(off + OFF_PHASE, phase);
    b.dv.setUint8(off + OFF_FLAGS, flags);
    b.dv.setUint32(off + OFF_PROBE, probe, true);
    b.dv.setUint32(off + OFF_SITE, site, true);
    b.dv.setUint32(off + OFF_TID, tid, true);
}

/** Per-call state kept on the InvocationContext between onEnter and onLeave. */
interface CallState {
    _instrSkip?: boolean;
    _instrArgs?: NativePointer[];
    _instrT0?: bigint;
    _instrHeld?: Uint8Array;
    _instrVals?: Value[];
}

export class JsProbe {
    private readonly entryW: Writer[];
    private readonly exitW: Writer[];
    private readonly pred: Compiled | null;
    private readonly wherePhase: "entry" | "exit" | null;

    constructor(
        private readonly p: ProbePlan,
        private readonly layout: Layout,
        private readonly flusher: Flusher,
    ) {
        this.entryW = (p.entry ?? []).map((c) => captureWriter(c, "entry", layout));
        this.exitW = (p.exit ?? []).map((c) => captureWriter(c, "exit", layout));
        this.wherePhase = p.where?.phase ?? null;
        this.pred = p.where !== null ? compile(p.where.expr) : null;
        if (p.where !== null) {
            const e = maxCapIndex(p.where.expr, "entry");
            const x = maxCapIndex(p.where.expr, "exit");
            if (e >= (p.entry ?? []).length || x >= (p.exit ?? []).length || (p.where.phase === "entry" && x >= 0)) {
                throw new Error("the predicate refers to a capture this probe does not have at that phase");
            }
        }
    }

    /** Listener callbacks for one site. */
    callbacks(site: number): ScriptInvocationListenerCallbacks {
        const cb: ScriptInvocationListenerCallbacks = {};
        const self = this;
        if (this.layout.hookEntry) {
            cb.onEnter = function (args) {
                self.enter(this as InvocationContext & CallState, args, site);
            };
        }
        if (this.layout.hookExit) {
            cb.onLeave = function (retval) {
                self.leave(this as InvocationContext & CallState, retval, site);
            };
        }
        return cb;
    }

    private enter(ic: InvocationContext & CallState, args: InvocationArguments, site: number): void {
        const { p, layout, flusher } = this;
        try {
            if (layout.stash.length > 0) ic._instrArgs = layout.stash.map((i) => args[i]);
            const b = flusher.js;
            if (b.off + Math.max(layout.maxEntry, HEADER_SIZE) > b.cap) flusher.flushJs();
            const off = b.off;
            flusher.ring.stamp(off + OFF_TS);
            if (layout.needEntryTs) ic._instrT0 = b.dv.getBigUint64(off + OFF_TS, true);
            const vals: Value[] | null = this.pred !== null ? [] : null;
            let end = off;
            const src: Src = { args, retval: null, ic, duration: 0n, addrs: [] };
            if (p.entry !== null) {
                end = off + HEADER_SIZE;
                for (let i = 0; i < this.entryW.length; i++) end = this.entryW[i](b, end, src, vals, i);
                writeHeader(b, off, end - off, PHASE_ENTRY, 0, p.id, site, ic.threadId);
            }
            if (this.wherePhase === "entry") {
                const env: Env = { entry: vals ?? [], exit: [], tid: ic.threadId };
                if (!truthy((this.pred as Compiled)(env))) {
                    ic._instrSkip = true;
                    return;
                }
            } else if (this.wherePhase === "exit") {
                if (p.entry !== null) {
                    ic._instrHeld = b.u8.slice(off, end);
                    ic._instrVals = vals ?? [];
                    for (const a of src.addrs) flusher.symbols.note(a);
                }
                return;
            }
            if (p.entry !== null) {
                b.off = end;
                b.records++;
                for (const a of src.addrs) flusher.symbols.note(a);
            }
        } catch (e) {
            ic._instrSkip = true;
            reportError(p.id, e);
        }
    }

    private leave(ic: InvocationContext & CallState, retval: InvocationReturnValue, site: number): void {
        const { p, layout, flusher } = this;
        if (ic._instrSkip === true) return;
        try {
            const b = flusher.js;
            const held = ic._instrHeld;
            const heldLen = held !== undefined ? held.length : 0;
            if (b.off + heldLen + layout.maxExit > b.cap) flusher.flushJs();
            const start = b.off;
            if (held !== undefined) b.u8.set(held, start);
            const off = start + heldLen;
            flusher.ring.stamp(off + OFF_TS);
            let flags = 0;
            let duration = 0n;
            if (layout.needEntryTs) {
                const t0 = ic._instrT0;
                if (t0 === undefined) flags |= FLAG_NO_ENTRY;
                else duration = b.dv.getBigUint64(off + OFF_TS, true) - t0;
            }
            const vals: Value[] | null = this.pred !== null ? [] : null;
            const src: Src = { args: ic._instrArgs ?? [], retval, ic, duration, addrs: [] };
            let end = off + HEADER_SIZE;
            for (let i = 0; i < this.exitW.length; i++) end = this.exitW[i](b, end, src, vals, i);
            writeHeader(b, off, end - off, PHASE_EXIT, flags, p.id, site, ic.threadId);
            if (this.wherePhase === "exit") {
                const env: Env = { entry: ic._instrVals ?? [], exit: vals ?? [], tid: ic.threadId };
                if (!truthy((this.pred as Compiled)(env))) return;
            }
            b.off = end;
            b.records += held !== undefined ? 2 : 1;
            for (const a of src.addrs) flusher.symbols.note(a);
        } catch (e) {
            reportError(p.id, e);
        }
    }
}
