"""Predicates (``where``) for the native event tier: the ``Expr`` tree -> bytecode.

The native tier's C is static (agents/src/ctier/native_c.ts); a predicate
reaches it as data, a short program for a stack machine that the C runs over
the values of the record it is about to write. Each instruction is
``(op, a, b, imm)``; ``imm`` travels as decimal text (64-bit exact) and is a
string constant's index for the string operations.

It must decide exactly as the JS tier does, which computes on unbounded
integers (BigInt). So every value's exact interval is tracked here and a
value must fit 64 bits as signed (``S``) or as unsigned (``U``): then
modular 64-bit arithmetic gives the exact result, and comparisons take each
side's signedness into account. Anything that could leave 64 bits, divide by
a value that is not a constant, or that C cannot match exactly raises
``NotNative`` with the reason (``instr check --explain`` prints it).

Strings: ``cstr`` captures compared with constants (``==``, ``!=``,
``startswith``, ``endswith``, ``"x" in s``, ``s in ("a", "b")``) compare the
bytes the record holds. The JS tier compares decoded text; the two agree
because its UTF-8 decoder maps only canonical encodings to text without
U+FFFD, so constants with U+FFFD stay in JS. A NULL or unreadable-and-empty
string is None there: every operation on it is false (``!=`` true).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from instr.probes.captures import record_size
from instr.probes.ir import Capture, Probe
from instr.protocol import HEADER_SIZE

S_MIN, S_MAX = -(2**63), 2**63 - 1
U_MAX = 2**64 - 1

# opcodes: keep in step with native_c.ts (W_*)
OPS: dict[str, int] = {
    "imm": 1,
    "cap": 2,
    "tid": 3,
    "==": 10,
    "!=": 11,
    "<": 12,
    "<=": 13,
    ">": 14,
    ">=": 15,
    "+": 20,
    "-": 21,
    "*": 22,
    "&": 23,
    "|": 24,
    "^": 25,
    "<<": 26,
    ">>": 27,
    "//": 28,
    "%": 29,
    "neg": 30,
    "invert": 31,
    "not": 40,
    "and": 41,
    "or": 42,
    "seq": 50,
    "startswith": 51,
    "endswith": 52,
    "contains": 53,
}
MAX_STACK = 16  # the C machine's stack
MAX_CODE = 256  # instructions
MAX_STRING = 4096  # bytes of one string constant
HOLD_MAX = 256  # the entry record's body an exit predicate holds (native_c.ts HOLD_MAX)
HOLD_SLACK = 8  # a string's copy may write one byte past its slot
W_ENTRY = 0x100  # operand flag: an entry capture, read at exit from the held record

# PUSH_CAP conversions, as the JS tier's typed(): raw 64-bit register -> value
CONV: dict[str, int] = {"i8": 1, "i16": 2, "i32": 3, "u8": 4, "u16": 5, "u32": 6, "bool": 7}
_RANGE: dict[str, tuple[int, int]] = {
    "i8": (-(2**7), 2**7 - 1),
    "i16": (-(2**15), 2**15 - 1),
    "i32": (-(2**31), 2**31 - 1),
    "i64": (S_MIN, S_MAX),
    "u8": (0, 2**8 - 1),
    "u16": (0, 2**16 - 1),
    "u32": (0, 2**32 - 1),
    "u64": (0, U_MAX),
    "ptr": (0, U_MAX),
    "bool": (0, 1),
}


class NotNative(Exception):
    """Something the native tier's predicates cannot do exactly; the message says what."""


@dataclass(frozen=True)
class Val:
    lo: int
    hi: int

    @property
    def unsigned(self) -> bool:
        """Held as unsigned 64 bits (else signed)."""
        return self.hi > S_MAX


def _fit(lo: int, hi: int, what: str) -> Val:
    if (lo >= S_MIN and hi <= S_MAX) or (lo >= 0 and hi <= U_MAX):
        return Val(lo, hi)
    raise NotNative(f"{what} in 'where' may not fit 64 bits (the JS tier's integers are unbounded)")


@dataclass
class Program:
    code: list[tuple[int, int, int, int]] = field(default_factory=list)
    strings: list[bytes] = field(default_factory=list)
    depth: int = 0
    max_depth: int = 0

    def emit(self, op: str, a: int = 0, b: int = 0, imm: int = 0, *, pops: int = 0) -> None:
        self.code.append((OPS[op], a, b, imm))
        self.depth += 1 - pops
        self.max_depth = max(self.max_depth, self.depth)

    def to_plan(self) -> dict[str, Any]:
        return {
            # imm as its signed 64-bit two's complement (unsigned constants too)
            "code": [
                [op, a, b, str(imm - 2**64 if imm > S_MAX else imm)] for op, a, b, imm in self.code
            ],
            "strings": [s.decode() for s in self.strings],
        }


def _cap_val(cap: Capture) -> Val:
    if cap.src == "duration" or cap.src == "caller":
        return Val(0, U_MAX)
    if cap.type not in _RANGE:
        raise NotNative(f"the {cap.type} capture '{cap.name}' in 'where'")
    lo, hi = _RANGE[cap.type]
    return Val(lo, hi)


class _Compiler:
    def __init__(self, probe: Probe, phase: str) -> None:
        self.entry = probe.captures("entry")
        self.exit = probe.captures("exit")
        self.phase = phase
        self.p = Program()

    def cap(self, e: dict[str, Any]) -> Capture:
        caps = self.entry if e["phase"] == "entry" else self.exit
        return caps[int(e["index"])]

    def flag(self, e: dict[str, Any]) -> int:
        """W_ENTRY for an entry capture read at exit (from the held entry record)."""
        return W_ENTRY if e["phase"] == "entry" and self.phase == "exit" else 0

    def const_int(self, e: dict[str, Any]) -> int | None:
        if e["op"] == "int":
            return int(e["value"])
        if e["op"] == "const" and isinstance(e["value"], (bool, int)):
            return int(e["value"])
        return None

    # -- boolean context: the value only matters as true/false
    def cond(self, e: dict[str, Any]) -> None:
        op = e["op"]
        if op in ("and", "or"):
            args = e["args"]
            self.cond(args[0])
            for a in args[1:]:
                self.cond(a)
                self.p.emit(op, pops=2)
            return
        if op == "not":
            self.cond(e["arg"])
            self.p.emit("not", pops=1)
            return
        self.value(e)

    # -- integer values
    def value(self, e: dict[str, Any]) -> Val:
        op = e["op"]
        k = self.const_int(e)
        if k is not None:
            self.p.emit("imm", imm=k)
            return _fit(k, k, f"the constant {k}")
        if op == "const":
            raise NotNative("a string constant used as a value in 'where'")
        if op == "cap":
            cap = self.cap(e)
            if cap.type == "cstr":
                raise NotNative(f"the string '{cap.name}' used as a value in 'where'")
            conv = CONV.get(cap.type, 0) if cap.src in ("arg", "retval") else 0
            self.p.emit("cap", a=e["index"], b=conv | self.flag(e))
            return _cap_val(cap)
        if op == "tid":
            self.p.emit("tid")
            return Val(0, 2**32 - 1)
        if op in ("and", "or", "not"):
            if op == "not":
                self.cond(e)
                return Val(0, 1)
            raise NotNative(f"the value of '{op}' used in arithmetic or a comparison in 'where'")
        if op in ("==", "!=") and (self.is_str(e["left"]) or self.is_str(e["right"])):
            return self.str_cmp(e)
        if op in ("==", "!=", "<", "<=", ">", ">="):
            left = self.value(e["left"])
            right = self.value(e["right"])
            self.p.emit(op, a=int(left.unsigned) | int(right.unsigned) << 1, pops=2)
            return Val(0, 1)
        if op in ("neg", "invert"):
            v = self.value(e["arg"])
            lo, hi = (-v.hi, -v.lo) if op == "neg" else (-v.hi - 1, -v.lo - 1)
            self.p.emit(op, pops=1)
            return _fit(lo, hi, f"'{'-' if op == 'neg' else '~'}'")
        if op in ("+", "-", "*"):
            a = self.value(e["left"])
            b = self.value(e["right"])
            if op == "+":
                lo, hi = a.lo + b.lo, a.hi + b.hi
            elif op == "-":
                lo, hi = a.lo - b.hi, a.hi - b.lo
            else:
                ends = [x * y for x in (a.lo, a.hi) for y in (b.lo, b.hi)]
                lo, hi = min(ends), max(ends)
            self.p.emit(op, pops=2)
            return _fit(lo, hi, f"'{op}'")
        if op in ("&", "|", "^"):
            return self.bitwise(op, e)
        if op in ("<<", ">>", "//", "%"):
            return self.by_const(op, e)
        if op in ("in", "call"):
            return self.str_op(e)
        raise NotNative(f"the operator '{op}' in 'where'")

    def bitwise(self, op: str, e: dict[str, Any]) -> Val:
        a = self.value(e["left"])
        b = self.value(e["right"])
        self.p.emit(op, pops=2)
        if a.lo >= 0 and b.lo >= 0:
            if op == "&":
                return Val(0, min(a.hi, b.hi))
            return Val(0, (1 << max(a.hi, b.hi).bit_length()) - 1)
        if op == "&" and (a.lo >= 0 or b.lo >= 0):
            return Val(0, a.hi if a.lo >= 0 else b.hi)
        if a.unsigned or b.unsigned:
            raise NotNative(f"'{op}' of a negative value and a 64-bit unsigned one in 'where'")
        return Val(S_MIN, S_MAX)  # bitwise operations keep 64-bit signed values in range

    def by_const(self, op: str, e: dict[str, Any]) -> Val:
        k = self.const_int(e["right"])
        if op in ("<<", ">>"):
            if k is None or not 0 <= k < 64:
                raise NotNative(f"'{op}' by a value that is not a constant 0..63 in 'where'")
            v = self.value(e["left"])
            self.p.emit(op, a=int(v.unsigned), imm=k, pops=1)
            if op == "<<":
                return _fit(v.lo << k, v.hi << k, "'<<'")
            return Val(v.lo >> k, v.hi >> k)
        if k is None or k == 0 or k == -1 or not S_MIN <= k <= S_MAX:
            raise NotNative(
                f"'{op}' by a value that is not a constant other than 0 and -1 in 'where'"
            )
        v = self.value(e["left"])
        if v.unsigned and k < 0:
            raise NotNative(f"'{op}' of a 64-bit unsigned value by a negative constant in 'where'")
        self.p.emit(op, a=int(v.unsigned), imm=k, pops=1)
        if op == "//":
            ends = (v.lo // k, v.hi // k)
            return Val(min(ends), max(ends))
        return Val(0, k - 1) if k > 0 else Val(k + 1, 0)

    # -- strings
    def is_str(self, e: dict[str, Any] | None) -> bool:
        if e is None:
            return False
        if e["op"] == "const":
            return isinstance(e["value"], str)
        return bool(e["op"] == "cap" and self.cap(e).type == "cstr")

    def string(self, e: dict[str, Any]) -> int:
        v = e["value"]
        assert isinstance(v, str)
        if "\ufffd" in v or any(0xD800 <= ord(ch) <= 0xDFFF for ch in v):
            raise NotNative("a string constant with U+FFFD or a lone surrogate in 'where'")
        data = v.encode("utf-8")
        if len(data) > MAX_STRING:
            raise NotNative(f"a string constant over {MAX_STRING} bytes in 'where'")
        self.p.strings.append(data)
        return len(self.p.strings) - 1

    def str_pair(self, x: dict[str, Any], y: dict[str, Any], what: str) -> tuple[int, int, int]:
        """(capture index, its phase flag, string index) for a capture and a constant."""
        if x["op"] == "cap" and y["op"] == "const" and isinstance(y["value"], str):
            return int(x["index"]), self.flag(x), self.string(y)
        raise NotNative(f"{what} of strings other than a capture and a constant in 'where'")

    def str_cmp(self, e: dict[str, Any]) -> Val:
        left, right = e["left"], e["right"]
        if left["op"] == "const":
            left, right = right, left
        i, f, s = self.str_pair(left, right, f"'{e['op']}'")
        self.p.emit("seq", a=i, b=f, imm=s)
        if e["op"] == "!=":
            self.p.emit("not", pops=1)
        return Val(0, 1)

    def str_op(self, e: dict[str, Any]) -> Val:
        if e["op"] == "in":
            i, f, s = self.str_pair(e["haystack"], e["needle"], "'in'")
            self.p.emit("contains", a=i, b=f, imm=s)
            return Val(0, 1)
        fn = e["fn"]
        if fn not in ("startswith", "endswith"):
            raise NotNative(f"{fn}() in 'where' (len() of an unreadable string fails in JS)")
        i, f, s = self.str_pair(e["args"][0], e["args"][1], f"{fn}()")
        self.p.emit(fn, a=i, b=f, imm=s)
        return Val(0, 1)


def compile_where(probe: Probe) -> Program:
    """The native program of a probe's ``where``; raises ``NotNative``."""
    where = probe.where
    assert where is not None
    if where.phase == "exit" and probe.entry is not None:
        held = record_size(probe.captures("entry")) - HEADER_SIZE
        if held + HOLD_SLACK > HOLD_MAX:
            raise NotNative(
                f"'where' decides at exit, and the entry record held until then can exceed "
                f"{HOLD_MAX - HOLD_SLACK} bytes in C"
            )
    c = _Compiler(probe, where.phase)
    c.cond(where.expr)
    if len(c.p.code) > MAX_CODE:
        raise NotNative(f"'where' is longer than {MAX_CODE} native instructions")
    if c.p.max_depth > MAX_STACK:
        raise NotNative(f"'where' nests deeper than the native stack ({MAX_STACK})")
    return c.p


def native_where(probe: Probe) -> tuple[dict[str, Any] | None, str]:
    """(the plan's native program or None, why not)."""
    if probe.where is None:
        return None, ""
    try:
        return compile_where(probe).to_plan(), ""
    except NotNative as e:
        return None, str(e)
