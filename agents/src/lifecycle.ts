// The end of the process: flush synchronously and wait (bounded) for the
// host's acknowledgement before the process exits, execs or dies of a signal.
//
// `recv("ack").wait()` cannot be bounded, so the wait is a loop of short
// `Thread.sleep()`s (which release the script lock, letting the script's
// thread deliver the host's `ack` to a persistent `recv` handler) that gives
// up after ACK_TIMEOUT_MS: a dead host cannot hang the target.

import { Flusher } from "./buffer.js";
import { formatAddress } from "./symbols.js";
import { post, reportError } from "./util.js";

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
const EXEC_FUNCS = ["execve", "execveat", "fexecve", "execv", "execvp", "execvpe", "execl", "execlp", "execle"];

export class Lifecycle {
    private ended = false;
    private disposed = false;
    private token = 0;
    private readonly acks = new Set<number>();
    /** Per thread: how deep inside exec* functions (an execvp calls execve). */
    private readonly execDepth = new Map<number, number>();
    private readonly hooked = new Set<string>();

    constructor(private readonly flusher: Flusher) {}

    install(): void {
        this.listenForAcks();
        const self = this;
        this.hook("exit", {
            onEnter() {
                // atexit handlers still run; the ending is sent from _exit.
                self.flushQuietly();
            },
        });
        for (const name of EXIT_FUNCS) {
            this.hook(name, {
                onEnter(args) {
                    self.end("exit", args[0].toInt32(), null, null, null);
                },
            });
        }
        for (const name of EXEC_FUNCS) {
            this.hook(name, {
                onEnter() {
                    const d = self.execDepth.get(this.threadId) ?? 0;
                    self.execDepth.set(this.threadId, d + 1);
                    if (d === 0) self.end("exec", null, null, null, null);
                },
                onLeave() {
                    // Only reached when the exec failed: the process goes on.
                    const d = (self.execDepth.get(this.threadId) ?? 1) - 1;
                    if (d > 0) {
                        self.execDepth.set(this.threadId, d);
                    } else {
                        self.execDepth.delete(this.threadId);
                        self.ended = false;
                    }
                },
            });
        }
        this.hook("abort", {
            onEnter() {
                self.end("crash", null, "SIGABRT", this.returnAddress, this.returnAddress);
            },
        });
        Process.setExceptionHandler((details) => {
            if (this.disposed) return false;
            const signal = SIGNALS[details.type] ?? details.type;
            const address = details.memory !== undefined ? details.memory.address : details.address;
            this.end("crash", null, signal, address, details.address);
            return false; // let the process die as it would have
        });
    }

    private hook(name: string, callbacks: ScriptInvocationListenerCallbacks): void {
        const address = Module.findGlobalExportByName(name);
        if (address === null) return;
        const key = address.toString();
        if (this.hooked.has(key)) return; // aliases, e.g. _Exit == _exit
        try {
            Interceptor.attach(address, callbacks);
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
        this.flushQuietly();
        if (this.ended || this.disposed) return;
        this.ended = true;
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
