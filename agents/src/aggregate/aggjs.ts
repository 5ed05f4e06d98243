// The JS tier of aggregations: JavaScript callbacks reduce each hit to pairs
// of 32-bit words (strings and backtraces to interned ids) and stage them;
// the C runtime applies the stage in batches (see agg.ts).

import { AggPlan, ProbePlan } from "../protocol.js";
import { backtrace, readChunked } from "../probes/capture.js";
import { Compiled, Env, Value, compile, truthy } from "../probes/predicate.js";
import { decodeUtf8, reportError } from "../core/util.js";

const CSTR_KEY_MAX = 256;
const BACKTRACE_KEY_DEPTH = 16;

/** What the JS tier needs from the Aggregator. */
export interface AggSink {
    push(id: number, keys: number[], lo: number, hi: number): void;
    intern(s: string): number;
    internStack(frames: NativePointer[]): number;
    text(id: number): string | null;
    nowBig(): bigint;
}

/** Per-call state kept on the InvocationContext between onEnter and onLeave. */
interface AggCall {
    _aggSkip?: boolean;
    _aggEntry?: number[];
    _aggVals?: Value[];
    _aggArgs?: NativePointer[];
    _aggT0?: bigint;
}

type Cap = ProbePlan["entry"] extends (infer C)[] | null ? C : never;

const MASK32 = 0xffffffff;

/** Low and high 32 bits of a 64-bit value, as C will see it for type `t`. */
function wordsOf(p: NativePointer, t: string, out: number[]): void {
    switch (t) {
        case "i8": {
            const v = (p.toUInt32() << 24) >> 24;
            out.push(v >>> 0, v < 0 ? MASK32 : 0);
            return;
        }
        case "i16": {
            const v = (p.toUInt32() << 16) >> 16;
            out.push(v >>> 0, v < 0 ? MASK32 : 0);
            return;
        }
        case "i32": {
            const v = p.toInt32();
            out.push(v >>> 0, v < 0 ? MASK32 : 0);
            return;
        }
        case "u8":
            out.push(p.toUInt32() & 0xff, 0);
            return;
        case "u16":
            out.push(p.toUInt32() & 0xffff, 0);
            return;
        case "u32":
            out.push(p.toUInt32(), 0);
            return;
        case "bool":
            out.push((p.toUInt32() & 0xff) !== 0 ? 1 : 0, 0);
            return;
        default:
            out.push(p.toUInt32(), p.shr(32).toUInt32());
    }
}

function bigOfWords(lo: number, hi: number): bigint {
    return (BigInt(hi) << 32n) | BigInt(lo);
}

/** The value a predicate sees, from the two words of a capture of type `t`. */
function valueOfWords(lo: number, hi: number, t: string): bigint {
    const u = bigOfWords(lo, hi);
    return t === "i8" || t === "i16" || t === "i32" || t === "i64" || t === "duration" ? BigInt.asIntN(64, u) : u;
}

/**
 * The JS tier for one probe's aggregations: captures are reduced to pairs of
 * 32-bit words (strings and backtraces to interned ids) and staged; C applies
 * the staged updates in batches with the fast tier's arithmetic.
 */
export class JsAgg {
    private readonly pred: Compiled | null;
    private readonly wherePhase: "entry" | "exit" | null;
    private readonly entryAggs: AggPlan[];
    private readonly exitAggs: AggPlan[];
    private readonly needExit: boolean;
    private readonly needT0: boolean;
    private readonly exitArgs: number[];

    constructor(
        private readonly agg: AggSink,
        private readonly p: ProbePlan,
    ) {
        this.pred = p.where !== null ? compile(p.where.expr) : null;
        this.wherePhase = p.where?.phase ?? null;
        this.entryAggs = p.aggs.filter((a) => a.phase === "entry");
        this.exitAggs = p.aggs.filter((a) => a.phase === "exit");
        this.needExit = this.exitAggs.length > 0;
        const exitCaps = p.exit ?? [];
        this.needT0 = exitCaps.some((c) => c.src === "duration");
        this.exitArgs = exitCaps.filter((c) => c.src === "arg").map((c) => (c as { index: number }).index);
    }

    callbacks(site: number): ScriptInvocationListenerCallbacks {
        const self = this;
        const cb: ScriptInvocationListenerCallbacks = {
            onEnter(args) {
                self.enter(this as InvocationContext & AggCall, args, site);
            },
        };
        if (this.needExit) {
            cb.onLeave = function (retval) {
                self.leave(this as InvocationContext & AggCall, retval, site);
            };
        }
        return cb;
    }

    private enter(ic: InvocationContext & AggCall, args: InvocationArguments, site: number): void {
        try {
            const words: number[] = [];
            for (const c of this.p.entry ?? []) this.entryWords(c, ic, args, words);
            if (this.needT0) ic._aggT0 = this.agg.nowBig();
            if (this.exitArgs.length > 0) ic._aggArgs = this.exitArgs.map((i) => args[i]);
            let vals: Value[] = [];
            if (this.pred !== null) {
                vals = this.values(this.p.entry ?? [], words);
                if (this.wherePhase === "entry" && !this.test(vals, [], ic)) {
                    ic._aggSkip = true;
                    return;
                }
            }
            ic._aggEntry = words;
            ic._aggVals = vals;
            for (const a of this.entryAggs) this.stage(a, words, [], ic, site);
        } catch (e) {
            ic._aggSkip = true;
            reportError(this.p.id, e);
        }
    }

    private leave(ic: InvocationContext & AggCall, retval: InvocationReturnValue, site: number): void {
        if (ic._aggSkip === true) return;
        try {
            const entry = ic._aggEntry ?? [];
            const words: number[] = [];
            for (const c of this.p.exit ?? []) this.exitWords(c, ic, retval, words);
            if (this.wherePhase === "exit") {
                const exitVals = this.values(this.p.exit ?? [], words);
                if (!this.test(ic._aggVals ?? [], exitVals, ic)) return;
            }
            for (const a of this.exitAggs) this.stage(a, entry, words, ic, site);
        } catch (e) {
            reportError(this.p.id, e);
        }
    }

    private test(entry: Value[], exit: Value[], ic: InvocationContext): boolean {
        const env: Env = { entry, exit, tid: ic.threadId };
        return truthy((this.pred as Compiled)(env));
    }

    /** Predicate values: ints as bigint, strings and stacks by their interned text. */
    private values(caps: Cap[], words: number[]): Value[] {
        return caps.map((c, i) => {
            const lo = words[2 * i];
            const hi = words[2 * i + 1];
            if (c.src === "arg" && (c.type === "cstr" || c.type === "bytes")) return this.agg.text(lo);
            if (c.src === "backtrace") return null;
            const t = c.src === "arg" || c.src === "retval" ? c.type : c.src === "duration" ? "duration" : "u64";
            return valueOfWords(lo, hi, t);
        });
    }

    private entryWords(c: Cap, ic: InvocationContext, args: InvocationArguments, out: number[]): void {
        switch (c.src) {
            case "arg":
                return this.argWords(c, args[c.index], out);
            case "caller":
                return wordsOf(ic.returnAddress, "u64", out);
            case "backtrace":
                out.push(this.agg.internStack(backtrace(ic, c.depth > 0 ? c.depth : BACKTRACE_KEY_DEPTH)), 0);
                return;
            default:
                out.push(0, 0);
        }
    }

    private exitWords(c: Cap, ic: InvocationContext & AggCall, retval: InvocationReturnValue, out: number[]): void {
        switch (c.src) {
            case "retval":
                return wordsOf(retval, c.type, out);
            case "duration": {
                const d = ic._aggT0 === undefined ? 0n : BigInt.asUintN(64, this.agg.nowBig() - ic._aggT0);
                out.push(Number(d & 0xffffffffn), Number(d >> 32n));
                return;
            }
            case "caller":
                return wordsOf(ic.returnAddress, "u64", out);
            case "arg": {
                const p = (ic._aggArgs ?? [])[this.exitArgs.indexOf(c.index)];
                if (p === undefined) {
                    out.push(0, 0);
                    return;
                }
                return this.argWords(c, p, out);
            }
            case "backtrace":
                out.push(this.agg.internStack(backtrace(ic, c.depth > 0 ? c.depth : BACKTRACE_KEY_DEPTH)), 0);
                return;
            default:
                out.push(0, 0);
        }
    }

    private argWords(c: Cap & { src: "arg" }, p: NativePointer, out: number[]): void {
        if (c.type === "cstr" || c.type === "bytes") {
            out.push(this.agg.intern(readCstr(p, c.type === "cstr" ? c.max : 0)), 0);
            return;
        }
        wordsOf(p, c.type, out);
    }

    private stage(a: AggPlan, entry: number[], exit: number[], ic: InvocationContext, site: number): void {
        const keys: number[] = [];
        for (const k of a.keys) {
            switch (k.src) {
                case "capture": {
                    const list = k.phase === "exit" ? exit : entry;
                    const j = 2 * (k.index ?? 0);
                    keys.push(list[j] ?? 0, list[j + 1] ?? 0);
                    break;
                }
                case "tid":
                    keys.push(ic.threadId >>> 0, 0);
                    break;
                case "pid":
                    keys.push(Process.id >>> 0, 0);
                    break;
                case "probefunc":
                case "module":
                    keys.push(site >>> 0, 0);
                    break;
                default:
                    keys.push(0, 0);
            }
        }
        let lo = 0;
        let hi = 0;
        if (a.arg !== null) {
            const list = a.arg.phase === "exit" ? exit : entry;
            lo = list[2 * a.arg.index] ?? 0;
            hi = list[2 * a.arg.index + 1] ?? 0;
        }
        this.agg.push(a.id, keys, lo, hi);
    }
}

function readCstr(p: NativePointer, max: number): string {
    if (p.isNull()) return "\u0000null";
    const r = readChunked(p, max > 0 ? Math.min(max, CSTR_KEY_MAX) : CSTR_KEY_MAX, true);
    return decodeUtf8(r.data);
}
