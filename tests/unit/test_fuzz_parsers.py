"""Property-based fuzzing of the probe-set loader, the predicate parser, the
aggregation-spec parser and the capture-spec parser: no input may raise
anything but instr's own error types (never RecursionError, ValueError,
KeyError, a YAML exception ...). A fixed budget, derandomized, so that CI runs
the same cases every time; INSTR_FUZZ=N raises the budget for a local hunt."""

from __future__ import annotations

import contextlib
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from instr.errors import InstrError
from instr.probes import load_text
from instr.probes.aggspec import parse_agg
from instr.probes.captures import SpecError, parse_capture
from instr.probes.predicate import CapInfo, compile_predicate

BUDGET = settings(
    max_examples=int(os.environ.get("INSTR_FUZZ", "300")),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def pieces(*words: str) -> st.SearchStrategy[str]:
    """Text made of interesting fragments, with some random characters between."""
    return st.lists(st.one_of(st.sampled_from(words), st.text(max_size=3)), max_size=60).map(
        "".join
    )


YAML_WORDS = (
    "version: 1\n", "sets:\n", "  s:\n", "    probes:\n", "      - ", "function: ",
    "'libc.so*!malloc'", "capture: ", "{size: arg0:u64}", "where: ", "aggregate: ",
    "{n: count()}", "syscall: ", "address: ", "offset: ", "demo+0x10", "patch: ",
    "{ret: 0}", "on: ", "[entry, exit]", "tier: ", "native", "exclude: ",
    "[", "]", "{", "}", ",", ": ", "- ", "\n", "  ", "&a ", "*a", "&b ", "*b", "!!str ",
    "!tag ", "? ", "|\n  ", ">\n  ", "'", '"', "#", "~", "null", "true", "0x", "0o",
    "99999999999999999999999", "-1", "1e999", ".nan", "---\n", "...\n", "%YAML 1.2\n",
    "\t", "\r\n", "\x00", "\ufeff", "é",
)  # fmt: skip

PRED_WORDS = (
    "size", "path", "tid", "stack", "n", " and ", " or ", "not ", "==", "!=", "<", "<=", ">",
    ">=", "+", "-", "*", "//", "/", "%", "&", "|", "^", "<<", ">>", "~", "(", ")", "[", "]",
    ",", " in ", " not in ", ".startswith(", ".endswith(", "len(", "'x'", '"y"', "0x",
    "1", "0", "18446744073709551616", "9" * 30, "1.5", "True", "None", "lambda", ":=",
    "if", "else", "**", "@", "\\", "\n", " ", "\x00", "é",
)  # fmt: skip

AGG_WORDS = (
    "count", "sum", "min", "max", "avg", "stddev", "quantize", "lquantize", "(", ")",
    ",", " by ", "arg0", "arg99", ":u64", ":size_t", ":cstr", "retval", "caller",
    "backtrace", "duration", "tid", "pid", "execname", "probefunc", "module", "size",
    "0", "-1", "0x10", "00010", "9" * 30, "*", ":", " ", "é",
)  # fmt: skip

CAP_WORDS = (
    "arg0", "arg31", "arg32", "arg" + "9" * 30, "retval", "caller", "duration",
    "backtrace", "(", ")", ":", "@entry", "@exit", "u8", "i64", "u64", "ptr", "bool",
    "cstr", "cstr[", "bytes[", "]", "arg1", "64", "0", "0x10", "-1", "9" * 30, ",", " ",
)  # fmt: skip

ENV = {
    "size": CapInfo("entry", 0, "u64"),
    "path": CapInfo("entry", 1, "cstr"),
    "stack": CapInfo("entry", 2, "backtrace"),
    "n": CapInfo("exit", 0, "i64"),
}


@BUDGET
@given(st.one_of(pieces(*YAML_WORDS), st.text(max_size=200)))
def test_loader(text: str) -> None:
    with contextlib.suppress(InstrError):
        load_text(text, "fuzz.yaml")


@BUDGET
@given(st.one_of(pieces(*PRED_WORDS), st.text(max_size=100)))
def test_predicate(text: str) -> None:
    predicate, errors = compile_predicate(text, ENV)
    assert (predicate is None) == bool(errors)
    for e in errors:
        assert 0 <= e.offset <= len(text) + 1


@BUDGET
@given(st.one_of(pieces(*AGG_WORDS), st.text(max_size=60)))
def test_aggregation_spec(text: str) -> None:
    try:
        parse_agg(text)
    except SpecError as e:  # AggSpecError is one
        assert 0 <= e.offset <= len(text)


@BUDGET
@given(st.one_of(pieces(*CAP_WORDS), st.text(max_size=60)))
def test_capture_spec(text: str) -> None:
    try:
        parse_capture("c", text)
    except SpecError as e:
        assert 0 <= e.offset <= len(text)
