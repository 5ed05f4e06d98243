// Predicates: the `Expr` JSON tree compiled once into a tree of closures
// (no eval, no new Function) and run with Python-like semantics. Integers are
// BigInt throughout, so 64-bit values compare exactly.

import { Expr } from "../protocol.js";

export type Value = bigint | number | string | boolean | null | Uint8Array | bigint[];

export interface Env {
    entry: Value[];
    exit: Value[];
    tid: number;
}

export type Compiled = (env: Env) => Value;

export class PredicateError extends Error {}

function toNumeric(v: Value): bigint | number {
    if (typeof v === "bigint" || typeof v === "number") return v;
    if (typeof v === "boolean") return v ? 1n : 0n;
    throw new PredicateError(`not a number: ${describeValue(v)}`);
}

function toBig(v: Value): bigint {
    const n = toNumeric(v);
    if (typeof n === "bigint") return n;
    if (!Number.isInteger(n)) throw new PredicateError(`not an integer: ${n}`);
    return BigInt(n);
}

function describeValue(v: Value): string {
    if (v === null) return "None";
    if (v instanceof Uint8Array) return `bytes[${v.length}]`;
    if (Array.isArray(v)) return `backtrace[${v.length}]`;
    return typeof v === "string" ? JSON.stringify(v) : String(v);
}

export function truthy(v: Value): boolean {
    if (v === null) return false;
    if (typeof v === "bigint") return v !== 0n;
    if (typeof v === "number") return v !== 0 && !Number.isNaN(v);
    if (typeof v === "boolean") return v;
    if (typeof v === "string") return v.length > 0;
    return v.length > 0;
}

function isNumeric(v: Value): v is bigint | number | boolean {
    return typeof v === "bigint" || typeof v === "number" || typeof v === "boolean";
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
    if (a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
    return true;
}

function equal(a: Value, b: Value): boolean {
    if (isNumeric(a) && isNumeric(b)) {
        const x = toNumeric(a);
        const y = toNumeric(b);
        // Mixed bigint/number compare exactly with ==.
        // eslint-disable-next-line eqeqeq
        return x == y;
    }
    if (typeof a === "string" && typeof b === "string") return a === b;
    if (a instanceof Uint8Array && b instanceof Uint8Array) return bytesEqual(a, b);
    return a === null && b === null;
}

type Cmp = "<" | "<=" | ">" | ">=";

function order(op: Cmp, a: Value, b: Value): boolean {
    let x: bigint | number | string;
    let y: bigint | number | string;
    if (isNumeric(a) && isNumeric(b)) {
        x = toNumeric(a);
        y = toNumeric(b);
    } else if (typeof a === "string" && typeof b === "string") {
        x = a;
        y = b;
    } else {
        return false; // None or mismatched types never order
    }
    switch (op) {
        case "<":
            return x < y;
        case "<=":
            return x <= y;
        case ">":
            return x > y;
        case ">=":
            return x >= y;
    }
}

type Arith = "+" | "-" | "*" | "//" | "%" | "&" | "|" | "^" | "<<" | ">>";

function arith(op: Arith, a: Value, b: Value): Value {
    if (op === "+" && typeof a === "string" && typeof b === "string") return a + b;
    const x = toNumeric(a);
    const y = toNumeric(b);
    if (typeof x === "bigint" && typeof y === "bigint") {
        switch (op) {
            case "+":
                return x + y;
            case "-":
                return x - y;
            case "*":
                return x * y;
            case "//": {
                if (y === 0n) throw new PredicateError("integer division by zero");
                let q = x / y;
                if (x % y !== 0n && x < 0n !== y < 0n) q -= 1n;
                return q;
            }
            case "%": {
                if (y === 0n) throw new PredicateError("integer modulo by zero");
                let r = x % y;
                if (r !== 0n && r < 0n !== y < 0n) r += y;
                return r;
            }
            case "&":
                return x & y;
            case "|":
                return x | y;
            case "^":
                return x ^ y;
            case "<<":
                return x << y;
            case ">>":
                return x >> y;
        }
    }
    const fx = Number(x);
    const fy = Number(y);
    switch (op) {
        case "+":
            return fx + fy;
        case "-":
            return fx - fy;
        case "*":
            return fx * fy;
        case "//":
            if (fy === 0) throw new PredicateError("float division by zero");
            return Math.floor(fx / fy);
        case "%": {
            if (fy === 0) throw new PredicateError("float modulo by zero");
            const r = fx % fy;
            return r !== 0 && r < 0 !== fy < 0 ? r + fy : r;
        }
        default:
            return arith(op, toBig(x), toBig(y));
    }
}

function contains(needle: Value, hay: Value): boolean {
    if (typeof hay === "string") return typeof needle === "string" && hay.includes(needle);
    if (Array.isArray(hay)) return isNumeric(needle) && hay.some((v) => equal(v, needle));
    if (hay instanceof Uint8Array) {
        if (isNumeric(needle)) return hay.includes(Number(toNumeric(needle)));
        if (!(needle instanceof Uint8Array)) return false;
        outer: for (let i = 0; i + needle.length <= hay.length; i++) {
            for (let k = 0; k < needle.length; k++) if (hay[i + k] !== needle[k]) continue outer;
            return true;
        }
        return false;
    }
    return false;
}

function length(v: Value): bigint {
    if (typeof v === "string") return BigInt([...v].length);
    if (v instanceof Uint8Array || Array.isArray(v)) return BigInt(v.length);
    throw new PredicateError(`len() of ${describeValue(v)}`);
}

function constant(v: unknown): Value {
    if (typeof v === "number") return Number.isSafeInteger(v) ? BigInt(v) : v;
    if (typeof v === "string" || typeof v === "boolean") return v;
    if (v === null) return null;
    throw new PredicateError(`bad constant ${JSON.stringify(v)}`);
}

/** Compile an Expr tree; throws PredicateError on a malformed tree. */
export function compile(e: Expr): Compiled {
    switch (e.op) {
        case "const": {
            const v = constant(e.value);
            return () => v;
        }
        case "int": {
            // Exact integers beyond 2^53 travel as decimal text.
            const v = BigInt(e.value);
            return () => v;
        }
        case "cap": {
            const i = e.index;
            return e.phase === "entry" ? (env) => env.entry[i] ?? null : (env) => env.exit[i] ?? null;
        }
        case "tid":
            return (env) => BigInt(env.tid);
        case "and": {
            const args = e.args.map(compile);
            return (env) => {
                let v: Value = true;
                for (const a of args) {
                    v = a(env);
                    if (!truthy(v)) return v;
                }
                return v;
            };
        }
        case "or": {
            const args = e.args.map(compile);
            return (env) => {
                let v: Value = false;
                for (const a of args) {
                    v = a(env);
                    if (truthy(v)) return v;
                }
                return v;
            };
        }
        case "not": {
            const a = compile(e.arg);
            return (env) => !truthy(a(env));
        }
        case "neg": {
            const a = compile(e.arg);
            return (env) => {
                const v = toNumeric(a(env));
                return typeof v === "bigint" ? -v : -v;
            };
        }
        case "invert": {
            const a = compile(e.arg);
            return (env) => ~toBig(a(env));
        }
        case "==":
        case "!=": {
            const l = compile(e.left);
            const r = compile(e.right);
            const want = e.op === "==";
            return (env) => equal(l(env), r(env)) === want;
        }
        case "<":
        case "<=":
        case ">":
        case ">=": {
            const l = compile(e.left);
            const r = compile(e.right);
            const op = e.op;
            return (env) => order(op, l(env), r(env));
        }
        case "+":
        case "-":
        case "*":
        case "//":
        case "%":
        case "&":
        case "|":
        case "^":
        case "<<":
        case ">>": {
            const l = compile(e.left);
            const r = compile(e.right);
            const op = e.op;
            return (env) => arith(op, l(env), r(env));
        }
        case "in": {
            const n = compile(e.needle);
            const h = compile(e.haystack);
            return (env) => contains(n(env), h(env));
        }
        case "call": {
            const args = e.args.map(compile);
            switch (e.fn) {
                case "len":
                    if (args.length !== 1) throw new PredicateError("len() takes one argument");
                    return (env) => length(args[0](env));
                case "startswith":
                case "endswith": {
                    if (args.length !== 2) throw new PredicateError(`${e.fn}() takes a string and a prefix`);
                    const starts = e.fn === "startswith";
                    return (env) => {
                        const s = args[0](env);
                        const x = args[1](env);
                        if (typeof s !== "string" || typeof x !== "string") return false;
                        return starts ? s.startsWith(x) : s.endsWith(x);
                    };
                }
                default:
                    throw new PredicateError(`unknown function '${String((e as { fn: unknown }).fn)}'`);
            }
        }
        default:
            throw new PredicateError(`unknown operator '${String((e as { op: unknown }).op)}'`);
    }
}

/** The highest capture index referenced per phase (-1: none), for validation. */
export function maxCapIndex(e: Expr, phase: "entry" | "exit"): number {
    switch (e.op) {
        case "cap":
            return e.phase === phase ? e.index : -1;
        case "and":
        case "or":
        case "call":
            return Math.max(-1, ...e.args.map((a) => maxCapIndex(a, phase)));
        case "not":
        case "neg":
        case "invert":
            return maxCapIndex(e.arg, phase);
        case "in":
            return Math.max(maxCapIndex(e.needle, phase), maxCapIndex(e.haystack, phase));
        case "const":
        case "int":
        case "tid":
            return -1;
        default:
            return Math.max(maxCapIndex(e.left, phase), maxCapIndex(e.right, phase));
    }
}
