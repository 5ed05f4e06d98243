// In-target aggregations. Every aggregation is a table in memory the agent
// owns, updated by the host-generated C of the fast tier (instr/ctier) or,
// for the JS tier, by calling the same C runtime's agg_update with keys
// reduced to 64-bit words (strings and backtraces interned to ids). So both
// tiers share one arithmetic, one layout and one snapshot path: agg_compact
// copies the ready rows out and the host decodes them (instr/aggregate).

import { AggPlan, CapRef, FastFns, Plan, ProbePlan } from "./protocol.js";
import { backtrace, readChunked } from "./capture.js";
import { Compiled, Env, Value, compile, truthy } from "./predicate.js";
import { Symbolizer } from "./symbols.js";
import { decodeUtf8, post, reportError } from "./util.js";

const HEADER = 64;
const FUNC_CODES: Record<string, number> = { count: 0, sum: 1, min: 2, max: 3, avg: 4, stddev: 5, quantize: 6, lquantize: 7 };
const SIGNED = new Set(["i8", "i16", "i32", "i64"]);
const STAGE_WORDS = 64 * 1024;
const CSTR_KEY_MAX = 256;
const BACKTRACE_KEY_DEPTH = 16;

function zalloc(size: number): NativePointer {
    const p = Memory.alloc(size);
    p.writeByteArray(new ArrayBuffer(size));
    return p;
}

function pow2AtLeast(n: number): number {
    let c = 1;
    while (c < n) c *= 2;
    return c;
}

function isSigned(ref: CapRef | null): boolean {
    return ref !== null && (ref.csrc === "duration" || SIGNED.has(ref.type));
}

interface Table {
    plan: AggPlan;
    mem: NativePointer;
    cap: number;
    stride: number; // 64-bit words per row, without the state word
}

/** A pseudo-listener that undoes an Interceptor.replaceFast. */
function revertOnDetach(address: NativePointer): InvocationListener {
    return {
        detach(): void {
            Interceptor.revert(address);
        },
    };
}

export class Aggregator {
    private readonly cm: CModule;
    private readonly tables = new Map<number, Table>();
    private readonly order: Table[] = [];
    private readonly fns: Record<string, FastFns>;
    private readonly origs = new Map<number, NativePointer>();
    private readonly applyFn: NativeFunction<void, [NativePointer, NativePointer, number]>;
    private readonly stageMem: NativePointer;
    private readonly stage: Uint32Array;
    private stagePos = 0;
    /** agg id -> table, for agg_apply_staged. */
    private readonly tableIndex: NativePointer;
    private readonly compact: NativeFunction<number, [NativePointer, NativePointer]>;
    readonly now: NativeFunction<UInt64, []>;
    private readonly strings = new Map<string, number>();
    private readonly texts: string[] = [];
    private newStrings: Record<string, string> = {};
    private newStacks: Record<string, string[]> = {};
    private readonly keep: NativePointer[] = [];
    private seq = 0;
    private finalSent = false;
    /** Points hooked by more than one probe: never replaced (replaceFast excludes attach). */
    private readonly shared: Set<string>;

    constructor(
        plan: Plan,
        private readonly symbols: Symbolizer,
    ) {
        const fast = plan.fast_c;
        if (fast === null) throw new Error("no aggregation runtime in the plan");
        this.fns = fast.probes;
        const state = zalloc(64);
        const symbolsMap: CSymbols = {
            agg_state: state,
            agg_clock_gettime: Module.getGlobalExportByName("clock_gettime"),
            agg_gettid: Module.getGlobalExportByName("gettid"),
        };
        state.add(Process.pointerSize).writeU32(Process.id);
        for (const p of plan.probes) {
            for (const a of p.aggs) {
                const t = this.allocTable(a);
                this.tables.set(a.id, t);
                this.order.push(t);
                symbolsMap[`agg_t${a.id}`] = t.mem;
            }
            const f = this.fns[String(p.id)];
            if (f !== undefined && f.replace !== null) {
                const slot = zalloc(8);
                this.origs.set(p.id, slot);
                symbolsMap[`agg_orig_p${p.id}`] = slot;
            }
        }
        this.cm = new CModule(fast.source, symbolsMap);
        new NativeFunction(this.cm.agg_setup, "void", [])();
        const ready = new NativeFunction(this.cm.agg_table_ready, "void", ["pointer"]);
        for (const t of this.order) ready(t.mem);
        // exclusive: the JS lock stays held, so no JS callback touches the stage meanwhile
        this.applyFn = new NativeFunction(this.cm.agg_apply_staged, "void", ["pointer", "pointer", "uint32"], { scheduling: "exclusive" });
        this.stageMem = zalloc(4 * STAGE_WORDS);
        this.stage = new Uint32Array(ArrayBuffer.wrap(this.stageMem, 4 * STAGE_WORDS));
        const maxId = Math.max(0, ...this.order.map((t) => t.plan.id));
        this.tableIndex = zalloc(8 * (maxId + 1));
        for (const t of this.order) this.tableIndex.add(8 * t.plan.id).writePointer(t.mem);
        this.compact = new NativeFunction(this.cm.agg_compact, "int", ["pointer", "pointer"]);
        this.now = new NativeFunction(this.cm.agg_now, "uint64", []);
        const seen = new Map<string, number>();
        for (const p of plan.probes) {
            const k = JSON.stringify(p.point);
            seen.set(k, (seen.get(k) ?? 0) + 1);
        }
        this.shared = new Set([...seen].filter(([, n]) => n > 1).map(([k]) => k));
    }

    private allocTable(a: AggPlan): Table {
        const cap = a.keys.length === 0 ? 1 : pow2AtLeast(2 * a.max_keys);
        const stride = a.keys.length + a.nvals;
        const mem = zalloc(HEADER + cap * (1 + stride) * 8);
        mem.writeU32(a.keys.length);
        mem.add(4).writeU32(a.nvals);
        mem.add(8).writeU32(cap);
        mem.add(12).writeU32(a.max_keys);
        mem.add(24).writeU32(FUNC_CODES[a.func]);
        mem.add(28).writeU32(isSigned(a.arg) ? 1 : 0);
        if (a.lq !== null) {
            const [low, high, step] = a.lq;
            mem.add(32).writeS64(low);
            mem.add(40).writeS64(step);
            mem.add(48).writeU32(Math.ceil((high - low) / step));
        }
        this.keep.push(mem);
        return { plan: a, mem, cap, stride };
    }

    /** Hook one site of a probe for its aggregations; returns what undoes it. */
    attach(plan: ProbePlan, address: NativePointer, site: number): InvocationListener[] {
        if (plan.agg_tier === "fast") return this.attachFast(plan, address, site);
        return [Interceptor.attach(address, new JsAgg(this, plan).callbacks(site))];
    }

    private attachFast(plan: ProbePlan, address: NativePointer, site: number): InvocationListener[] {
        const f = this.fns[String(plan.id)];
        if (f === undefined) throw new Error("no generated code for this probe");
        const orig = this.origs.get(plan.id);
        if (f.replace !== null && orig !== undefined && site === 0 && plan.emit === false && !this.shared.has(JSON.stringify(plan.point))) {
            // replaceFast writes the trampoline before the change is
            // committed (at the end of this JS turn), so calls never see a
            // null original.
            const trampoline = Interceptor.replaceFast(address, this.cm[f.replace]);
            orig.writePointer(trampoline);
            return [revertOnDetach(address)];
        }
        const data = zalloc(8);
        data.writeU64(site);
        this.keep.push(data);
        const cb: { onEnter?: NativePointer; onLeave?: NativePointer } = {};
        if (f.enter !== null) cb.onEnter = this.cm[f.enter];
        if (f.leave !== null) cb.onLeave = this.cm[f.leave];
        return [Interceptor.attach(address, cb as NativeInvocationListenerCallbacks, data)];
    }

    nowBig(): bigint {
        return BigInt(this.now().toString());
    }

    /**
     * The JS tier's update, staged: [id, nkeys, key words (lo, hi)..., value lo, hi].
     * C applies the stage in one call when it fills up and before each snapshot.
     */
    push(id: number, keys: number[], lo: number, hi: number): void {
        const st = this.stage;
        if (this.stagePos + keys.length + 4 > st.length) this.applyStage();
        let i = this.stagePos;
        st[i++] = id;
        st[i++] = keys.length >> 1;
        for (let j = 0; j < keys.length; j++) st[i++] = keys[j];
        st[i++] = lo;
        st[i++] = hi;
        this.stagePos = i;
    }

    private applyStage(): void {
        if (this.stagePos === 0) return;
        this.applyFn(this.tableIndex, this.stageMem, this.stagePos);
        this.stagePos = 0;
    }

    intern(s: string): number {
        let id = this.strings.get(s);
        if (id === undefined) {
            id = this.strings.size + 1;
            this.strings.set(s, id);
            this.texts[id] = s;
            this.newStrings[String(id)] = s;
        }
        return id;
    }

    /** The text of an interned id (predicates compare strings). */
    text(id: number): string | null {
        const s = this.texts[id];
        return s === undefined || s === "\u0000null" ? null : s;
    }

    internStack(frames: NativePointer[]): number {
        const addrs = frames.map((f) => f.toString());
        const key = "\u0000stack:" + addrs.join(",");
        let id = this.strings.get(key);
        if (id === undefined) {
            id = this.strings.size + 1;
            this.strings.set(key, id);
            this.newStacks[String(id)] = addrs;
            for (const a of addrs) this.symbols.note(a);
        }
        return id;
    }

    /** Send every table's rows; `final` only once. */
    snapshot(final: boolean): void {
        if (this.finalSent) return;
        if (final) this.finalSent = true;
        this.applyStage();
        const parts: ArrayBuffer[] = [];
        const tables: { id: number; rows: number; overflow: number }[] = [];
        let total = 0;
        for (const t of this.order) {
            const out = Memory.alloc(Math.max(8, t.cap * t.stride * 8));
            const rows = this.compact(t.mem, out);
            const bytes = rows * t.stride * 8;
            const ab = bytes > 0 ? (out.readByteArray(bytes) as ArrayBuffer) : new ArrayBuffer(0);
            this.noteCallers(t, ab, rows);
            parts.push(ab);
            total += bytes;
            tables.push({ id: t.plan.id, rows, overflow: t.mem.add(20).readS32() });
        }
        const data = new Uint8Array(total);
        let off = 0;
        for (const ab of parts) {
            data.set(new Uint8Array(ab), off);
            off += ab.byteLength;
        }
        this.symbols.flush();
        const strings = this.newStrings;
        const stacks = this.newStacks;
        this.newStrings = {};
        this.newStacks = {};
        post(
            "aggs",
            { seq: this.seq++, ts: this.now().toString(), final, execname: execName(), tables, strings, stacks },
            data.buffer,
        );
    }

    /** Caller keys are symbolised on the host: send their symbols first. */
    private noteCallers(t: Table, ab: ArrayBuffer, rows: number): void {
        const want = t.plan.keys.map((k, i) => (k.src === "capture" && k.csrc === "caller" ? i : -1)).filter((i) => i >= 0);
        if (want.length === 0 || rows === 0) return;
        const u64 = new BigUint64Array(ab);
        for (let r = 0; r < rows; r++) {
            for (const i of want) this.symbols.note("0x" + u64[r * t.stride + i].toString(16));
        }
    }
}

function execName(): string {
    try {
        return Process.mainModule.name;
    } catch {
        return "?";
    }
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
class JsAgg {
    private readonly pred: Compiled | null;
    private readonly wherePhase: "entry" | "exit" | null;
    private readonly entryAggs: AggPlan[];
    private readonly exitAggs: AggPlan[];
    private readonly needExit: boolean;
    private readonly needT0: boolean;
    private readonly exitArgs: number[];

    constructor(
        private readonly agg: Aggregator,
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
