"""`instr check --explain`: the events' tier of each probe and the reason, as
the agent will choose it (instr.ctier.native.event_blockers is the one list)."""

from __future__ import annotations

import pytest

from instr.probes.compiler import load_text
from instr.probes.explain import event_tier


def tier(body: str) -> tuple[str, str]:
    text = "version: 1\nsets:\n  s:\n    probes:\n      - function: f\n"
    text += "".join(f"        {line}\n" for line in body.strip().splitlines())
    return event_tier(load_text(text).sets["s"].probes[0])


@pytest.mark.parametrize(
    ("body", "want", "why"),
    [
        ('capture: {a: "arg0:i64", b: "arg1:i64"}', "native", "a CModule listener"),
        (
            'capture: {name: "arg0:cstr(16)", i: "arg1:i64"}\nwhere: "i % 2 == 0"',
            "native",
            "C strings and bytes (name) by a bounded copy",
        ),
        ('capture: {p: "arg0:ptr"}\nwhere: "p != 0"', "native", "'where' runs in C at entry"),
        (
            'capture: {s: "arg0:cstr(8)", r: "retval:i32"}\nwhere: \'r < 0 and s == "x"\'',
            "native",
            "'where' runs in C at exit",
        ),
        ('capture: {d: "arg0:bytes(arg1, 64)"}', "native", "C strings and bytes (d)"),
        ('capture: {bt: "backtrace(8)"}', "native", "frame-pointer walk in C"),
        ('capture: {s: "arg0:cstr(8)"}\nwhere: "len(s) > 2"', "js", "not in C: len() in 'where'"),
        (
            'capture: {a: "arg0:u64"}\nwhere: "a + 1 > 2"',
            "js",
            "'+' in 'where' may not fit 64 bits",
        ),
        (
            'capture: {s: "arg0:cstr(1024)", r: "retval:i32"}\nwhere: "r < 0"',
            "js",
            "the entry record held until then can exceed 248 bytes",
        ),
        ('capture: {s: "arg0:cstr(4096)"}', "js", "an entry record that can exceed 2048 bytes"),
        ('capture: {a: "arg0:i64"}\ntier: js', "js", "'tier: js' was asked"),
    ],
)
def test_event_tier_and_why(body: str, want: str, why: str) -> None:
    got, reason = tier(body)
    assert (got, why in reason) == (want, True), reason
