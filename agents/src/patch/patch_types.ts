// Live patching: what the host asks for (PatchSpec) and what the ledger keeps
// (LedgerEntry). The host half is instr/patch/model.py; change both together.

import { Capture, Expr, Point } from "../protocol.js";

export type PatchKind = "ret" | "skip" | "replace_c" | "replace_js" | "args" | "bytes" | "nop" | "signal" | "copyout";

/** An argument's new value: an exact integer as decimal text, or a C string. */
export type ArgValue = { int: string } | { str: string };

export interface PatchSpec {
    kind: PatchKind;
    point: Point;
    /** Where the request came from, for the ledger: "cli --ret ..." or "file:line:col set/probe". */
    source: string;
    /** ret, skip: the value returned (exact integer, decimal text); signal: the signal;
     * copyout: the index of the argument that points where `bytes` are written. */
    value?: string;
    /** ret, skip, args, signal, copyout: apply only when this holds (over the captures). */
    where?: { phase: "entry" | "exit"; expr: Expr; text: string } | null;
    entry?: Capture[];
    exit?: Capture[];
    /** replace_c: C source; `fn` names the replacement (default "replacement"). */
    code?: string;
    fn?: string;
    /** replace_js: signature of the function (NativeFunction types). */
    returns?: string;
    params?: string[];
    /** args: argument index -> new value. */
    args?: { index: number; value: ArgValue }[];
    /** bytes: hex of the expected original and of the new bytes (same length); copyout: what is written. */
    expect?: string;
    bytes?: string;
    /** nop: how many instructions to overwrite (bytes: `expect` optional). */
    instructions?: number;
}

export interface LedgerEntry {
    id: number;
    kind: PatchKind;
    pid: number;
    /** The script that owns the hook, and whether it stays after its controller leaves. */
    owner: string;
    persist: boolean;
    /** An Interceptor hook: only the owning script can undo it. Otherwise a code write anyone can undo. */
    hook: boolean;
    where: string; // module!symbol or module+0x... or an address
    address: string;
    original: string; // hex: the code bytes before the patch
    patched: string; // hex: the code bytes right after it
    detail: string;
    source: string;
    at: string; // ISO 8601, UTC
}

export interface RevertResult {
    id: number;
    where: string;
    ok: boolean;
    /** The code bytes read back equal the original bytes (null: could not be compared). */
    verified: boolean | null;
    detail: string;
}
