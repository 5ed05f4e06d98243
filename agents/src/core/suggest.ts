// "Did you mean …?" for points that match nothing: the closest names by edit distance.

/** Levenshtein distance, giving up (returning limit + 1) once it exceeds `limit`. */
export function distance(a: string, b: string, limit: number): number {
    if (Math.abs(a.length - b.length) > limit) return limit + 1;
    let prev = new Array<number>(b.length + 1);
    let cur = new Array<number>(b.length + 1);
    for (let j = 0; j <= b.length; j++) prev[j] = j;
    for (let i = 1; i <= a.length; i++) {
        cur[0] = i;
        let best = cur[0];
        for (let j = 1; j <= b.length; j++) {
            const cost = a.charCodeAt(i - 1) === b.charCodeAt(j - 1) ? 0 : 1;
            cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost);
            if (cur[j] < best) best = cur[j];
        }
        if (best > limit) return limit + 1;
        [prev, cur] = [cur, prev];
    }
    return prev[b.length];
}

/** Up to `n` candidates closest to `pattern` (glob characters ignored), best first. */
export function closest(pattern: string, candidates: Iterable<string>, n = 3): string[] {
    const needle = pattern.replace(/[*?[\]]/g, "").toLowerCase();
    if (needle.length === 0) return [];
    const limit = Math.max(1, Math.floor(needle.length / 3));
    const scored: [number, string][] = [];
    const seen = new Set<string>();
    for (const c of candidates) {
        if (seen.has(c)) continue;
        seen.add(c);
        const lc = c.toLowerCase();
        const d = lc.includes(needle) ? 0.5 : distance(needle, lc, limit);
        if (d <= limit) scored.push([d, c]);
    }
    scored.sort((x, y) => x[0] - y[0] || x[1].length - y[1].length || (x[1] < y[1] ? -1 : 1));
    return scored.slice(0, n).map((s) => s[1]);
}

/** Function names (exported and from the symbol table) of the given modules, as module!name. */
export function functionNames(modules: Module[]): Map<string, string> {
    const names = new Map<string, string>(); // bare name -> module!name
    for (const m of modules) {
        try {
            for (const e of m.enumerateExports()) if (e.type === "function") names.set(e.name, `${m.name}!${e.name}`);
        } catch {
            // a module without readable exports: symbols below
        }
        try {
            for (const s of m.enumerateSymbols()) if (s.type === "function" && !s.address.isNull()) names.set(s.name, `${m.name}!${s.name}`);
        } catch {
            // no symbol table
        }
    }
    return names;
}

export function didYouMean(options: string[]): string {
    return options.length === 0 ? "" : `; did you mean ${options.map((o) => `'${o}'`).join(", ")}?`;
}
