// The JS tier: Interceptor callbacks in JS that write the same binary records
// as the native tier into the JS batch. Everything works here: C strings,
// bytes, backtraces, predicates. A record is written at the batch's current
// offset and only committed (offset advanced) when its predicate holds.

import { FLAG_NO_ENTRY, HEADER_SIZE, OFF_PROBE, OFF_SIZE, OFF_TS, PHASE_ENTRY, PHASE_EXIT, ProbePlan } from "../protocol.js";
import { JsBatch } from "../core/buffer.js";
import { NativeRing, SW_TS } from "../ctier/native.js";
import { Flusher } from "../core/buffer.js";
import { NO_ARGS, StagePlan, Writer, captureWriter, scratch, stagePlan } from "./capture.js";
import { Layout } from "../core/layout.js";
import { Compiled, Env, Value, compile, maxCapIndex, truthy } from "./predicate.js";
import { reportError } from "../core/util.js";

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
    /** What the native pre-listener stages for this probe (null: none). */
    readonly stage: StagePlan | null;

    constructor(
        private readonly p: ProbePlan,
        private readonly layout: Layout,
        private readonly flusher: Flusher,
        framePointers = false,
    ) {
        this.stage = stagePlan(p, layout);
        scratch.stage = flusher.ring.stage;
        scratch.st32 = flusher.ring.st32;
        scratch.st64 = flusher.ring.st64;
        const none = { j: -1, jl: -1 };
        this.entryW = (p.entry ?? []).map((c, i) => captureWriter(c, "entry", layout, this.stage?.entry[i] ?? none, framePointers));
        this.exitW = (p.exit ?? []).map((c, i) => captureWriter(c, "exit", layout, this.stage?.exit[i] ?? none));
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

    /**
     * The record header but its size. Staged: tid and timestamp come from the
     * native pre-listener's slot. Otherwise one C call writes them. Returns
     * the slot (or -1).
     */
    private head(b: JsBatch, off: number, ic: InvocationContext, site: number, phaseFlags: number): number {
        const ring: NativeRing = this.flusher.ring;
        const sw = this.stage !== null ? ring.stageSlot(ic.threadId) : -1;
        if (sw < 0) {
            ring.head(off, this.p.id, site, phaseFlags);
            return -1;
        }
        const k = off >> 2;
        const st = ring.st32;
        b.u16[(off >> 1) + 1] = phaseFlags;
        b.u32[(off + OFF_PROBE) >> 2] = this.p.id;
        b.u32[k + 2] = site;
        b.u32[k + 3] = st[sw];
        b.u32[k + 4] = st[sw + SW_TS];
        b.u32[k + 5] = st[sw + SW_TS + 1];
        return sw;
    }

    private enter(ic: InvocationContext & CallState, args: InvocationArguments, site: number): void {
        const { p, layout, flusher } = this;
        try {
            const b = flusher.js;
            if (b.off + layout.maxEntry + HEADER_SIZE > b.cap) flusher.flushJs();
            const off = b.off;
            const sw = this.head(b, off, ic, site, PHASE_ENTRY);
            if (sw < 0) {
                // Not staged: keep what the exit needs ourselves.
                if (layout.stash.length > 0) ic._instrArgs = layout.stash.map((i) => args[i]);
                if (layout.needEntryTs) ic._instrT0 = b.u64[(off + OFF_TS) >> 3];
            }
            if (p.entry === null && this.pred === null) return;
            const vals: Value[] | null = this.pred !== null ? [] : null;
            let end = off;
            const src = scratch;
            src.args = args;
            src.ic = ic;
            src.sw = sw;
            src.addrs.length = 0;
            if (p.entry !== null) {
                end = off + HEADER_SIZE;
                const w = this.entryW;
                for (let i = 0; i < w.length; i++) end = w[i](b, end, src, vals, i);
                b.u16[(off + OFF_SIZE) >> 1] = end - off;
            }
            if (this.wherePhase === "entry") {
                if (!truthy((this.pred as Compiled)({ entry: vals ?? [], exit: [], tid: ic.threadId }))) {
                    ic._instrSkip = true;
                    return;
                }
            } else if (this.wherePhase === "exit") {
                if (p.entry !== null) {
                    ic._instrHeld = b.u8.slice(off, end);
                    ic._instrVals = vals ?? [];
                    this.note(src.addrs);
                }
                return;
            }
            if (p.entry !== null) {
                b.off = end;
                b.records++;
                if (src.addrs.length > 0) this.note(src.addrs);
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
            const sw = this.head(b, off, ic, site, PHASE_EXIT);
            let duration = 0n;
            if (sw < 0 && layout.needEntryTs) {
                const t0 = ic._instrT0;
                if (t0 === undefined) b.u8[off + 3] = FLAG_NO_ENTRY;
                else duration = b.u64[(off + OFF_TS) >> 3] - t0;
            }
            const src = scratch;
            src.args = ic._instrArgs ?? NO_ARGS;
            src.ic = ic;
            src.sw = sw;
            src.retval = retval;
            src.duration = duration;
            src.addrs.length = 0;
            const vals: Value[] | null = this.pred !== null ? [] : null;
            let end = off + HEADER_SIZE;
            const w = this.exitW;
            for (let i = 0; i < w.length; i++) end = w[i](b, end, src, vals, i);
            b.u16[(off + OFF_SIZE) >> 1] = end - off;
            src.retval = null;
            if (this.wherePhase === "exit") {
                const env: Env = { entry: ic._instrVals ?? [], exit: vals ?? [], tid: ic.threadId };
                if (!truthy((this.pred as Compiled)(env))) return;
            }
            b.off = end;
            b.records += held !== undefined ? 2 : 1;
            if (src.addrs.length > 0) this.note(src.addrs);
        } catch (e) {
            reportError(p.id, e);
        }
    }

    private note(addrs: string[]): void {
        for (const a of addrs) this.flusher.symbols.note(a);
    }
}
