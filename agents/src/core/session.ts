// One instrumentation session inside the target: what `configure` builds and
// `dispose` tears down. index.ts exposes it over RPC.

import { Hello, PROTOCOL_VERSION, Plan, ProbeStatus } from "../protocol.js";
import { Flusher } from "./buffer.js";
import { Aggregator } from "../aggregate/agg.js";
import { Lifecycle } from "./lifecycle.js";
import { ProbeSet } from "../probes/probes.js";
import { SymbolTriple, symbolize } from "./symbols.js";
import { processThreads, reportError } from "./util.js";
import { Armed, SyscallConfig, SyscallMonitor, robustList } from "../syscalls/syscalls.js";
import { NextCall } from "../syscalls/fdtable.js";
import { ScanResult, scan } from "../syscalls/syscalls_scan.js";
import { RevertResult } from "../patch/patch_types.js";
import { patcher } from "../patch/patch.js";

export class Session {
    private flusher: Flusher | null = null;
    private probes: ProbeSet | null = null;
    private lifecycle: Lifecycle | null = null;
    private aggs: Aggregator | null = null;
    private disposed = false;
    private syscalls: SyscallMonitor | null = null;

    hello(): Hello {
        return {
            protocol: PROTOCOL_VERSION,
            arch: Process.arch,
            platform: Process.platform,
            pid: Process.id,
            pointer_size: Process.pointerSize,
            frida_threads: processThreads()?.frida ?? [],
        };
    }

    configure(plan: Plan): { probes: ProbeStatus[] } {
        if (plan.protocol !== PROTOCOL_VERSION) {
            throw new Error(`protocol mismatch: the agent speaks ${PROTOCOL_VERSION}, the plan ${plan.protocol}`);
        }
        if (this.disposed) throw new Error("the agent was disposed");
        if (this.flusher !== null) throw new Error("the agent is already configured");
        // A thread observer in the process, for every run: without one, a
        // spawned program sometimes hung at exit inside Frida, two of Frida's
        // threads spinning on the spinlock Gum's Interceptor takes to register
        // a thread's context and the main thread waiting in exit() (spawned
        // sys_net runs, two at a time: 6 hangs in about 1,650 runs without an
        // observer, 0 in 2,305 with one). With forks followed it hung every
        // time (sys_fork, -F: 15 of 15 runs; 0 of 55 with an observer). How the
        // observer avoids it, inside Frida, was not found.
        Process.attachThreadObserver({ onRemoved: () => undefined });
        const options = plan.options;
        const flusher = new Flusher(options, plan.probes.length);
        this.flusher = flusher;
        const follow = options.follow === true;
        this.aggs = plan.fast_c !== null ? new Aggregator(plan, flusher.symbols, follow) : null;
        this.probes = new ProbeSet(flusher, this.aggs, follow);
        const statuses = this.probes.armAll(plan.probes);
        // Flush-at-exit is installed for every run, whatever the probes are;
        // after the probes, so that a probe on exit/_exit/abort itself writes
        // its record before the final flush (listeners run in attach order).
        const aggs = this.aggs;
        this.lifecycle = new Lifecycle(flusher, aggs !== null ? () => aggs.snapshot(true) : null);
        this.lifecycle.install();
        flusher.start(options.flush_interval_ms);
        return { probes: statuses };
    }

    syscallScan(names: string[]): { module: string; base: string; arch: string; functions: ScanResult[] } {
        return scan(names);
    }

    /** See robustList in syscalls.ts: asked of a forked child before it is armed. */
    syscallRobustList(): [string, number] | null {
        return robustList();
    }

    /** The syscall monitor's hook for the program's own fd table (fdtable.ts). */
    syscallNextCall(): NextCall | null {
        return this.syscalls?.nextCall ?? null;
    }

    /** Arm the syscall monitor (after configure, which set up flushing and the exit hooks). */
    syscallStart(config: SyscallConfig, object: ArrayBuffer | null): Armed {
        if (this.flusher === null) throw new Error("configure the agent first");
        if (this.syscalls !== null) throw new Error("the syscall monitor is already armed");
        const monitor = new SyscallMonitor(config, object);
        this.syscalls = monitor;
        const result = monitor.arm();
        this.flusher.onFlush((periodic) => monitor.flush(periodic));
        return result;
    }

    flush(): { seq: number } {
        return { seq: this.flusher !== null ? this.flusher.flushAll() : 0 };
    }

    /** Send the aggregations (after the events written so far). */
    snapshot(final: boolean): { seq: number } {
        const seq = this.flush().seq;
        if (this.aggs !== null && !this.disposed) this.aggs.snapshot(final);
        return { seq };
    }

    /**
     * `reason` is absent when the host calls dispose. Frida itself calls it
     * with "exit" (from its exit/_exit/abort hooks, before ours run) and
     * "unload" (script unload). On "exit" the hooks must stay: the process
     * goes on through atexit handlers, and our own exit hooks then send the
     * `ending` and wait for the host's ack.
     */
    dispose(reason?: string): { seq: number; patches?: RevertResult[] } {
        const flusher = this.flusher;
        if ((reason === "exit" || reason === "exec") && flusher !== null && !this.disposed) {
            const seq = flusher.flushAll();
            if (reason === "exec") this.finalSnapshot();
            return { seq };
        }
        if (this.disposed || flusher === null) {
            this.disposed = true;
            return { seq: flusher?.lastSeq() ?? 0, patches: patcher.persistent ? [] : patcher.revertOwnedAll() };
        }
        this.disposed = true;
        flusher.stop();
        this.probes?.dispose();
        this.lifecycle?.dispose();
        this.syscalls?.stop();
        let seq = flusher.flushAll();
        this.finalSnapshot();
        Interceptor.detachAll();
        Interceptor.flush();
        flusher.ring.stop(); // producers blocked on a full ring return at once
        seq = flusher.flushAll(); // whatever was written while detaching
        // Patches go last, after every probe hook is gone, so that the bytes
        // read back can be compared with the originals.
        return { seq, patches: patcher.persistent ? [] : patcher.revertOwnedAll() };
    }

    private finalSnapshot(): void {
        try {
            this.aggs?.snapshot(true);
        } catch (e) {
            reportError(null, e);
        }
    }

    symbolize(addresses: string[]): Record<string, SymbolTriple> {
        return symbolize(addresses);
    }
}
