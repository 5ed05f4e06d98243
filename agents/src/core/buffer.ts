// Batching: the JS-tier batch, draining of the native ring, the flush timer,
// and the `batch` messages ({seq, records, drops} + binary records).

import { PlanOptions } from "../protocol.js";
import { NativeRing } from "../ctier/native.js";
import { Symbolizer } from "./symbols.js";
import { post, reportError } from "./util.js";

/**
 * The JS tier's batch: native memory (so the C clock can stamp timestamps
 * into it) viewed as an ArrayBuffer. JS callbacks run under the script lock,
 * so one writer at a time; a callback reserves nothing until it commits.
 */
export class JsBatch {
    readonly base: NativePointer;
    readonly cap: number;
    readonly u8: Uint8Array;
    // Aligned views (records and their fields are aligned; the targets are
    // little-endian): element access is much cheaper than DataView calls.
    readonly u16: Uint16Array;
    readonly u32: Uint32Array;
    readonly u64: BigUint64Array;
    off = 0;
    records = 0;

    constructor(bytes: number) {
        this.cap = Math.floor(bytes / 8) * 8;
        this.base = Memory.alloc(this.cap);
        const ab = ArrayBuffer.wrap(this.base, this.cap);
        this.u8 = new Uint8Array(ab);
        this.u16 = new Uint16Array(ab);
        this.u32 = new Uint32Array(ab);
        this.u64 = new BigUint64Array(ab);
    }

    /** Start over (after the records were copied out). */
    reset(): void {
        this.off = 0;
        this.records = 0;
    }
}

/** Batches sent but not yet acknowledged by the host, at most. */
const MAX_IN_FLIGHT = 16;

export class Flusher {
    readonly js: JsBatch;
    readonly ring: NativeRing;
    readonly symbols: Symbolizer;
    /** Where the native half and the JS batch are merged into one time-ordered batch. */
    private readonly merged: NativePointer;
    private seq = 0;
    /** The last batch the host has finished with (its "credit" message). */
    private acked = 0;
    private timer: ReturnType<typeof setTimeout> | null = null;
    private running = false;
    /** probe id -> drop slot, for probes armed in the native tier. */
    private readonly nativeSlots = new Map<number, number>();
    private readonly lastDrops: Record<string, number> = {};
    private sentDropTotal = 0;

    constructor(options: PlanOptions, nSlots: number) {
        const jsBytes = Math.max(128 * 1024, Math.min(Math.floor(options.buffer_bytes / 2), 4 * 1024 * 1024));
        this.js = new JsBatch(jsBytes);
        this.ring = new NativeRing(options, nSlots, this.js.base);
        this.merged = Memory.alloc(this.ring.cap + this.js.cap);
        this.symbols = new Symbolizer();
        this.listenForCredit();
    }

    /**
     * Backpressure: the host grants credit as it finishes batches. With
     * MAX_IN_FLIGHT batches unacknowledged the timer stops draining, the ring
     * fills, and producers block or drop (counted) by `on_full`, so a slow host
     * slows the target instead of queueing without bound. Forced flushes
     * (exit, crash, dispose, a full JS batch) send regardless.
     */
    private listenForCredit(): void {
        recv("credit", (message: { seq?: unknown }) => {
            if (typeof message.seq === "number" && message.seq > this.acked) this.acked = message.seq;
            this.listenForCredit();
        });
    }

    registerNative(probe: number, slot: number): void {
        this.nativeSlots.set(probe, slot);
    }

    /**
     * Drain every `intervalMs`, and again after 1 ms while the native ring
     * keeps filling up (so block mode waits less and drop mode drops less).
     */
    start(intervalMs: number): void {
        if (this.running) return;
        this.running = true;
        const tick = (): void => {
            this.timer = null;
            if (!this.running) return;
            if (this.seq - this.acked < MAX_IN_FLIGHT) {
                try {
                    this.periodic = true;
                    this.flushAll();
                } catch (e) {
                    reportError(null, e);
                } finally {
                    this.periodic = false;
                }
            } else {
                this.ring.lastFull = true; // look again in 1 ms: credit may have come
            }
            if (this.running) this.timer = setTimeout(tick, this.ring.lastFull ? 1 : Math.max(1, intervalMs));
        };
        this.timer = setTimeout(tick, Math.max(1, intervalMs));
    }

    stop(): void {
        this.running = false;
        if (this.timer !== null) clearTimeout(this.timer);
        this.timer = null;
    }

    lastSeq(): number {
        return this.seq;
    }

    private drops(): Record<string, number> {
        for (const [probe, slot] of this.nativeSlots) {
            const n = this.ring.dropped(slot);
            if (n > 0) this.lastDrops[String(probe)] = n;
        }
        return { ...this.lastDrops };
    }

    private sendBatch(data: ArrayBuffer, records: number): void {
        this.symbols.flush();
        this.seq++;
        const drops = this.drops();
        this.sentDropTotal = Object.values(drops).reduce((a, b) => a + b, 0);
        post("batch", { seq: this.seq, records, drops }, data);
    }

    /** The JS batch is full: send everything, so that batches stay in time order. */
    flushJs(): void {
        this.flushAll();
    }

    /**
     * Drain the native ring and the JS batch into ONE batch, merged by
     * timestamp: events of both tiers reach the host in the order they happened.
     */
    private flushRecords(): void {
        const d = this.ring.drain();
        if (d !== null && d.incomplete) reportError(null, new Error("native ring drained while a producer was still writing"));
        const jsLen = this.js.off;
        const jsRecords = this.js.records;
        const nLen = d === null ? 0 : d.len;
        if (d !== null && nLen > 0) this.symbols.scanNative(ArrayBuffer.wrap(d.base, nLen));
        let data: ArrayBuffer | null = null;
        if (nLen > 0 && jsLen > 0) {
            const total = this.ring.mergeFn(d!.base, nLen, this.js.base, jsLen, this.merged);
            data = this.merged.readByteArray(total);
        } else if (nLen > 0) {
            data = d!.base.readByteArray(nLen);
        } else if (jsLen > 0) {
            data = this.js.base.readByteArray(jsLen);
        }
        this.js.reset();
        const records = (d === null ? 0 : d.records) + jsRecords;
        if (data !== null && records > 0) this.sendBatch(data, records);
    }

    /** Also run `fn` on every flush (the syscall monitor); `periodic`: from the timer. */
    onFlush(fn: (periodic: boolean) => void): void {
        this.extra.push(fn);
    }

    private readonly extra: ((periodic: boolean) => void)[] = [];
    private periodic = false;

    /** Drain everything now; returns the last batch seq. */
    flushAll(): number {
        for (const fn of this.extra) {
            try {
                fn(this.periodic);
            } catch (e) {
                reportError(null, e);
            }
        }
        this.flushRecords();
        if (this.nativeSlots.size > 0) {
            // Drops that happened since the last batch still get reported.
            const total = Object.values(this.drops()).reduce((a, b) => a + b, 0);
            if (total !== this.sentDropTotal) this.sendBatch(new ArrayBuffer(0), 0);
        }
        return this.seq;
    }
}
