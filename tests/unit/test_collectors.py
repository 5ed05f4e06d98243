"""Console and JSON Lines collectors, and ``open_output`` (exact output, no Frida)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from instr.collectors import open_output
from instr.collectors.console import ConsoleCollector
from instr.collectors.decode import Decoder
from instr.collectors.encode import Frames, Var, encode_record
from instr.collectors.jsonl import JsonlCollector
from instr.collectors.sqlite import SqliteCollector
from instr.errors import UsageError
from instr.events import (
    Ending,
    Event,
    ProbeReport,
    RunContext,
    RunInfo,
    RunSummary,
    Site,
    Symbol,
)
from instr.probes.ir import Capture, FunctionPoint, Probe, ProbeTable
from instr.protocol import FLAG_NO_ENTRY, STATUS_NULL, STATUS_TRUNCATED

INFO = RunInfo(123, "local", 77, ("demo", "-x"), "probes.yaml", ("calls",))


def sample() -> tuple[RunContext, list[Event], RunSummary]:
    t = ProbeTable()
    t.add(
        Probe(
            1,
            "calls/malloc",
            FunctionPoint("libc*", "malloc"),
            entry=(Capture("size", "arg", "u64"), Capture("caller", "caller", "ptr")),
            exit=(Capture("p", "retval", "ptr"), Capture("took", "duration", "duration")),
        )
    )
    open_caps = (
        Capture("path", "arg", "cstr", max=12),
        Capture("flags", "arg", "i32", index=1),
        Capture("stack", "backtrace", "backtrace", depth=4),
    )
    t.add(
        Probe(
            2,
            "files/open",
            FunctionPoint(None, "open"),
            entry=open_caps,
            exit=(Capture("fd", "retval", "i32"), Capture("ok", "arg", "bool", index=9)),
        )
    )
    ctx = RunContext(t)
    ctx.add_site(Site(1, 0, 0x7F001000, "libc.so.6", "malloc"))
    ctx.add_site(Site(2, 0, 0x7F002000, "libc.so.6", "open"))
    ctx.add_symbols({0x40102A: Symbol("demo", "main", 0x2A), 0x401000: Symbol("demo", "main", 0)})
    frames = Frames((0x40102A, 0x401000, 0x99))
    data = b"".join(
        [
            encode_record(1, 0, [1024, 0x40102A], tid=4242, ts=1_000_000),
            encode_record(1, 1, [0x5555A000, 12345], tid=4242, ts=1_012_345),
            encode_record(
                2, 0, [Var(b'/etc/"pa%\n', STATUS_TRUNCATED), 0, frames], tid=1, ts=2_000_000
            ),
            encode_record(2, 1, [-2, 1], tid=1, ts=2_500_000),
            encode_record(1, 1, [0, 0], tid=7, ts=3_000_000, flags=FLAG_NO_ENTRY),
            encode_record(
                2, 0, [Var(b"", STATUS_NULL), 0o100, Frames(())], tid=1, ts=4_000_000, site=5
            ),
        ]
    )
    events = Decoder(ctx).decode(data, 1)
    reports = [
        ProbeReport(1, "calls/malloc", "armed", "native", 1, None, 3, 4),
        ProbeReport(2, "files/open", "failed", None, 0, "no function matches 'x'", 3, 0),
    ]
    summary = RunSummary(6, 2, 4, reports, Ending("exit", 0), ["lost 1 batch (seq 2)"], 9, 1)
    return ctx, events, summary


# -- JSON Lines ---------------------------------------------------------------------


def jsonl_lines() -> list[str]:
    ctx, events, summary = sample()
    out = io.StringIO()
    c = JsonlCollector(stream=out)
    c.open(ctx, INFO)
    c.on_events(events)
    c.close(summary)
    return out.getvalue().splitlines()


def test_jsonl_exact_lines() -> None:
    lines = jsonl_lines()
    assert len(lines) == 8
    assert json.loads(lines[0]) == {
        "type": "run",
        "started_ns": 123,
        "device": "local",
        "pid": 77,
        "argv": ["demo", "-x"],
        "source": "probes.yaml",
        "sets": ["calls"],
    }
    head = '{"type":"event","seq":1,"probe":"calls/malloc","phase":"entry","tid":4242,'
    assert lines[1] == (
        head + '"ts_ns":1000000,"function":"libc.so.6!malloc","args":{"size":1024,'
        '"caller":{"address":4198442,"symbol":"demo!main+0x2a"}}}'
    )
    assert lines[2] == (
        '{"type":"event","seq":2,"probe":"calls/malloc","phase":"exit","tid":4242,'
        '"ts_ns":1012345,"function":"libc.so.6!malloc","args":{},"retval":1431674880,'
        '"duration_ns":12345}'
    )
    assert json.loads(lines[3])["args"] == {
        "path": '/etc/"pa%\n',
        "flags": 0,
        "stack": [
            {"address": 0x40102A, "symbol": "demo!main+0x2a"},
            {"address": 0x401000, "symbol": "demo!main"},
            {"address": 0x99, "symbol": None},
        ],
    }
    assert json.loads(lines[3])["args_status"] == {"path": "truncated"}
    assert json.loads(lines[4])["args"] == {"ok": True}
    assert json.loads(lines[4])["retval"] == -2
    no_entry = json.loads(lines[5])
    assert (no_entry["retval"], no_entry["duration_ns"]) == (0, None)
    null = json.loads(lines[6])
    assert (null["function"], null["args"]["path"], null["args_status"]) == (
        "<site 5>",
        None,
        {"path": "null"},
    )
    tail = json.loads(lines[7])
    assert tail["type"] == "summary" and tail["lost_batches"] == 1
    assert tail["ending"] == {
        "reason": "exit",
        "code": 0,
        "signal": None,
        "address": None,
        "symbol": None,
    }
    assert [p["name"] for p in tail["probes"]] == ["calls/malloc", "files/open"]


def test_jsonl_template_path_equals_generic_path() -> None:
    t = ProbeTable()
    caps = (Capture("a%d", "arg", "i8"), Capture('q"', "arg", "u64"), Capture("p", "arg", "ptr"))
    ret = (Capture("r", "retval", "u64"), Capture("d", "duration", "duration"))
    t.add(Probe(4, "x/%s", FunctionPoint("m", "f"), caps, ret))
    ctx = RunContext(t)
    data = encode_record(4, 0, [-1, -1, 0x10]) + encode_record(4, 1, [-1, 9])
    data += encode_record(4, 1, [1, 0], flags=FLAG_NO_ENTRY)
    c = JsonlCollector(stream=io.StringIO())
    c.open(ctx, INFO)
    for e in Decoder(ctx).decode(data, 1):
        fast = c._line_for(e.probe_id, e.phase)
        assert fast != c.generic_line  # the template is in use
        assert fast(e) == c.generic_line(e)
        json.loads(fast(e))
    odd = Event(9, 4, "x/%s", "entry", 1, 0, 0, {"a%d": None, 'q"': 1, "p": 2})
    assert c._line_for(4, "entry")(odd) == c.generic_line(odd)  # falls back, no exception


def test_jsonl_file_is_written_and_closed(tmp_path: Path) -> None:
    ctx, events, summary = sample()
    path = tmp_path / "out.jsonl"
    c = JsonlCollector(path)
    c.open(ctx, INFO)
    c.on_events(events)
    c.close(summary)
    lines = path.read_text().splitlines()
    assert [json.loads(x)["type"] for x in lines] == ["run"] + ["event"] * 6 + ["summary"]
    c.close(summary)  # twice: no error


def test_jsonl_close_without_open(tmp_path: Path) -> None:
    JsonlCollector(tmp_path / "never.jsonl").close(RunSummary(0, 0, 0, [], None, [], 0))
    assert not (tmp_path / "never.jsonl").exists()


# -- open_output ----------------------------------------------------------------------


def test_open_output_by_extension(tmp_path: Path) -> None:
    assert isinstance(open_output("-"), ConsoleCollector)
    for name in ("a.jsonl", "b.NDJSON"):
        assert isinstance(open_output(str(tmp_path / name)), JsonlCollector)
    for name in ("c.db", "d.sqlite", "e.sqlite3"):
        assert isinstance(open_output(str(tmp_path / name)), SqliteCollector)


def test_open_output_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as err:
        open_output(str(tmp_path / "trace.csv"))
    assert "unknown output format '.csv'" in str(err.value)
    assert err.value.hint == (
        "supported: - (console), .jsonl, .ndjson, .db, .sqlite, .sqlite3, .json"
    )
    with pytest.raises(UsageError, match="no extension"):
        open_output(str(tmp_path / "trace"))


def test_open_output_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        open_output(str(tmp_path / "nope" / "t.jsonl"))


def test_endings_say_what_happened() -> None:
    assert Ending("exit", 3).describe() == "target exited with status 3"
    assert Ending("detach").describe() == "detached; the target keeps running"
    assert Ending("lost", signal="the target ended while Frida's agent left it").describe() == (
        "session lost (the target ended while Frida's agent left it)"
    )
    assert Ending("lost").describe() == "session lost (lost)"
