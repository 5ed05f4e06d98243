// Symbolisation off the hot path. Captured `caller`/`backtrace` addresses are
// collected while records are written (JS tier) or when the native ring is
// drained, and the new ones are resolved and sent in a `symbols` message
// before the batch that uses them.
//
// Each address maps to [module, symbol, offset]: the offset is from the
// symbol's start when the symbol (and its start) is known, else from the
// module's base, else the absolute address (module and symbol null).

import { HEADER_SIZE, OFF_PHASE, OFF_PROBE, OFF_SIZE, PHASE_ENTRY, SLOT_SIZE, VAR_HEADER_SIZE, pad8 } from "../protocol.js";
import { post } from "./util.js";

export type SymbolTriple = [string | null, string | null, number];

/** Byte offsets, inside a native record, of the `caller` slots, per phase. */
/** A capture's slot in a native record: 8 bytes, a C string or bytes, or a backtrace. */
export const SLOT_INT = 0;
export const SLOT_VAR = 1;
export const SLOT_BACKTRACE = 2;

/**
 * Where a native probe's addresses are in its records, per phase: each
 * capture's slot kind (8 bytes; 8 + its padded length; 8 + 8 per frame) and
 * the capture indices of callers. Every frame of a backtrace is noted too.
 */
export interface PhaseSlots {
    kinds: number[];
    callers: number[];
}

export interface CallerSlots {
    entry: PhaseSlots;
    exit: PhaseSlots;
}

const startCache = new Map<string, NativePointer | null>();

function symbolStart(mod: Module, name: string, address: NativePointer): NativePointer | null {
    const key = mod.name + "!" + name;
    let start = startCache.get(key);
    if (start === undefined) {
        start = null;
        try {
            start = mod.findExportByName(name) ?? mod.findSymbolByName(name);
        } catch {
            start = null;
        }
        startCache.set(key, start);
    }
    if (start !== null && address.compare(start) >= 0) return start;
    const range = Process.findFunctionRange(address);
    return range !== null ? range.base : null;
}

/** Resolve one address to [module, symbol, offset]. */
export function resolveAddress(address: NativePointer): SymbolTriple {
    let mod: Module | null = null;
    try {
        mod = Process.findModuleByAddress(address);
    } catch {
        mod = null;
    }
    let name: string | null = null;
    try {
        const ds = DebugSymbol.fromAddress(address);
        if (ds.name !== null && ds.name !== "" && !ds.name.startsWith("0x")) name = ds.name;
    } catch {
        name = null;
    }
    if (name !== null) {
        // Without debug info the name comes as "symbol+0x85".
        const m = /^(.+)\+0x([0-9a-fA-F]+)$/.exec(name);
        if (m !== null) return [mod?.name ?? null, m[1], parseInt(m[2], 16)];
    }
    if (mod === null) return [null, name, name === null ? Number(address.toString()) : 0];
    if (name !== null) {
        const start = symbolStart(mod, name, address);
        if (start !== null) return [mod.name, name, address.sub(start).toInt32()];
        name = null;
    }
    return [mod.name, null, address.sub(mod.base).toInt32()];
}

const startsFunction = new Map<string, boolean>();

/**
 * Is `address` the first instruction of a named function? A return address
 * never is (the call before it is in the same function), but a pointer to a
 * function left on the stack is: `main`, which `__libc_start_main` keeps in
 * its frame, read back by a stack-scanning backtrace as a frame of its own.
 */
export function isFunctionStart(address: NativePointer): boolean {
    const key = address.toString();
    let known = startsFunction.get(key);
    if (known === undefined) {
        let triple: SymbolTriple;
        try {
            triple = resolveAddress(address);
        } catch {
            triple = [null, null, 1];
        }
        known = triple[1] !== null && triple[2] === 0;
        if (startsFunction.size >= 1 << 16) startsFunction.clear();
        startsFunction.set(key, known);
    }
    return known;
}

/** "module!symbol+0x1f", for crash reports. */
export function formatAddress(address: NativePointer): string {
    const [mod, sym, off] = resolveAddress(address);
    if (mod === null && sym === null) return address.toString();
    const where = sym !== null ? `${mod ?? "?"}!${sym}` : mod ?? "?";
    return off !== 0 ? `${where}+0x${off.toString(16)}` : where;
}

export class Symbolizer {
    private readonly known = new Set<string>();
    private pending = new Set<string>();
    /** probe id -> caller slot offsets, for native-tier probes with a caller capture. */
    private readonly nativeCallers = new Map<number, CallerSlots>();

    /** Note an address (as NativePointer.toString() writes it). */
    note(addr: string): void {
        if (!this.known.has(addr)) this.pending.add(addr);
    }

    /** Register a native-tier probe whose records carry caller addresses. */
    watchNative(probe: number, slots: CallerSlots): void {
        const addresses = (p: PhaseSlots): boolean => p.callers.length > 0 || p.kinds.includes(SLOT_BACKTRACE);
        if (addresses(slots.entry) || addresses(slots.exit)) this.nativeCallers.set(probe, slots);
    }

    /** Collect caller addresses from drained native records. */
    scanNative(data: ArrayBuffer): void {
        if (this.nativeCallers.size === 0) return;
        const dv = new DataView(data);
        const end = data.byteLength;
        let off = 0;
        while (off + HEADER_SIZE <= end) {
            const size = dv.getUint16(off + OFF_SIZE, true);
            if (size < HEADER_SIZE || off + size > end) break;
            const slots = this.nativeCallers.get(dv.getUint32(off + OFF_PROBE, true));
            if (slots !== undefined) {
                const ph = dv.getUint8(off + OFF_PHASE) === PHASE_ENTRY ? slots.entry : slots.exit;
                let at = HEADER_SIZE;
                for (let i = 0; i < ph.kinds.length && at + SLOT_SIZE <= size; i++) {
                    const kind = ph.kinds[i];
                    if (kind === SLOT_INT) {
                        if (ph.callers.includes(i)) this.note("0x" + dv.getBigUint64(off + at, true).toString(16));
                        at += SLOT_SIZE;
                        continue;
                    }
                    const n = dv.getUint32(off + at, true);
                    if (kind === SLOT_VAR) {
                        at += VAR_HEADER_SIZE + pad8(n);
                        continue;
                    }
                    for (let k = 0; k < n && at + VAR_HEADER_SIZE + 8 * (k + 1) <= size; k++) {
                        this.note("0x" + dv.getBigUint64(off + at + VAR_HEADER_SIZE + 8 * k, true).toString(16));
                    }
                    at += VAR_HEADER_SIZE + 8 * n;
                }
            }
            off += size;
        }
    }

    /** Resolve and send what is new; call before sending the batch. */
    flush(): void {
        if (this.pending.size === 0) return;
        const map: Record<string, SymbolTriple> = {};
        for (const a of this.pending) {
            this.known.add(a);
            try {
                map[a] = resolveAddress(ptr(a));
            } catch {
                map[a] = [null, null, 0];
            }
        }
        this.pending = new Set<string>();
        post("symbols", { map });
    }
}

/** The `symbolize` RPC. */
export function symbolize(addresses: string[]): Record<string, SymbolTriple> {
    const out: Record<string, SymbolTriple> = {};
    for (const a of addresses) {
        try {
            out[a] = resolveAddress(ptr(a));
        } catch {
            out[a] = [null, null, 0];
        }
    }
    return out;
}
