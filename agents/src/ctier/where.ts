// A predicate's native program (compiled by the host, instr/ctier/wherevm.py)
// laid out for the native tier's C machine (WOp and WConst in native_c.ts).

import { NativeWhere } from "../protocol.js";

const WOP_SIZE = 16;
/** Opcodes whose immediate is a string constant's index (W_SEQ .. W_CONTAINS). */
const STRING_OPS = new Set([50, 51, 52, 53]);

function utf8(s: string): Uint8Array {
    const bytes: number[] = [];
    for (const ch of s) {
        const cp = ch.codePointAt(0) as number;
        if (cp < 0x80) bytes.push(cp);
        else if (cp < 0x800) bytes.push(0xc0 | (cp >> 6), 0x80 | (cp & 0x3f));
        else if (cp < 0x10000) bytes.push(0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f));
        else bytes.push(0xf0 | (cp >> 18), 0x80 | ((cp >> 12) & 0x3f), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f));
    }
    return new Uint8Array(bytes);
}

/** Writes the program into memory kept alive in `keep` (never freed: listeners may run late). */
export function writeProgram(w: NativeWhere, keep: NativePointer[]): { code: NativePointer; length: number } {
    const consts = w.strings.map((s) => {
        const b = utf8(s);
        const p = Memory.alloc(Math.max(8, 4 + b.length));
        p.writeU32(b.length);
        p.add(4).writeByteArray(b.buffer as ArrayBuffer);
        keep.push(p);
        return p;
    });
    const code = Memory.alloc(Math.max(WOP_SIZE, WOP_SIZE * w.code.length));
    keep.push(code);
    w.code.forEach(([op, a, b, imm], i) => {
        const o = code.add(WOP_SIZE * i);
        o.writeU8(op);
        o.add(1).writeU8(a);
        o.add(2).writeU16(b);
        o.add(4).writeU32(0);
        if (STRING_OPS.has(op)) {
            const k = consts[Number(imm)];
            if (k === undefined) throw new Error(`predicate string ${imm} missing`);
            o.add(8).writePointer(k);
        } else {
            o.add(8).writeS64(int64(imm));
        }
    });
    return { code, length: w.code.length };
}
