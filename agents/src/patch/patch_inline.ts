// Inline patches for the hot, simple cases (ret and skip without a
// predicate, on x86_64): a 5-byte jump at the function's start to a small
// stub of our own, written and removed with the other threads stopped
// outside those bytes (core/stopper.ts).
//
// Why not Interceptor: attaching to and reverting a function that other
// threads are running crashes the process (measured: 4 threads calling an
// 8-byte function, crash within 3-200 attach/revert cycles; the revert frees
// or clears state those threads are still using). Here nothing is ever
// freed: a stub stays valid for a thread that is still in it after the
// revert, so revert is only "put the 5 original bytes back".
//
//   skip:  mov rax, VALUE ; ret
//   ret:   sub rsp, 8 ; call ORIGINAL' ; add rsp, 8 ; mov rax, VALUE ; ret
//          ORIGINAL' = the relocated first instructions, then a jump back.
//          (The extra frame moves stack-passed arguments: functions with
//          more than 6 integer arguments are refused.)

import { quiesced } from "../core/stopper.js";

const JMP_SIZE = 5;
const STUB_SIZE = 128;
const PAGE = Process.pageSize;

/** Stubs are never freed (a thread may still run one after its revert); pages are filled in turn. */
interface Slab {
    base: NativePointer;
    used: number;
}
const slabs: Slab[] = [];

function stubNear(address: NativePointer): NativePointer {
    for (const s of slabs) {
        const distance = s.base.compare(address) > 0 ? s.base.sub(address) : address.sub(s.base);
        if (s.used + STUB_SIZE <= PAGE && distance.compare(ptr("0x7fff0000")) < 0) {
            const at = s.base.add(s.used);
            s.used += STUB_SIZE;
            return at;
        }
    }
    const base = mapNear(address);
    slabs.push({ base, used: STUB_SIZE });
    return base;
}

/**
 * A page within jump reach of `address`, mapped with mmap and never unmapped:
 * unlike Memory.alloc it outlives the script, so a thread still inside a stub
 * when its script unloads does not run freed memory.
 */
function mapNear(address: NativePointer): NativePointer {
    const mmap = new NativeFunction(Module.getGlobalExportByName("mmap"), "pointer", ["pointer", "size_t", "int", "int", "int", "long"]);
    const PROT_RWX = 7;
    const MAP_PRIVATE_ANON_NOREPLACE = 0x02 | 0x20 | 0x100000;
    const step = 0x1000000; // 16 MiB
    const page = address.and(ptr(PAGE - 1).not());
    for (let i = 1; i < 120; i++) {
        for (const hint of [page.sub(step * i), page.add(step * i)]) {
            const got = mmap(hint, PAGE, PROT_RWX, MAP_PRIVATE_ANON_NOREPLACE, -1, 0) as NativePointer;
            if (!got.equals(ptr(-1)) && got.equals(hint)) return got;
        }
    }
    throw new Error(`no free memory within jump reach of ${address} for the patch stub`);
}

export function inlineSupported(): boolean {
    return Process.arch === "x64";
}

export interface InlinePatch {
    original: Uint8Array;
    patched: Uint8Array;
    undo: () => void;
}

function emit(stub: NativePointer, address: NativePointer, value: NativePointer, callOriginal: boolean): void {
    const w = new X86Writer(stub, { pc: stub });
    if (callOriginal) {
        w.putSubRegImm("rsp", 8);
        const relocated = stub.add(64);
        w.putCallAddress(relocated);
        w.putAddRegImm("rsp", 8);
        w.putMovRegAddress("rax", value);
        w.putRet();
        w.flush();
        const rw = new X86Writer(relocated, { pc: relocated });
        const rel = new X86Relocator(address, rw);
        let n = 0;
        while (n < JMP_SIZE) {
            const got = rel.readOne();
            if (got === 0) throw new Error(`the function at ${address} is too short to patch inline (${n} bytes)`);
            n = got;
        }
        if (rel.eoi) throw new Error(`the function at ${address} returns within its first ${JMP_SIZE} bytes`);
        rel.writeAll();
        rw.putJmpAddress(address.add(n));
        rw.flush();
        if (rw.offset > STUB_SIZE - 64) throw new Error(`the relocated start of ${address} does not fit the stub`);
        rel.dispose();
        rw.dispose();
    } else {
        w.putMovRegAddress("rax", value);
        w.putRet();
        w.flush();
    }
    w.dispose();
}

function jumpBytes(from: NativePointer, to: NativePointer): Uint8Array {
    const rel = to.sub(from.add(JMP_SIZE));
    const v = Number(BigInt.asIntN(64, BigInt(rel.toString())));
    if (v < -0x80000000 || v > 0x7fffffff) throw new Error(`no stub memory within reach of ${from}`);
    const out = new Uint8Array(JMP_SIZE);
    out[0] = 0xe9;
    new DataView(out.buffer).setInt32(1, v, true);
    return out;
}

function writeCode(address: NativePointer, data: Uint8Array): void {
    quiesced(address, data.length, false, () =>
        Memory.patchCode(address, data.length, (code) => {
            code.writeByteArray(data.buffer.slice(data.byteOffset, data.byteOffset + data.length) as ArrayBuffer);
        }),
    );
}

function readBytes(address: NativePointer, n: number): Uint8Array {
    return new Uint8Array(address.readByteArray(n) as ArrayBuffer);
}

/** Patch `address` to return `value`, after running the original (ret) or instead of it (skip). */
export function inlinePatch(address: NativePointer, value: NativePointer, callOriginal: boolean): InlinePatch {
    const stub = stubNear(address);
    emit(stub, address, value, callOriginal);
    const original = readBytes(address, JMP_SIZE);
    const patched = jumpBytes(address, stub);
    writeCode(address, patched);
    return { original, patched, undo: () => writeCode(address, original) };
}
