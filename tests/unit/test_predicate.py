"""The predicate language: exact Expr JSON, phases, and every rejection."""

from __future__ import annotations

from typing import Any

import pytest

from instr.probes.predicate import CapInfo, compile_predicate

ENV = {
    "size": CapInfo("entry", 0, "u64"),
    "path": CapInfo("entry", 1, "cstr"),
    "stack": CapInfo("entry", 2, "backtrace"),
    "fd": CapInfo("exit", 0, "i32"),
    "took": CapInfo("exit", 1, "duration"),
}
SIZE = {"op": "cap", "phase": "entry", "index": 0}
PATH = {"op": "cap", "phase": "entry", "index": 1}
FD = {"op": "cap", "phase": "exit", "index": 0}
TOOK = {"op": "cap", "phase": "exit", "index": 1}


def c(value: Any) -> dict[str, Any]:
    return {"op": "const", "value": value}


@pytest.mark.parametrize(
    ("source", "phase", "expr"),
    [
        ("size > 1024", "entry", {"op": ">", "left": SIZE, "right": c(1024)}),
        ("tid == 7", "entry", {"op": "==", "left": {"op": "tid"}, "right": c(7)}),
        ("True", "entry", c(True)),
        ("fd < 0", "exit", {"op": "<", "left": FD, "right": c(0)}),
        (
            "0 < size <= 0x10",
            "entry",
            {
                "op": "and",
                "args": [
                    {"op": "<", "left": c(0), "right": SIZE},
                    {"op": "<=", "left": SIZE, "right": c(16)},
                ],
            },
        ),
        (
            "size > 1 and fd >= 0 or not took",
            "exit",
            {
                "op": "or",
                "args": [
                    {
                        "op": "and",
                        "args": [
                            {"op": ">", "left": SIZE, "right": c(1)},
                            {"op": ">=", "left": FD, "right": c(0)},
                        ],
                    },
                    {"op": "not", "arg": TOOK},
                ],
            },
        ),
        (
            "(size + 1) * 2 // 3 % 4 - 5",
            "entry",
            {
                "op": "-",
                "left": {
                    "op": "%",
                    "left": {
                        "op": "//",
                        "left": {
                            "op": "*",
                            "left": {"op": "+", "left": SIZE, "right": c(1)},
                            "right": c(2),
                        },
                        "right": c(3),
                    },
                    "right": c(4),
                },
                "right": c(5),
            },
        ),
        (
            "size & 1 | size ^ 2 << 3 >> 1",
            "entry",
            {
                "op": "|",
                "left": {"op": "&", "left": SIZE, "right": c(1)},
                "right": {
                    "op": "^",
                    "left": SIZE,
                    "right": {
                        "op": ">>",
                        "left": {"op": "<<", "left": c(2), "right": c(3)},
                        "right": c(1),
                    },
                },
            },
        ),
        ("-size < -5", "entry", {"op": "<", "left": {"op": "neg", "arg": SIZE}, "right": c(-5)}),
        ("~size != +1", "entry", {"op": "!=", "left": {"op": "invert", "arg": SIZE}, "right": c(1)}),
        ('"tmp" in path', "entry", {"op": "in", "needle": c("tmp"), "haystack": PATH}),
        (
            "path not in 'abc'",
            "entry",
            {"op": "not", "arg": {"op": "in", "needle": PATH, "haystack": c("abc")}},
        ),
        (
            "size in (1, 2)",
            "entry",
            {
                "op": "or",
                "args": [
                    {"op": "==", "left": SIZE, "right": c(1)},
                    {"op": "==", "left": SIZE, "right": c(2)},
                ],
            },
        ),
        ("path in ['a']", "entry", {"op": "==", "left": PATH, "right": c("a")}),
        (
            "path.startswith('/etc') and path.endswith('.conf')",
            "entry",
            {
                "op": "and",
                "args": [
                    {"op": "call", "fn": "startswith", "args": [PATH, c("/etc")]},
                    {"op": "call", "fn": "endswith", "args": [PATH, c(".conf")]},
                ],
            },
        ),
        (
            "len(path) > 3",
            "entry",
            {"op": ">", "left": {"op": "call", "fn": "len", "args": [PATH]}, "right": c(3)},
        ),
        ("path == 'x'", "entry", {"op": "==", "left": PATH, "right": c("x")}),
        ("size > 1\n  and fd", "exit", {"op": "and", "args": [{"op": ">", "left": SIZE, "right": c(1)}, FD]}),
        ("size > 9007199254740991", "entry", {"op": ">", "left": SIZE, "right": c(2**53 - 1)}),
        (
            "size & 0xffffffffffffffff == 9007199254740992",
            "entry",
            {
                "op": "==",
                "left": {"op": "&", "left": SIZE, "right": {"op": "int", "value": "18446744073709551615"}},
                "right": {"op": "int", "value": "9007199254740992"},
            },
        ),
        ("size > -0x8000000000000000", "entry", {"op": ">", "left": SIZE, "right": {"op": "int", "value": "-9223372036854775808"}}),
    ],
)  # fmt: skip
def test_compiles(source: str, phase: str, expr: dict[str, Any]) -> None:
    pred, errors = compile_predicate(source, ENV)
    assert errors == []
    assert pred is not None
    assert (pred.source, pred.phase, pred.expr) == (source, phase, expr)


def test_phase_is_exit_without_an_entry_hook() -> None:
    pred, _ = compile_predicate("tid == 1", {}, entry_hook=False)
    assert pred is not None and pred.phase == "exit"


@pytest.mark.parametrize(
    ("source", "offset", "message", "hint"),
    [
        ("sise > 3", 0, "unknown name 'sise'", "did you mean 'size'?"),
        ("size > 1 and fdd < 0", 13, "unknown name 'fdd'", "did you mean 'fd'?"),
        ("foo(size)", 0, "function 'foo' cannot be used in predicates", "the only function is len()"),
        ("path.upper() == 'A'", 5, "method 'upper' cannot be used in predicates", "the only methods are startswith() and endswith()"),
        ("path.startwith('a')", 5, "method 'startwith' cannot be used in predicates", "did you mean 'startswith'?"),
        ("path.real > 1", 0, "attribute access cannot be used in predicates", None),
        ("path[0] == 'a'", 0, "subscripts cannot be used in predicates", None),
        ("(lambda: 1)()", 0, "only len(), startswith() and endswith() can be called", None),
        ("size == (lambda: 1)", 9, "lambda expressions cannot be used in predicates", None),
        ("f'{size}' == 'x'", 0, "f-strings cannot be used in predicates", None),
        ("1 if size else 2", 0, "conditional expressions cannot be used in predicates", None),
        ("(x := 1)", 1, "assignment expressions cannot be used in predicates", None),
        ("[s for s in path]", 0, "comprehensions cannot be used in predicates", None),
        ("{1: 2}", 0, "dict literals cannot be used in predicates", None),
        ("size / 2 > 1", 0, "operator '/' cannot be used in predicates", "use // for integer division"),
        ("size ** 2 > 1", 0, "operator '**' cannot be used in predicates", None),
        ("size is None", 0, "'is' cannot be used in predicates", "use '==' or '!='"),
        ("size > 1.5", 7, "floating-point numbers cannot be used in predicates", None),
        ("size == b'x'", 8, "bytes literals cannot be used in predicates", None),
        ("size == None", 8, "None cannot be used in predicates", None),
        ("size > 0x10000000000000000", 7, "integer constant 0x10000000000000000 does not fit in 64 bits", "predicate values are 64-bit integers"),
        ("size > -0x8000000000000001", 7, "integer constant -0x8000000000000001 does not fit in 64 bits", "predicate values are 64-bit integers"),
        ("stack == 0", 0, "capture 'stack' (backtrace) cannot be used in a predicate", None),
        ("path > 3", 0, "'>' needs an integer, not a string", None),
        ("path == 3", 8, "cannot compare a string with an integer", None),
        ("size in ('a', 1)", 9, "cannot compare an integer with a string", None),
        ("size in 'abc'", 0, "'in' needs a string, not an integer", None),
        ("path + 1 > 0", 0, "'+' needs an integer, not a string", None),
        ("-path == 1", 1, "unary '-' needs an integer, not a string", None),
        ("len(size) > 0", 4, "len() needs a string, not an integer", None),
        ("len(path, 1) > 0", 0, "len() takes exactly one argument", None),
        ("path.startswith(1)", 16, "startswith() needs a string, not an integer", None),
        ("path.endswith('a', 'b')", 0, "endswith() takes exactly one argument", None),
        ("len(x=path) > 0", 0, "keyword and starred arguments cannot be used in predicates", None),
        ("size < 3 in 'x'", 0, "'in' cannot be chained with other comparisons", None),
        ("path", 0, "a predicate must be a condition, not a string", 'compare the string, e.g. len(s) > 0 or s == "x"'),
        ("size and path", 9, "'and' needs a condition, not a string", 'compare the string, e.g. len(s) > 0 or s == "x"'),
        ("not path", 4, "'not' needs a condition, not a string", 'compare the string, e.g. len(s) > 0 or s == "x"'),
        ("size >", 0, "invalid predicate: invalid syntax", None),
        ("(size > 1", 0, "invalid predicate: '(' was never closed", None),
        ("size = 1", 5, "invalid predicate: invalid syntax", "use '==' to compare"),
        ("   ", 0, "empty predicate", None),
        ("é == 1 and sise", 11, "unknown name 'sise'", "did you mean 'size'?"),
    ],
)  # fmt: skip
def test_rejections(source: str, offset: int, message: str, hint: str | None) -> None:
    pred, errors = compile_predicate(source, ENV)
    assert pred is None
    assert [(e.offset, e.message, e.hint) for e in errors][-1:] == [(offset, message, hint)]


def test_every_error_is_reported() -> None:
    _, errors = compile_predicate("a > 1 and b < 2", ENV)
    assert [(e.offset, e.message) for e in errors] == [
        (0, "unknown name 'a'"),
        (10, "unknown name 'b'"),
    ]


def test_no_captures_hint() -> None:
    _, errors = compile_predicate("x > 1", {})
    assert errors[0].hint == "this probe captures nothing; add the value under 'capture:'"
