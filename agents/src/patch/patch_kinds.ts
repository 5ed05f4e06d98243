// One function per patch kind: install the patch at one address and return
// how to undo it. Hook kinds go through Interceptor (attach or replace);
// `bytes` and `nop` write code with Memory.patchCode after checking the
// range is code and the bytes there are the ones expected.

import { Capture, IntType } from "../protocol.js";
import { typed } from "../probes/capture.js";
import { ArgValue, PatchSpec } from "./patch_types.js";
import { Compiled, Env, Value, compile, truthy } from "../probes/predicate.js";
import { quiesced } from "../core/stopper.js";
import { inlinePatch, inlineSupported } from "./patch_inline.js";
import { ownModule } from "../core/leave.js";

export interface Applied {
    address: NativePointer;
    /** Interceptor hook (owned by this script) or a plain code write. */
    hook: boolean;
    /** The bytes the code had before and has after (hex is made by the caller). */
    original: Uint8Array;
    patched: Uint8Array;
    detail: string;
    undo: () => void;
}

/** How many code bytes the ledger keeps around a hooked function's start. */
export const HOOK_BYTES = 16;

// Fixed C: the value comes from the listener or replacement data pointer.
const NATIVE_C = `
#include <gum/guminterceptor.h>

void instr_ret_leave(GumInvocationContext *ic)
{
    gum_invocation_context_replace_return_value(ic,
        gum_invocation_context_get_listener_function_data(ic));
}

void *instr_skip(void)
{
    GumInvocationContext *ic = gum_interceptor_get_current_invocation();
    return gum_invocation_context_get_replacement_data(ic);
}
`;

let nativeModule: CModule | null = null;

function natives(): CModule {
    if (nativeModule === null) {
        nativeModule = new CModule(NATIVE_C);
        ownModule(nativeModule);
    }
    return nativeModule;
}

export function hex(b: Uint8Array): string {
    let s = "";
    for (const x of b) s += (x < 16 ? "0" : "") + x.toString(16);
    return s;
}

export function unhex(s: string): Uint8Array {
    const out = new Uint8Array(s.length >> 1);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
    return out;
}

export function readBytes(address: NativePointer, n: number): Uint8Array {
    const ab = address.readByteArray(n);
    if (ab === null) throw new Error(`cannot read ${n} bytes at ${address}`);
    return new Uint8Array(ab);
}

export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
    return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Bytes at a hook site: up to HOOK_BYTES, not past the end of its range. */
export function hookBytes(address: NativePointer): Uint8Array {
    const r = Process.findRangeByAddress(address);
    const left = r === null ? HOOK_BYTES : r.base.add(r.size).sub(address).toUInt32();
    return readBytes(address, Math.min(HOOK_BYTES, left));
}

function intPtr(value: string): NativePointer {
    const v = BigInt.asUintN(Process.pointerSize * 8, BigInt(value));
    return ptr("0x" + v.toString(16));
}

// ---- predicate values ----------------------------------------------------

function typedOf(t: IntType, p: NativePointer): bigint {
    return typed(t, BigInt(p.toString()));
}

/** The value a predicate sees for one capture (what a patch can read cheaply; else None). */
function valueOf(c: Capture, args: NativePointer[] | null, retval: NativePointer | null, caller: NativePointer): Value {
    if (c.src === "arg" && args !== null) {
        const p = args[c.index];
        if (c.type === "cstr") {
            try {
                return p.isNull() ? null : p.readUtf8String(c.max);
            } catch {
                return null;
            }
        }
        if (c.type === "bytes") return null;
        return typedOf(c.type, p);
    }
    if (c.src === "retval" && retval !== null) return typedOf(c.type, retval);
    if (c.src === "caller") return BigInt(caller.toString());
    return null;
}

interface Gate {
    pred: Compiled;
    entry: Capture[];
    exit: Capture[];
}

function gate(spec: PatchSpec): Gate | null {
    if (spec.where === undefined || spec.where === null) return null;
    return { pred: compile(spec.where.expr), entry: spec.entry ?? [], exit: spec.exit ?? [] };
}

function entryValues(g: Gate, args: NativePointer[], caller: NativePointer): Value[] {
    return g.entry.map((c) => valueOf(c, args, null, caller));
}

function holds(g: Gate, env: Env): boolean {
    try {
        return truthy(g.pred(env));
    } catch {
        return false; // a predicate that cannot be evaluated does not patch
    }
}

const when = (spec: PatchSpec): string => (spec.where ? ` when ${spec.where.text}` : "");

// ---- the kinds -------------------------------------------------------------

interface CallState {
    _instrVals?: Value[];
}

/**
 * Install a hook and keep the bytes it changed: from the function's start to
 * the last byte that differs (what revert must restore, and what is compared).
 */
function hooked(address: NativePointer, detail: string, install: () => () => void): Applied {
    const before = hookBytes(address);
    const remove = quiesced(address, before.length, true, () => {
        const r = install();
        Interceptor.flush();
        return r;
    });
    const after = readBytes(address, before.length);
    let span = before.length;
    while (span > 1 && before[span - 1] === after[span - 1]) span--;
    return {
        address,
        hook: true,
        original: before.slice(0, span),
        patched: after.slice(0, span),
        detail,
        undo: () => {
            quiesced(address, before.length, true, () => {
                remove();
                Interceptor.flush();
            });
            settle(address, before);
        },
    };
}

/**
 * Interceptor puts a function's first bytes back only when no thread is inside
 * the hooked call: a thread stopped there while we reverted defers it to a
 * later transaction. Let the threads run and flush again until the bytes are
 * back (bounded: the caller compares them and reports what it finds).
 */
function settle(address: NativePointer, original: Uint8Array): void {
    const deadline = Date.now() + 2000;
    while (!sameBytes(readBytes(address, original.length), original) && Date.now() < deadline) {
        Thread.sleep(0.002);
        Interceptor.flush();
    }
}

/** ret/skip without a predicate: our own jump and stub, safe to apply and revert under load. */
function inline(address: NativePointer, value: NativePointer, callOriginal: boolean, detail: string): Applied {
    checkCode(address, 5);
    const p = inlinePatch(address, value, callOriginal);
    return { address, hook: false, original: p.original, patched: p.patched, detail, undo: p.undo };
}

/**
 * Our own jump is only for a function that starts with its own code. One that
 * starts with a jump is usually hooked already (an Interceptor hook of this
 * run's tracing probes, or another tool's): Interceptor shares such a site
 * between its listeners, and a revert restores what was there.
 */
function inlineFits(address: NativePointer): boolean {
    if (!inlineSupported()) return false;
    try {
        return Instruction.parse(address).mnemonic !== "jmp";
    } catch {
        return false;
    }
}

function applyRet(spec: PatchSpec, address: NativePointer): Applied {
    const value = intPtr(spec.value ?? "0");
    const g = gate(spec);
    const detail = `return ${spec.value ?? "0"}${when(spec)}`;
    if (g === null && inlineFits(address)) return inline(address, value, true, detail);
    if (g === null) {
        return hooked(address, detail, () => {
            const cm = natives();
            const l = Interceptor.attach(address, { onLeave: cm.instr_ret_leave } as NativeInvocationListenerCallbacks, value);
            return () => l.detach();
        });
    }
    const needArgs = g.entry.length > 0 || g.exit.some((c) => c.src === "arg");
    return hooked(address, detail, () => {
        const l = Interceptor.attach(address, {
            onEnter(args) {
                const st = this as InvocationContext & CallState;
                if (needArgs) st._instrVals = entryValues(g, args, this.returnAddress);
            },
            onLeave(retval) {
                const st = this as InvocationContext & CallState;
                const exit = g.exit.map((c) => valueOf(c, null, retval, this.returnAddress));
                if (holds(g, { entry: st._instrVals ?? [], exit, tid: this.threadId })) retval.replace(value);
            },
        });
        return () => l.detach();
    });
}

/** Integer/pointer arguments a JS replacement forwards to the original (register args of SysV x86_64). */
const FORWARDED = 6;

function applySkip(spec: PatchSpec, address: NativePointer): Applied {
    const value = intPtr(spec.value ?? "0");
    const g = gate(spec);
    const detail = `skip, return ${spec.value ?? "0"}${when(spec)}`;
    if (g === null && inlineFits(address)) return inline(address, value, false, detail);
    if (g === null) {
        return hooked(address, detail, () => {
            Interceptor.replace(address, natives().instr_skip, value);
            return () => Interceptor.revert(address);
        });
    }
    const types: NativeFunctionArgumentType[] = new Array(FORWARDED).fill("pointer");
    const original = new NativeFunction(address, "pointer", types) as unknown as (...a: NativePointer[]) => NativePointer;
    const cb = new NativeCallback(
        function (this: InvocationContext | CallbackContext, ...args: NativePointer[]) {
            const vals = entryValues(g, args, this.returnAddress);
            if (holds(g, { entry: vals, exit: [], tid: Process.getCurrentThreadId() })) return value;
            return original(...args);
        } as NativeCallbackImplementation<NativePointerValue, NativeCallbackArgumentValue[]>,
        "pointer",
        types as NativeCallbackArgumentType[],
    );
    return hooked(address, detail, () => {
        Interceptor.replace(address, cb);
        return () => {
            Interceptor.revert(address);
            void cb; // the callback must live as long as the hook
        };
    });
}

/** CModule compile errors carry TinyCC's message: keep it whole for the user. */
function compileC(code: string, symbols: CSymbols): CModule {
    try {
        const cm = new CModule(code, symbols);
        ownModule(cm);
        return cm;
    } catch (e) {
        const msg = e instanceof Error ? e.message : String(e);
        throw new Error(`the C replacement does not compile: ${msg}`);
    }
}

function applyReplaceC(spec: PatchSpec, address: NativePointer): Applied {
    const fn = spec.fn ?? "replacement";
    // `original` is the patched function's own address: a call to it from
    // inside the replacement reaches the original code (Interceptor bypass).
    const cm = compileC(spec.code ?? "", { original: address });
    const impl = (cm as unknown as Record<string, NativePointer | undefined>)[fn];
    if (impl === undefined) {
        const names = Object.keys(cm).filter((k) => k !== "dispose");
        throw new Error(`the C replacement has no function '${fn}' (it defines: ${names.join(", ") || "nothing"})`);
    }
    return hooked(address, `replaced by C ${fn}()`, () => {
        Interceptor.replace(address, impl);
        return () => {
            Interceptor.revert(address);
            void cm; // the module must outlive the hook
        };
    });
}

function applyReplaceJs(spec: PatchSpec, address: NativePointer): Applied {
    const params = (spec.params ?? []) as NativeFunctionArgumentType[];
    const returns = (spec.returns ?? "void") as NativeFunctionReturnType;
    const original = new NativeFunction(address, returns, params);
    const names = params.map((_, i) => `a${i}`);
    let impl: (...a: unknown[]) => unknown;
    try {
        impl = new Function(...names, "original", spec.code ?? "") as (...a: unknown[]) => unknown;
    } catch (e) {
        throw new Error(`the JavaScript replacement does not compile: ${e instanceof Error ? e.message : String(e)}`);
    }
    const cb = new NativeCallback(
        function (...args: unknown[]) {
            return impl(...args, original) as NativeCallbackReturnValue;
        } as NativeCallbackImplementation<NativeCallbackReturnValue, NativeCallbackArgumentValue[]>,
        returns,
        params as NativeCallbackArgumentType[],
    );
    return hooked(address, `replaced by JavaScript (${params.join(", ")}) -> ${returns}`, () => {
        Interceptor.replace(address, cb);
        return () => {
            Interceptor.revert(address);
            void cb;
        };
    });
}

function argPtr(v: ArgValue, keep: NativePointer[]): NativePointer {
    if ("int" in v) return intPtr(v.int);
    const s = Memory.allocUtf8String(v.str);
    keep.push(s);
    return s;
}

function applyArgs(spec: PatchSpec, address: NativePointer): Applied {
    const keep: NativePointer[] = [];
    const changes = (spec.args ?? []).map((a) => ({ index: a.index, value: argPtr(a.value, keep) }));
    const g = gate(spec);
    const text = (spec.args ?? []).map((a) => `arg${a.index}=${"int" in a.value ? a.value.int : JSON.stringify(a.value.str)}`);
    return hooked(address, `set ${text.join(", ")}${when(spec)}`, () => {
        const l = Interceptor.attach(address, {
            onEnter(args) {
                if (g !== null && !holds(g, { entry: entryValues(g, args, this.returnAddress), exit: [], tid: this.threadId })) return;
                for (const c of changes) args[c.index] = c.value;
            },
        });
        return () => {
            l.detach();
            void keep; // strings passed as arguments stay allocated while patched
        };
    });
}

let signalFn: ((sig: number) => void) | null = null;

/** Signal the calling thread (DTrace's raise()); the process when libc has no tgkill. */
function signalSelf(sig: number): void {
    if (signalFn === null) {
        const tg = Module.findGlobalExportByName("tgkill");
        if (tg !== null) {
            const f = new NativeFunction(tg, "int", ["int", "int", "int"]);
            signalFn = (s) => f(Process.id, Process.getCurrentThreadId(), s);
        } else {
            const f = new NativeFunction(Module.getGlobalExportByName("kill"), "int", ["int", "int"]);
            signalFn = (s) => f(Process.id, s);
        }
    }
    signalFn(sig);
}

/** As a call starts (when its `where` holds): a signal to its thread, or bytes written where an argument points. */
function applyAtEntry(spec: PatchSpec, address: NativePointer): Applied {
    const g = gate(spec);
    let act: (args: InvocationArguments) => void;
    let detail: string;
    if (spec.kind === "signal") {
        const sig = Number(spec.value ?? "0");
        if (Module.findGlobalExportByName("tgkill") === null && Module.findGlobalExportByName("kill") === null) {
            throw new Error("neither tgkill nor kill is exported here: cannot send signals");
        }
        act = () => signalSelf(sig);
        detail = `signal ${sig}${when(spec)}`;
    } else {
        const index = Number(spec.value ?? "0");
        const data = unhex(spec.bytes ?? "");
        const buf = data.buffer.slice(data.byteOffset, data.byteOffset + data.length) as ArrayBuffer;
        act = (args) => {
            try {
                args[index].writeByteArray(buf);
            } catch {
                // not writable there: DTrace reports an invalid address and goes on
            }
        };
        detail = `copy ${data.length} byte${data.length === 1 ? "" : "s"} to arg${index}${when(spec)}`;
    }
    return hooked(address, detail, () => {
        const l = Interceptor.attach(address, {
            onEnter(args) {
                if (g !== null && !holds(g, { entry: entryValues(g, args, this.returnAddress), exit: [], tid: this.threadId })) return;
                act(args);
            },
        });
        return () => l.detach();
    });
}

/** The range is mapped executable code, all of it. */
function checkCode(address: NativePointer, n: number): void {
    let at = address;
    const end = address.add(n);
    while (at.compare(end) < 0) {
        const r = Process.findRangeByAddress(at);
        if (r === null) throw new Error(`${at} is not mapped: a patch must be inside a code range`);
        if (!r.protection.includes("x")) {
            const file = r.file?.path ?? "anonymous memory";
            throw new Error(`${at} is not in a code range (it is ${r.protection} data in ${file}); refusing to patch`);
        }
        at = r.base.add(r.size);
    }
}

function write(address: NativePointer, data: Uint8Array): void {
    quiesced(address, data.length, false, () =>
        Memory.patchCode(address, data.length, (code) => {
            code.writeByteArray(data.buffer.slice(data.byteOffset, data.byteOffset + data.length) as ArrayBuffer);
        }),
    );
}

export function writeVerified(address: NativePointer, data: Uint8Array): boolean {
    write(address, data);
    return sameBytes(readBytes(address, data.length), data);
}

function codeWrite(address: NativePointer, before: Uint8Array, after: Uint8Array, detail: string): Applied {
    checkCode(address, after.length);
    if (!writeVerified(address, after)) throw new Error(`wrote ${after.length} bytes at ${address} but they did not read back`);
    return {
        address,
        hook: false,
        original: before,
        patched: after,
        detail,
        undo: () => {
            if (!writeVerified(address, before)) throw new Error(`the original bytes at ${address} did not read back`);
        },
    };
}

function applyBytes(spec: PatchSpec, address: NativePointer): Applied {
    const expect = unhex(spec.expect ?? "");
    const data = unhex(spec.bytes ?? "");
    if (expect.length !== data.length || data.length === 0) {
        throw new Error("expected and new bytes must have the same, non-zero length");
    }
    checkCode(address, data.length);
    const found = readBytes(address, data.length);
    if (!sameBytes(found, expect)) {
        throw new Error(`the bytes at ${address} are not the expected ones: expected ${hex(expect)}, found ${hex(found)}; nothing written`);
    }
    return codeWrite(address, found, data, `write ${hex(data)}`);
}

function nopBytes(n: number): Uint8Array {
    if (Process.arch === "ia32" || Process.arch === "x64") return new Uint8Array(n).fill(0x90);
    if (Process.arch === "arm64" && n % 4 === 0) {
        const out = new Uint8Array(n);
        for (let i = 0; i < n; i += 4) out.set([0x1f, 0x20, 0x03, 0xd5], i);
        return out;
    }
    throw new Error(`nop is not supported on ${Process.arch}`);
}

function applyNop(spec: PatchSpec, address: NativePointer): Applied {
    const count = spec.instructions ?? 1;
    checkCode(address, 1);
    let at = address;
    const text: string[] = [];
    for (let i = 0; i < count; i++) {
        const insn = Instruction.parse(at);
        text.push(insn.toString());
        at = insn.next;
    }
    const n = at.sub(address).toUInt32();
    const found = readBytes(address, n);
    if (spec.expect !== undefined && spec.expect !== "" && !sameBytes(found, unhex(spec.expect))) {
        throw new Error(`the bytes at ${address} are not the expected ones: expected ${spec.expect}, found ${hex(found)}; nothing written`);
    }
    return codeWrite(address, found, nopBytes(n), `nop ${count} instruction${count === 1 ? "" : "s"} (${text.join("; ")})`);
}

export function applyKind(spec: PatchSpec, address: NativePointer): Applied {
    switch (spec.kind) {
        case "ret":
            return applyRet(spec, address);
        case "skip":
            return applySkip(spec, address);
        case "replace_c":
            return applyReplaceC(spec, address);
        case "replace_js":
            return applyReplaceJs(spec, address);
        case "args":
            return applyArgs(spec, address);
        case "bytes":
            return applyBytes(spec, address);
        case "nop":
            return applyNop(spec, address);
        case "signal":
        case "copyout":
            return applyAtEntry(spec, address);
    }
}
