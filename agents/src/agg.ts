// In-target aggregations. Every aggregation is a table in memory the agent
// owns, updated by the host-generated C of the fast tier (instr/ctier) or,
// for the JS tier, by calling the same C runtime's agg_update with keys
// reduced to 64-bit words (strings and backtraces interned to ids). So both
// tiers share one arithmetic, one layout and one snapshot path: agg_compact
// copies the ready rows out and the host decodes them (instr/aggregate).

import { AggPlan, CapRef, FastFns, IntType, Plan, ProbePlan } from "./protocol.js";
import { backtrace, readChunked, typed } from "./capture.js";
import { Compiled, Env, Value, compile, truthy } from "./predicate.js";
import { Symbolizer } from "./symbols.js";
import { decodeUtf8, post, reportError } from "./util.js";

const HEADER = 64;
const FUNC_CODES: Record<string, number> = { count: 0, sum: 1, min: 2, max: 3, avg: 4, stddev: 5, quantize: 6, lquantize: 7 };
const SIGNED = new Set(["i8", "i16", "i32", "i64"]);
const MAX_KEYS_WORDS = 8;
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
    private readonly update: NativeFunction<void, [NativePointer, NativePointer, UInt64 | number]>;
    private readonly compact: NativeFunction<number, [NativePointer, NativePointer]>;
    readonly now: NativeFunction<UInt64, []>;
    private readonly keyBuf: NativePointer;
    private readonly strings = new Map<string, number>();
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
        // exclusive: the key buffer is shared, and the JS lock must stay held during the call
        this.update = new NativeFunction(this.cm.agg_update, "void", ["pointer", "pointer", "uint64"], { scheduling: "exclusive" });
        this.compact = new NativeFunction(this.cm.agg_compact, "int", ["pointer", "pointer"]);
        this.now = new NativeFunction(this.cm.agg_now, "uint64", []);
        this.keyBuf = zalloc(8 * MAX_KEYS_WORDS);
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

    /** The JS tier's update: keys as 64-bit words. */
    apply(id: number, keys: bigint[], x: bigint): void {
        const t = this.tables.get(id);
        if (t === undefined) return;
        for (let i = 0; i < keys.length; i++) this.keyBuf.add(8 * i).writeU64(uint64(BigInt.asUintN(64, keys[i]).toString()));
        this.update(t.mem, this.keyBuf, uint64(BigInt.asUintN(64, x).toString()));
    }

    intern(s: string): bigint {
        let id = this.strings.get(s);
        if (id === undefined) {
            id = this.strings.size + 1;
            this.strings.set(s, id);
            this.newStrings[String(id)] = s;
        }
        return BigInt(id);
    }

    internStack(frames: NativePointer[]): bigint {
        const addrs = frames.map((f) => f.toString());
        const key = "\u0000stack:" + addrs.join(",");
        let id = this.strings.get(key);
        if (id === undefined) {
            id = this.strings.size + 1;
            this.strings.set(key, id);
            this.newStacks[String(id)] = addrs;
            for (const a of addrs) this.symbols.note(a);
        }
        return BigInt(id);
    }

    /** Send every table's rows; `final` only once. */
    snapshot(final: boolean): void {
        if (this.finalSent) return;
        if (final) this.finalSent = true;
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
    _aggEntry?: Value[];
    _aggArgs?: NativePointer[];
    _aggT0?: bigint;
}

function bigOf(p: NativePointer): bigint {
    return BigInt(p.toString());
}

/** The JS tier for one probe's aggregations. */
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
            const vals = (this.p.entry ?? []).map((c) => this.entryValue(c, ic, args));
            if (this.needT0) ic._aggT0 = BigInt(this.agg.now().toString());
            if (this.exitArgs.length > 0) ic._aggArgs = this.exitArgs.map((i) => args[i]);
            if (this.wherePhase === "entry" && !this.test(vals, [], ic)) {
                ic._aggSkip = true;
                return;
            }
            ic._aggEntry = vals;
            for (const a of this.entryAggs) this.update(a, vals, [], ic, site);
        } catch (e) {
            ic._aggSkip = true;
            reportError(this.p.id, e);
        }
    }

    private leave(ic: InvocationContext & AggCall, retval: InvocationReturnValue, site: number): void {
        if (ic._aggSkip === true) return;
        try {
            const entry = ic._aggEntry ?? [];
            const exit = (this.p.exit ?? []).map((c) => this.exitValue(c, ic, retval));
            if (this.wherePhase === "exit" && !this.test(entry, exit, ic)) return;
            for (const a of this.exitAggs) this.update(a, entry, exit, ic, site);
        } catch (e) {
            reportError(this.p.id, e);
        }
    }

    private test(entry: Value[], exit: Value[], ic: InvocationContext): boolean {
        const env: Env = { entry, exit, tid: ic.threadId };
        return truthy((this.pred as Compiled)(env));
    }

    private entryValue(c: ProbePlan["entry"] extends (infer C)[] | null ? C : never, ic: InvocationContext, args: InvocationArguments): Value {
        switch (c.src) {
            case "arg":
                if (c.type === "cstr") return readCstr(args[c.index]);
                if (c.type === "bytes") return null; // not a key: the compiler refuses it
                return typed(c.type as IntType, bigOf(args[c.index]));
            case "caller":
                return bigOf(ic.returnAddress);
            case "backtrace":
                return backtrace(ic, c.depth > 0 ? c.depth : BACKTRACE_KEY_DEPTH).map(bigOf);
            default:
                return null;
        }
    }

    private exitValue(c: ProbePlan["entry"] extends (infer C)[] | null ? C : never, ic: InvocationContext & AggCall, retval: InvocationReturnValue): Value {
        switch (c.src) {
            case "retval":
                return typed(c.type, bigOf(retval));
            case "duration":
                return ic._aggT0 === undefined ? 0n : BigInt(this.agg.now().toString()) - ic._aggT0;
            case "caller":
                return bigOf(ic.returnAddress);
            case "arg": {
                const saved = ic._aggArgs ?? [];
                const p = saved[this.exitArgs.indexOf(c.index)];
                if (p === undefined) return null;
                if (c.type === "cstr") return readCstr(p);
                if (c.type === "bytes") return null;
                return typed(c.type as IntType, bigOf(p));
            }
            case "backtrace":
                return backtrace(ic, c.depth > 0 ? c.depth : BACKTRACE_KEY_DEPTH).map(bigOf);
            default:
                return null;
        }
    }

    private ref(r: Partial<CapRef>, entry: Value[], exit: Value[]): Value {
        const list = r.phase === "exit" ? exit : entry;
        return list[r.index ?? 0] ?? null;
    }

    private update(a: AggPlan, entry: Value[], exit: Value[], ic: InvocationContext, site: number): void {
        const keys: bigint[] = [];
        for (const k of a.keys) {
            switch (k.src) {
                case "capture": {
                    const v = this.ref(k, entry, exit);
                    keys.push(this.keyWord(v));
                    break;
                }
                case "tid":
                    keys.push(BigInt(ic.threadId));
                    break;
                case "pid":
                    keys.push(BigInt(Process.id));
                    break;
                case "probefunc":
                case "module":
                    keys.push(BigInt(site));
                    break;
                default:
                    keys.push(0n);
            }
        }
        let x = 0n;
        if (a.arg !== null) {
            const v = this.ref(a.arg, entry, exit);
            x = typeof v === "bigint" ? v : typeof v === "number" ? BigInt(v) : 0n;
        }
        this.agg.apply(a.id, keys, x);
    }

    private keyWord(v: Value): bigint {
        if (typeof v === "bigint") return v;
        if (typeof v === "number") return BigInt(v);
        if (typeof v === "boolean") return v ? 1n : 0n;
        if (typeof v === "string") return this.agg.intern(v);
        if (Array.isArray(v)) return this.agg.internStack(v.map((a) => ptr("0x" + a.toString(16))));
        return this.agg.intern("\u0000null");
    }
}

function readCstr(p: NativePointer): string | null {
    if (p.isNull()) return null;
    const r = readChunked(p, CSTR_KEY_MAX, true);
    return decodeUtf8(r.data);
}
