// What a probe needs at run time, derived once from its plan: validation,
// tier choice, which arguments exit captures need stashed at entry, and the
// worst-case record sizes.

import {
    Capture,
    CaptureType,
    HEADER_SIZE,
    IntType,
    ProbePlan,
    SLOT_SIZE,
    VAR_HEADER_SIZE,
    pad8,
} from "../protocol.js";

export const INT_TYPES: readonly string[] = ["i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "ptr", "bool"];

/** Captures per phase the native tier can describe (C `MAXC`). */
export const NATIVE_MAX_CAPTURES = 16;
/** Arguments the native tier can name (indices stored in a u8). */
export const NATIVE_MAX_ARG = 255;
/** A record's size is a u16; keep it 8-aligned. */
export const MAX_RECORD = 65528;

export type Tier = "native" | "js";

export interface Layout {
    /** Hook the function's entry (to write, filter, stash or time). */
    hookEntry: boolean;
    /** Hook the function's exit. */
    hookExit: boolean;
    /** Arguments read at entry for exit captures (and exit `bytes` lengths). */
    stash: number[];
    /** The exit phase wants the entry timestamp (duration). */
    needEntryTs: boolean;
    /** Worst-case record sizes; 0 when the phase writes no record. */
    maxEntry: number;
    maxExit: number;
}

function isIntType(t: string): t is IntType {
    return INT_TYPES.includes(t);
}

function maxSlotSize(c: Capture): number {
    if (c.src === "backtrace") return VAR_HEADER_SIZE + SLOT_SIZE * Math.max(0, c.depth);
    if (c.src === "arg" && (c.type === "cstr" || c.type === "bytes")) return VAR_HEADER_SIZE + pad8(Math.max(0, c.max));
    return SLOT_SIZE;
}

function captureError(c: Capture, phase: "entry" | "exit"): string | null {
    switch (c.src) {
        case "arg": {
            if (!Number.isInteger(c.index) || c.index < 0) return `bad argument index ${c.index}`;
            const t = c.type as CaptureType;
            if (c.type === "cstr" || c.type === "bytes") {
                if (!Number.isInteger(c.max) || c.max < 0) return `bad max ${String(c.max)}`;
                if (c.type === "bytes") {
                    const len = c.len as { const?: number; arg?: number };
                    if (len.const === undefined && len.arg === undefined) return "bytes capture needs a length";
                    if (len.arg !== undefined && (!Number.isInteger(len.arg) || len.arg < 0)) return `bad length argument ${len.arg}`;
                }
                return null;
            }
            return isIntType(t) ? null : `unknown capture type '${String(t)}'`;
        }
        case "retval":
            if (phase !== "exit") return "retval can only be captured at exit";
            return isIntType(c.type) ? null : `unsupported retval type '${String(c.type)}'`;
        case "duration":
            return phase === "exit" ? null : "duration can only be captured at exit";
        case "caller":
            return null;
        case "backtrace":
            return Number.isInteger(c.depth) && c.depth >= 0 ? null : `bad backtrace depth ${c.depth}`;
        default:
            return `unknown capture source '${String((c as { src: unknown }).src)}'`;
    }
}

/** Checks a probe plan; returns the reason it cannot be armed, or null. */
export function validate(p: ProbePlan): string | null {
    if (p.entry === null && p.exit === null) return "the probe has neither entry nor exit captures";
    for (const a of p.actions) {
        if (a.kind !== "emit") return `unsupported action '${String(a.kind)}'`;
    }
    if (p.actions.length === 0) return "the probe has no action";
    for (const [phase, caps] of [["entry", p.entry], ["exit", p.exit]] as const) {
        for (const c of caps ?? []) {
            const err = captureError(c, phase);
            if (err !== null) return err;
        }
    }
    const l = layoutOf(p);
    if (Math.max(l.maxEntry, l.maxExit) > MAX_RECORD) {
        return `a record could reach ${Math.max(l.maxEntry, l.maxExit)} bytes (limit ${MAX_RECORD}); lower max/depth`;
    }
    return null;
}

/** The largest record body the native tier builds (BODY_MAX in native_c.ts). */
export const NATIVE_MAX_BODY = 2048;

/** Null when the probe can run in the native tier, else why not (instr/ctier/native.py says the same on the host). */
export function nativeIneligible(p: ProbePlan, framePointers = false): string | null {
    if (p.where !== null && (p.where.native === undefined || p.where.native === null)) {
        return "its 'where' predicate needs the js tier";
    }
    for (const caps of [p.entry, p.exit]) {
        if (caps === null) continue;
        if (caps.length > NATIVE_MAX_CAPTURES) return `more than ${NATIVE_MAX_CAPTURES} captures in one phase`;
        for (const c of caps) {
            if (c.src === "backtrace" && !framePointers) {
                return "a backtrace where the module keeps no frame pointers needs Frida's unwinder (js tier)";
            }
            if (c.src === "arg") {
                // the fault-safe copy is x86_64 code (native_c.ts)
                if ((c.type === "cstr" || c.type === "bytes") && Process.arch !== "x64") {
                    return `${c.type} captures need the js tier on ${Process.arch}`;
                }
                if (c.index > NATIVE_MAX_ARG) return `argument index ${c.index} is too large for the native tier`;
            }
        }
    }
    const l = layoutOf(p);
    if (l.stash.length > NATIVE_MAX_CAPTURES) return "too many stashed arguments";
    for (const caps of [p.entry, p.exit]) {
        // one value per capture, and one per bytes(argN) length
        const lens = (caps ?? []).filter((c) => c.src === "arg" && c.type === "bytes" && "arg" in c.len).length;
        if ((caps ?? []).length + lens > NATIVE_MAX_CAPTURES) return `more than ${NATIVE_MAX_CAPTURES} values in one phase`;
    }
    if (Math.max(l.maxEntry, l.maxExit) - HEADER_SIZE > NATIVE_MAX_BODY) {
        return `a record could exceed the native tier's ${NATIVE_MAX_BODY} bytes`;
    }
    return null;
}

/** `framePointers`: every site's module keeps them (core/frames.ts): backtraces can be walked in C. */
export function chooseTier(p: ProbePlan, framePointers = false): { tier: Tier } | { error: string } {
    if (p.tier === "js") return { tier: "js" };
    const why = nativeIneligible(p, framePointers);
    if (why === null) return { tier: "native" };
    if (p.tier === "native") return { error: `cannot run in the native tier: ${why}` };
    return { tier: "js" };
}

export function layoutOf(p: ProbePlan): Layout {
    const stash: number[] = [];
    const addStash = (i: number): void => {
        if (!stash.includes(i)) stash.push(i);
    };
    let needEntryTs = false;
    for (const c of p.exit ?? []) {
        if (c.src === "duration") needEntryTs = true;
        if (c.src === "arg") {
            addStash(c.index);
            if (c.type === "bytes" && "arg" in c.len) addStash(c.len.arg);
        }
    }
    const size = (caps: Capture[] | null): number =>
        caps === null ? 0 : HEADER_SIZE + caps.reduce((n, c) => n + maxSlotSize(c), 0);
    const hookExit = p.exit !== null;
    const hookEntry = p.entry !== null || p.where?.phase === "entry" || (hookExit && (needEntryTs || stash.length > 0));
    return { hookEntry, hookExit, stash, needEntryTs, maxEntry: size(p.entry), maxExit: size(p.exit) };
}
