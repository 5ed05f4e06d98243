// System call monitoring (instr syscalls, syscall points): find the libc
// functions that issue system calls, replace them with the counting C
// wrappers of syscalls_c.ts, and send counters (and, in trace mode, records).
// Which functions to hook is decided by the host (instr/syscalls/wrappers.py)
// from what `scan` (syscalls_scan.ts) reports; this file only measures and arms.

import { loadCModule } from "../core/cmodule.js";
import { ownCode } from "../core/leave.js";
import { startRoutineOffset, toolTids } from "../core/threads.js";
import { inForkedChild, post, processThreads } from "../core/util.js";
import { NextCall, SEP_BUSY } from "./fdtable.js";
import { armForks, followFromStub, type ArmedForks } from "./syscalls_fork.js";
import * as hooks from "../core/hooks.js";

export interface SyscallSite {
    address: string;
    nr: number; // -1 for the indirect syscall(2) function
    flags: number; // F_* of syscalls_c.ts
    listener: boolean; // entry-only listener instead of a replacement (vfork)
    pre: number | null; // a constant first syscall argument (open -> openat: AT_FDCWD)
    arity: number; // wrapper arguments that are syscall arguments (after `pre`)
}

export interface SyscallConfig {
    sites: SyscallSite[];
    selected: number[]; // syscall numbers to account; the rest pass through
    trace: boolean;
    kinds: [number, number[], number[]][]; // nr, memory kind per arg, length arg per arg
    strmax: number;
    bufmax: number;
    buffer_bytes: number;
    fast: boolean; // replace where possible; false: listeners (child gating, see lis_enter in C)
    follow?: boolean; // children are followed with child gating (see syscallStart in session.ts)
    complete?: boolean; // Stalker on every syscall instruction instead of the wrappers (raw_transform)
    spawned?: boolean; // complete mode: the process is suspended at its start (follow from main)
    forked?: boolean; // a forked child, held inside fork() (complete mode: follow its thread now)
    fork_stub?: string | null; // complete mode, forked: the parent's fork stub, where the child waits (syscalls_fork.ts)
    thread_slots?: number; // per-thread state slots (default 4096); threads past them keep state in TLS
}

/** What arming reports: sites armed (and how many through a trampoline), failures, who built the C. */
export interface Armed {
    armed: number;
    slow: number;
    failed: string[];
    toolchain: string;
    toolchain_error: string | null;
    fork_stub?: string | null; // complete mode with -F: where this process's forked children wait to be followed
}

const NR_MAX = 1024;
const SITES = 512;
const SYS_BYTES = 64 * 1024;
const REC_HEAD = 88;
const F_SLOW = 8;

/**
 * The robust-futex list head of the process's thread whose id is the pid,
 * from get_robust_list(2), as [head, len] (head "0x0": none). In a forked
 * child that is the thread that forked (the only one; this RPC runs on one
 * of Frida's). The kernel clears the head in a forked child, so a head there
 * means the child set it after the fork: glibc's _Fork does, in line, before
 * child gating holds the child (monitor.py counts that call).
 */
export function robustList(): [string, number] | null {
    const nr = Process.arch === "x64" ? 274 : Process.arch === "arm64" ? 100 : -1;
    if (Process.platform !== "linux" || nr < 0) return null;
    const syscall = new NativeFunction(Module.getGlobalExportByName("syscall"), "long", ["long", "long", "pointer", "pointer"]);
    const head = Memory.alloc(Process.pointerSize);
    const len = Memory.alloc(Process.pointerSize);
    if (Number(syscall(nr, Process.id, head, len)) !== 0) return null;
    return [head.readPointer().toString(), len.readU32()];
}

/**
 * Frida's own threads, which must not be accounted: the cloaked ones (see
 * processThreads). At most 63, as a zero-terminated int32 array.
 */
function agentThreads(): NativePointer {
    const out = Memory.alloc(64 * 4);
    out.writeByteArray(new ArrayBuffer(64 * 4));
    // No /proc: this (JS) thread at least; the rest are told apart by where
    // they started (started_by_agent in syscalls_c.ts).
    toolTids(63).forEach((tid, i) => out.add(4 * i).writeS32(tid));
    return out;
}

export class SyscallMonitor {
    private readonly cm: CModule;
    private readonly sys: NativePointer;
    private readonly bufs: NativePointer[];
    private readonly cap: number;
    private readonly counters: NativePointer;
    private readonly swap: NativeFunction<number, [number]>;
    private readonly readCounters: NativeFunction<number, [NativePointer]>;
    private readonly readDrops: NativeFunction<number, []>;
    private readonly setActive: NativeFunction<void, [number]>;
    private readonly sepArm: NativeFunction<void, [number, NativePointer, number, NativePointer, number]>;
    private readonly sepState: NativeFunction<number, [NativePointer]>;
    private readonly sepDisarm: NativeFunction<number, []>;
    private readonly sepDetail = Memory.alloc(4); // sep_state's out-parameter, read every poll
    private readonly keep: NativePointer[] = [];
    private readonly agentTidsPtr: NativePointer;
    private lastCounters = "[]";
    private lastDrops = 0;
    private seq = 0;
    /** A tick count and CLOCK_MONOTONIC (ns) read together: records' times on the target clock. */
    private clock: [string, string] = ["0", "0"];
    /** Nanoseconds per tick of the C clock (see now_ticks in syscalls_c.ts). */
    readonly tickNs: number;
    armed = 0;
    /** Sites replaced with a trampoline (Interceptor.replace) rather than replaceFast. */
    slow = 0;
    failures: string[] = [];
    private toolchain = "tinycc";
    private toolchainError: string | null = null;
    private readonly replaced: NativePointer[] = [];

    constructor(
        private readonly config: SyscallConfig,
        object: ArrayBuffer | null = null,
    ) {
        this.sys = Memory.alloc(SYS_BYTES);
        this.sys.writeByteArray(new ArrayBuffer(SYS_BYTES));
        this.agentTidsPtr = agentThreads();
        const errno =
            Module.findGlobalExportByName("__errno_location") ?? Module.getGlobalExportByName("__errno");
        const symbols = {
            sys: this.sys,
            clock_gettime: Module.getGlobalExportByName("clock_gettime"),
            gettid: Module.getGlobalExportByName("gettid"),
            errno_location: errno,
            agent_tids: this.agentTidsPtr,
            open: Module.getGlobalExportByName("open"),
            read: Module.getGlobalExportByName("read"),
            close: Module.getGlobalExportByName("close"),
            unshare: Module.findGlobalExportByName("unshare") ?? NULL,
            dup3: Module.findGlobalExportByName("dup3") ?? NULL,
            getdents64: Module.findGlobalExportByName("getdents64") ?? NULL,
            pthread_self: Module.getGlobalExportByName("pthread_self"),
        };
        // The host's gcc -O2 build when it sent one (instr/cbuild.py), else
        // TinyCC here: never CModule's external toolchain, which runs gcc by
        // forking the target, and that fork sometimes hung before its exec
        // (docs/syscalls.md, "What it costs").
        const built = loadCModule("syscalls", symbols, object);
        this.cm = built.cm;
        this.toolchain = built.toolchain;
        this.toolchainError = built.error;
        const size = new NativeFunction(this.cm.sys_size, "int", [])();
        if (size > SYS_BYTES) throw new Error(`syscall state too large (${size})`);
        this.cap = config.trace ? Math.max(64 * 1024, Math.floor(Math.min(config.buffer_bytes, 1 << 30) / 2 / 8) * 8) : 8;
        this.bufs = [Memory.alloc(this.cap), Memory.alloc(this.cap)];
        const kinds = Memory.alloc(NR_MAX * 6);
        const lens = Memory.alloc(NR_MAX * 6);
        const selected = Memory.alloc(NR_MAX);
        kinds.writeByteArray(new ArrayBuffer(NR_MAX * 6));
        lens.writeByteArray(new ArrayBuffer(NR_MAX * 6));
        selected.writeByteArray(new ArrayBuffer(NR_MAX));
        for (const nr of config.selected) if (nr >= 0 && nr < NR_MAX) selected.add(nr).writeU8(1);
        for (const [nr, ks, ls] of config.kinds) {
            if (nr < 0 || nr >= NR_MAX) continue;
            ks.forEach((k, i) => kinds.add(nr * 6 + i).writeU8(k));
            ls.forEach((l, i) => lens.add(nr * 6 + i).writeU8(l));
        }
        this.keep.push(kinds, lens, selected, ...this.bufs);
        // Per-thread state slots (see state_get in syscalls_c.ts).
        const thrSize = new NativeFunction(this.cm.thr_size, "int", [])();
        const thrBytes = Math.max(0, Math.floor(config.thread_slots ?? 4096)) * thrSize;
        const thrPool = Memory.alloc(Math.max(thrBytes, 8));
        this.keep.push(thrPool);
        new NativeFunction(this.cm.sys_init, "void", ["int", "int", "int", "int", "pointer", "pointer", "pointer", "pointer", "pointer", "pointer", "int"])(
            this.cap,
            config.trace ? 1 : 0,
            config.strmax,
            config.bufmax,
            this.bufs[0],
            this.bufs[1],
            kinds,
            lens,
            selected,
            thrPool,
            thrBytes,
        );
        const mapsBuf = Memory.alloc(1 << 20);
        new NativeFunction(this.cm.find_frida_ranges, "void", ["pointer", "pointer", "int"])(
            new NativeFunction(this.cm.agent_address, "pointer", [])(),
            mapsBuf,
            1 << 20,
        );
        this.keep.push(mapsBuf);
        new NativeFunction(this.cm.set_start_offset, "void", ["int"])(startRoutineOffset(this.agentRange()));
        this.tickNs = this.calibrate();
        const exclusive = { scheduling: "exclusive" as const };
        this.swap = new NativeFunction(this.cm.ring_swap, "int", ["int"], exclusive);
        this.sendBegin = new NativeFunction(this.cm.send_begin, "int", []);
        this.sendEnd = new NativeFunction(this.cm.send_end, "void", []);
        this.counters = Memory.alloc(NR_MAX * 32);
        this.readCounters = new NativeFunction(this.cm.read_counters, "int", ["pointer"], exclusive);
        this.readDrops = new NativeFunction(this.cm.read_drops, "int", [], exclusive);
        this.setActive = new NativeFunction(this.cm.set_active, "void", ["int"], exclusive);
        this.sepArm = new NativeFunction(this.cm.sep_arm, "void", ["int", "pointer", "int", "pointer", "int"]);
        this.sepState = new NativeFunction(this.cm.sep_state, "int", ["pointer"]);
        this.sepDisarm = new NativeFunction(this.cm.sep_disarm, "int", []);
    }

    /** The program's own fd table, done by its thread in its next hooked call
     * (syscalls_c_fds.ts; fdtable.ts drives it). */
    readonly nextCall: NextCall = {
        arm: (nul, covers, frida) => {
            const c = Memory.alloc(4 * Math.max(covers.length, 1));
            covers.forEach((fd, i) => c.add(4 * i).writeS32(fd));
            const f = Memory.alloc(4 * Math.max(frida.length, 1));
            frida.forEach((tid, i) => f.add(4 * i).writeS32(tid));
            this.sepArm(nul, c, covers.length, f, frida.length);
        },
        state: () => {
            const state = this.sepState(this.sepDetail);
            return [state, this.sepDetail.readS32()];
        },
    };

    /** Ticks of the C clock per nanosecond, over 20 ms of CLOCK_MONOTONIC. */
    private calibrate(): number {
        const ticks = new NativeFunction(this.cm.ticks, "uint64", []);
        const mono = new NativeFunction(this.cm.mono_ns, "uint64", []);
        const t0 = ticks();
        const n0 = mono();
        this.clock = [t0.toString(), n0.toString()];
        if (Process.arch !== "x64") return 1;
        Thread.sleep(0.02);
        const t1 = ticks();
        const n1 = mono();
        const ns = Number(n1.sub(n0).toString());
        const dt = Number(t1.sub(t0).toString());
        return ns > 0 && dt > 0 ? ns / dt : 1;
    }

    /** The agent's code range, as find_frida_ranges found it. */
    private agentRange(): [NativePointer, NativePointer] {
        const f = new NativeFunction(this.cm.frida_range, "pointer", ["int"]);
        return [f(0), f(1)];
    }

    /** -F: the fork gate (syscalls_fork.ts). */
    private forks: ArmedForks | null = null;

    /** Threads Stalker follows in complete mode. */
    private followed: number[] = [];

    /**
     * Complete mode: follow the program's threads with Stalker (raw_transform
     * accounts each syscall instruction). Frida's code is excluded, so its
     * hooks (exit, exec) run natively; the main thread of a spawned,
     * suspended process is not listed by enumerateThreads: it is Process.id.
     */
    private armComplete(): Armed {
        const range = new NativeFunction(this.cm.frida_range, "pointer", ["int"]);
        const n = this.sys.add(this.rangesOffset()).readS32();
        for (let k = 0; k < n; k++) {
            const lo = range(2 * k);
            const hi = range(2 * k + 1);
            if (hi.compare(lo) > 0) Stalker.exclude({ base: lo, size: hi.sub(lo).toUInt32() });
        }
        // The hooked wrappers run natively (a direct call to an excluded address
        // is made outside Stalker): fork's, because the child of a fork made
        // under Stalker died of SIGSEGV (a jump to 0), whatever the transform.
        for (const s of this.config.sites) Stalker.exclude({ base: ptr(s.address), size: 1 });
        this.forks = this.config.follow === true ? armForks(this.cm, true) : null;
        const options = { transform: this.cm.raw_transform as NativePointer } as StalkerOptions;
        const follow = (tid: number): void => {
            if (this.followed.includes(tid)) return;
            Stalker.follow(tid, options);
            this.followed.push(tid);
            this.armed++;
        };
        // A thread suspended by spawn cannot be followed from here (measured: its
        // code is never transformed); it is followed from inside, when it enters
        // main (the process's first thread runs everything before main in the
        // loader and libc's start code, whose calls are not the program's).
        const main = this.config.spawned === true ? Process.mainModule.findSymbolByName("main") : null;
        if (this.config.spawned === true && main === null) {
            this.failures.push("no 'main' symbol in the program: its first thread is not followed");
        }
        if (main !== null) {
            hooks.attach(main, {
                onEnter() {
                    follow(this.threadId);
                },
            });
        }
        // A process held at its start has no other thread of its own. Following
        // its held main thread from here blocked syscallStart for ~15 s in some
        // exec'ed images (measured), where enumerateThreads listed it.
        const agent = new Set(this.agentTids());
        const tids = new Set(this.config.spawned === true ? [] : (processThreads()?.program ?? Process.enumerateThreads().map((t) => t.id)));
        if (this.config.spawned !== true) tids.add(Process.id);
        if (this.config.forked === true) {
            // Held inside fork(): followed once it is back in the program and
            // waits in its parent's fork stub (syscalls_fork.ts), or now.
            const parentStub = this.config.fork_stub ?? null;
            if (parentStub === null) tids.add(Process.id);
            else followFromStub(ptr(parentStub), () => follow(Process.id), (why) => post("error", { probe: null, message: why, stack: null }));
        }
        for (const tid of tids) {
            if (agent.has(tid)) continue;
            try {
                follow(tid);
            } catch (e) {
                this.failures.push(`thread ${tid}: ${String(e)}`);
            }
        }
        Interceptor.flush();
        this.setActive(1);
        const forkStub = this.forks?.stub.toString() ?? null;
        return { armed: this.armed, slow: 0, failed: this.failures, toolchain: this.toolchain, toolchain_error: this.toolchainError, fork_stub: forkStub };
    }

    private rangesOffset(): number {
        return new NativeFunction(this.cm.n_ranges_offset, "int", [])();
    }

    private agentTids(): number[] {
        const out: number[] = [];
        for (let i = 0; i < 64; i++) {
            const t = this.agentTidsPtr.add(4 * i).readS32();
            if (t === 0) break;
            out.push(t);
        }
        return out;
    }

    /** Replace (or listen on) every site; failures are reported, not fatal. */
    arm(): Armed {
        if (this.config.complete === true && this.config.sites.length === 0) return this.armComplete();
        // Exclusive: a cooperative NativeFunction call leaves the JS runtime,
        // and that commits Gum's pending Interceptor transaction, so the
        // replaceFast just made would go live before its site's original is
        // stored, and a thread calling the wrapper then would jump to NULL.
        const setSite = new NativeFunction(this.cm.set_site, "void", ["int", "pointer", "int", "int", "int", "int64", "int"], { scheduling: "exclusive" });
        const site = (i: number, orig: NativePointer, s: SyscallSite): void =>
            setSite(i, orig, s.nr, s.flags, s.pre === null ? 0 : 1, s.pre ?? 0, s.arity);
        // With the program's running threads stopped outside the wrappers'
        // first bytes while Gum writes the jumps (core/hooks.ts).
        const sites = this.config.sites.slice(0, SITES);
        hooks.armStopped(sites.map((s) => ptr(s.address)), () => this.armSites(sites, site));
        if (this.config.sites.length > SITES) this.failures.push(`${this.config.sites.length - SITES} sites over the limit of ${SITES}`);
        // Complete mode with sites: the wrappers Frida itself hooks (close, under
        // child gating) run natively inside Frida's code, out of Stalker's sight.
        if (this.config.complete === true) return this.armComplete();
        if (this.config.follow === true) this.forks = armForks(this.cm, false);
        this.setActive(1);
        return { armed: this.armed, slow: this.slow, failed: this.failures, toolchain: this.toolchain, toolchain_error: this.toolchainError };
    }

    private armSites(sites: SyscallSite[], site: (i: number, orig: NativePointer, s: SyscallSite) => void): void {
        sites.forEach((s, i) => {
            const address = ptr(s.address);
            try {
                if (!this.config.fast && !s.listener) {
                    site(i, NULL, s);
                    this.listen.push([address, i]);
                } else if (s.listener) {
                    site(i, NULL, s);
                    hooks.attach(address, { onEnter: this.cm.on_enter_only as NativePointer } as NativeInvocationListenerCallbacks, ptr(i));
                } else {
                    const repl = this.cm["r" + i.toString(8).padStart(3, "0")] as NativePointer;
                    // The site is filled in before the replacement can run:
                    // replaceFast's change is pending in Gum's transaction
                    // until Interceptor.flush() below (or until this thread
                    // leaves the JS runtime: a cooperative NativeFunction
                    // call, or ownCode's first use, which flushes), so
                    // nothing may do that before site() has stored `orig`.
                    let orig: NativePointer;
                    try {
                        // Fastest: a direct branch; needs room for it in the function.
                        orig = Interceptor.replaceFast(address, repl);
                        site(i, orig, s);
                        ownCode(orig);
                    } catch {
                        // A near trampoline (small functions, or functions that are also
                        // attached to); calling the target from the replacement reaches
                        // the original.
                        site(i, address, { ...s, flags: s.flags | F_SLOW });
                        hooks.replace(address, repl);
                        this.slow++;
                    }
                    this.replaced.push(address);
                }
                this.armed++;
            } catch (e) {
                this.failures.push(`${s.address}: ${String(e)}`);
            }
        });
        this.attachListeners();
    }

    /**
     * Send what was recorded since the last flush, and the counters if they
     * changed. The timer's flushes send only in trace mode. Counters are
     * always sent by the final flushes (exit, exec, crash, dispose).
     */
    flush(periodic = false): void {
        if (periodic && !this.config.trace) return;
        // -F: not while a thread is in fork() (the fork gate, syscalls_fork.ts).
        if (periodic && this.sendBegin() === 0) return;
        try {
            this.send();
        } finally {
            if (periodic) this.sendEnd();
        }
    }

    private readonly sendBegin: NativeFunction<number, []>;
    private readonly sendEnd: NativeFunction<void, []>;

    private send(): void {
        let data: ArrayBuffer | null = null;
        if (this.config.trace) {
            const b = this.swap(200000);
            const len = this.sys.add(this.outLenOffset()).readS32();
            if (len > 0) data = this.bufs[b].readByteArray(len);
        }
        const k = this.readCounters(this.counters);
        const arr: number[][] = [];
        for (let i = 0; i < k; i++) {
            const p = this.counters.add(32 * i);
            arr.push([p.readS64().toNumber(), p.add(8).readS64().toNumber(), p.add(16).readS64().toNumber(), p.add(24).readS64().toNumber()]);
        }
        const text = JSON.stringify(arr);
        const drops = this.readDrops();
        if (data === null && text === this.lastCounters && drops === this.lastDrops) return;
        this.lastCounters = text;
        this.lastDrops = drops;
        this.seq++;
        post("syscalls", { seq: this.seq, counters: arr, drops, head: REC_HEAD, tick_ns: this.tickNs, clock: this.clock }, data);
    }

    private outLenOffset(): number {
        return this.outLen ?? (this.outLen = new NativeFunction(this.cm.out_len_offset, "int", [])());
    }

    private outLen: number | null = null;

    /** Listener-tier sites (address, site index), and their live listeners. */
    private readonly listen: [NativePointer, number][] = [];
    private listeners: InvocationListener[] = [];

    private attachListeners(): void {
        const cb = { onEnter: this.cm.lis_enter, onLeave: this.cm.lis_leave } as NativeInvocationListenerCallbacks;
        for (const [address, i] of this.listen) {
            try {
                this.listeners.push(hooks.attach(address, cb, ptr(i)));
            } catch (e) {
                this.failures.push(`${address}: ${String(e)}`);
            }
        }
    }

    /** Stop accounting and put the original functions back. */
    stop(): void {
        this.setActive(0);
        // A program's thread separating its fd table right now finishes first
        // (a few syscalls); one that has not started never will.
        for (let i = 0; i < 1000 && this.sepDisarm() === SEP_BUSY; i++) Thread.sleep(0.001);
        // In a forked child (its inherited copy of this script, unloaded by
        // Frida) the followed thread ids are the parent's: Stalker must not be
        // asked to unfollow a thread of another process from here.
        // There the fork gate's GOT slots are the child's own agent's now.
        if (inForkedChild()) this.followed.length = 0;
        else this.forks?.restore();
        this.forks = null;
        for (const tid of this.followed) {
            try {
                Stalker.unfollow(tid);
            } catch {
                // The thread is gone.
            }
        }
        this.followed.length = 0;
        // The running threads stopped while Gum puts the bytes back (core/hooks.ts).
        hooks.unhookStopped([...this.replaced], () => {
            for (const a of this.replaced) {
                try {
                    Interceptor.revert(a);
                } catch {
                    // Already gone with its module.
                }
            }
            Interceptor.flush();
        });
        this.replaced.length = 0;
    }
}
