// In-target aggregations. Every aggregation is a table in memory the agent
// owns, updated by the host-generated C of the fast tier (instr/ctier) or,
// for the JS tier, by calling the same C runtime's agg_update with keys
// reduced to 64-bit words (strings and backtraces interned to ids). So both
// tiers share one arithmetic, one layout and one snapshot path: agg_compact
// copies the ready rows out and the host decodes them (instr/aggregate).

import { AggPlan, CapRef, FastFns, Plan, ProbePlan } from "../protocol.js";
import { AggSink, JsAgg } from "./aggjs.js";
import { Symbolizer } from "../core/symbols.js";
import { post } from "../core/util.js";
import { mayOverlap } from "../core/resolver.js";
import { jumpsIntoHead } from "../core/prologue.js";
import { ownCode, ownModule } from "../core/leave.js";
import * as hooks from "../core/hooks.js";
import { TOOL_C, armToolThreads, toolSymbols } from "../core/toolthread.js";

const HEADER = 64;
const FUNC_CODES: Record<string, number> = { count: 0, sum: 1, min: 2, max: 3, avg: 4, stddev: 5, quantize: 6, lquantize: 7, llquantize: 8 };
const SIGNED = new Set(["i8", "i16", "i32", "i64"]);
const STAGE_WORDS = 64 * 1024;

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

export class Aggregator implements AggSink {
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
    /** Probes whose replacement could not be installed at some site: listeners there. */
    readonly listened = new Set<number>();
    /** Probes whose functions another probe may hook too: never replaced (replaceFast excludes attach). */
    private readonly shared: Set<number>;

    constructor(
        plan: Plan,
        private readonly symbols: Symbolizer,
        /** Children followed: listeners only (PlanOptions.follow). */
        private readonly noReplace = false,
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
        // Replacements run on Frida's threads too: AGG_TOOL_THREAD leaves those calls out.
        const tool = toolSymbols();
        Object.assign(symbolsMap, tool);
        this.cm = new CModule(`${TOOL_C}\n#define AGG_TOOL_THREAD() tool_thread ()\n${fast.source}`, symbolsMap);
        ownModule(this.cm);
        armToolThreads(this.cm, tool.tool_state);
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
        this.shared = new Set(plan.probes.filter((p) => plan.probes.some((q) => q !== p && mayOverlap(p.point, q.point))).map((p) => p.id));
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
        if (a.llq !== null) {
            // runtime.c's agg_llqbucket: factor, steps, low and high magnitudes
            const [factor, low, high, steps] = a.llq;
            mem.add(32).writeS64(factor);
            mem.add(40).writeS64(steps);
            mem.add(48).writeU32(low);
            mem.add(52).writeU32(high);
        }
        this.keep.push(mem);
        return { plan: a, mem, cap, stride };
    }

    /** Hook one site of a probe for its aggregations; returns what undoes it. */
    attach(plan: ProbePlan, address: NativePointer, site: number): InvocationListener[] {
        if (plan.agg_tier === "fast") return this.attachFast(plan, address, site);
        return [hooks.attach(address, new JsAgg(this, plan).callbacks(site))];
    }

    private attachFast(plan: ProbePlan, address: NativePointer, site: number): InvocationListener[] {
        const f = this.fns[String(plan.id)];
        if (f === undefined) throw new Error("no generated code for this probe");
        const orig = this.origs.get(plan.id);
        if (!this.noReplace && f.replace !== null && orig !== undefined && site === 0 && plan.emit === false && !this.shared.has(plan.id)) {
            // replaceFast writes the trampoline before the change is
            // committed (at the end of this JS turn), so calls never see a
            // null original.
            try {
                if (jumpsIntoHead(address)) throw new Error("a jump lands inside the bytes replaceFast writes");
                const trampoline = Interceptor.replaceFast(address, this.cm[f.replace]);
                orig.writePointer(trampoline);
                ownCode(trampoline);
                return [revertOnDetach(address)];
            } catch {
                // No room for replaceFast's jump (read, lseek, getpid: short
                // or rip-relative prologues), or code jumps into the bytes it
                // writes (core/prologue.ts): the same C through listeners.
                this.listened.add(plan.id);
            }
        }
        const data = zalloc(8);
        data.writeU64(site);
        this.keep.push(data);
        const cb: { onEnter?: NativePointer; onLeave?: NativePointer } = {};
        if (f.enter !== null) cb.onEnter = this.cm[f.enter];
        if (f.leave !== null) cb.onLeave = this.cm[f.leave];
        return [hooks.attach(address, cb as NativeInvocationListenerCallbacks, data)];
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

