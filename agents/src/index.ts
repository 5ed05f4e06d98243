// The instr agent: one static bundle, configured as data over RPC.
// See docs/agent.md for the contract; this file only composes rpc.exports.

import { Plan, Point } from "./protocol.js";
import { Session } from "./core/session.js";
import { SyscallConfig } from "./syscalls/syscalls.js";
import { cmoduleSource } from "./core/cmodule.js";
import { FdTable } from "./syscalls/fdtable.js";
import { MemOptions, MemTracker, ReportRequest } from "./mem/mem.js";
import { PeekRequest, PokeRequest, peek, poke } from "./mem/peek.js";
import { patcher } from "./patch/patch.js";
import { PatchSpec } from "./patch/patch_types.js";
import { leaveSafely, prepareLeave } from "./core/leave.js";
import { armingsSeen, commit as hooksCommit, quiesce } from "./core/hooks.js";
import { markArmed, setHost, unmarkArmed } from "./core/marker.js";
import { prepareStopper } from "./core/stopper.js";
import { holdingPosts } from "./core/util.js";
import { listPoints } from "./dtrace/list.js";
import { forkPrologue } from "./core/gating.js";
import { Profiler, modules, unwindInfo } from "./profile/profiler.js";
import { SamplerOptions } from "./profile/profile.js";

prepareLeave();
prepareStopper();
const session = new Session();
const mem = new MemTracker(); // instr mem: its own engine (docs/memory.md)
const fdTable = new FdTable();
const profiler = new Profiler(); // instr profile (docs/profile.md)

// The mark goes first: made after arming, its own libc calls (memfd_create,
// mmap, ...) went through the new hooks and showed up in a trace of libc.
// It stays if arming fails part way (some hooks may be in); dispose removes it.
// Messages wait until the hooks are written with the threads stopped (core/hooks.ts).
function armed<T>(arm: () => T): T {
    markArmed();
    return holdingPosts(() => {
        const result = arm();
        hooksCommit(); // and the bytes Gum wrote are kept for the leave
        return result;
    });
}

rpc.exports = {
    hello: (hostPid?: number) => {
        setHost(hostPid);
        return session.hello();
    },
    // Each instrument that arms hooks marks the process (core/marker.ts).
    configure: (plan: Plan) => armed(() => session.configure(plan)),
    flush: () => session.flush(),
    forkPrologue: () => forkPrologue(), // child gating: is Frida's fork() hook written (core/gating.ts)
    snapshot: (final: boolean) => session.snapshot(final),
    // Every leave comes here (the host's dispose, Frida's unload when the host
    // is gone): each instrument reverts its hooks, then no thread may be left
    // inside instr's code (core/leave.ts).
    dispose: (reason?: string) => {
        // Gum's hooks: bytes back, and no thread on its way in, before any
        // is taken away (core/hooks.ts). Not at exit or exec: nothing leaves.
        const quiet = reason === "exit" || reason === "exec" ? null : quiesce();
        if (reason === "exit" || reason === "exec") profiler.atExit();
        const result = session.dispose(reason);
        if (reason === "exit" || reason === "exec") return result;
        mem.stop();
        profiler.stop();
        unmarkArmed();
        return { ...result, leave: { ...leaveSafely(), quiesced: quiet, armed: armingsSeen() } };
    },
    symbolize: (addresses: string[]) => session.symbolize(addresses),
    // System calls (instr/syscalls): scan libc's wrappers, then arm the monitor.
    syscallScan: (names: string[]) => session.syscallScan(names),
    cmoduleSource: (name: string) => cmoduleSource(name),
    // The host's build of the monitor's C comes as the call's data (null: TinyCC).
    syscallStart: (config: SyscallConfig, object?: ArrayBuffer | null) => armed(() => session.syscallStart(config, object ?? null)),
    syscallRobustList: () => session.syscallRobustList(),
    // The program's own fd table (fdtable.ts), at its next hooked call.
    fdsSeparate: () => fdTable.separate(session.syscallNextCall()),
    // instr mem / instr peek
    memStart: (options: MemOptions, object?: ArrayBuffer | null) => armed(() => mem.start(options, object ?? null)),
    memReport: (request: ReportRequest) => mem.report(request),
    memStop: () => mem.stop(),
    peek: (requests: PeekRequest[]) => peek(requests),
    poke: (requests: PokeRequest[]) => poke(requests),
    // instr dtrace -l: resolve points without arming (dtrace/list.ts).
    dtraceList: (points: Point[]) => listPoints(points),
    // instr profile: the sampler hooks nothing (docs/profile.md).
    profileStart: (options: SamplerOptions) => profiler.start(options),
    profileStop: () => profiler.stop(),
    profileModules: () => modules(),
    profileUnwindInfo: (address: string) => unwindInfo(address),
    // Live patching (docs/patching.md).
    patchApply: (specs: PatchSpec[]) => armed(() => patcher.apply(specs)),
    patchList: () => patcher.list(),
    patchRevert: (ids: number[] | "all") => patcher.revert(ids),
    patchRevertOwned: () => patcher.revertOwnedAll(),
    // A persistent patch stays with its ledger; the next instr may attach.
    patchPersist: () => {
        unmarkArmed();
        return patcher.persist();
    },
};
