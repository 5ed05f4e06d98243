// instr dtrace -l: what each function point matches, without arming anything.
// The same resolution as arming (core/resolver.ts), so the list is what would be hooked.

import { Point } from "../protocol.js";
import { resolvePoint } from "../core/resolver.js";

export interface ListedSite {
    module: string | null;
    symbol: string | null;
    address: string;
}

export interface Listed {
    state: "sites" | "pending" | "failed";
    sites: ListedSite[];
    reason: string | null;
}

export function listPoints(points: Point[]): Listed[] {
    return points.map((point) => {
        const r = resolvePoint(point);
        if (r.kind !== "sites") return { state: r.kind, sites: [], reason: r.reason };
        const sites = r.sites.map((s) => ({ module: s.module, symbol: s.symbol, address: s.address.toString() }));
        return { state: "sites", sites, reason: null };
    });
}
