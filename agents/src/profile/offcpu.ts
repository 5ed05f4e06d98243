// Off-CPU samples (instr profile --off-cpu): where the program's threads wait.
//
// A thread blocked in a system call uses no CPU, so its CPU-time timer never
// fires. Instead, the agent's own thread looks at each program thread HZ
// times per second of wall time (each delay drawn from [P/2, 3P/2), as the
// CPU sampler's expiries are): /proc/self/task/TID/syscall gives a blocked
// thread's system call, stack pointer and pc without stopping it. The stack
// from there to the end of its mapping (at most `stack_bytes`) is copied,
// and the file read again: the sample is kept only if the thread is still
// blocked at the same place, so the copy is of a stack that did not move.
// Nothing is sent to the thread: no signal, so no sleep is cut short.
// A sample has the CPU sampler's layout (profile_c.ts SLOT) with only rsp and
// rip known; the host unwinds it the same way (callee-saved registers are
// recovered from the stack where the CFI saved them).

import { reportError } from "../core/util.js";
import { SLOT } from "./profile_c.js";

export type OffSink = (count: number, data: ArrayBuffer) => void;

const GREG_RSP = 15;
const GREG_RIP = 16;
const MAX_THREADS = 256; // looked at per tick

interface Blocked {
    nr: number;
    sp: NativePointer;
    pc: NativePointer;
    text: string;
}

function blockedAt(tid: number): Blocked | null {
    let text: string;
    try {
        text = File.readAllText(`/proc/self/task/${tid}/syscall`).trim();
    } catch {
        return null; // ended
    }
    const f = text.split(" ");
    if (f.length < 3 || !/^\d+$/.test(f[0])) return null; // "running", or not in a system call (-1)
    return { nr: parseInt(f[0], 10), sp: ptr(f[f.length - 2]), pc: ptr(f[f.length - 1]), text };
}

export class OffCpuSampler {
    private timer: ReturnType<typeof setTimeout> | null = null;
    private running = false;
    samples = 0;
    moved = 0;

    constructor(
        private readonly hz: number,
        private readonly stackBytes: number,
        private readonly threads: () => number[],
        private readonly sink: OffSink,
    ) {}

    start(): void {
        this.running = true;
        this.schedule();
    }

    stop(): void {
        this.running = false;
        if (this.timer !== null) clearTimeout(this.timer);
        this.timer = null;
    }

    private schedule(): void {
        if (!this.running) return;
        const period = 1000 / this.hz;
        this.timer = setTimeout(() => this.tick(), period / 2 + Math.random() * period);
    }

    private tick(): void {
        try {
            const parts: ArrayBuffer[] = [];
            const now = BigInt(Date.now()) * 1000000n;
            for (const tid of this.threads().slice(0, MAX_THREADS)) {
                const part = this.sample(tid, now);
                if (part !== null) parts.push(part);
            }
            if (parts.length > 0) {
                const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
                let at = 0;
                for (const p of parts) {
                    out.set(new Uint8Array(p), at);
                    at += p.byteLength;
                }
                this.samples += parts.length;
                this.sink(parts.length, out.buffer);
            }
        } catch (e) {
            reportError(null, e);
        }
        this.schedule();
    }

    private sample(tid: number, now: bigint): ArrayBuffer | null {
        const before = blockedAt(tid);
        // Blocked inside Frida's own code (its exit hook waiting for the host): the tool's wait.
        if (before === null || Cloak.hasRangeContaining(before.pc)) return null;
        const range = Process.findRangeByAddress(before.sp);
        if (range === null) return null;
        const end = range.base.add(range.size);
        const len = Math.min(this.stackBytes, end.sub(before.sp).toUInt32());
        let stack: ArrayBuffer;
        try {
            stack = before.sp.readByteArray(len) as ArrayBuffer;
        } catch {
            return null;
        }
        const after = blockedAt(tid);
        if (after === null || after.text !== before.text) {
            this.moved++; // it ran meanwhile: the copy may be torn
            return null;
        }
        const out = new ArrayBuffer(SLOT.HEADER + len);
        const v = new DataView(out);
        v.setBigUint64(SLOT.TID, BigInt(tid), true);
        v.setBigUint64(SLOT.TIME, now, true);
        v.setBigUint64(SLOT.REGS + 8 * GREG_RSP, BigInt(before.sp.toString()), true);
        v.setBigUint64(SLOT.REGS + 8 * GREG_RIP, BigInt(before.pc.toString()), true);
        v.setBigUint64(SLOT.STACK_LEN, BigInt(len), true);
        new Uint8Array(out, SLOT.HEADER).set(new Uint8Array(stack));
        return out;
    }
}
