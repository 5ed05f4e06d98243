// The native tier: one static C source, compiled once per session by CModule
// (TinyCC). It is never templated: everything a probe needs is data in a
// per-site descriptor that JS allocates and passes as the listener's data.
//
// Records go into a two-half ring (multi-producer, single consumer):
//   producer: e = epoch; b = e & 1; inflight[b]++; if epoch != e: undo, retry.
//             off = reserved[b] += size; if it fits: write the record.
//             Otherwise the half is full: the first reservation that does not
//             fit writes a u16 0 end mark at its offset; then drop (counted per
//             probe) or, in block mode, wait until the consumer flips the
//             epoch and retry. inflight[b]--.
//   consumer: reset the other half, epoch++ (a locked add: a full barrier, so
//             a producer either sees the new epoch or is counted in
//             inflight[b]), wait for inflight[b] == 0, then walk the records
//             from 0 up to the end mark / min(reserved, cap). Successful
//             reservations are always a prefix of the half: once one fails,
//             every later one starts past the end. So no record is torn, and
//             in block mode none is lost.
// Counters are 32-bit (CModule's glib only has g_atomic_int_add), hence
// halves below 1 GiB.

import { PlanOptions, ProbePlan } from "../protocol.js";
import { Layout } from "../core/layout.js";
import { C_SOURCE } from "./native_c.js";
import { ownCode, ownModule } from "../core/leave.js";
import { FAST_STUBS } from "./fast_c.js";
import { recoverAt } from "../core/faults.js";
import { writeProgram } from "./where.js";
import * as hooks from "../core/hooks.js";
import { armToolThreads, toolSymbols } from "../core/toolthread.js";

// Byte offsets of the C structs in native_c.ts (layout_check() verifies the sizes).
const RING_SIZE = 112;
const R_DROP_MODE = 4;
const R_OWNER_PID = 16;
const R_CAP = 36;
const R_BUF = 40;
const R_DROPS = 56;
const R_JSBUF = 64;
const R_OUT_LEN = 72;
const R_OUT_COUNT = 76;

const DESC_SIZE = 256;
const D_PROBE = 0;
const D_SITE = 4;
const D_SLOT = 8;
const D_ENTRY_SIZE = 12;
const D_EXIT_SIZE = 14;
const D_N_ENTRY = 16;
const D_N_EXIT = 17;
const D_N_STASH = 18;
const D_NEED_INV = 19;
const D_ENTRY_KIND = 20;
const D_ENTRY_IDX = 36;
const D_EXIT_KIND = 52;
const D_EXIT_IDX = 68;
const D_STASH_IDX = 84;
const D_ENTRY_MAX = 100;
const D_EXIT_MAX = 132;
const D_ENTRY_VAR = 164;
const D_EXIT_VAR = 180;
const D_ENTRY_LENIDX = 196;
const D_EXIT_LENIDX = 212;
const D_WHERE_PHASE = 228;
const D_VAR_ENTRY = 229;
const D_VAR_EXIT = 230;
const D_NCAP_ENTRY = 231;
const D_NCAP_EXIT = 232;
const D_HOLD = 233;
const D_PROG = 240;
const D_PROG_LEN = 248;
const V_CSTR = 1;
const V_BYTES = 2;
const V_BACKTRACE = 3;
const LEN_CONST = 0xff;

export const K_ARG = 1;
export const K_RETVAL = 2;
export const K_CALLER = 3;
export const K_DURATION = 4;
export const K_STASHED = 5;

/** One raw 64-bit value collected by C: an argument, the return value, ... */
export interface ValueSpec {
    kind: number;
    idx: number; // argument index (K_ARG) or stash position (K_STASHED)
}

export interface ValueLists {
    entry: ValueSpec[];
    exit: ValueSpec[];
}

/** Native tier: one value per capture, in plan order, then the lengths of bytes(argN) captures. */
export function nativeValues(p: ProbePlan, layout: Layout): ValueLists {
    const entry = (p.entry ?? []).map((c) => (c.src === "arg" ? { kind: K_ARG, idx: c.index } : { kind: K_CALLER, idx: 0 }));
    const exit = (p.exit ?? []).map((c): ValueSpec => {
        if (c.src === "arg") return { kind: K_STASHED, idx: layout.stash.indexOf(c.index) };
        if (c.src === "retval") return { kind: K_RETVAL, idx: 0 };
        if (c.src === "duration") return { kind: K_DURATION, idx: 0 };
        return { kind: K_CALLER, idx: 0 };
    });
    for (const c of p.entry ?? []) {
        if (c.src === "arg" && c.type === "bytes" && "arg" in c.len) entry.push({ kind: K_ARG, idx: c.len.arg });
    }
    for (const c of p.exit ?? []) {
        if (c.src === "arg" && c.type === "bytes" && "arg" in c.len) exit.push({ kind: K_STASHED, idx: layout.stash.indexOf(c.len.arg) });
    }
    return { entry, exit };
}

// The JS tier's staging table (see Stage in native_c.ts).
const STAGE_SLOTS = 4096; // a power of two
const STAGE_SIZE = 152;
const STAGE_WORDS = STAGE_SIZE / 4;
const STAGE_PROBES = 16;
/** Word offsets inside a slot: tid, claim, ts (2 words), then v[] (2 words each). */
export const SW_TS = 2;
export const SW_V = 4;

const SWAP_SPIN_LIMIT = 200000;

/** Memory.alloc() does not promise zeroed memory; the ring and descriptors need it. */
function zalloc(size: number): NativePointer {
    const p = Memory.alloc(size);
    p.writeByteArray(new ArrayBuffer(size));
    return p;
}

export interface Drained {
    /** The drained half, in place: valid until the next drain. */
    base: NativePointer;
    len: number;
    records: number;
    /** Producers were still writing when the wait gave up (should not happen). */
    incomplete: boolean;
}

/** Bytes at a function's start that replaceFast may move aside. */
const PROLOGUE = 16;

/**
 * Whether a function's first PROLOGUE bytes are straight-line code that
 * refers to nothing by rip. Gum's replaceFast moves the first instructions
 * aside, and measured here it broke a function that starts `test; je`
 * (tests/targets/calls.c target_buf: the call crashed, with a bare C
 * replacement too); listeners relocate it fine, so such functions keep one.
 */
function straightPrologue(address: NativePointer): boolean {
    let at = address;
    try {
        while (at.sub(address).toInt32() < PROLOGUE) {
            const insn = Instruction.parse(at) as X86Instruction;
            if (insn.groups.some((g) => g === "jump" || g === "call" || g === "ret" || g === "int" || g === "branch_relative")) return false;
            if (insn.operands.some((o) => o.type === "mem" && o.value.base === "rip")) return false;
            at = insn.next;
        }
    } catch {
        return false;
    }
    return true;
}

export class NativeRing {
    readonly cm: CModule;
    readonly cap: number;
    private readonly state: NativePointer;
    private readonly bufs: NativePointer[];
    private readonly drops: NativePointer;
    private readonly nSlots: number;
    private readonly swapFn: NativeFunction<number, [number]>;
    private readonly stopFn: NativeFunction<void, []>;
    readonly mergeFn: NativeFunction<number, [NativePointer, number, NativePointer, number, NativePointer]>;
    /** Writes a record header but its size at `jsBase + off` (JS tier). */
    readonly head: NativeFunction<void, [number, number, number, number]>;
    /** The last drained half had filled up (producers dropped or waited). */
    lastFull = false;
    /** The JS tier's staging table and its views. */
    readonly stage: NativePointer;
    readonly st32: Uint32Array;
    readonly st64: BigUint64Array;
    /** Descriptors must outlive their listeners: never freed. */
    private readonly keep: NativePointer[] = [];
    /** The stubs' slots (descriptor, original), FastSlot in fast_c.ts; never freed. */
    private readonly fastSlots = zalloc(16 * FAST_STUBS);
    private fastUsed = 0;

    constructor(options: PlanOptions, nSlots: number, jsBase: NativePointer) {
        const total = Math.max(128 * 1024, Math.min(options.buffer_bytes, 1 << 30));
        this.cap = Math.floor(total / 2 / 8) * 8;
        this.nSlots = Math.max(1, nSlots);
        this.state = zalloc(RING_SIZE);
        this.bufs = [Memory.alloc(this.cap), Memory.alloc(this.cap)];
        this.drops = zalloc(4 * this.nSlots);
        this.state.add(R_DROP_MODE).writeS32(options.on_full === "drop" ? 1 : 0);
        this.state.add(R_OWNER_PID).writeS32(Process.id);
        this.state.add(R_CAP).writeS32(this.cap);
        this.state.add(R_BUF).writePointer(this.bufs[0]);
        this.state.add(R_BUF + 8).writePointer(this.bufs[1]);
        this.state.add(R_DROPS).writePointer(this.drops);
        this.state.add(R_JSBUF).writePointer(jsBase);
        this.stage = zalloc(STAGE_SLOTS * STAGE_SIZE);
        const stageAb = ArrayBuffer.wrap(this.stage, STAGE_SLOTS * STAGE_SIZE);
        this.st32 = new Uint32Array(stageAb);
        this.st64 = new BigUint64Array(stageAb);
        const tool = toolSymbols(); // the entry stubs run on Frida's threads too
        this.cm = new CModule(C_SOURCE, {
            ...tool,
            ring: this.state,
            clock_gettime: Module.getGlobalExportByName("clock_gettime"),
            sched_yield: Module.getGlobalExportByName("sched_yield"),
            gettid: Module.getGlobalExportByName("gettid"),
            getpid: Module.getGlobalExportByName("getpid"),
            // Slots of ended threads are taken over when a new thread finds none free.
            tgkill: Module.findGlobalExportByName("tgkill") ?? Module.getGlobalExportByName("sched_yield"),
            fast_slots: this.fastSlots,
        });
        ownModule(this.cm);
        armToolThreads(this.cm, tool.tool_state);
        recoverAt(this.cm.instr_safe_copy_load, this.cm.instr_safe_copy_fault);
        const check = new NativeFunction(this.cm.layout_check, "int", [])();
        if (check !== RING_SIZE * 100000 + STAGE_SIZE * 1000 + DESC_SIZE) throw new Error(`native layout mismatch (${check})`);
        const stageOff = new NativeFunction(this.cm.ring_stage_offset, "int", [])();
        this.state.add(stageOff).writePointer(this.stage);
        this.state.add(stageOff + Process.pointerSize).writeS32(STAGE_SLOTS);
        const exclusive = { scheduling: "exclusive" as const };
        this.swapFn = new NativeFunction(this.cm.ring_swap, "int", ["int"], exclusive);
        this.stopFn = new NativeFunction(this.cm.ring_stop, "void", [], exclusive);
        this.mergeFn = new NativeFunction(
            this.cm.merge_records,
            "int",
            ["pointer", "int", "pointer", "int", "pointer"],
            exclusive,
        );
        this.head = new NativeFunction(this.cm.js_head, "void", ["uint32", "uint32", "uint32", "uint32"], exclusive);
        new NativeFunction(this.cm.ring_setup, "void", [])();
    }

    /** A descriptor for one site of a native-tier probe: one slot per capture. */
    descriptor(p: ProbePlan, layout: Layout, slot: number, site: number): NativePointer {
        const vals = nativeValues(p, layout);
        const entrySize = p.entry === null ? 0 : layout.maxEntry;
        const exitSize = p.exit === null ? 0 : layout.maxExit;
        const d = this.makeDescriptor(p.id, site, slot, entrySize, exitSize, vals, layout);
        // C strings and bytes (and a predicate) make a record that C builds, tests, then writes.
        const varSlots = (caps: ProbePlan["entry"], at: { max: number; kind: number; len: number }): number => {
            let extra = (caps ?? []).length; // bytes(argN) lengths follow the captures
            let n = 0;
            (caps ?? []).forEach((c, i) => {
                if (c.src === "backtrace") {
                    n++;
                    d.add(at.max + 2 * i).writeU16(c.depth);
                    d.add(at.kind + i).writeU8(V_BACKTRACE);
                    return;
                }
                if (c.src !== "arg" || (c.type !== "cstr" && c.type !== "bytes")) return;
                n++;
                d.add(at.max + 2 * i).writeU16(c.max);
                d.add(at.kind + i).writeU8(c.type === "cstr" ? V_CSTR : V_BYTES);
                if (c.type === "bytes") d.add(at.len + i).writeU8("arg" in c.len ? extra++ : LEN_CONST);
            });
            return n;
        };
        const nVarEntry = varSlots(p.entry, { max: D_ENTRY_MAX, kind: D_ENTRY_VAR, len: D_ENTRY_LENIDX });
        const nVarExit = varSlots(p.exit, { max: D_EXIT_MAX, kind: D_EXIT_VAR, len: D_EXIT_LENIDX });
        d.add(D_NCAP_ENTRY).writeU8((p.entry ?? []).length);
        d.add(D_NCAP_EXIT).writeU8((p.exit ?? []).length);
        const where = p.where;
        const wherePhase = where === null ? 0 : where.phase === "entry" ? 1 : 2;
        d.add(D_WHERE_PHASE).writeU8(wherePhase);
        d.add(D_VAR_ENTRY).writeU8(wherePhase === 1 || nVarEntry > 0 ? 1 : 0);
        d.add(D_VAR_EXIT).writeU8(wherePhase === 2 || nVarExit > 0 ? 1 : 0);
        if (where !== null) {
            if (where.native === undefined || where.native === null) throw new Error("the predicate has no native program");
            const prog = writeProgram(where.native, this.keep);
            d.add(D_PROG).writePointer(prog.code);
            d.add(D_PROG_LEN).writeU32(prog.length);
        }
        // The entry's skip flag lives in the invocation data.
        if (wherePhase === 1 && layout.hookExit) d.add(D_NEED_INV).writeU8(1);
        // An exit predicate: the entry record waits there until it decides.
        if (wherePhase === 2 && p.entry !== null) {
            d.add(D_HOLD).writeU8(1);
            d.add(D_VAR_ENTRY).writeU8(1);
            d.add(D_NEED_INV).writeU8(1);
        }
        return d;
    }

    /** A descriptor for the JS tier's native pre-listener (staged values). */
    stageDescriptor(p: ProbePlan, layout: Layout, site: number, vals: ValueLists): NativePointer {
        return this.makeDescriptor(p.id, site, 0, 0, 0, vals, layout);
    }

    private makeDescriptor(
        probe: number,
        site: number,
        slot: number,
        entrySize: number,
        exitSize: number,
        vals: ValueLists,
        layout: Layout,
    ): NativePointer {
        const d = zalloc(DESC_SIZE);
        d.add(D_PROBE).writeU32(probe);
        d.add(D_SITE).writeU32(site);
        d.add(D_SLOT).writeU32(slot);
        d.add(D_ENTRY_SIZE).writeU16(entrySize);
        d.add(D_EXIT_SIZE).writeU16(exitSize);
        d.add(D_N_ENTRY).writeU8(vals.entry.length);
        d.add(D_N_EXIT).writeU8(vals.exit.length);
        d.add(D_N_STASH).writeU8(layout.stash.length);
        d.add(D_NEED_INV).writeU8(layout.needEntryTs || layout.stash.length > 0 ? 1 : 0);
        vals.entry.forEach((v, i) => {
            d.add(D_ENTRY_KIND + i).writeU8(v.kind);
            d.add(D_ENTRY_IDX + i).writeU8(v.idx);
        });
        vals.exit.forEach((v, i) => {
            d.add(D_EXIT_KIND + i).writeU8(v.kind);
            d.add(D_EXIT_IDX + i).writeU8(v.idx);
        });
        layout.stash.forEach((a, i) => d.add(D_STASH_IDX + i).writeU8(a));
        this.keep.push(d);
        return d;
    }

    /** The JS tier's pre-listener, attached before the JS callbacks. */
    attachStage(address: NativePointer, layout: Layout, desc: NativePointer): InvocationListener {
        const cb: { onEnter?: NativePointer; onLeave?: NativePointer } = {};
        if (layout.hookEntry) cb.onEnter = this.cm.js_pre_enter as NativePointer;
        if (layout.hookExit) cb.onLeave = this.cm.js_pre_leave as NativePointer;
        return hooks.attach(address, cb as NativeInvocationListenerCallbacks, desc);
    }

    /** Word (u32) index of thread `tid`'s staging slot, or -1 (same probing as C). */
    stageSlot(tid: number): number {
        const st = this.st32;
        const mask = STAGE_SLOTS - 1;
        // No early stop at a free slot: this thread's slot may be one taken
        // over from an ended thread, after a free one in the probe sequence.
        for (let i = 0; i < STAGE_PROBES; i++) {
            const w = ((tid + i) & mask) * STAGE_WORDS;
            if (st[w] === tid) return w;
        }
        return -1;
    }

    /**
     * An entry-only probe's site without a listener: replaceFast to one of the
     * fixed stubs (fast_c.ts). Null when no stub is free or Gum cannot replace
     * the function there (then attach() it).
     */
    replaceFast(address: NativePointer, desc: NativePointer): InvocationListener | null {
        if (Process.arch !== "x64" || this.fastUsed >= FAST_STUBS || !straightPrologue(address)) return null;
        const i = this.fastUsed;
        const slot = this.fastSlots.add(16 * i);
        slot.writePointer(desc);
        let trampoline: NativePointer;
        try {
            // The replacement goes live at the end of this JS turn, after the
            // original's address is in its slot.
            trampoline = Interceptor.replaceFast(address, this.cm[`fast_stub_${i}`] as NativePointer);
        } catch {
            return null;
        }
        slot.add(Process.pointerSize).writePointer(trampoline);
        ownCode(trampoline);
        this.fastUsed++;
        return {
            detach(): void {
                Interceptor.revert(address);
            },
        };
    }

    attach(address: NativePointer, layout: Layout, desc: NativePointer): InvocationListener {
        const cb: { onEnter?: NativePointer; onLeave?: NativePointer } = {};
        if (layout.hookEntry) cb.onEnter = this.cm.on_enter as NativePointer;
        if (layout.hookExit) cb.onLeave = this.cm.on_leave as NativePointer;
        return hooks.attach(address, cb as NativeInvocationListenerCallbacks, desc);
    }

    /** Flip halves; the finished records of the old one stay in place until the next drain. */
    drain(): Drained | null {
        const r = this.swapFn(SWAP_SPIN_LIMIT);
        const b = r & 1;
        this.lastFull = (r & 4) !== 0;
        const len = this.state.add(R_OUT_LEN).readS32();
        if (len <= 0) return null;
        return { base: this.bufs[b], len, records: this.state.add(R_OUT_COUNT).readS32(), incomplete: (r & 2) !== 0 };
    }

    /** Cumulative records dropped for the probe in drop slot `slot`. */
    dropped(slot: number): number {
        return slot < this.nSlots ? this.drops.add(4 * slot).readS32() : 0;
    }

    /** Release producers blocked in block mode and make them return at once. */
    stop(): void {
        this.stopFn();
    }
}
