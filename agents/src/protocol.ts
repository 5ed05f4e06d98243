// The wire protocol between the agent and the host, version 4.
// The other half is instr/protocol.py; change both together.

export const PROTOCOL_VERSION = 4;

// Host -> agent messages (script.post): {type: "credit", seq} after the host has
// finished with batch `seq` (flow control), and {type: "ack", token} to release
// a final flush.

// Record header: u16 size, u8 phase, u8 flags, u32 probe, u32 site, u32 tid, u64 ts.
export const HEADER_SIZE = 24;
export const OFF_SIZE = 0;
export const OFF_PHASE = 2;
export const OFF_FLAGS = 3;
export const OFF_PROBE = 4;
export const OFF_SITE = 8;
export const OFF_TID = 12;
export const OFF_TS = 16;

export const SLOT_SIZE = 8;
export const VAR_HEADER_SIZE = 8; // u32 length, u32 status

export const PHASE_ENTRY = 0;
export const PHASE_EXIT = 1;

export const FLAG_NO_ENTRY = 0x01;

export const STATUS_OK = 0;
export const STATUS_TRUNCATED = 1;
export const STATUS_NULL = 2;
export const STATUS_UNREADABLE = 3;

export function pad8(n: number): number {
    return (n + 7) & ~7;
}

// ---- Plan (host -> agent, via rpc configure) ----

export type IntType = "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "ptr" | "bool";
export type CaptureType = IntType | "cstr" | "bytes";

export type Capture =
    | { src: "arg"; index: number; type: IntType }
    | { src: "arg"; index: number; type: "cstr"; max: number }
    | { src: "arg"; index: number; type: "bytes"; len: { const: number } | { arg: number }; max: number }
    | { src: "retval"; type: IntType }
    | { src: "caller" }
    | { src: "backtrace"; depth: number }
    | { src: "duration" };

export type Point =
    | { kind: "function"; module: string | null; symbol: string; exclude: { module: string | null; symbol: string }[] }
    | { kind: "address"; address: string }
    | { kind: "offset"; module: string; offset: number };

export type Expr =
    | { op: "const"; value: number | string | boolean }
    // An exact integer as decimal text (JSON numbers lose precision above 2^53).
    | { op: "int"; value: string }
    | { op: "cap"; phase: "entry" | "exit"; index: number }
    | { op: "tid" }
    | { op: "and" | "or"; args: Expr[] }
    | { op: "not" | "neg" | "invert"; arg: Expr }
    | { op: "==" | "!=" | "<" | "<=" | ">" | ">="; left: Expr; right: Expr }
    | { op: "+" | "-" | "*" | "//" | "%" | "&" | "|" | "^" | "<<" | ">>"; left: Expr; right: Expr }
    | { op: "in"; needle: Expr; haystack: Expr }
    | { op: "call"; fn: "startswith" | "endswith" | "len"; args: Expr[] };

export type Action = { kind: "emit" };

export type AggFunc = "count" | "sum" | "min" | "max" | "avg" | "stddev" | "quantize" | "lquantize" | "llquantize";
export type KeySrc = "capture" | "tid" | "pid" | "execname" | "probefunc" | "module";

/** Where an aggregation's value or key comes from: a capture of the probe. */
export interface CapRef {
    phase: "entry" | "exit";
    index: number;
    type: string;
    csrc: Capture["src"];
}

export interface AggPlan {
    id: number;
    func: AggFunc;
    phase: "entry" | "exit";
    arg: CapRef | null;
    keys: ({ src: KeySrc } & Partial<CapRef>)[];
    lq: [number, number, number] | null;
    /** llquantize's factor, low magnitude, high magnitude, steps. */
    llq: [number, number, number, number] | null;
    max_keys: number;
    nvals: number;
}

/** A predicate as the native tier's program (instr/ctier/wherevm.py): [op, a, b, imm as decimal text]. */
export interface NativeWhere {
    code: [number, number, number, string][];
    strings: string[];
}

/** The fast tier's generated C functions for one probe. */
export interface FastFns {
    enter: string | null;
    leave: string | null;
    replace: string | null;
}

export interface ProbePlan {
    id: number;
    emit: boolean; // false: the probe only aggregates
    aggs: AggPlan[];
    agg_tier: "fast" | "js" | null;
    point: Point;
    entry: Capture[] | null; // null: no entry hook
    exit: Capture[] | null; // null: no exit hook
    where: { phase: "entry" | "exit"; expr: Expr; native?: NativeWhere | null } | null;
    actions: Action[];
    tier: "auto" | "native" | "js";
    max_sites: number;
}

export interface PlanOptions {
    flush_interval_ms: number;
    buffer_bytes: number;
    on_full: "block" | "drop";
    // Children followed (-F): listeners only, never replaceFast. A forked
    // child's inherited copy of this script is unloaded by Frida while the
    // child runs; code a replacement jumps into would be freed under it
    // (docs/follow.md).
    follow?: boolean;
}

export interface Plan {
    protocol: number;
    options: PlanOptions;
    probes: ProbePlan[];
    fast_c: { source: string; probes: Record<string, FastFns> } | null;
}

// ---- Messages (agent -> host, via send) ----

export interface SiteInfo {
    site: number;
    address: string;
    module: string | null;
    symbol: string | null;
    /** address - the module's base (null without a module): `module+0x1209` for a site without a symbol. */
    offset: number | null;
}

export type ProbeState = "armed" | "pending" | "failed";

export interface ProbeStatus {
    id: number;
    state: ProbeState;
    tier: "native" | "js" | "fast" | null;
    sites: number;
    reason: string | null;
}

export type Message =
    | { v: number; type: "batch"; seq: number; records: number; drops: Record<string, number> }
    | { v: number; type: "status"; probe: ProbeStatus }
    // Aggregation snapshot; data: each table's rows (keys then values, u64 LE), in `tables` order.
    | {
          v: number;
          type: "aggs";
          seq: number;
          ts: string;
          final: boolean;
          execname: string;
          tables: { id: number; rows: number; overflow: number }[];
          strings: Record<string, string>;
          stacks: Record<string, string[]>;
      }
    | { v: number; type: "sites"; probe: number; sites: SiteInfo[] }
    | { v: number; type: "symbols"; map: Record<string, [string | null, string | null, number]> }
    | { v: number; type: "error"; probe: number | null; message: string; stack: string | null }
    | { v: number; type: "modules"; loaded: { name: string; base: string; size: number; path: string }[] }
    // Syscall monitor (syscalls.ts): cumulative [nr, calls, errors, ticks] counters, the
    // monitor's drops, ns per tick, a [ticks, CLOCK_MONOTONIC ns] pair; in trace mode
    // data holds records (instr/syscalls/records.py).
    | {
          v: number;
          type: "syscalls";
          seq: number;
          counters: number[][];
          drops: number;
          head: number;
          tick_ns: number;
          clock: [string, string];
      }
    // The program's own fd table (fdtable.ts), separated at its next hooked call: the outcome.
    | { v: number; type: "fds"; separate: boolean; reason?: string; closed?: number }
    | {
          v: number;
          type: "ending";
          reason: "exit" | "exec" | "crash" | "detach";
          code: number | null;
          signal: string | null;
          address: string | null;
          symbol: string | null;
          token: number;
      };

export interface Hello {
    protocol: number;
    arch: string;
    platform: string;
    pid: number;
    pointer_size: number;
    /** Frida's own threads in the process (cloaked), where /proc can be read: the host waits for them to end after a detach. */
    frida_threads?: number[];
}
