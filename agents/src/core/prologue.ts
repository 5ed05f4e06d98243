// Functions that branch back into their own first bytes.
//
// Interceptor.replaceFast overwrites a function's first 18 bytes on x64
// (`jmp [rip+2]; ud2; .quad target`, measured) and checks only that those
// instructions can be moved; a branch from later in the function to an
// instruction inside them then lands in the middle of the jump. A program's
// own free, `if (p == NULL) count; count; __libc_free(p)`, compiled by gcc -O1
// to a `jmp free+9` after its `ret`, and the program died of SIGSEGV at its
// first free(NULL) under `--agg`. Listeners (Interceptor.attach) write 5
// bytes and check this themselves. Such functions are not replaced.

/** The bytes replaceFast writes at a function's start on x64. */
const REPLACE_FAST_BYTES = 18;
/** How far a function's body is read. */
const SCAN_LIMIT = 4096;

function jumpTarget(insn: Instruction): NativePointer | null {
    const x = insn as X86Instruction;
    if (!x.groups.includes("jump")) return null;
    const op = x.operands[x.operands.length - 1];
    return op !== undefined && op.type === "imm" ? ptr(op.value.toString()) : null;
}

/**
 * Whether a jump in the function at `address` lands inside its first
 * REPLACE_FAST_BYTES (after the first instruction): reads on from the start,
 * past each `ret` or `jmp` that a forward jump seen so far goes beyond.
 * Unreadable code counts as yes. Only x64 is checked.
 */
export function jumpsIntoHead(address: NativePointer): boolean {
    if (Process.arch !== "x64") return false;
    const head = address.add(REPLACE_FAST_BYTES);
    const limit = address.add(SCAN_LIMIT);
    let furthest = address;
    let at = address;
    try {
        while (at.compare(limit) < 0) {
            const insn = Instruction.parse(at) as X86Instruction;
            const target = jumpTarget(insn);
            if (target !== null) {
                if (target.compare(address) > 0 && target.compare(head) < 0) return true;
                if (target.compare(furthest) > 0 && target.compare(limit) < 0) furthest = target;
            }
            at = insn.next;
            const ends = insn.groups.includes("ret") || insn.mnemonic === "jmp" || insn.mnemonic === "ud2" || insn.mnemonic === "hlt";
            if (ends && at.compare(furthest) > 0) return false;
        }
    } catch {
        return true;
    }
    return false;
}
