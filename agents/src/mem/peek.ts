// `instr peek` / `instr poke`: read or write memory at a symbol or an address.
// The agent only finds the address and moves raw bytes; the host encodes,
// decodes and formats them.

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

export interface PokeRequest extends PeekRequest {
    /** The new bytes, hex; `size` is ignored. */
    data: string;
}

export interface PokeResult extends PeekResult {
    /** The bytes before the write, hex (`data` holds the bytes read back after it). */
    old: string;
}

function unhex(s: string): Uint8Array {
    const out = new Uint8Array(s.length >> 1);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
    return out;
}

/** Every byte of [at, at+n) is writable data: not code (that is `instr patch`), not read-only. */
function checkWritable(at: NativePointer, n: number): void {
    let p = at;
    const end = at.add(n);
    while (p.compare(end) < 0) {
        const r = Process.findRangeByAddress(p);
        if (r === null) throw new Error(`cannot write ${p}: not mapped in the target`);
        const what = r.file !== undefined ? ` in ${r.file.path}` : "";
        if (r.protection.includes("x")) {
            throw new Error(`${p} is code (${r.protection}${what}); poke writes data: use 'instr patch --bytes' for code`);
        }
        if (!r.protection.startsWith("rw")) throw new Error(`${p} is not writable (${r.protection}${what}); refusing to write`);
        p = r.base.add(r.size);
    }
}

export function poke(requests: PokeRequest[]): PokeResult[] {
    return requests.map((req) => {
        const [at, module, symbol] = resolve(req);
        const data = unhex(req.data);
        if (data.length === 0) throw new Error("nothing to write");
        checkWritable(at, data.length);
        const old = new Uint8Array(at.readByteArray(data.length) as ArrayBuffer);
        at.writeByteArray(data.buffer as ArrayBuffer);
        const now = new Uint8Array(at.readByteArray(data.length) as ArrayBuffer);
        return { address: at.toString(), module, symbol, old: hex(old), data: hex(now), truncated: false };
    });
}
