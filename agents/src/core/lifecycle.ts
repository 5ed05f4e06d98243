// The end of the process: flush synchronously and wait (bounded) for the
// host's acknowledgement before the process exits, execs or dies of a signal.
//
// `recv("ack").wait()` cannot be bounded, so the wait is a loop of short
// `Thread.sleep()`s (which release the script lock, letting the script's
// thread deliver the host's `ack` to a persistent `recv` handler) that gives
// up after ACK_TIMEOUT_MS: a dead host cannot hang the target.

import { onFatal } from "./faults.js";
import { Flusher } from "./buffer.js";
import { formatAddress } from "./symbols.js";
import { inForkedChild, post, reportError } from "./util.js";
import * as hooks from "./hooks.js";

const ACK_TIMEOUT_MS = 5000;

type Reason = "exit" | "exec" | "crash";

const SIGNALS: Record<string, string> = {
    "access-violation": "SIGSEGV",
    "guard-page": "SIGSEGV",
    "stack-overflow": "SIGSEGV",
    "illegal-instruction": "SIGILL",
    arithmetic: "SIGFPE",
    breakpoint: "SIGTRAP",
    "single-step": "SIGTRAP",
    abort: "SIGABRT",
    system: "SIGSYS",
};

const EXIT_FUNCS = ["_exit", "_Exit", "exit_group"];

// Event kinds of the native lifecycle listeners (native_c.ts: LifeDesc).
const K_EXIT_CALL = 1;
const K_EXIT = 2;
const K_EXEC = 3;
const K_ABORT = 4;
const K_LEAVE = 0x100;
const LIFE_DESC_SIZE = 16;
const EXEC_FUNCS = ["execve", "execveat", "fexecve", "execv", "execvp", "execvpe", "execl", "execlp", "execle"];

export class Lifecycle {
    private ended = false;
    private disposed = false;
    private token = 0;
    private readonly acks = new Set<number>();
    /** Per thread: how deep inside exec* functions (an execvp calls execve). */
    private readonly execDepth = new Map<number, number>();
    private readonly hooked = new Set<string>();
    /** Descriptors and the callback must outlive the listeners. */
    private readonly keep: (NativePointer | NativeCallback<"void", ["int", "pointer", "pointer", "uint"]>)[] = [];
    private readonly pid = Process.id;

    constructor(
        private readonly flusher: Flusher,
        private readonly beforeEnd: (() => void) | null = null,
    ) {}

    install(): void {
        this.listenForAcks();
        const callback = new NativeCallback(
            (kind: number, arg0: NativePointer, ret: NativePointer, tid: number) => this.onEvent(kind, arg0, ret, tid),
            "void",
            ["int", "pointer", "pointer", "uint"],
        );
        this.keep.push(callback);
        this.hook("exit", K_EXIT_CALL, callback, false);
        for (const name of EXIT_FUNCS) this.hook(name, K_EXIT, callback, false);
        for (const name of EXEC_FUNCS) this.hook(name, K_EXEC, callback, true);
        this.hook("abort", K_ABORT, callback, false);
        onFatal((details) => {
            if (this.disposed || inForkedChild()) return false;
            const signal = SIGNALS[details.type] ?? details.type;
            const address = details.memory !== undefined ? details.memory.address : details.address;
            this.end("crash", null, signal, address, details.address);
            return false; // let the process die as it would have
        });
    }

    private onEvent(kind: number, arg0: NativePointer, ret: NativePointer, tid: number): void {
        try {
            switch (kind) {
                case K_EXIT_CALL:
                    // atexit handlers still run; the ending is sent from _exit.
                    this.flushQuietly();
                    break;
                case K_EXIT:
                    this.end("exit", arg0.toInt32(), null, null, null);
                    break;
                case K_ABORT:
                    this.end("crash", null, "SIGABRT", ret, ret);
                    break;
                case K_EXEC: {
                    const d = this.execDepth.get(tid) ?? 0;
                    this.execDepth.set(tid, d + 1);
                    if (d === 0) this.end("exec", null, null, null, null);
                    break;
                }
                case K_EXEC | K_LEAVE: {
                    // Only reached when the exec failed: the process goes on.
                    const d = (this.execDepth.get(tid) ?? 1) - 1;
                    if (d > 0) {
                        this.execDepth.set(tid, d);
                    } else {
                        this.execDepth.delete(tid);
                        this.ended = false;
                    }
                    break;
                }
            }
        } catch (e) {
            reportError(null, e);
        }
    }

    private hook(name: string, kind: number, callback: NativeCallback<"void", ["int", "pointer", "pointer", "uint"]>, leave: boolean): void {
        const address = Module.findGlobalExportByName(name);
        if (address === null) return;
        const key = address.toString();
        if (this.hooked.has(key)) return; // aliases, e.g. _Exit == _exit
        const cm = this.flusher.ring.cm;
        const desc = Memory.alloc(LIFE_DESC_SIZE);
        desc.writeS32(kind);
        desc.add(4).writeS32(this.pid);
        desc.add(8).writePointer(callback);
        this.keep.push(desc);
        const callbacks: NativeInvocationListenerCallbacks = { onEnter: cm.life_enter as NativePointer };
        if (leave) callbacks.onLeave = cm.life_leave as NativePointer;
        try {
            hooks.attach(address, callbacks, desc);
            this.hooked.add(key);
        } catch (e) {
            reportError(null, new Error(`cannot hook ${name} for flush-at-exit: ${String(e)}`));
        }
    }

    private listenForAcks(): void {
        recv("ack", (message: { token?: unknown }) => {
            if (typeof message.token === "number") this.acks.add(message.token);
            this.listenForAcks();
        });
    }

    private flushQuietly(): void {
        try {
            this.flusher.flushAll();
        } catch (e) {
            reportError(null, e);
        }
    }

    /** Flush everything, announce the ending, and wait for the host's ack. */
    end(reason: Reason, code: number | null, signal: string | null, address: NativePointer | null, pc: NativePointer | null): void {
        if (inForkedChild()) return;
        this.flushQuietly();
        if (this.ended || this.disposed) return;
        this.ended = true;
        try {
            this.beforeEnd?.();
        } catch (e) {
            reportError(null, e);
        }
        let symbol: string | null = null;
        if (pc !== null) {
            try {
                symbol = formatAddress(pc);
            } catch {
                symbol = null;
            }
        }
        const token = ++this.token;
        try {
            post("ending", { reason, code, signal, address: address?.toString() ?? null, symbol, token });
        } catch (e) {
            reportError(null, e);
            return;
        }
        this.waitForAck(token);
    }

    private waitForAck(token: number): void {
        const t0 = Date.now();
        while (!this.acks.has(token) && Date.now() - t0 < ACK_TIMEOUT_MS) Thread.sleep(0.002);
        this.acks.delete(token);
    }

    dispose(): void {
        this.disposed = true;
    }
}
