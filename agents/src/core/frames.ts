// Backtraces by frame-pointer walk, and whether a module keeps frame pointers.
//
// The walk is the one the native tier's C does (copy_backtrace in
// ctier/record_c.ts), step for step, so both tiers give the same frames: the
// return address, then from the caller's frame pointer (rbp at the hooked
// function's entry) each saved return address, while frame pointers go up the
// stack by less than MAX_FRAME and the memory reads. It is only chosen where
// the hooked function's module keeps frame pointers; elsewhere Frida's
// unwinder (probes/capture.ts backtrace) runs in JS.

export const MAX_FRAME = 1 << 20; // BT_MAX_FRAME in record_c.ts
const MIN_RET = 0x10000;
const SAMPLE = 64; // functions looked at per module
// Share of them with the frame-pointer prologue. Leaf functions may omit it
// even when built with frame pointers (they are never a caller in a walk);
// code built without them has it only where a function needs a frame (alloca).
const NEEDED = 0.5;
// The C runtime's start-up code, linked into every program whatever its flags.
const CRT = new Set([
    "_start",
    "_init",
    "_fini",
    "frame_dummy",
    "register_tm_clones",
    "deregister_tm_clones",
    "__do_global_dtors_aux",
    "__libc_csu_init",
    "__libc_csu_fini",
]);

const cache = new Map<string, boolean>();

/** x86_64 `push rbp; mov rbp, rsp` (after an optional endbr64). */
function framePrologue(at: NativePointer): boolean {
    try {
        let b = new Uint8Array(at.readByteArray(8) as ArrayBuffer);
        if (b[0] === 0xf3 && b[1] === 0x0f && b[2] === 0x1e && b[3] === 0xfa) {
            b = new Uint8Array(at.add(4).readByteArray(4) as ArrayBuffer);
        }
        return b[0] === 0x55 && b[1] === 0x48 && b[2] === 0x89 && b[3] === 0xe5;
    } catch {
        return false;
    }
}

/** Whether the module at `address` was built with frame pointers (most functions set one up). */
export function keepsFramePointers(address: NativePointer): boolean {
    if (Process.arch !== "x64") return false;
    const m = Process.findModuleByAddress(address);
    if (m === null) return false;
    const known = cache.get(m.path);
    if (known !== undefined) return known;
    const fns = m
        .enumerateSymbols()
        .filter((s) => s.type === "function" && !s.address.isNull() && !CRT.has(s.name))
        .slice(0, SAMPLE);
    const yes = fns.length >= 4 && fns.filter((s) => framePrologue(s.address)).length >= NEEDED * fns.length;
    cache.set(m.path, yes);
    return yes;
}

/** Return addresses, innermost first, by frame pointers (see the header). */
export function fpBacktrace(ic: InvocationContext, depth: number): NativePointer[] {
    const out: NativePointer[] = [];
    if (depth <= 0) return out;
    out.push(ic.returnAddress);
    let fp = (ic.context as X64CpuContext).rbp;
    while (out.length < depth) {
        if (fp.isNull() || !fp.and(7).isNull()) break;
        let next: NativePointer;
        let ret: NativePointer;
        try {
            next = fp.readPointer();
            ret = fp.add(8).readPointer();
        } catch {
            break;
        }
        if (ret.compare(ptr(MIN_RET)) < 0) break;
        out.push(ret);
        if (next.compare(fp) <= 0 || next.sub(fp).compare(ptr(MAX_FRAME)) > 0) break;
        fp = next;
    }
    return out;
}
