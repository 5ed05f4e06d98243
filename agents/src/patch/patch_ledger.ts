// The patch ledger, kept in the target so that a later controller (a new
// script, after the first was eternalized) can list and revert patches.
//
// It lives in a small named shared-memory file (memfd "instr-patch-ledger"),
// mapped privately: /proc/PID/maps and Process.enumerateRanges() show it by
// name, so any script finds it without knowing an address, and a fork()ed
// child gets its own copy. Layout: 8-byte magic, u32 length, u32 reserved,
// then that many bytes of JSON ({next_id, owners, entries}).
//
// Each script that owns hook-based patches registers a "doorbell": a
// NativeCallback taking a JSON request and returning a JSON reply. Another
// script calls it to revert hooks it cannot undo itself (Interceptor state
// belongs to the script that installed it).

import { LedgerEntry } from "./patch_types.js";

const NAME = "instr-patch-ledger";
const MAGIC = "INSTRPL1";
const SIZE = 1 << 20;
const HEADER = 16;

export interface LedgerData {
    next_id: number;
    owners: Record<string, string>; // owner key -> doorbell address
    entries: LedgerEntry[];
}

function libc(name: string, ret: NativeFunctionReturnType, args: NativeFunctionArgumentType[]): unknown {
    return new NativeFunction(Module.getGlobalExportByName(name), ret, args);
}

/** The ledger's mapping in this process, if some script created it. */
function find(): NativePointer | null {
    for (const r of Process.enumerateRanges({ protection: "rw-", coalesce: false })) {
        const path = r.file?.path ?? "";
        if (!path.includes(`memfd:${NAME}`) || r.size < HEADER) continue;
        try {
            if (r.base.readUtf8String(MAGIC.length) === MAGIC) return r.base;
        } catch {
            continue;
        }
    }
    return null;
}

function create(): NativePointer {
    if (Process.platform !== "linux") {
        throw new Error(`the in-target patch ledger needs Linux (memfd_create); this is ${Process.platform}`);
    }
    const memfd = libc("memfd_create", "int", ["pointer", "uint"]) as (n: NativePointer, f: number) => number;
    const ftruncate = libc("ftruncate", "int", ["int", "long"]) as (fd: number, n: number) => number;
    const mmap = libc("mmap", "pointer", ["pointer", "size_t", "int", "int", "int", "long"]) as (
        a: NativePointer,
        n: number,
        prot: number,
        flags: number,
        fd: number,
        off: number,
    ) => NativePointer;
    const close = libc("close", "int", ["int"]) as (fd: number) => number;
    const MFD_CLOEXEC = 1;
    const fd = memfd(Memory.allocUtf8String(NAME), MFD_CLOEXEC);
    if (fd < 0) throw new Error("memfd_create failed: cannot create the in-target patch ledger");
    try {
        if (ftruncate(fd, SIZE) !== 0) throw new Error("ftruncate failed on the patch ledger");
        const PROT_RW = 3;
        const MAP_PRIVATE = 2;
        const base = mmap(NULL, SIZE, PROT_RW, MAP_PRIVATE, fd, 0);
        if (base.equals(ptr(-1))) throw new Error("mmap failed: cannot map the patch ledger");
        base.writeUtf8String(MAGIC);
        write(base, { next_id: 1, owners: {}, entries: [] });
        return base;
    } finally {
        close(fd);
    }
}

function read(base: NativePointer): LedgerData {
    const n = base.add(8).readU32();
    const text = n > 0 ? base.add(HEADER).readUtf8String(n) : null;
    return text ? (JSON.parse(text) as LedgerData) : { next_id: 1, owners: {}, entries: [] };
}

function write(base: NativePointer, data: LedgerData): void {
    const text = JSON.stringify(data);
    const bytes = Memory.allocUtf8String(text);
    // UTF-8 length: the allocated string is NUL-terminated.
    let n = 0;
    while (bytes.add(n).readU8() !== 0) n++;
    if (HEADER + n + 1 > SIZE) throw new Error("the in-target patch ledger is full; revert some patches first");
    base.add(8).writeU32(0); // a reader never sees half a document as whole
    Memory.copy(base.add(HEADER), bytes, n + 1);
    base.add(8).writeU32(n);
}

/** Access to the one ledger of this process. Every method re-reads it: other scripts change it too. */
export class Ledger {
    private base: NativePointer | null = null;

    private mapping(create_: boolean): NativePointer | null {
        if (this.base === null) this.base = find();
        if (this.base === null && create_) this.base = create();
        return this.base;
    }

    exists(): boolean {
        return this.mapping(false) !== null;
    }

    read(): LedgerData {
        const base = this.mapping(false);
        return base === null ? { next_id: 1, owners: {}, entries: [] } : read(base);
    }

    /** Read, change and write back (scripts run one request at a time: see docs/patching.md). */
    update<T>(change: (d: LedgerData) => T): T {
        const base = this.mapping(true) as NativePointer;
        const data = read(base);
        const out = change(data);
        write(base, data);
        return out;
    }
}
