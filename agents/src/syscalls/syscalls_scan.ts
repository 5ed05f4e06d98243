// The libc scan of instr syscalls: which exported functions of the C library
// issue which system calls, found by decoding their code. The host chooses
// the wrappers to hook from this (instr/syscalls/wrappers.py).

import { reportError } from "../core/util.js";

export interface ScanResult {
    name: string;
    address: string;
    nrs: number[];
}

/** The C library: the module that exports `read`. */
function libc(): Module {
    const read = Module.getGlobalExportByName("read");
    const m = Process.findModuleByAddress(read);
    if (m === null) throw new Error("cannot find the C library");
    return m;
}

function immOf(op: { type: string; value: unknown } | undefined): number | null {
    if (op === undefined || op.type !== "imm") return null;
    const v = op.value as number | Int64 | UInt64;
    return typeof v === "number" ? v : Number(v.toString());
}

function regKey(r: string): string {
    // eax/rax/ax -> a; r8d/r8 -> r8; w8/x8 -> 8 (arm64)
    const x86 = /^[re]?([abcd])[xl]$/.exec(r);
    if (x86 !== null) return x86[1];
    const x86b = /^[re]?(si|di)$/.exec(r);
    if (x86b !== null) return x86b[1];
    const rn = /^(r\d+)[dwb]?$/.exec(r);
    if (rn !== null) return rn[1];
    const arm = /^[wx](\d+)$/.exec(r);
    if (arm !== null) return arm[1];
    return r;
}

/**
 * The syscall numbers a function issues directly: a linear sweep from its
 * start, following forward conditional branches (so the slow paths after the
 * first `ret` are seen), tracking immediates moved into registers.
 */
export function syscallsIn(address: NativePointer): number[] {
    const nrs: number[] = [];
    const regs = new Map<string, number>();
    const arm = Process.arch === "arm64";
    const nrReg = arm ? "8" : "a";
    let pc = address;
    let horizon = address;
    for (let i = 0; i < 160; i++) {
        let ins: Instruction;
        try {
            ins = Instruction.parse(pc);
        } catch {
            break;
        }
        const m = ins.mnemonic;
        const ops = (ins as unknown as { operands: { type: string; value: unknown }[] }).operands;
        if (m === "syscall" || (arm && m === "svc")) {
            nrs.push(regs.get(nrReg) ?? -1);
        } else if (ops.length >= 1 && ops[0].type === "reg") {
            const dst = regKey(String(ops[0].value));
            const imm = immOf(ops[1]);
            if ((m === "mov" || m === "movz") && imm !== null) regs.set(dst, imm);
            else if (m === "mov" && ops[1]?.type === "reg" && regs.has(regKey(String(ops[1].value)))) {
                regs.set(dst, regs.get(regKey(String(ops[1].value)))!);
            } else if (m === "xor" && ops[1]?.type === "reg" && regKey(String(ops[1].value)) === dst) regs.set(dst, 0);
            else if (!m.startsWith("j") && !m.startsWith("b") && !m.startsWith("cmp") && !m.startsWith("test") && !m.startsWith("c") && !m.startsWith("t")) regs.delete(dst);
        }
        const groups = (ins as unknown as { groups: string[] }).groups ?? [];
        const isJump = groups.includes("jump") || groups.includes("branch_relative");
        const isRet = groups.includes("ret") || m === "ret" || m === "hlt" || m === "ud2" || m === "int3" || m === "brk";
        const unconditional = m === "jmp" || m === "b" || m === "br";
        if (isJump) {
            for (const op of ops) {
                const t = immOf(op);
                if (t !== null) {
                    const target = ptr(t);
                    const near = unconditional ? target.sub(pc).compare(ptr(0x100)) < 0 : target.sub(address).compare(ptr(0x4000)) < 0;
                    if (target.compare(pc) > 0 && target.compare(horizon) > 0 && near) horizon = target;
                }
            }
        }
        if (m === "int3" || m === "brk") break;
        if ((isRet || unconditional) && ins.next.compare(horizon) >= 0) break;
        pc = ins.next;
    }
    return nrs;
}

/** Scan the C library's exported functions named in `names` (all if empty). */
export function scan(names: string[]): { module: string; base: string; arch: string; functions: ScanResult[] } {
    const lib = libc();
    const wanted = new Set(names);
    const out: ScanResult[] = [];
    for (const e of lib.enumerateExports()) {
        if (e.type !== "function" || (wanted.size > 0 && !wanted.has(e.name))) continue;
        let nrs: number[] = [];
        try {
            nrs = syscallsIn(e.address);
        } catch (err) {
            reportError(null, err);
        }
        if (nrs.length > 0) out.push({ name: e.name, address: e.address.toString(), nrs });
    }
    return { module: lib.path, base: lib.base.toString(), arch: Process.arch, functions: out };
}
