"""The native tier's predicate programs (instr/ctier/wherevm.py).

A model of the C machine (native_c.ts where_eval: 64-bit words, the same
operations) runs each program; it must decide as Python itself does on
unbounded integers (the JS tier's BigInt semantics) for every value at the
edges of each type, or the compiler must refuse the predicate with a reason.
The C itself is checked against the JS tier in
tests/integration/test_native_strings.py.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from instr.ctier.wherevm import OPS, compile_where
from instr.probes.compiler import load_text
from instr.probes.ir import Probe

M = 2**64
NAMES = {v: k for k, v in OPS.items()}
TYPES = {"a": "i8", "b": "u16", "c": "i32", "d": "u32", "e": "i64", "f": "u64", "g": "bool"}
EDGES = {
    "i8": [-128, -1, 0, 1, 127],
    "u16": [0, 1, 65535],
    "i32": [-(2**31), -7, -1, 0, 5, 2**31 - 1],
    "u32": [0, 3, 2**32 - 1],
    "i64": [-(2**63), -1, 0, 1, 2**63 - 1],
    "u64": [0, 1, 2**63 - 1, 2**63, 2**64 - 1],
    "bool": [0, 1],
}
NULL = None


def probe(where: str, caps: dict[str, str] | None = None) -> Probe:
    caps = caps or {n: f"arg{i}:{t}" for i, (n, t) in enumerate(TYPES.items())}
    text = "version: 1\nsets:\n  s:\n    probes:\n      - function: f\n"
    text += "        capture: {" + ", ".join(f'{n}: "{s}"' for n, s in caps.items()) + "}\n"
    text += f"        where: '{where}'\n"
    return load_text(text).sets["s"].probes[0]


def signed(x: int) -> int:
    return x - M if x >= 2**63 else x


def conv(raw: int, conv_code: int) -> int:
    """The C w_conv, on a 64-bit word (returned as a word)."""
    if conv_code in (1, 2, 3):
        bits = {1: 8, 2: 16, 3: 32}[conv_code]
        v = raw & ((1 << bits) - 1)
        return (v - (1 << bits) if v >> (bits - 1) else v) % M
    if conv_code in (4, 5, 6):
        return raw & ((1 << {4: 8, 5: 16, 6: 32}[conv_code]) - 1)
    if conv_code == 7:
        return int(raw & 0xFF != 0)
    return raw


def run(prog: dict[str, Any], raws: list[int], strs: list[bytes | None], tid: int = 7) -> bool:
    """A model of native_c.ts where_eval: a stack of 64-bit words."""
    st: list[int] = []
    consts = [s.encode() for s in prog["strings"]]
    for op, a, b, imm_text in prog["code"]:
        name, imm = NAMES[op], int(imm_text)
        if name in ("==", "!=", "<", "<=", ">", ">="):
            y, x = st.pop(), st.pop()
            xv = x if a & 1 else signed(x)
            yv = y if a & 2 else signed(y)
            st.append(int({"==": xv == yv, "!=": xv != yv, "<": xv < yv, "<=": xv <= yv,
                           ">": xv > yv, ">=": xv >= yv}[name]))  # fmt: skip
        elif name in ("+", "-", "*", "&", "|", "^", "and", "or"):
            y, x = st.pop(), st.pop()
            st.append({"+": x + y, "-": x - y, "*": x * y, "&": x & y, "|": x | y, "^": x ^ y,
                       "and": int(x != 0 and y != 0), "or": int(x != 0 or y != 0)}[name] % M)  # fmt: skip
        elif name == "imm":
            st.append(imm % M)
        elif name == "cap":
            st.append(conv(raws[a], b & 0xFF))
        elif name == "tid":
            st.append(tid)
        elif name == "<<":
            st[-1] = (st[-1] << imm) % M
        elif name == ">>":
            st[-1] = (st[-1] >> imm) if a else (signed(st[-1]) >> imm) % M
        elif name in ("//", "%"):
            x = st[-1] if a else signed(st[-1])
            # C: truncating division, then the floor fix-up (agg_floordiv/mod)
            q = abs(x) // abs(imm) * (1 if (x < 0) == (imm < 0) else -1)
            r = x - q * imm
            if name == "//":
                st[-1] = (q - 1 if r != 0 and (x < 0) != (imm < 0) else q) % M
            else:
                st[-1] = (r + imm if r != 0 and (r < 0) != (imm < 0) else r) % M
        elif name == "neg":
            st[-1] = -st[-1] % M
        elif name == "invert":
            st[-1] = ~st[-1] % M
        elif name == "not":
            st[-1] = int(st[-1] == 0)
        else:
            s, k = strs[a], consts[imm]
            if s is None:
                st.append(0)
            else:
                st.append(int({"seq": s == k, "startswith": s.startswith(k),
                               "endswith": s.endswith(k), "contains": k in s}[name]))  # fmt: skip
    return st[-1] != 0


def python_truth(where: str, values: dict[str, Any]) -> bool:
    return bool(eval(where, {"__builtins__": {}}, {**values, "tid": 7}))


def raw_of(t: str, v: int) -> int:
    """The 64-bit register a value of type t arrives in, with junk above its width."""
    width = {"i8": 8, "u16": 16, "i32": 32, "u32": 32, "bool": 8}.get(t)
    if width is None:
        return v % M
    return (v % (1 << width)) | (0xA5A5A5A5A5A5A500 << width) % M


CASES = [
    "a < 0 and b > 100",
    "c % 5 == 4 or c // 7 == -1",
    "c + 1 > 0",
    "f > 9223372036854775807",
    "f == 18446744073709551615",
    "f != -1",
    "(f & 0xff) == 3",
    "f & -16 == 0",
    "-c > 100",
    "~c == 0",
    "d * 2 > 4294967296",
    "f >> 60 == 15",
    "e >> 3 < -1",
    "c << 2 == -4",
    "a * b + c < d - 5",
    "g and not (a == -1)",
    "(a == 1) == (g == 1)",
    "e // 3 == -1",
    "e % 3 == 2",
    "f % 7 == 1",
    "f // 10 == 1844674407370955161",
    "tid == 7 and a in (1, -1, 127)",
    "c ^ 3 == -2",
    "b | 0x10000 > 65535",
    "(f & f) > 9223372036854775807",
    "(f | 1) >> 63 == 1",
    "(f & -2) < 0",
]


@pytest.mark.parametrize("where", CASES)
def test_program_decides_as_python_on_edge_values(where: str) -> None:
    p = probe(where)
    prog = compile_where(p).to_plan()
    rng = random.Random(where)
    for _ in range(400):
        values = {n: rng.choice(EDGES[t]) for n, t in TYPES.items()}
        raws = [raw_of(TYPES[n], values[n]) for n in TYPES]
        expected = python_truth(where.replace("//", "//"), values)
        assert run(prog, raws, [None] * len(raws)) == expected, (where, values)


@pytest.mark.parametrize(
    ("where", "why"),
    [
        ("f + 1 > 0", "'+' in 'where' may not fit 64 bits"),
        ("e + 1 > 0", "'+' in 'where' may not fit 64 bits"),
        ("e * e > 0", "'*' in 'where' may not fit 64 bits"),
        ("-f < 0", "'-' in 'where' may not fit 64 bits"),
        ("f | c == 0", "'|' of a negative value and a 64-bit unsigned one"),
        ("e // c == 0", "'//' by a value that is not a constant other than 0 and -1"),
        ("e % -1 == 0", "'%' by a value that is not a constant other than 0 and -1"),
        ("f // -2 == 0", "'//' of a 64-bit unsigned value by a negative constant"),
        ("e << c == 0", "'<<' by a value that is not a constant 0..63"),
        ("e << 1 == 0", "'<<' in 'where' may not fit 64 bits"),
        ("(a and b) == 1", "the value of 'and' used in arithmetic or a comparison"),
    ],
)
def test_refused_with_a_reason(where: str, why: str) -> None:
    with pytest.raises(Exception, match=None) as e:
        compile_where(probe(where))
    assert why in str(e.value)


STR_CAPS = {"s": "arg0:cstr(8)", "i": "arg1:i64"}


@pytest.mark.parametrize(
    "where",
    [
        's == "abc"',
        's != "abc"',
        's.startswith("ab") and i > 1',
        's.endswith("c") or i == 0',
        '"b" in s',
        's in ("abc", "", "\\u00e9")',
        's.startswith("") and not s.endswith("zz")',
    ],
)
def test_string_programs(where: str) -> None:
    prog = compile_where(probe(where, STR_CAPS)).to_plan()
    for s in [None, "", "abc", "ab", "xbc", "é", "abcabc"]:
        for i in (0, 1, 2):
            data = None if s is None else s.encode()
            got = run(prog, [0, i], [data, None])
            # None: every operation is false (and != true), as in the JS tier
            py = python_truth(where, {"s": _NoneStr() if s is None else s, "i": i})
            assert got == py, (where, s, i)


class _NoneStr:
    """The JS tier's None string: equal to nothing, no prefix, suffix or part."""

    def __eq__(self, other: object) -> bool:
        return False

    def __ne__(self, other: object) -> bool:
        return True

    __hash__ = None  # type: ignore[assignment]

    def startswith(self, _: str) -> bool:
        return False

    def endswith(self, _: str) -> bool:
        return False

    def __contains__(self, _: str) -> bool:
        return False


@pytest.mark.parametrize(
    ("where", "why"),
    [
        ("len(s) > 1", "len() in 'where'"),
        ('s in "abc"', "'in' of strings other than a capture and a constant"),
        ('s == "\\ufffd"', "U+FFFD or a lone surrogate"),
    ],
)
def test_string_refusals(where: str, why: str) -> None:
    with pytest.raises(Exception) as e:
        compile_where(probe(where, STR_CAPS))
    assert why in str(e.value)


def test_exit_predicate_reads_the_held_entry_record() -> None:
    text = (
        "version: 1\nsets:\n  s:\n    probes:\n      - function: f\n"
        '        capture: {{a: "arg0:i32", s: "arg1:cstr({n})", r: "retval:i64"}}\n'
        "        where: 'r > a and s == \"x\"'\n"
    )
    p = load_text(text.format(n=16)).sets["s"].probes[0]
    assert p.where is not None and p.where.phase == "exit"
    code = compile_where(p).to_plan()["code"]
    # r (exit 0) > a (entry 0, i32, read from the held record), s (entry 1) == "x"
    assert code == [
        [2, 0, 0, "0"],
        [2, 0, 0x100 | 3, "0"],
        [14, 0, 0, "0"],
        [50, 1, 0x100, "0"],
        [41, 0, 0, "0"],
    ]
    # 8 + 8 + 240 = 256 bytes of entry record body: more than Gum's invocation data holds
    big = load_text(text.format(n=240)).sets["s"].probes[0]
    with pytest.raises(Exception) as e:
        compile_where(big)
    assert "the entry record held until then can exceed 248 bytes" in str(e.value)
