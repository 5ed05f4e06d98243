"""Capture specs -> ir.Capture and phase; errors with offsets into the spec."""

from __future__ import annotations

import pytest

from instr.probes.captures import (
    ALIASES,
    SpecError,
    parse_capture,
    record_size,
)
from instr.probes.ir import Capture


@pytest.mark.parametrize(
    ("spec", "plan", "phase"),
    [
        ("arg0:u64", {"src": "arg", "type": "u64", "index": 0}, "entry"),
        ("arg3", {"src": "arg", "type": "i64", "index": 3}, "entry"),
        ("arg1:int", {"src": "arg", "type": "i32", "index": 1}, "entry"),
        ("arg1:size_t", {"src": "arg", "type": "u64", "index": 1}, "entry"),
        ("arg1:void*", {"src": "arg", "type": "ptr", "index": 1}, "entry"),
        ("arg0:cstr", {"src": "arg", "type": "cstr", "index": 0, "max": 256}, "entry"),
        ("arg0:char*(32)", {"src": "arg", "type": "cstr", "index": 0, "max": 32}, "entry"),
        ("arg1:cstr(0x40)@exit", {"src": "arg", "type": "cstr", "index": 1, "max": 64}, "exit"),
        (
            "arg1:bytes(16)",
            {"src": "arg", "type": "bytes", "index": 1, "max": 16, "len": {"const": 16}},
            "entry",
        ),
        (
            "arg1:bytes(arg2)@exit",
            {"src": "arg", "type": "bytes", "index": 1, "max": 4096, "len": {"arg": 2}},
            "exit",
        ),
        (
            " arg1 : bytes( arg2 , 64 ) @ exit ",
            {"src": "arg", "type": "bytes", "index": 1, "max": 64, "len": {"arg": 2}},
            "exit",
        ),
        ("retval", {"src": "retval", "type": "i64"}, "exit"),
        ("retval:bool@exit", {"src": "retval", "type": "bool"}, "exit"),
        ("caller", {"src": "caller"}, "entry"),
        ("backtrace", {"src": "backtrace", "depth": 16}, "entry"),
        ("backtrace(8)@entry", {"src": "backtrace", "depth": 8}, "entry"),
        ("duration", {"src": "duration"}, "exit"),
    ],
)
def test_specs(spec: str, plan: dict[str, object], phase: str) -> None:
    parsed = parse_capture("x", spec)
    assert parsed.capture.to_plan() == plan
    assert parsed.capture.name == "x"
    assert parsed.phase == phase


@pytest.mark.parametrize(
    ("spec", "offset", "message", "hint"),
    [
        ("arg0:u63", 5, "unknown capture type 'u63'", "did you mean 'u64'?"),
        ("arg0:sizet", 5, "unknown capture type 'sizet'", "did you mean 'size_t'?"),
        ("arg0:fd", 5, "capture type 'fd' is not supported yet in version 1", None),
        ("arg0:", 5, "missing type after ':' in capture 'x'", None),
        ("arg0:u64 x", 9, "unexpected 'x' after type 'u64'", None),
        ("arg0:u64(3)", 9, "type 'u64' takes no arguments", None),
        ("arg99", 3, "argument index must be between 0 and 31, not 99", None),
        ("arg0:cstr(0)", 10, "cstr length must be between 1 and 4096, not 0", None),
        ("arg0:cstr(abc)", 10, "cstr length must be an integer, not 'abc'", None),
        ("arg0:bytes", 5, "'bytes' needs a length", "write bytes(16), bytes(arg2) or bytes(arg2, 64)"),
        ("arg0:bytes(16, 3)", 13, "a limit is only allowed with bytes(argN, MAX)", None),
        ("arg0:bytes(arg1, 9999)", 17, "bytes limit must be between 1 and 4096, not 9999", None),
        ("arg1:cstr@exti", 10, "unknown phase 'exti' in capture 'x'", "did you mean 'exit'?"),
        ("arg1@later", 5, "unknown phase 'later' in capture 'x'", "use '@entry' or '@exit'"),
        ("retval@entry", 6, "'retval' can only be captured at exit", None),
        ("caller@exit", 6, "'caller' can only be captured at entry", None),
        ("duration@entry", 8, "'duration' can only be captured at exit", None),
        ("retval:cstr", 7, "'retval' cannot be captured as 'cstr' in version 1", "use an integer, pointer or bool type"),
        ("duration:u64", 9, "'duration' takes no type", None),
        ("caller(3)", 6, "unexpected '(3)' after 'caller'", None),
        ("backtrace(100)", 10, "backtrace depth must be between 1 and 64, not 100", None),
        ("ret", 0, "unknown capture source 'ret'", "did you mean 'retval'?"),
        ("args1", 0, "unknown capture source 'args1'", "arguments are arg0, arg1, ..."),
        ("stack", 0, "unknown capture source 'stack'", "use 'argN', 'retval', 'caller', 'backtrace' or 'duration'"),
        ("  ", 0, "empty capture spec for 'x'", "e.g. 'arg0:u64' or 'retval'"),
    ],
)  # fmt: skip
def test_spec_errors(spec: str, offset: int, message: str, hint: str | None) -> None:
    with pytest.raises(SpecError) as info:
        parse_capture("x", spec)
    assert (info.value.offset, info.value.message, info.value.hint) == (offset, message, hint)


def test_every_alias_parses() -> None:
    for alias, canonical in ALIASES.items():
        cap = parse_capture("x", f"arg0:{alias}").capture
        assert cap.type == canonical


def test_record_size_is_worst_case() -> None:
    caps = (
        Capture("a", "arg", "u64"),
        Capture("s", "arg", "cstr", max=13),
        Capture("b", "backtrace", "backtrace", depth=4),
    )
    assert record_size(caps) == 24 + 8 + (8 + 16) + (8 + 32)
