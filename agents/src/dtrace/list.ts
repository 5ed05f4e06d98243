// instr dtrace -l: what each function point matches, without arming anything.
// The same resolution as arming (core/resolver.ts), so the list is what would be hooked.
// A point may carry `insn_offset` (pid$target:MOD:FUNC:OFFSET): each site then says
// where that instruction is, relative to its module, or why there is none.

import { Point } from "../protocol.js";
import { resolvePoint } from "../core/resolver.js";

export interface ListedSite {
    module: string | null;
    symbol: string | null;
    address: string;
    /** insn_offset: the instruction's offset in its module (null: see `why`). */
    offset?: number | null;
    why?: string | null;
}

export interface Listed {
    state: "sites" | "pending" | "failed";
    sites: ListedSite[];
    reason: string | null;
}

type Query = Point & { insn_offset?: number };

const hex = (n: number): string => "0x" + n.toString(16);

/** The function's size from its module's symbol table (undefined when not known). */
function symbolSize(m: Module, address: NativePointer): number | undefined {
    for (const s of m.enumerateSymbols()) {
        if (s.size !== undefined && s.size > 0 && s.address.equals(address)) return s.size;
    }
    return undefined;
}

/** Walk the function's instructions from its start to `offset`: a hook must start one. */
function instructionAt(address: NativePointer, symbol: string, offset: number): ListedSite {
    const m = Process.findModuleByAddress(address);
    const out: ListedSite = { module: m?.name ?? null, symbol, address: address.toString(), offset: null, why: null };
    if (m === null) {
        out.why = `${symbol} is not in a module`;
        return out;
    }
    const size = symbolSize(m, address);
    if (size !== undefined && offset >= size) {
        out.why = `offset ${hex(offset)} is past the end of ${symbol} (${size} bytes)`;
        return out;
    }
    let at = 0;
    let last = 0;
    try {
        while (at < offset) {
            last = at;
            const insn = Instruction.parse(address.add(at));
            at += insn.size;
        }
    } catch (e) {
        out.why = `cannot decode ${symbol}+${hex(at)}: ${e instanceof Error ? e.message : String(e)}`;
        return out;
    }
    if (at !== offset) {
        out.why = `offset ${hex(offset)} is inside an instruction of ${symbol}: instructions start at ${hex(last)} and ${hex(at)}`;
        return out;
    }
    out.offset = address.sub(m.base).toUInt32() + offset;
    return out;
}

export function listPoints(points: Query[]): Listed[] {
    return points.map((point) => {
        const r = resolvePoint(point);
        if (r.kind !== "sites") return { state: r.kind, sites: [], reason: r.reason };
        const off = point.insn_offset;
        const sites = r.sites.map((s) =>
            off === undefined
                ? { module: s.module, symbol: s.symbol, address: s.address.toString() }
                : instructionAt(s.address, s.symbol ?? s.address.toString(), off),
        );
        return { state: "sites", sites, reason: null };
    });
}
