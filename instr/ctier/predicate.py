"""Predicates (``where``) as C: the ``Expr`` tree of predicate.py -> C expressions.

Integer-only: 64-bit two's complement arithmetic, Python's floored ``//``
and ``%`` by non-zero constants, shifts by constants 0..63. Anything else
raises ``NotC`` and the probe's aggregations run in the JS tier.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from instr.ctier.cast import Bin, Call, Expr, Int, Unary
from instr.probes.ir import Phase

_CMP = ("==", "!=", "<", "<=", ">", ">=")
_ARITH = ("+", "-", "*", "&", "|", "^")


class NotC(Exception):
    """Something the fast tier cannot express; the message says what."""


def predicate_c(e: dict[str, Any], var: Callable[[str, int], Expr]) -> Expr:
    """The C of a predicate ``Expr`` tree (see predicate.py); raises ``NotC``."""
    op = e["op"]
    if op == "const":
        v = e["value"]
        if isinstance(v, (bool, int)):
            return Int(int(v))
        raise NotC("a string comparison in 'where'")
    if op == "int":
        v = int(e["value"])
        if not -(2**63) <= v < 2**63:
            raise NotC(f"the constant {v} in 'where' is outside 64-bit signed range")
        return Int(v)
    if op == "cap":
        return var(e["phase"], e["index"])
    if op == "tid":
        return Call("agg_tid")
    if op in ("and", "or"):
        args = [predicate_c(a, var) for a in e["args"]]
        out = args[0]
        for a in args[1:]:
            out = Bin("&&" if op == "and" else "||", out, a)
        return out
    if op == "not":
        return Unary("!", predicate_c(e["arg"], var))
    if op in ("neg", "invert"):
        return Unary("-" if op == "neg" else "~", predicate_c(e["arg"], var))
    if op in _CMP or op in _ARITH:
        return Bin(op, predicate_c(e["left"], var), predicate_c(e["right"], var))
    if op in ("//", "%"):
        right = e["right"]
        if right["op"] not in ("const", "int") or int(right["value"]) == 0:
            raise NotC(f"'{op}' by a value that is not a non-zero constant in 'where'")
        fn = "agg_floordiv" if op == "//" else "agg_floormod"
        return Call(fn, (predicate_c(e["left"], var), predicate_c(right, var)))
    if op in ("<<", ">>"):
        right = e["right"]
        if right["op"] != "const" or not 0 <= int(right["value"]) < 64:
            raise NotC(f"'{op}' by a value that is not a constant 0..63 in 'where'")
        return Bin(op, predicate_c(e["left"], var), Int(int(right["value"])))
    if op in ("in", "call"):
        raise NotC("string operations in 'where'")
    raise NotC(f"the operator '{op}' in 'where'")


def collect_caps(e: Any, out: set[tuple[Phase, int]]) -> None:
    if isinstance(e, dict):
        if e.get("op") == "cap":
            out.add((e["phase"], e["index"]))
        for v in e.values():
            collect_caps(v, out)
    elif isinstance(e, list):
        for v in e:
            collect_caps(v, out)
