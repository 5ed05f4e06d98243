// Stop the other threads of the process while code is patched, so that no
// thread is left inside the bytes being rewritten or inside hook machinery
// that a revert frees (instr patch); and stop a few running threads to read
// where they are (the leave, core/leave.ts: `withStopped`), without ptrace.
//
// A jump written over a function's first instructions is not safe for a
// thread that is between two of them: it resumes in the middle of the jump.
// So, on Linux x86_64: every other thread gets a real-time signal whose
// handler (machine code, see emitHandler) records the interrupted PC and
// waits on a futex. When all have
// stopped and none is at an unsafe PC, the patch is written, then the threads
// are released. Otherwise they are released and the attempt repeated.
//
// Unsafe PCs: inside the bytes about to change; inside Frida's agent (its
// locks) unless in a system call; for Interceptor hooks also anonymous
// executable memory (trampolines). The ranges are listed before the threads
// are stopped. This does not make Interceptor's revert safe under load (its
// state is also used from Frida's own, cloaked code): inline patches
// (patch_inline.ts) are used where they can be.



const MAX_PCS = 1024;
const PAGE_SIZE = Process.pageSize;
/** A real-time signal (SIGRTMIN+27 with glibc); the target must not use it. */
export const QUIESCE_SIGNAL = 61;
/** How long to keep trying to find every thread at a safe place. */
const ATTEMPT_LIMIT_MS = 5000;
const STOP_LIMIT_MS = 100;

const SIG_IGN = ptr(1);
const SYS_getpid = 39;
const SYS_rt_sigaction = 13;
const SYS_tgkill = 234;
const SYS_futex = 202;
const SYS_sched_yield = 24;
const SYS_nanosleep = 35;
const FUTEX_WAKE = 1;

/**
 * The native calls made while threads are being stopped keep the script's
 * lock ("exclusive"). By default Frida releases it around a native call, and
 * a target thread could then enter one of this script's JavaScript hooks,
 * take the lock, be stopped holding it, and leave this thread waiting for it
 * for ever (seen with a JS listener on a function called in a loop: the
 * revert never returned).
 */
const HOLD = { scheduling: "exclusive" as const };

interface Quiescer {
    /** Our handler for QUIESCE_SIGNAL, installed for each stop; afterwards the target's own disposition is put back. */
    install: () => void;
    restore: () => void;
    /** The target's threads: /proc/self/task without Frida's own (cloaked) threads. */
    threads: () => number[];
    state: NativePointer;
    wake: () => void;
    pause: () => void;
    /** Sleep, keeping the script's lock (Thread.sleep would let Gum write pending hooks). */
    nap: (us: number) => void;
    tgkill: (tid: number) => number;
}

let q: Quiescer | null | undefined;

const STATE_SIZE = 16 + 24 * MAX_PCS;
const OFF_RELEASED = 4;
const OFF_N = 8;
const OFF_ROUND = 12;
const OFF_PCS = 16;
const OFF_TIDS = 16 + 8 * MAX_PCS;
const OFF_SPS = 16 + 16 * MAX_PCS;

/**
 * Made when the agent loads, before any hook: making it later would call
 * libc (mmap, and Gum's export lookups, which also have Gum write pending
 * hooks) while hooks are being written or taken away.
 */
export function prepareStopper(): void {
    if (q === undefined) q = setup();
}

/** Pages that are never unmapped (see emitHandler). */
function mapForever(size: number, prot: number): NativePointer {
    // HOLD: a cooperative call would also let Gum write pending hooks (core/hooks.ts).
    const mmap = new NativeFunction(Module.getGlobalExportByName("mmap"), "pointer", ["pointer", "size_t", "int", "int", "int", "long"], HOLD);
    const MAP_PRIVATE_ANON = 0x02 | 0x20;
    const p = mmap(NULL, size, prot, MAP_PRIVATE_ANON, -1, 0) as NativePointer;
    if (p.equals(ptr(-1))) throw new Error("mmap failed: cannot set up thread stopping");
    return p;
}

/**
 * The signal handler, in machine code, in a page that is never unmapped:
 * a thread may be descheduled between the kernel setting up its signal
 * frame and running the handler, for longer than the script lives (2 cores,
 * busy threads); code and state freed by a script unload would then crash
 * it. Raw system calls: errno of the interrupted thread is left alone.
 *
 *   handler(sig, info, uc):
 *     pc = uc->uc_mcontext.gregs[REG_RIP]; sp = ...gregs[REG_RSP]
 *     round = state.round; tid = gettid()
 *     i = atomic n++; if i < MAX: pcs[i] = pc; tids[i] = tid; sps[i] = sp
 *     atomic stopped++
 *     while (released - round < 0) futex_wait(&released, released)
 *     atomic stopped--
 */
function emitHandler(state: NativePointer): NativePointer {
    const code = mapForever(PAGE_SIZE, 7);
    const w = new X86Writer(code, { pc: code });
    for (const r of ["rbx", "r12", "r13", "r14", "r15"] as const) w.putPushReg(r);
    w.putMovRegRegOffsetPtr("r12", "rdx", 168); // interrupted RIP
    w.putMovRegRegOffsetPtr("r15", "rdx", 160); // interrupted RSP
    w.putMovRegAddress("rbx", state);
    w.putMovRegRegOffsetPtr("r13d", "rbx", OFF_ROUND);
    w.putMovRegU32("eax", 186); // gettid
    w.putBytes([0x0f, 0x05]); // syscall
    w.putMovRegReg("r14", "rax");
    w.putMovRegU32("eax", 1);
    w.putLeaRegRegOffset("rcx", "rbx", OFF_N);
    w.putLockXaddRegPtrReg("rcx", "eax"); // eax = n++
    w.putMovRegU32("ecx", MAX_PCS);
    w.putCmpRegReg("eax", "ecx");
    w.putJccShortLabel("jae", "counted", "no-hint");
    w.putMovRegReg("rdx", "rax");
    w.putShlRegU8("rdx", 3);
    w.putLeaRegRegOffset("rcx", "rbx", OFF_PCS);
    w.putAddRegReg("rcx", "rdx");
    w.putMovRegPtrReg("rcx", "r12");
    w.putLeaRegRegOffset("rcx", "rbx", OFF_TIDS);
    w.putAddRegReg("rcx", "rdx");
    w.putMovRegPtrReg("rcx", "r14");
    w.putLeaRegRegOffset("rcx", "rbx", OFF_SPS);
    w.putAddRegReg("rcx", "rdx");
    w.putMovRegPtrReg("rcx", "r15");
    w.putLabel("counted");
    w.putMovRegU32("eax", 1);
    w.putLockXaddRegPtrReg("rbx", "eax"); // stopped++
    w.putLabel("wait");
    w.putMovRegRegOffsetPtr("edx", "rbx", OFF_RELEASED);
    w.putMovRegReg("eax", "edx");
    w.putSubRegReg("eax", "r13d");
    w.putJccShortLabel("jns", "go", "no-hint");
    w.putLeaRegRegOffset("rdi", "rbx", OFF_RELEASED);
    w.putXorRegReg("esi", "esi"); // FUTEX_WAIT; edx = the value seen
    w.putMovRegU32("r10d", 0); // no timeout (upper half cleared too)
    w.putMovRegU32("eax", 202); // futex
    w.putBytes([0x0f, 0x05]);
    w.putJmpShortLabel("wait");
    w.putLabel("go");
    w.putMovRegU32("eax", 0xffffffff);
    w.putLockXaddRegPtrReg("rbx", "eax"); // stopped--
    for (const r of ["r15", "r14", "r13", "r12", "rbx"] as const) w.putPopReg(r);
    w.putRet();
    w.flush();
    w.dispose();
    Memory.protect(code, PAGE_SIZE, "r-x");
    return code;
}

/**
 * `raw(nr, a, b, c, d)`: a system call made by a stub of our own, not through
 * libc, in a page that is never unmapped; and at `restorer` (offset 64), the
 * rt_sigreturn a kernel-level sigaction needs. While threads are stopped,
 * hooks on libc are being written or taken away: a call through them was
 * recorded as the program's (a trace of `libc.so*!*` showed the agent's
 * sigaction and syscall calls).
 */
type Raw = NativeFunction<Int64, [NativePointer, NativePointer, NativePointer, NativePointer, NativePointer]>;

function emitRawSyscall(): { raw: Raw; restorer: NativePointer } {
    const code = mapForever(PAGE_SIZE, 7);
    const w = new X86Writer(code, { pc: code });
    w.putMovRegReg("rax", "rdi");
    w.putMovRegReg("rdi", "rsi");
    w.putMovRegReg("rsi", "rdx");
    w.putMovRegReg("rdx", "rcx");
    w.putMovRegReg("r10", "r8");
    w.putBytes([0x0f, 0x05]); // syscall
    w.putRet();
    w.flush();
    w.dispose();
    const restorer = code.add(64);
    const r = new X86Writer(restorer, { pc: restorer });
    r.putMovRegU32("eax", 15); // rt_sigreturn
    r.putBytes([0x0f, 0x05]);
    r.flush();
    r.dispose();
    Memory.protect(code, PAGE_SIZE, "r-x");
    const raw = new NativeFunction(code, "int64", ["pointer", "pointer", "pointer", "pointer", "pointer"], HOLD);
    return { raw, restorer };
}

let rawCall: { raw: Raw; restorer: NativePointer } | null = null;

/** A raw system call (numbers as pointers: all arguments are registers). */
function sys(nr: number, a: NativePointerValue | number = 0, b: NativePointerValue | number = 0, c: NativePointerValue | number = 0, d: NativePointerValue | number = 0): number {
    rawCall ??= emitRawSyscall();
    const arg = (v: NativePointerValue | number) => (typeof v === "number" ? ptr(v) : (v as NativePointer));
    return rawCall.raw(ptr(nr), arg(a), arg(b), arg(c), arg(d)).toNumber();
}

/**
 * The thread ids in /proc/self/task (getdents64 on the directory). A
 * ThreadObserver would instead hook every thread's start and exit in libc for
 * as long as the agent lives, and run a JavaScript callback on each: work for
 * every thread the target creates or ends, and more threads inside agent code
 * when the agent unloads.
 */
function taskLister(): () => number[] {
    const SYS_openat = 257;
    const SYS_getdents64 = 217;
    const SYS_close = 3;
    const AT_FDCWD = -100;
    const O_RDONLY_DIRECTORY_CLOEXEC = 0o200000 | 0o2000000;
    const path = Memory.allocUtf8String("/proc/self/task");
    const BUF = 16384;
    const buf = Memory.alloc(BUF);
    return () => {
        const fd = sys(SYS_openat, AT_FDCWD, path, O_RDONLY_DIRECTORY_CLOEXEC);
        if (fd < 0) throw new Error("cannot list /proc/self/task: cannot stop threads to patch");
        const tids: number[] = [];
        try {
            for (;;) {
                const n = sys(SYS_getdents64, fd, buf, BUF);
                if (n < 0) throw new Error("cannot read /proc/self/task: cannot stop threads to patch");
                if (n === 0) break;
                // struct linux_dirent64: d_ino u64, d_off s64, d_reclen u16, d_type u8, d_name
                for (let off = 0; off < n; ) {
                    const rec = buf.add(off);
                    const name = rec.add(19).readUtf8String() ?? "";
                    if (/^\d+$/.test(name)) tids.push(parseInt(name, 10));
                    off += rec.add(16).readU16();
                }
            }
        } finally {
            sys(SYS_close, fd);
        }
        return tids.filter((tid) => !Cloak.hasThread(tid));
    };
}

function setup(): Quiescer | null {
    if (Process.platform !== "linux" || Process.arch !== "x64") return null;
    const state = mapForever(STATE_SIZE, 3);
    const handler = emitHandler(state);
    sys(SYS_getpid); // the stub, made before any hook is pending (core/hooks.ts)
    const restorer = (rawCall as { restorer: NativePointer }).restorer;
    // The kernel's struct sigaction (x86_64): handler, flags, restorer, mask.
    const SA_SIGINFO = 4;
    const SA_RESTART = 0x10000000;
    const SA_RESTORER = 0x04000000;
    const act = Memory.alloc(32); // empty mask
    act.writePointer(handler);
    act.add(8).writeU64(SA_SIGINFO | SA_RESTART | SA_RESTORER);
    act.add(16).writePointer(restorer);
    // Several scripts may patch one process (a later controller reverting
    // through a persistent one's doorbell): each installs its own handler
    // just before it stops threads, and puts back what was there after.
    const ign = Memory.alloc(32);
    ign.writePointer(SIG_IGN);
    ign.add(8).writeU64(SA_RESTORER);
    ign.add(16).writePointer(restorer);
    const previous = Memory.alloc(32);
    const sigaction = (a: NativePointer, old: NativePointer) => sys(SYS_rt_sigaction, QUIESCE_SIGNAL, a, old, 8);
    const ts = Memory.alloc(16);
    return {
        install: () => {
            if (sigaction(act, previous) !== 0) throw new Error("sigaction failed: cannot stop threads to patch");
        },
        restore: () => {
            // Ignoring the signal first discards any instance still pending
            // (a thread that blocks it, or had not run yet when we gave up):
            // none can be delivered under the target's own disposition
            // (by default, SIG_DFL: terminate).
            sigaction(ign, NULL);
            sigaction(previous, NULL);
        },
        threads: taskLister(),
        state,
        wake: () => {
            state.add(OFF_RELEASED).writeS32(state.add(OFF_ROUND).readS32());
            sys(SYS_futex, state.add(OFF_RELEASED), FUTEX_WAKE, 0x7fffffff);
        },
        pause: () => {
            sys(SYS_sched_yield);
        },
        nap: (us) => {
            ts.writeU64(Math.floor(us / 1e6));
            ts.add(8).writeU64((us % 1e6) * 1000);
            sys(SYS_nanosleep, ts);
        },
        tgkill: (tid) => sys(SYS_tgkill, Process.id, tid, QUIESCE_SIGNAL),
    };
}

/** Code where a stopped thread may not stay, [start, end); with `inSyscall`, unless it waits in a system call there. */
type Unsafe = [NativePointer, NativePointer, boolean];

/** Anonymous executable ranges (trampolines). */
function trampolineCode(): Unsafe[] {
    return Process.enumerateRanges("--x")
        .filter((r) => r.file === undefined)
        .map((r) => [r.base, r.base.add(r.size), false]);
}

/**
 * Frida's own agent code (cloaked: enumerateRanges does not list it). A thread
 * stopped there may hold one of Frida's locks (the script's, Interceptor's,
 * the allocator's) that the writing thread needs next: both would wait for
 * ever (seen: a target thread stopped in a JS listener's spin lock, the JS
 * thread blocked on the mutex it held, the revert never returned). Frida's
 * idle threads (those of another, eternalized agent are not cloaked from
 * this one) wait in system calls made from its code: that is safe.
 */
function agentCode(): Unsafe[] {
    const out: Unsafe[] = [];
    for (const line of File.readAllText("/proc/self/maps").split("\n")) {
        const f = line.split(/\s+/);
        if (f.length < 6 || f[1][2] !== "x" || !/frida-agent/.test(f.slice(5).join(" "))) continue;
        const [a, b] = f[0].split("-");
        out.push([ptr("0x" + a), ptr("0x" + b), true]);
    }
    return out;
}

function isSafe(pc: NativePointer, start: NativePointer, end: NativePointer, code: Unsafe[]): boolean {
    // A thread about to run the first byte runs either the old or the new
    // code, whole; one past it would run a mix.
    if (pc.compare(start) > 0 && pc.compare(end) < 0) return false;
    for (const [a, b, syscallOk] of code) {
        if (pc.compare(a) < 0 || pc.compare(b) >= 0) continue;
        if (!syscallOk || !atSyscall(pc, a, b)) return false;
    }
    return true;
}

/** `syscall` (0f 05) read as a little-endian u16. */
const SYSCALL_INSN = 0x050f;

/**
 * A PC interrupted in a system call: just after the `syscall` instruction, or
 * on it when the kernel will restart the call after the signal handler.
 */
function atSyscall(pc: NativePointer, a: NativePointer, b: NativePointer): boolean {
    if (pc.add(2).compare(b) <= 0 && pc.readU16() === SYSCALL_INSN) return true;
    return pc.sub(2).compare(a) >= 0 && pc.sub(2).readU16() === SYSCALL_INSN;
}

function inSyscall(tid: number): boolean {
    try {
        // Stopped by a tracer or job control (a spawned, still suspended
        // process): it runs nothing until resumed.
        const stat = File.readAllText(`/proc/self/task/${tid}/stat`);
        const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
        if (state === "t" || state === "T") return true;
        const text = File.readAllText(`/proc/self/task/${tid}/syscall`).trim();
        return /^\d+ /.test(text);
    } catch {
        return true; // the thread is gone
    }
}

function waitStopped(q: Quiescer, s: NativePointer, want: number): boolean {
    const end = Date.now() + STOP_LIMIT_MS;
    while (s.readS32() < want) {
        if (Date.now() > end) return false;
        q.pause(); // let the threads to be stopped run (2 cores, 4 busy threads: measured 50 ms/cycle spinning)
    }
    return true;
}

/**
 * Run `write` with every other thread stopped outside (start, start+size)
 * and, with `trampolines`, outside anonymous executable memory (Interceptor's
 * trampolines, which its revert frees). Elsewhere than Linux x86_64 it just
 * runs `write`.
 */
export function quiesced<T>(start: NativePointer, size: number, trampolines: boolean, write: () => T): T {
    if (q === undefined) q = setup();
    if (q === null) return write();
    const end = start.add(size);
    const code = trampolines ? [...agentCode(), ...trampolineCode()] : agentCode();
    q.install();
    try {
        return attempts(q, start, end, code, write);
    } finally {
        q.restore();
    }
}

function attempts<T>(q: Quiescer, start: NativePointer, end: NativePointer, code: Unsafe[], write: () => T): T {
    const self = Process.getCurrentThreadId();
    const deadline = Date.now() + ATTEMPT_LIMIT_MS;
    let unsafe = "";
    for (let attempt = 0; attempt === 0 || Date.now() < deadline; attempt++) {
        if (attempt > 0) {
            // Let the threads run on before stopping them again: a thread
            // stopped at an unsafe place (in Frida's code, or waiting for this
            // script's lock, which the sleep releases) must get past it, and on
            // a loaded machine it gets no CPU time unless we wait.
            Thread.sleep(Math.min(0.01, 0.0005 * (1 + attempt / 4)));
        }
        const tids = q.threads().filter((id) => id !== self);
        const stoppedAt = stopRound(q, tids);
        let clear = true;
        const stopped = new Set<number>();
        for (const t of stoppedAt) {
            stopped.add(t.id);
            if (clear && !isSafe(t.pc, start, end, code)) {
                clear = false;
                unsafe = `thread ${t.id} at ${t.pc}`;
            }
        }
        // A thread that blocks the signal (some runtimes' own threads do) or
        // is stopped by a tracer is safe only while it sits in a system call
        // (its PC is then in libc) or stays stopped. Listing again catches a
        // thread created since the signals were sent: it was not stopped.
        const late = clear ? q.threads().filter((tid) => tid !== self && !stopped.has(tid) && !tids.includes(tid)) : [];
        for (const tid of [...tids, ...late]) {
            if (clear && !stopped.has(tid) && !inSyscall(tid)) {
                clear = false;
                unsafe = `thread ${tid} did not stop and is not in a system call`;
            }
        }
        try {
            if (clear) return write();
        } finally {
            release(q);
        }
    }
    throw new Error(`could not stop the other threads outside ${start}..${end} within ${ATTEMPT_LIMIT_MS / 1000} s (last seen: ${unsafe}); nothing written`);
}

export interface Stopped {
    id: number;
    pc: NativePointer;
    sp: NativePointer;
}

/** One round: signal TIDS; the threads that stopped in the handler, and where. */
function stopRound(q: Quiescer, tids: number[]): Stopped[] {
    const s = q.state;
    // Open a new round: handlers that run from now on wait for its release.
    s.add(OFF_N).writeS32(0);
    s.add(OFF_ROUND).writeS32(s.add(OFF_ROUND).readS32() + 1);
    let sent = 0;
    for (const tid of tids) if (q.tgkill(tid) === 0) sent++;
    waitStopped(q, s, sent);
    const n = Math.min(s.add(OFF_N).readS32(), MAX_PCS);
    const stopped: Stopped[] = [];
    for (let i = 0; i < n; i++) {
        stopped.push({
            id: s.add(OFF_TIDS + 8 * i).readU32(),
            pc: s.add(OFF_PCS + 8 * i).readPointer(),
            sp: s.add(OFF_SPS + 8 * i).readPointer(),
        });
    }
    return stopped;
}

/** End the round: every stopped thread goes on and leaves the handler before the state is reused. */
function release(q: Quiescer): void {
    q.wake();
    while (q.state.readS32() > 0) q.pause();
}

/**
 * Stop the threads TIDS (not blocked in a system call: see core/leave.ts),
 * hand where each stopped to READ while they stay stopped, then let them go.
 * A thread stopped inside Frida's own code may hold a lock READ needs: then
 * all are let go and tried again a little later (bounded). Returns what READ
 * returned; null where this is not available (not Linux x86_64), or when the
 * threads could not be stopped outside Frida's code in time. No ptrace: Gum's
 * thread reading attaches each thread from a helper process, and once waited
 * for ever on one of Frida's own threads (docs/leaving.md).
 */
export function withStopped<T>(tids: number[], read: (stopped: Stopped[]) => T): T | null {
    if (q === undefined) q = setup();
    if (q === null || tids.length === 0) return null;
    const agent = agentCode();
    const deadline = Date.now() + 500;
    q.install();
    try {
        for (let attempt = 0; attempt === 0 || Date.now() < deadline; attempt++) {
            if (attempt > 0) Thread.sleep(0.002);
            const stopped = stopRound(q, tids);
            try {
                if (stopped.every((t) => isSafe(t.pc, t.pc, t.pc, agent))) return read(stopped);
            } finally {
                release(q);
            }
        }
        return null;
    } finally {
        q.restore();
    }
}

/** What `writeStopped` did, for the leave report (--debug). */
export interface StoppedWrite {
    /** Rounds of stopping until every running thread was at a safe place. */
    attempts: number;
    /** Running threads stopped in the last round. */
    stopped: number;
    /** Threads left alone because they were blocked in a system call. */
    blocked: number;
    /** Threads blocked at a PC inside bytes about to change (none seen so far). */
    blocked_inside: number;
    ms: number;
    /** The bound passed: written with the threads running, as Gum does. */
    unprotected: boolean;
}

const WRITE_LIMIT_MS = 2000;

/** The first of STARTS (sorted) whose span [a, a+span) holds PC strictly after its first byte. */
function insideAny(pc: NativePointer, starts: NativePointer[], span: number): boolean {
    let lo = 0;
    let hi = starts.length - 1;
    while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        if (starts[mid].compare(pc) < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    // starts[hi] is the last start below pc
    return hi >= 0 && pc.compare(starts[hi].add(span)) < 0;
}

/**
 * Run `write` (Gum's writing of new hooks: Interceptor.flush) while no
 * running thread of the program is inside the first SPAN bytes of any of
 * STARTS: a thread between two of a function's first instructions when its
 * jump is written resumes in the middle of the jump (seen: 1 in about 40
 * arms of a malloc trace on a thread calling malloc in a loop, under load).
 * Threads blocked in a system call are not signalled (a handler would end a
 * sleep or poll early with EINTR): their PC, from /proc, is checked instead.
 * Bounded: after WRITE_LIMIT_MS the write is made as Gum makes it, and said.
 */
export function writeStopped<T>(starts: NativePointer[], span: number, write: () => T, blockedAt: (tid: number) => NativePointer | null): [T, StoppedWrite] {
    const t0 = Date.now();
    const stats: StoppedWrite = { attempts: 0, stopped: 0, blocked: 0, blocked_inside: 0, ms: 0, unprotected: false };
    if (q === undefined) q = setup();
    if (q === null || starts.length === 0) return [write(), stats];
    const sorted = [...starts].sort((a, b) => a.compare(b));
    const agent = agentCode();
    const self = Process.getCurrentThreadId();
    let restored = false;
    q.install();
    try {
        while (Date.now() - t0 < WRITE_LIMIT_MS) {
            if (stats.attempts++ > 0) q.nap(Math.min(10000, 500 * stats.attempts));
            const running: number[] = [];
            stats.blocked = 0;
            stats.blocked_inside = 0;
            for (const tid of q.threads()) {
                if (tid === self) continue;
                const pc = blockedAt(tid);
                if (pc === null) running.push(tid);
                else {
                    stats.blocked++;
                    if (insideAny(pc, sorted, span)) stats.blocked_inside++;
                }
            }
            const stoppedAt = stopRound(q, running);
            let clear = true;
            const stopped = new Set<number>();
            for (const t of stoppedAt) {
                stopped.add(t.id);
                if (insideAny(t.pc, sorted, span) || !isSafe(t.pc, t.pc, t.pc, agent)) clear = false;
            }
            for (const tid of running) if (!stopped.has(tid) && !inSyscall(tid)) clear = false;
            // A thread started since the listing was not signalled.
            if (clear) {
                const listed = new Set(running);
                for (const tid of q.threads()) {
                    if (tid !== self && !listed.has(tid) && blockedAt(tid) === null) clear = false;
                }
            }
            stats.stopped = stopped.size;
            try {
                if (clear) {
                    // The target's disposition goes back first: sigaction is
                    // libc's, and after the write it could be a hooked call.
                    // Every thread signalled has taken the signal already.
                    restored = true;
                    q.restore();
                    const result = write();
                    stats.ms = Date.now() - t0;
                    return [result, stats];
                }
            } finally {
                release(q);
            }
        }
    } finally {
        if (!restored) q.restore();
    }
    stats.unprotected = true;
    const result = write();
    stats.ms = Date.now() - t0;
    return [result, stats];
}
