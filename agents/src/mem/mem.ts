// The memory tracker (`instr mem`): allocator hooks in C (mem_c.ts) installed
// with Interceptor.replaceFast, reports sent as one binary `mem-report`
// message, and a leak scan at the end of the process. See docs/memory.md.
//
// A report's data is, in order: counters (u64[MEM_NCOUNTERS_ALL]), the stack
// table (n_stacks records of MEM_STACK_SIZE), per-stack heap aggregates and
// per-stack mmap aggregates (n_stacks records of MEM_AGG_SIZE each), then
// the oldest live heap blocks (n_oldest records of MEM_BLOCK_SIZE). All of
// it comes from one snapshot (mem_snapshot in mem_c.ts), taken at one instant.

import {
    DELETE_BASE,
    MEM_AGG_SIZE,
    MEM_BLOCK_SIZE,
    MEM_NKINDS,
    MEM_NSCALARS,
    MEM_STACK_SIZE,
    MEM_STATE_BYTES,
    NEW_BASE,
    REAL,
} from "./mem_c.js";
import { toolThreads } from "../core/threads.js";
import { loadCModule } from "../core/cmodule.js";
import { ownCode } from "../core/leave.js";
import { post, reportError } from "../core/util.js";
import * as hooks from "../core/hooks.js";
import { hookTarget } from "../core/resolver.js";
import { jumpsIntoHead } from "../core/prologue.js";

export const MEM_NCOUNTERS_ALL = MEM_NSCALARS + 2 * MEM_NKINDS + 130;
const ACK_TIMEOUT_MS = 60000;
const TICK_MS = 100;

export interface MemOptions {
    max_live: number;
    max_maps: number;
    max_stacks: number;
    depth: number;
    /** "spawn": every allocation is seen, precise roots. "attach": conservative roots. */
    mode: "spawn" | "attach";
    cxx: boolean;
    mmap: boolean;
    /** Count the calls made on Frida's and instr's threads too (--include-tool). */
    include_tool?: boolean;
    /** Who compiles the hooks: "auto" (the host's compiler, else TinyCC), "system" (the host's), "tinycc". */
    compiler: "auto" | "system" | "tinycc";
}

export interface MemStarted {
    hooked: string[];
    missing: string[];
    failed: string[];
    main_stack: string[];
    toolchain: string;
    toolchain_error: string | null;
    state_bytes: number;
    arena_bytes: number;
    tick_ms: number;
    /** How the tool's threads are told apart (threads.ts), and whether their calls are left out. */
    tool: { excluded: boolean; threads: number; ranges: number; start_offset: number; tid_offset: number; js_thread_is_tool: boolean };
}

export interface ReportRequest {
    scan: boolean;
    oldest: number;
    reason: string;
}

const NEW_NAMES = [
    "_Znwm",
    "_Znam",
    "_ZnwmRKSt9nothrow_t",
    "_ZnamRKSt9nothrow_t",
    "_ZnwmSt11align_val_t",
    "_ZnamSt11align_val_t",
    "_ZnwmSt11align_val_tRKSt9nothrow_t",
    "_ZnamSt11align_val_tRKSt9nothrow_t",
];
const DELETE_NAMES = [
    "_ZdlPv",
    "_ZdaPv",
    "_ZdlPvm",
    "_ZdaPvm",
    "_ZdlPvRKSt9nothrow_t",
    "_ZdaPvRKSt9nothrow_t",
    "_ZdlPvSt11align_val_t",
    "_ZdaPvSt11align_val_t",
    "_ZdlPvmSt11align_val_t",
    "_ZdaPvmSt11align_val_t",
    "_ZdlPvSt11align_val_tRKSt9nothrow_t",
    "_ZdaPvSt11align_val_tRKSt9nothrow_t",
];

function pageAlloc(size: number): NativePointer {
    // Whole pages come from the OS zeroed (and are only committed when touched).
    const page = Process.pageSize;
    return Memory.alloc(Math.max(page, Math.ceil(size / page) * page));
}

type U64 = UInt64 | number;

export class MemTracker {
    private cm: CModule | null = null;
    private toolchain = "tinycc";
    private toolchainError: string | null = null;
    private state: NativePointer | null = null;
    private arena: NativePointer | null = null;
    private arenaBytes = 0;
    private options: MemOptions | null = null;
    private readonly replaced: NativePointer[] = [];
    private timer: ReturnType<typeof setInterval> | null = null;
    private token = 0;
    private readonly acks = new Set<number>();
    private ended = false;
    private stopped = false;
    private fn: {
        sizes: NativeFunction<void, [NativePointer]>;
        snapshot: NativeFunction<Int64, [NativePointer, NativePointer, U64, NativePointer, U64, NativePointer, U64, NativePointer]>;
        sort: NativeFunction<void, [NativePointer, U64]>;
        mark: NativeFunction<void, [NativePointer, U64, NativePointer, U64, number, NativePointer]>;
        classify: NativeFunction<void, [NativePointer, U64, NativePointer]>;
        aggregate: NativeFunction<void, [NativePointer, U64, NativePointer, U64]>;
        oldest: NativeFunction<UInt64, [NativePointer, U64, NativePointer, U64]>;
        tick: NativeFunction<void, []>;
        ignore: NativeFunction<NativePointer, []>;
        findTcbs: NativeFunction<UInt64, [NativePointer, NativePointer, NativePointer, U64]>;
        track: NativeFunction<void, [NativePointer]>;
    } | null = null;

    start(options: MemOptions, object: ArrayBuffer | null = null): MemStarted {
        if (this.cm !== null) throw new Error("memory tracking is already on");
        if (Process.arch !== "x64") throw new Error(`instr mem supports x86_64 targets only (this one is ${Process.arch})`);
        this.options = options;
        const state = pageAlloc(MEM_STATE_BYTES);
        this.state = state;
        // The host's gcc -O2 build when it sent one (instr/cbuild.py; several
        // times faster than TinyCC's unoptimised code), else TinyCC here. Not
        // CModule's external toolchain: it runs gcc by forking the target, and
        // such a fork sometimes hung before its exec (docs/syscalls.md).
        const built = loadCModule("mem", { st: state }, options.compiler === "tinycc" ? null : object);
        if (options.compiler === "system" && built.toolchain !== "host") {
            throw new Error(built.error ?? "the host's C compiler sent no build of the hooks");
        }
        const cm = built.cm;
        this.toolchain = built.toolchain;
        this.toolchainError = built.error;
        this.cm = cm;
        const ex = { scheduling: "exclusive" as const };
        const arenaSize = new NativeFunction(cm.mem_arena_size, "uint64", ["uint64", "uint64", "uint64"], ex);
        this.arenaBytes = Number(arenaSize(options.max_live, options.max_maps, options.max_stacks).toString());
        this.arena = pageAlloc(this.arenaBytes);
        const [lo, hi] = mainStack();
        const setup = new NativeFunction(
            cm.mem_setup,
            "int64",
            ["pointer", "uint64", "uint64", "uint64", "uint32", "uint64", "uint64", "uint64"],
            ex,
        );
        const r = Number(
            setup(this.arena, options.max_live, options.max_maps, options.max_stacks, options.depth, uint64(lo.toString()), uint64(hi.toString()), MEM_STATE_BYTES).toString(),
        );
        if (r < 0) throw new Error(`memory tracker state needs ${-r} bytes, has ${MEM_STATE_BYTES}`);
        this.fn = {
            sizes: new NativeFunction(cm.mem_sizes, "void", ["pointer"], ex),
            snapshot: new NativeFunction(
                cm.mem_snapshot,
                "int64",
                ["pointer", "pointer", "uint64", "pointer", "uint64", "pointer", "uint64", "pointer"],
                ex,
            ),
            sort: new NativeFunction(cm.mem_sort, "void", ["pointer", "uint64"], ex),
            mark: new NativeFunction(cm.mem_mark, "void", ["pointer", "uint64", "pointer", "uint64", "int", "pointer"], ex),
            classify: new NativeFunction(cm.mem_classify, "void", ["pointer", "uint64", "pointer"], ex),
            aggregate: new NativeFunction(cm.mem_aggregate, "void", ["pointer", "uint64", "pointer", "uint64"], ex),
            oldest: new NativeFunction(cm.mem_oldest, "uint64", ["pointer", "uint64", "pointer", "uint64"], ex),
            tick: new NativeFunction(cm.mem_tick, "void", [], ex),
            ignore: new NativeFunction(cm.mem_ignore_thread, "pointer", [], ex),
            findTcbs: new NativeFunction(cm.mem_find_tcbs, "uint64", ["pointer", "pointer", "pointer", "uint64"], ex),
            track: new NativeFunction(cm.mem_track_thread, "void", ["pointer"], ex),
        };
        // Frida's threads and instr's (this JS thread among them) allocate for
        // the tool, not for the program: their calls are left out unless
        // include_tool (mem_c.ts: tool_thread). Set before any hook is in.
        const tool = toolThreads(new NativeFunction(cm.mem_agent_address, "pointer", [], ex)());
        const tids = Memory.alloc(4 * Math.max(1, tool.tids.length));
        tool.tids.forEach((t, i) => tids.add(4 * i).writeS32(t));
        const ranges = Memory.alloc(16 * Math.max(1, tool.ranges.length));
        tool.ranges.forEach(([lo, hi], i) => {
            ranges.add(16 * i).writePointer(lo);
            ranges.add(16 * i + 8).writePointer(hi);
        });
        new NativeFunction(cm.mem_set_tools, "void", ["int", "pointer", "int", "pointer", "int", "int", "int"], ex)(
            options.include_tool === true ? 0 : 1,
            tids,
            tool.tids.length,
            ranges,
            tool.ranges.length,
            tool.startOffset,
            tool.tidOffset,
        );
        const jsThreadIsTool = new NativeFunction(cm.mem_is_tool_thread, "int", [], ex)() !== 0;
        const setReal = new NativeFunction(cm.mem_set_real, "void", ["int", "pointer", "int"], ex);
        const targets: [string, number, string][] = [
            ["malloc", REAL.malloc, "h_malloc"],
            ["calloc", REAL.calloc, "h_calloc"],
            ["realloc", REAL.realloc, "h_realloc"],
            ["free", REAL.free, "h_free"],
            ["posix_memalign", REAL.posix_memalign, "h_posix_memalign"],
            ["aligned_alloc", REAL.aligned_alloc, "h_aligned_alloc"],
            ["memalign", REAL.memalign, "h_memalign"],
            ["valloc", REAL.valloc, "h_valloc"],
            ["pvalloc", REAL.pvalloc, "h_pvalloc"],
        ];
        if (options.mmap) {
            targets.push(["mmap", REAL.mmap, "h_mmap"], ["munmap", REAL.munmap, "h_munmap"]);
        }
        if (options.cxx) {
            NEW_NAMES.forEach((n, i) => targets.push([n, NEW_BASE + i, `h_new${i}`]));
            DELETE_NAMES.forEach((n, i) => targets.push([n, DELETE_BASE + i, `h_del${i}`]));
        }
        const hooked: string[] = [];
        const missing: string[] = [];
        const failed: string[] = [];
        const seen = new Set<string>();
        // Every address first, then the hooks alone, with the program's
        // running threads stopped while Gum writes them (core/hooks.ts).
        const found: [string, number, string, NativePointer | null][] = targets.map(([name, idx, hook]) => [
            name,
            idx,
            hook,
            Module.findGlobalExportByName(name),
        ]);
        const addresses = found.flatMap(([, , , a]) => (a === null ? [] : [a]));
        hooks.armStopped(addresses, () => {
            for (const [name, idx, hook, address] of found) {
                if (address === null) {
                    missing.push(name);
                    continue;
                }
                // An alias of one already hooked (aligned_alloc == memalign), or
                // a jump to one (jemalloc's operator new[] is `jmp operator new`:
                // its calls are counted under the target's kind).
                const at = hookTarget(address).toString();
                if (seen.has(at)) {
                    hooked.push(name);
                    continue;
                }
                try {
                    if (jumpsIntoHead(address)) throw new Error("a jump lands inside the bytes replaceFast writes");
                    const original = Interceptor.replaceFast(address, cm[hook]);
                    ownCode(original);
                    setReal(idx, original, 0);
                    hooked.push(name);
                } catch {
                    // Too short or branchy for replaceFast's far jump: the slower
                    // replace() uses a near trampoline. There, calling the target
                    // from inside the replacement reaches the original.
                    try {
                        hooks.replace(address, cm[hook]);
                        setReal(idx, address, 1);
                        hooked.push(name);
                    } catch (e) {
                        failed.push(`${name}: ${String(e).replace(/; please file a bug$/, "")}`);
                        continue;
                    }
                }
                seen.add(at);
                this.replaced.push(address);
            }
        });
        this.timer = setInterval(() => this.fn?.tick(), TICK_MS);
        this.listenForAcks();
        this.hookExit();
        return {
            hooked,
            missing,
            failed,
            toolchain: this.toolchain,
            toolchain_error: this.toolchainError,
            main_stack: [lo.toString(), hi.toString()],
            state_bytes: MEM_STATE_BYTES,
            arena_bytes: this.arenaBytes,
            tick_ms: TICK_MS,
            tool: {
                excluded: options.include_tool !== true,
                threads: tool.tids.length,
                ranges: tool.ranges.length,
                start_offset: tool.startOffset,
                tid_offset: tool.tidOffset,
                js_thread_is_tool: jsThreadIsTool,
            },
        };
    }

    /** Build a report and send it as `mem-report`; returns its token. */
    report(req: ReportRequest, context: CpuContext | null = null): number {
        const fn = this.fn;
        if (fn === null || this.options === null) throw new Error("memory tracking is not on");
        const t0 = Date.now();
        this.keepAlive = [];
        const snap = this.snapshot(fn);
        const { counters, blocks, cap, nStacks } = snap;
        const n = snap.nBlocks;
        let scanned = false;
        let roots = 0;
        let rootBytes = 0;
        if (req.scan) {
            fn.sort(blocks, n);
            const work = pageAlloc(Math.max(1, n) * 8);
            const ranges = this.roots(context, [
                [blocks, cap * MEM_BLOCK_SIZE],
                [snap.stacks, snap.stackBytes],
                [snap.regions, snap.regionBytes],
                [work, Math.max(1, n) * 8],
                [counters, MEM_NCOUNTERS_ALL * 8],
            ]);
            roots = ranges.length;
            const buf = Memory.alloc(Math.max(1, ranges.length) * 16);
            ranges.forEach(([lo, hi], i) => {
                buf.add(16 * i).writePointer(lo);
                buf.add(16 * i + 8).writePointer(hi);
                rootBytes += Number(hi.sub(lo).toString());
            });
            fn.mark(blocks, n, buf, ranges.length, this.options.mode === "attach" ? 1 : 2, work);
            fn.classify(blocks, n, work);
            scanned = true;
        }
        const agg = pageAlloc(Math.max(1, nStacks) * MEM_AGG_SIZE);
        fn.aggregate(blocks, n, agg, nStacks);
        const k = Math.max(0, Math.min(req.oldest, n));
        const old = pageAlloc(Math.max(1, k) * MEM_BLOCK_SIZE);
        const nOld = Number(fn.oldest(blocks, n, old, k).toString());

        const magg = pageAlloc(Math.max(1, nStacks) * MEM_AGG_SIZE);
        fn.aggregate(snap.regions, snap.nRegions, magg, nStacks);

        const parts: [NativePointer, number][] = [
            [counters, MEM_NCOUNTERS_ALL * 8],
            [snap.stacks, nStacks * MEM_STACK_SIZE],
            [agg, nStacks * MEM_AGG_SIZE],
            [magg, nStacks * MEM_AGG_SIZE],
            [old, nOld * MEM_BLOCK_SIZE],
        ];
        const total = parts.reduce((s, [, len]) => s + len, 0);
        const out = new Uint8Array(total);
        let off = 0;
        for (const [p, len] of parts) {
            if (len > 0) out.set(new Uint8Array(p.readByteArray(len) as ArrayBuffer), off);
            off += len;
        }
        const token = ++this.token;
        post(
            "mem-report",
            {
                token,
                reason: req.reason,
                mode: this.options.mode,
                scanned,
                n_stacks: nStacks,
                n_blocks: n,
                n_oldest: nOld,
                max_depth: MEM_STACK_SIZE,
                roots,
                root_bytes: rootBytes,
                tick_ms: TICK_MS,
                build_ms: Date.now() - t0,
                threads: this.lastScan,
            },
            out.buffer as ArrayBuffer,
        );
        return token;
    }

    /**
     * One consistent copy of the counters, stacks, live blocks and regions
     * (mem_snapshot): buffers sized from a first look, larger and again when
     * the program grew meanwhile.
     */
    private snapshot(fn: NonNullable<MemTracker["fn"]>): {
        counters: NativePointer;
        stacks: NativePointer;
        blocks: NativePointer;
        cap: number;
        regions: NativePointer;
        stackBytes: number;
        regionBytes: number;
        nStacks: number;
        nBlocks: number;
        nRegions: number;
    } {
        const counters = Memory.alloc(MEM_NCOUNTERS_ALL * 8);
        const got = Memory.alloc(3 * 8);
        fn.sizes(got);
        let want = [0, 1, 2].map((i) => Number(got.add(8 * i).readU64().toString()));
        for (let attempt = 0; ; attempt++) {
            const stackCap = want[0] + 256 + (want[0] >> 3);
            const cap = want[1] + 4096 + (want[1] >> 3);
            const mapCap = want[2] + 1024;
            const stacks = pageAlloc(stackCap * MEM_STACK_SIZE);
            const blocks = pageAlloc(cap * MEM_BLOCK_SIZE);
            const regions = pageAlloc(mapCap * MEM_BLOCK_SIZE);
            const r = Number(fn.snapshot(counters, stacks, stackCap, blocks, cap, regions, mapCap, got).toString());
            want = [0, 1, 2].map((i) => Number(got.add(8 * i).readU64().toString()));
            if (r === 0) {
                return {
                    counters,
                    stacks,
                    blocks,
                    cap,
                    regions,
                    stackBytes: stackCap * MEM_STACK_SIZE,
                    regionBytes: mapCap * MEM_BLOCK_SIZE,
                    nStacks: want[0],
                    nBlocks: want[1],
                    nRegions: want[2],
                };
            }
            if (attempt >= 8) throw new Error(`memory report: the tables kept growing (${want.join(", ")})`);
        }
    }

    /** Readable memory that may hold pointers to heap blocks, sorted, without our own buffers. */
    private roots(context: CpuContext | null, own: [NativePointer, number][]): [NativePointer, NativePointer][] {
        const exclude: [NativePointer, NativePointer][] = own.map(([p, len]) => [p, p.add(len)]);
        if (this.state !== null) exclude.push([this.state, this.state.add(MEM_STATE_BYTES)]);
        if (this.arena !== null) exclude.push([this.arena, this.arena.add(this.arenaBytes)]);
        const out: [NativePointer, NativePointer][] = [];
        const add = (lo: NativePointer, hi: NativePointer): void => {
            if (hi.compare(lo) > 0) out.push([lo, hi]);
        };
        const regs: NativePointer[] = [];
        const pushContext = (ctx: CpuContext): void => {
            const c = ctx as unknown as Record<string, unknown>;
            for (const key of Object.keys(c)) {
                const v = c[key];
                if (v instanceof NativePointer) regs.push(v);
            }
        };
        // Every writable mapping Frida does not cloak; below a live thread's
        // stack pointer is dead stack, left out.
        for (const r of Process.enumerateRanges({ protection: "rw-", coalesce: false })) {
            if (r.file !== undefined && r.file.path.startsWith("/dev/")) continue;
            add(r.base, r.base.add(r.size));
        }
        const liveSps: NativePointer[] = [];
        const deadStack = (sp: NativePointer): void => {
            liveSps.push(sp);
            const range = Process.findRangeByAddress(sp);
            if (range !== null) exclude.push([range.base, sp]);
        };
        try {
            for (const t of Process.enumerateThreads()) {
                pushContext(t.context);
                deadStack(t.context.sp);
            }
        } catch (e) {
            reportError(null, new Error(`leak scan: cannot enumerate threads: ${String(e)}`));
        }
        if (context !== null) {
            pushContext(context);
            deadStack(context.sp);
        }
        const tcbBuf = Memory.alloc(64 * 8);
        const findTcbs = (lo: NativePointer, hi: NativePointer): NativePointer[] => {
            const k = Number(this.fn?.findTcbs(lo, hi, tcbBuf, 64).toString() ?? "0");
            const found: NativePointer[] = [];
            for (let i = 0; i < k; i++) found.push(tcbBuf.add(8 * i).readPointer());
            return found;
        };
        const [dead, dtvs] = threadStacks(out, liveSps, findTcbs);
        exclude.push(...dead);
        regs.push(...dtvs);
        this.lastScan = { dead: dead.length, dtvs: dtvs.length, live_threads: liveSps.length };
        if (regs.length > 0) {
            const rb = Memory.alloc(regs.length * 8);
            regs.forEach((v, i) => rb.add(8 * i).writePointer(v));
            this.keepAlive.push(rb);
            add(rb, rb.add(regs.length * 8));
        }
        return subtract(merge(out), exclude);
    }

    /** Buffers C reads during a scan must outlive it (the GC frees unreferenced ones). */
    keepAlive: NativePointer[] = [];
    lastScan: Record<string, number> = {};

    private hookExit(): void {
        const self = this;
        const seen = new Set<string>();
        for (const name of ["_exit", "_Exit", "exit_group"]) {
            const address = Module.findGlobalExportByName(name);
            if (address === null || seen.has(address.toString())) continue;
            seen.add(address.toString());
            try {
                hooks.attach(address, {
                    onEnter(args) {
                        self.atExit(args[0].toInt32(), this.context);
                    },
                });
            } catch (e) {
                reportError(null, new Error(`cannot hook ${name} for the exit report: ${String(e)}`));
            }
        }
    }

    private atExit(code: number, context: CpuContext): void {
        if (this.ended || this.stopped) return;
        this.ended = true;
        const slot = this.fn?.ignore() ?? null;
        try {
            const token = this.report({ scan: true, oldest: 0, reason: `exit ${code}` }, context);
            this.waitForAck(token);
        } catch (e) {
            reportError(null, e);
        } finally {
            if (slot !== null && !slot.isNull()) this.fn?.track(slot);
        }
    }

    private listenForAcks(): void {
        recv("mem-ack", (message: { token?: unknown }) => {
            if (typeof message.token === "number") this.acks.add(message.token);
            this.listenForAcks();
        });
    }

    private waitForAck(token: number): void {
        const t0 = Date.now();
        this.keepAlive = [];
        while (!this.acks.has(token) && Date.now() - t0 < ACK_TIMEOUT_MS) Thread.sleep(0.005);
        this.acks.delete(token);
    }

    /** Put the allocator back. The CModule stays loaded: a thread may still be inside a hook. */
    stop(): void {
        if (this.stopped || this.cm === null) return; // stopped, or never started
        this.stopped = true;
        if (this.timer !== null) clearInterval(this.timer);
        // The running threads stopped while Gum puts the bytes back: one
        // fetching malloc's first instructions meanwhile could decode half of each.
        hooks.unhookStopped(this.replaced, () => {
            for (const address of this.replaced) Interceptor.revert(address);
            Interceptor.flush();
        });
        Thread.sleep(0.05);
    }
}

function mainStack(): [NativePointer, NativePointer] {
    try {
        const maps = File.readAllText("/proc/self/maps");
        for (const line of maps.split("\n")) {
            if (!line.endsWith("[stack]")) continue;
            const [lo, hi] = line.split(" ")[0].split("-");
            const top = ptr("0x" + hi);
            const low = ptr("0x" + lo);
            const floor = top.sub(8 << 20); // the stack rlimit's usual 8 MiB: the gap below is reserved
            return [floor.compare(low) < 0 ? floor : low, top];
        }
    } catch {
        // fall through: only the immediate caller is recorded on the main thread
    }
    return [ptr(0), ptr(0)];
}

/**
 * glibc keeps the stacks of joined threads for reuse. Their old frames hold
 * stale pointers (valgrind does not scan below a stack pointer either), but
 * their thread descriptor, at the top, points to live blocks (the DTV). A
 * writable mapping right above a PROT_NONE guard page is a thread stack; its
 * descriptor is found by its self-pointers (tcb == self). The kernel may have
 * merged the mapping with a neighbour above, so every descriptor in it counts.
 * For a stack no live thread is on, everything below the lowest descriptor is
 * left out of the roots.
 * Every descriptor's DTV pointer points 16 bytes into its calloc'ed block: the
 * block's start is returned as an extra root value.
 */
function threadStacks(
    ranges: [NativePointer, NativePointer][],
    liveSps: NativePointer[],
    findTcbs: (lo: NativePointer, hi: NativePointer) => NativePointer[],
): [[NativePointer, NativePointer][], NativePointer[]] {
    // /proc/self/maps, not enumerateRanges: Frida's own threads (cloaked) have
    // glibc stacks and DTVs too, allocated while the hooks are on.
    const stacks: [NativePointer, NativePointer][] = [];
    let guardEnd = "";
    for (const line of File.readAllText("/proc/self/maps").split("\n")) {
        const [span, perms] = line.split(" ");
        if (perms === undefined) continue;
        const [a, b] = span.split("-");
        if (perms.startsWith("rw") && a === guardEnd) stacks.push([ptr("0x" + a), ptr("0x" + b)]);
        guardEnd = perms.startsWith("---") ? b : "";
    }
    const visible = new Set(ranges.map(([lo]) => lo.toString()));
    const dead: [NativePointer, NativePointer][] = [];
    const dtvs: NativePointer[] = [];
    for (const [lo, hi] of stacks) {
        const tcbs = findTcbs(lo, hi);
        if (tcbs.length === 0) continue;
        const live = liveSps.some((sp) => sp.compare(lo) >= 0 && sp.compare(hi) < 0);
        if (!live && visible.has(lo.toString())) dead.push([lo, tcbs[0]]);
        for (const tcb of tcbs) {
            const dtv = tcb.add(8).readPointer();
            if (dtv.compare(ptr(16)) > 0) dtvs.push(dtv.sub(16));
        }
    }
    return [dead, dtvs];
}

function merge(ranges: [NativePointer, NativePointer][]): [NativePointer, NativePointer][] {
    const sorted = ranges.slice().sort((a, b) => a[0].compare(b[0]));
    const out: [NativePointer, NativePointer][] = [];
    for (const [lo, hi] of sorted) {
        const last = out[out.length - 1];
        if (last !== undefined && lo.compare(last[1]) <= 0) {
            if (hi.compare(last[1]) > 0) last[1] = hi;
        } else {
            out.push([lo, hi]);
        }
    }
    return out;
}

function subtract(ranges: [NativePointer, NativePointer][], holes: [NativePointer, NativePointer][]): [NativePointer, NativePointer][] {
    let cur = ranges;
    for (const [hlo, hhi] of holes) {
        const next: [NativePointer, NativePointer][] = [];
        for (const [lo, hi] of cur) {
            if (hhi.compare(lo) <= 0 || hlo.compare(hi) >= 0) {
                next.push([lo, hi]);
                continue;
            }
            if (hlo.compare(lo) > 0) next.push([lo, hlo]);
            if (hhi.compare(hi) < 0) next.push([hhi, hi]);
        }
        cur = next;
    }
    return cur;
}
