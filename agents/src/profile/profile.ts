// instr profile: sample on-CPU user stacks of every program thread (docs/profile.md).
//
// Each program thread gets a POSIX timer on its own CPU-time clock
// (timer_create on the thread's CPUCLOCK, SIGEV_THREAD_ID), so it is sampled
// at HZ per second of CPU it uses, whatever the machine's load, and only
// while it runs. The timer's real-time signal runs `prof_on_signal`
// (profile_c.ts), which copies the registers and the top of the stack into
// a ring; this side drains the ring on a timer and sends the raw samples to
// the host, which unwinds them with the modules' .eh_frame (instr/profile/).
//
// Leaving: the handler is entered through a stub in pages that are never
// unmapped, which counts the threads inside it and calls the C only while
// the sampler is enabled. `stop` deletes the timers, ignores then restores
// the signal's old disposition (a pending instance is discarded), disables
// the stub and waits until no thread is inside; only then may the C go.

import { ownModule } from "../core/leave.js";
import { processThreads, reportError } from "../core/util.js";
import { PROFILE_C_SOURCE, RING, SLOT } from "./profile_c.js";

export interface SamplerOptions {
    hz: number;
    /** Bytes of stack copied above the interrupted rsp (rounded to pages by the copy). */
    stack_bytes: number;
    /** Ring slots (samples waiting for the drain). */
    slots: number;
    /** Also sample blocked threads (offcpu.ts). */
    off_cpu?: boolean;
    /** Drain period. */
    drain_ms: number;
}

export interface SamplerStarted {
    signal: number;
    threads: number;
    hz: number;
    stack_bytes: number;
}

export interface SamplerStats {
    samples: number;
    drops: number;
    threads: number;
    timer_failures: number;
    left_inside: number;
}

/** A batch of raw samples: `data` holds `count` slots back to back (each SLOT.HEADER + stack_len bytes). */
export type SampleSink = (count: number, data: ArrayBuffer) => void;

const SIG_DFL = 0;
const SA_SIGINFO = 4;
const SA_RESTART = 0x10000000;
const SA_RESTORER = 0x04000000;
const SYS_rt_sigaction = 13;
const SYS_timer_create = 222;
const SYS_timer_settime = 223;
const SYS_timer_delete = 226;
const SYS_clock_gettime = 228;
const MAX_TIMERS = 1024; // RING.DEADLINES entries
const SIGEV_THREAD_ID = 4;
/** The stopper's signal (core/stopper.ts) is never taken. */
const STOPPER_SIGNAL = 61;
const RESCAN_MS = 100;
const LEAVE_WAIT_MS = 1000;

// The stub's state page: [0] threads inside, [4] enabled, [8] the C handler.
const ST_INSIDE = 0;
const ST_ENABLED = 4;
const ST_TARGET = 8;

type Sys = NativeFunction<Int64, [number, NativePointerValue, NativePointerValue, NativePointerValue, NativePointerValue, number, number]>;

interface Stubs {
    entry: NativePointer;
    restorer: NativePointer;
    syscall: NativePointer;
    state: NativePointer;
}

function mapForever(size: number): NativePointer {
    const mmap = new NativeFunction(Module.getGlobalExportByName("mmap"), "pointer", ["pointer", "size_t", "int", "int", "int", "long"]);
    const p = mmap(NULL, size, 3, 0x22, -1, 0) as NativePointer;
    if (p.equals(ptr(-1))) throw new Error("mmap failed: cannot set up the sampler");
    return p;
}

/** The handler's entry, a raw system call and a restorer, in a page never unmapped (see the header). */
function emitStubs(): Stubs {
    const page = Process.pageSize;
    const code = mapForever(page);
    const state = mapForever(page);
    const w = new X86Writer(code, { pc: code });
    // entry(sig, info, uc)
    w.putMovRegAddress("rax", state);
    w.putBytes([0xf0, 0xff, 0x00]); // lock inc dword [rax]
    w.putMovRegRegOffsetPtr("ecx", "rax", ST_ENABLED);
    w.putTestRegReg("ecx", "ecx");
    w.putJccShortLabel("je", "out", "no-hint");
    w.putPushReg("rax"); // and the stack is 16-byte aligned for the call
    w.putMovRegRegOffsetPtr("rax", "rax", ST_TARGET);
    w.putCallReg("rax");
    w.putPopReg("rax");
    w.putLabel("out");
    w.putBytes([0xf0, 0xff, 0x08]); // lock dec dword [rax]
    w.putRet();
    w.flush();
    const syscall = code.add(w.offset + 16 - (w.offset % 16));
    w.dispose();
    // syscall(nr, a, b, c, d, e, f): f is on the stack
    const s = new X86Writer(syscall, { pc: syscall });
    s.putMovRegReg("rax", "rdi");
    s.putMovRegReg("rdi", "rsi");
    s.putMovRegReg("rsi", "rdx");
    s.putMovRegReg("rdx", "rcx");
    s.putMovRegReg("r10", "r8");
    s.putMovRegReg("r8", "r9");
    s.putMovRegRegOffsetPtr("r9", "rsp", 8);
    s.putBytes([0x0f, 0x05]);
    s.putRet();
    s.flush();
    const restorer = syscall.add(s.offset + 16 - (s.offset % 16));
    s.dispose();
    const r = new X86Writer(restorer, { pc: restorer });
    r.putMovRegU32("eax", 15); // rt_sigreturn
    r.putBytes([0x0f, 0x05]);
    r.flush();
    r.dispose();
    Memory.protect(code, page, "r-x");
    return { entry: code, restorer, syscall, state };
}

let stubs: Stubs | null = null;

/** The kernel's struct sigaction (x86_64): handler, flags, restorer, mask. */
function sigactionStruct(handler: NativePointer, flags: number, restorer: NativePointer): NativePointer {
    const act = Memory.alloc(32);
    act.writePointer(handler);
    act.add(8).writeU64(flags);
    act.add(16).writePointer(restorer);
    return act;
}

export class Sampler {
    private sys: Sys;
    private cm: CModule | null = null;
    private ring: NativePointer = NULL;
    private signal = 0;
    private previous: NativePointer = NULL;
    private timers = new Map<number, number>();
    private drainTimer: ReturnType<typeof setInterval> | null = null;
    private lastScan = 0;
    private timerFailures = 0;
    private leftInside = 0;
    private running = false;
    private options: SamplerOptions | null = null;

    constructor(private readonly sink: SampleSink) {
        if (Process.platform !== "linux" || Process.arch !== "x64") {
            throw new Error(`instr profile samples Linux x86_64 processes only (this one is ${Process.platform} ${Process.arch})`);
        }
        stubs ??= emitStubs();
        this.sys = new NativeFunction(stubs.syscall, "int64", ["int", "pointer", "pointer", "pointer", "pointer", "int", "int"]) as unknown as Sys;
    }

    get active(): boolean {
        return this.running;
    }

    /** The program threads being sampled (each has a timer). */
    programThreads(): number[] {
        return [...this.timers.keys()];
    }

    start(options: SamplerOptions): SamplerStarted {
        if (this.running || this.cm !== null) throw new Error("the sampler is already running");
        if (!(options.hz >= 1 && options.hz <= 10000)) throw new Error(`bad sampling rate ${options.hz}`);
        // The handler copies through at most MAX_IOV (64) page-bounded iovecs.
        if (!(options.stack_bytes >= 256 && options.stack_bytes <= 63 * 4096)) throw new Error(`bad stack copy size ${options.stack_bytes}`);
        if (!(options.slots >= 16 && options.slots <= 65536)) throw new Error(`bad ring size ${options.slots}`);
        const st = stubs as Stubs;
        this.options = options;
        const slotSize = (SLOT.HEADER + options.stack_bytes + 7) & ~7;
        this.ring = Memory.alloc(RING.SIZE + options.slots * slotSize);
        this.ring.add(RING.NSLOTS).writeU64(options.slots);
        this.ring.add(RING.SLOT_SIZE).writeU64(slotSize);
        this.ring.add(RING.STACK_MAX).writeU64(options.stack_bytes);
        this.ring.add(RING.PID).writeU64(Process.id);
        this.ring.add(RING.PERIOD_NS).writeU64(Math.round(1e9 / options.hz));
        this.cm = new CModule(PROFILE_C_SOURCE, { prof_ring: this.ring, prof_syscall: st.syscall }, { toolchain: "internal" });
        ownModule(this.cm);
        st.state.add(ST_TARGET).writePointer(this.cm.prof_on_signal);
        st.state.add(ST_ENABLED).writeU32(1);
        this.signal = this.freeSignal();
        this.previous = Memory.alloc(32);
        const act = sigactionStruct(st.entry, SA_SIGINFO | SA_RESTART | SA_RESTORER, st.restorer);
        if (this.sigaction(act, this.previous) !== 0) throw new Error(`cannot install a handler for signal ${this.signal}`);
        this.running = true;
        this.rescan();
        this.drainTimer = setInterval(() => this.tick(), options.drain_ms);
        return { signal: this.signal, threads: this.timers.size, hz: options.hz, stack_bytes: options.stack_bytes };
    }

    /** Stop sampling, restore the signal's disposition, drain what is left. Safe to call twice. */
    stop(): SamplerStats {
        if (this.running) {
            this.running = false;
            if (this.drainTimer !== null) clearInterval(this.drainTimer);
            this.drainTimer = null;
            for (const id of this.timers.values()) this.deleteTimer(id);
            this.timers.clear();
            const st = stubs as Stubs;
            // SIG_IGN first: an instance still pending is discarded, never run under SIG_DFL.
            this.sigaction(sigactionStruct(ptr(1), SA_RESTORER, st.restorer), NULL);
            this.sigaction(this.previous, NULL);
            st.state.add(ST_ENABLED).writeU32(0);
            const t0 = Date.now();
            while (st.state.add(ST_INSIDE).readS32() > 0 && Date.now() - t0 < LEAVE_WAIT_MS) Thread.sleep(0.001);
            this.leftInside = st.state.add(ST_INSIDE).readS32();
            this.drain();
            // A thread still inside keeps the C: never freed while it may run (docs/profile.md).
            if (this.leftInside > 0 && this.cm !== null) Script.pin();
        }
        return this.stats();
    }

    /** Send what the ring holds now (also at exit, from the agent's dispose). */
    flush(): void {
        if (this.cm !== null) this.drain();
    }

    stats(): SamplerStats {
        const r = this.ring;
        return {
            samples: r.isNull() ? 0 : r.add(RING.SAMPLES).readU64().toNumber(),
            drops: r.isNull() ? 0 : r.add(RING.DROPS).readU64().toNumber(),
            threads: this.timers.size,
            timer_failures: this.timerFailures,
            left_inside: this.leftInside,
        };
    }

    private sigaction(act: NativePointer, old: NativePointer): number {
        return this.sys(SYS_rt_sigaction, ptr(this.signal), act, old, ptr(8), 0, 0).toNumber();
    }

    /** A real-time signal the program leaves at its default disposition, from the top down. */
    private freeSignal(): number {
        const old = Memory.alloc(32);
        for (let sig = 60; sig >= 40; sig--) {
            if (sig === STOPPER_SIGNAL) continue;
            this.signal = sig;
            if (this.sigaction(NULL, old) === 0 && old.readPointer().equals(ptr(SIG_DFL))) return sig;
        }
        throw new Error("no free real-time signal (40..60) for the sampler: the program handles them all");
    }

    private tick(): void {
        try {
            if (Date.now() - this.lastScan >= RESCAN_MS) this.rescan();
            this.drain();
        } catch (e) {
            reportError(null, e);
        }
    }

    /** A timer for each program thread without one; forget the threads that ended. */
    private rescan(): void {
        this.lastScan = Date.now();
        const threads = processThreads();
        if (threads === null || !this.running) return;
        const live = new Set(threads.program);
        for (const [tid, id] of this.timers) {
            if (!live.has(tid)) {
                this.deleteTimer(id);
                this.timers.delete(tid);
            }
        }
        for (const tid of threads.program) if (!this.timers.has(tid)) this.arm(tid);
    }

    private deleteTimer(id: number): void {
        this.sys(SYS_timer_delete, ptr(id), NULL, NULL, NULL, 0, 0);
        if (id >= 0 && id < MAX_TIMERS) this.ring.add(RING.DEADLINES + 8 * id).writeU64(0);
    }

    private arm(tid: number): void {
        const hz = (this.options as SamplerOptions).hz;
        // The thread's CPU-time clock: MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED).
        const clock = ((~tid) << 3) | 6;
        const sev = Memory.alloc(64);
        sev.writeU64(tid); // sigev_value
        sev.add(8).writeS32(this.signal);
        sev.add(12).writeS32(SIGEV_THREAD_ID);
        sev.add(16).writeS32(tid);
        const id = Memory.alloc(8);
        if (this.sys(SYS_timer_create, ptr(clock), sev, id, NULL, 0, 0).toNumber() !== 0) {
            this.timerFailures++; // the thread ended meanwhile
            return;
        }
        const timer = id.readS32();
        const period = Math.round(1e9 / hz);
        // The handler draws each next expiry from the previous one (profile_c.ts rearm).
        const now = Memory.alloc(16);
        if (timer >= 0 && timer < MAX_TIMERS && this.sys(SYS_clock_gettime, ptr(clock), now, NULL, NULL, 0, 0).toNumber() === 0) {
            const t = now.readU64().toNumber() * 1e9 + now.add(8).readU64().toNumber();
            this.ring.add(RING.DEADLINES + 8 * timer).writeU64(t + period);
        }
        const spec = Memory.alloc(32);
        spec.writeU64(Math.floor(period / 1e9));
        spec.add(8).writeU64(period % 1e9);
        spec.add(16).writeU64(Math.floor(period / 1e9));
        spec.add(24).writeU64(period % 1e9);
        if (this.sys(SYS_timer_settime, ptr(timer), NULL, spec, NULL, 0, 0).toNumber() !== 0) {
            this.sys(SYS_timer_delete, ptr(timer), NULL, NULL, NULL, 0, 0);
            this.timerFailures++;
            return;
        }
        this.timers.set(tid, timer);
    }

    /** Every complete slot from the tail on, in one message. */
    private drain(): void {
        const r = this.ring;
        if (r.isNull()) return;
        const n = r.add(RING.NSLOTS).readU64().toNumber();
        const size = r.add(RING.SLOT_SIZE).readU64().toNumber();
        const head = r.add(RING.HEAD).readU64().toNumber();
        let tail = r.add(RING.TAIL).readU64().toNumber();
        const parts: ArrayBuffer[] = [];
        let bytes = 0;
        for (; tail < head; tail++) {
            const slot = r.add(RING.SIZE + (tail % n) * size);
            if (slot.readU64().toNumber() !== tail + 1) break; // still being written
            const len = Math.min(slot.add(SLOT.STACK_LEN).readU64().toNumber(), size - SLOT.HEADER);
            const part = slot.readByteArray(SLOT.HEADER + len) as ArrayBuffer;
            parts.push(part);
            bytes += part.byteLength;
        }
        r.add(RING.TAIL).writeU64(tail);
        if (parts.length === 0) return;
        const out = new Uint8Array(bytes);
        let at = 0;
        for (const p of parts) {
            out.set(new Uint8Array(p), at);
            at += p.byteLength;
        }
        this.sink(parts.length, out.buffer);
    }
}
