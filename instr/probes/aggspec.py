"""Aggregation specs: ``"sum(size) by caller"``, ``"quantize(arg0:size_t)"``,
``"lquantize(took, 0, 1000, 100) by probefunc, tid"``, ``"count()"``,
``"llquantize(took, 10, 0, 6, 20)"``.

Grammar (whitespace is free)::

    spec  := FUNC "(" [value ["," INT "," INT ["," INT ["," INT]]]] ")" ["by" ref ("," ref)*]
    FUNC  := count | sum | min | max | avg | stddev | quantize | lquantize | llquantize
    value := ref
    ref   := NAME [":" TYPE] | "backtrace" ["(" DEPTH ")"]

A ``ref`` is a capture of the probe by name, a capture source written in
place (``arg0``, ``arg1:u32``, ``retval``, ``caller``, ``backtrace(4)``,
``duration``: the probe captures it implicitly), or, as a key only, a
built-in: ``tid``, ``pid``, ``execname`` (the process name), ``probefunc``
(the hooked function) or ``module`` (its module). Errors carry the offset in
the spec so the YAML front end can point at the character.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from instr.aggregate import llq as llq_mod
from instr.probes import limits
from instr.probes.captures import SpecError
from instr.probes.diag import did_you_mean, one_of

FUNCS: tuple[str, ...] = (
    "count", "sum", "min", "max", "avg", "stddev", "quantize", "lquantize", "llquantize"
)  # fmt: skip
BUILTIN_KEYS: tuple[str, ...] = ("tid", "pid", "execname", "probefunc", "module", "syscall")
IMPLICIT = re.compile(r"^(arg[0-9]+|retval|caller|duration|backtrace)$")
LQUANTIZE_MAX_BUCKETS = 4096
MAX_KEYS_PER_AGG = 8

_TOKEN = re.compile(
    r"\s*(?:(?P<num>-?(?:0[xX][0-9a-fA-F]+|[0-9]+))|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<punct>[(),:*]))"
)


class AggSpecError(SpecError):
    """An aggregation spec that does not parse; ``offset`` is into the spec string."""


@dataclass(frozen=True)
class Ref:
    """A value or key as written: ``text`` is e.g. ``size``, ``arg0:u32``, ``backtrace(4)``."""

    name: str  # the name part: a capture name, argN, retval, caller, backtrace, a built-in
    text: str  # the whole ref as written (a capture spec for implicit captures)
    offset: int


@dataclass(frozen=True)
class AggSpec:
    func: str
    value: Ref | None
    lquantize: tuple[int, int, int] | None
    keys: tuple[Ref, ...]
    llquantize: tuple[int, int, int, int] | None = None  # (factor, low, high, steps)


class _Tokens:
    def __init__(self, text: str) -> None:
        self.text = text
        self.items: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                at = len(text) - len(text[pos:].lstrip())
                raise AggSpecError(at, f"unexpected character {text[at]!r} in aggregation")
            kind = m.lastgroup or ""
            self.items.append((kind, m.group(kind), m.start(kind)))
            pos = m.end()
        self.i = 0

    def peek(self) -> tuple[str, str, int] | None:
        return self.items[self.i] if self.i < len(self.items) else None

    def end_offset(self) -> int:
        return len(self.text.rstrip())

    def take(self, want: str | None = None, what: str = "") -> tuple[str, str, int]:
        tok = self.peek()
        if tok is None:
            raise AggSpecError(self.end_offset(), f"aggregation ends early: expected {what}")
        if want is not None and tok[1] != want:
            raise AggSpecError(tok[2], f"expected {what}, found {tok[1]!r}")
        self.i += 1
        return tok


def _int(tok: tuple[str, str, int], what: str) -> int:
    if tok[0] != "num":
        raise AggSpecError(tok[2], f"{what} must be an integer, not {tok[1]!r}")
    text = tok[1]
    sign, digits = (-1, text[1:]) if text.startswith("-") else (1, text)
    # decimal with leading zeros allowed (int(text, 0) refuses them), never converted
    # past 64 bits (Python refuses 4300 digits)
    hexa = digits[:2] in ("0x", "0X")
    value = sign * int(digits, 16) if hexa else limits.decimal(text)
    if not limits.in_int_range(value):
        raise AggSpecError(tok[2], f"{what} does not fit in 64 bits")
    return value


def _ref(t: _Tokens, what: str) -> Ref:
    kind, name, start = t.take(None, what)
    if kind != "name":
        raise AggSpecError(start, f"expected {what}, found {name!r}")
    end = start + len(name)
    nxt = t.peek()
    if name == "backtrace" and nxt is not None and nxt[1] == "(":
        t.take("(")
        depth = t.take(None, "a backtrace depth")
        _int(depth, "the backtrace depth")
        close = t.take(")", "')'")
        end = close[2] + 1
    elif nxt is not None and nxt[1] == ":":
        t.take(":")
        tkind, tname, tstart = t.take(None, "a type after ':'")
        if tkind != "name":
            raise AggSpecError(tstart, f"expected a type after ':', found {tname!r}")
        end = tstart + len(tname)
        star = t.peek()
        if star is not None and star[1] == "*" and star[2] == end:
            t.take("*")
            end += 1
        if not IMPLICIT.match(name):
            raise AggSpecError(
                start,
                f"only capture sources take a type here, not '{name}'",
                "give the type where the capture is declared, or write e.g. arg0:u32",
            )
    return Ref(name, t.text[start:end], start)


def parse_agg(text: str) -> AggSpec:
    """Parse one aggregation spec; raises ``AggSpecError`` with an offset."""
    t = _Tokens(text)
    kind, func, start = t.take(None, "an aggregating function")
    if kind != "name" or func not in FUNCS:
        hint = did_you_mean(func, FUNCS) or f"use {one_of(FUNCS)}"
        raise AggSpecError(start, f"unknown aggregating function '{func}'", hint)
    t.take("(", f"'(' after {func}")
    value: Ref | None = None
    lq: tuple[int, int, int] | None = None
    llq: tuple[int, int, int, int] | None = None
    nxt = t.peek()
    if func == "count":
        if nxt is not None and nxt[1] != ")":
            raise AggSpecError(nxt[2], "count() takes no argument", "write count()")
    else:
        if nxt is None or nxt[1] == ")":
            at = nxt[2] if nxt is not None else t.end_offset()
            raise AggSpecError(at, f"{func}() needs a value, e.g. {func}(size)")
        value = _ref(t, f"the value to {func}")
        if func == "lquantize":
            nums: list[int] = []
            for what in ("low", "high", "step"):
                comma = t.peek()
                if comma is None or comma[1] != ",":
                    if what == "step" and len(nums) == 2:
                        break
                    at = comma[2] if comma is not None else t.end_offset()
                    raise AggSpecError(at, "lquantize needs (value, low, high[, step])")
                t.take(",")
                nums.append(_int(t.take(None, f"the {what} bound"), f"the {what} bound"))
            low, high = nums[0], nums[1]
            step = nums[2] if len(nums) > 2 else 1
            if step <= 0 or high <= low:
                raise AggSpecError(start, "lquantize needs low < high and a positive step")
            if (high - low + step - 1) // step > LQUANTIZE_MAX_BUCKETS:
                raise AggSpecError(
                    start, f"lquantize would have more than {LQUANTIZE_MAX_BUCKETS} buckets"
                )
            lq = (low, high, step)
        elif func == "llquantize":
            llq = _llq_args(t, start)
    close = t.take(None, "')'")
    if close[1] != ")":
        extra = "; only lquantize and llquantize take bounds" if close[1] == "," else ""
        raise AggSpecError(close[2], f"expected ')', found {close[1]!r}{extra}")
    keys: list[Ref] = []
    nxt = t.peek()
    if nxt is not None:
        if nxt[1] != "by":
            raise AggSpecError(nxt[2], f"expected 'by' or the end, found {nxt[1]!r}")
        t.take("by")
        keys.append(_ref(t, "a key after 'by'"))
        while (nxt := t.peek()) is not None:
            t.take(",", "',' between keys")
            keys.append(_ref(t, "a key after ','"))
        if len(keys) > MAX_KEYS_PER_AGG:
            raise AggSpecError(keys[MAX_KEYS_PER_AGG].offset, f"at most {MAX_KEYS_PER_AGG} keys")
    return AggSpec(func, value, lq, tuple(keys), llq)


def _llq_args(t: _Tokens, start: int) -> tuple[int, int, int, int]:
    """``, factor, low, high, steps`` after llquantize's value, checked as DTrace does."""
    nums: list[int] = []
    offsets: list[int] = []
    for what in ("factor", "low magnitude", "high magnitude", "steps"):
        comma = t.peek()
        if comma is None or comma[1] != ",":
            at = comma[2] if comma is not None else t.end_offset()
            raise AggSpecError(at, "llquantize needs (value, factor, low, high, steps)")
        t.take(",")
        tok = t.take(None, f"the {what}")
        nums.append(_int(tok, f"the {what}"))
        offsets.append(tok[2])
    llq = (nums[0], nums[1], nums[2], nums[3])
    bad = llq_mod.check(llq)
    if bad is not None:
        raise AggSpecError(offsets[bad[0] - 1], bad[1], bad[2] or None)
    return llq
