// `instr peek`: read memory at a symbol or an address. The agent only finds
// the address and returns raw bytes; the host decodes and formats them.

export interface PeekRequest {
    module: string | null;
    symbol: string | null;
    address: string | null;
    offset: number;
    /** Bytes to read; for a C string, the most to read before giving up on a NUL. */
    size: number;
    cstring: boolean;
}

export interface PeekResult {
    address: string;
    module: string | null;
    symbol: string | null;
    data: string; // hex
    truncated: boolean;
}

function findModule(name: string): Module {
    const exact = Process.findModuleByName(name);
    if (exact !== null) return exact;
    const matches = Process.enumerateModules().filter((m) => m.name.startsWith(name + ".") || m.name === name);
    if (matches.length === 1) return matches[0];
    const names = Process.enumerateModules().map((m) => m.name);
    throw new Error(`no module ${name} in the target (it has ${names.slice(0, 8).join(", ")}${names.length > 8 ? ", …" : ""})`);
}

function resolve(req: PeekRequest): [NativePointer, string | null, string | null] {
    if (req.address !== null) {
        const base = ptr(req.address);
        const mod = Process.findModuleByAddress(base);
        return [base.add(req.offset), mod?.name ?? null, null];
    }
    if (req.symbol === null) throw new Error("nothing to read: give module!symbol or an address");
    if (req.module !== null) {
        const mod = findModule(req.module);
        const at = mod.findExportByName(req.symbol) ?? mod.findSymbolByName(req.symbol);
        if (at === null) throw new Error(`no symbol ${req.symbol} in ${mod.name}`);
        return [at.add(req.offset), mod.name, req.symbol];
    }
    const exported = Module.findGlobalExportByName(req.symbol);
    if (exported !== null) return [exported.add(req.offset), Process.findModuleByAddress(exported)?.name ?? null, req.symbol];
    for (const mod of Process.enumerateModules()) {
        const at = mod.findSymbolByName(req.symbol);
        if (at !== null) return [at.add(req.offset), mod.name, req.symbol];
    }
    throw new Error(`no symbol ${req.symbol} in any module of the target`);
}

function hex(bytes: Uint8Array): string {
    let s = "";
    for (const b of bytes) s += (b < 16 ? "0" : "") + b.toString(16);
    return s;
}

/** Bytes at `at`, at most `size`, stopping after a NUL when `cstring`; never faults. */
function readSafely(at: NativePointer, size: number, cstring: boolean): [Uint8Array, boolean] {
    const page = Process.pageSize;
    const chunks: Uint8Array[] = [];
    let got = 0;
    let p = at;
    while (got < size) {
        const toPageEnd = page - Number(p.and(page - 1).toString());
        const len = Math.min(size - got, toPageEnd);
        const range = Process.findRangeByAddress(p);
        if (range === null || !range.protection.startsWith("r")) {
            if (got === 0) throw new Error(`cannot read ${at}: not mapped readable in the target`);
            return [concat(chunks, got), true];
        }
        const chunk = new Uint8Array(p.readByteArray(len) as ArrayBuffer);
        if (cstring) {
            const nul = chunk.indexOf(0);
            if (nul >= 0) {
                chunks.push(chunk.subarray(0, nul + 1));
                return [concat(chunks, got + nul + 1), false];
            }
        }
        chunks.push(chunk);
        got += len;
        p = p.add(len);
    }
    return [concat(chunks, got), cstring];
}

function concat(chunks: Uint8Array[], total: number): Uint8Array {
    const out = new Uint8Array(total);
    let off = 0;
    for (const c of chunks) {
        out.set(c, off);
        off += c.length;
    }
    return out;
}

export function peek(requests: PeekRequest[]): PeekResult[] {
    return requests.map((req) => {
        const [at, module, symbol] = resolve(req);
        const [bytes, truncated] = readSafely(at, Math.max(1, req.size), req.cstring);
        return { address: at.toString(), module, symbol, data: hex(bytes), truncated };
    });
}
