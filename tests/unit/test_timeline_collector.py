"""The timeline output (-o run.json): Chrome trace JSON, exact events from known records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_collectors import INFO, sample
from timeline_check import check_trace

from instr.collectors import open_output
from instr.collectors.timeline import TimelineCollector


def test_calls_become_slices_and_the_rest_instants(tmp_path: Path) -> None:
    ctx, events, summary = sample()
    path = tmp_path / "run.json"
    c = open_output(str(path))
    assert isinstance(c, TimelineCollector)
    c.open(ctx, INFO)
    c.on_events(events[:3])
    c.on_events(events[3:])
    c.close(summary)
    check_trace(path.read_text())
    doc = json.loads(path.read_text())
    assert doc["displayTimeUnit"] == "ns"
    got = [{k: v for k, v in e.items() if k != "args"} for e in doc["traceEvents"]]
    assert got == [
        {"ph": "M", "name": "process_name", "pid": 77},
        {"ph": "X", "name": "libc.so.6!malloc", "cat": "calls/malloc", "pid": 77, "tid": 4242,
         "ts": 1000.0, "dur": 12.345},
        {"ph": "X", "name": "libc.so.6!open", "cat": "files/open", "pid": 77, "tid": 1,
         "ts": 2000.0, "dur": 500.0},
        {"ph": "i", "s": "t", "name": "libc.so.6!malloc", "cat": "calls/malloc", "pid": 77,
         "tid": 7, "ts": 3000.0},
        # entered, never left before the end
        {"ph": "i", "s": "t", "name": "<site 5>", "cat": "files/open", "pid": 77, "tid": 1,
         "ts": 4000.0},
    ]  # fmt: skip
    args = [e.get("args") for e in doc["traceEvents"]]
    assert args == [
        {"name": "demo -x"},
        {"size": 1024, "caller": 0x40102A, "retval": 0x5555A000},
        {"path": '/etc/"pa%\n', "flags": 0, "stack": [0x40102A, 0x401000, 0x99], "ok": True,
         "retval": -2},
        {"phase": "exit", "retval": 0},
        {"phase": "entry", "path": None, "flags": 64, "stack": []},
    ]  # fmt: skip


def _x(ts: float, dur: float, tid: int = 1) -> dict[str, object]:
    return {"ph": "X", "name": "f", "pid": 1, "tid": tid, "ts": ts, "dur": dur}


@pytest.mark.parametrize(
    ("events", "why"),
    [
        ([_x(0, 10), _x(5, 10)], "slice overlaps its parent's end"),
        ([{"ph": "X", "name": "f", "pid": 1, "tid": 1, "ts": 0}], "dur"),
        ([{"ph": "B", "name": "f", "pid": 1, "tid": 1, "ts": 0}], "unknown or missing ph"),
        ([{"ph": "C", "name": "c", "pid": 1, "ts": 0, "args": {"n": "3"}}], "counter values"),
        ([{"ph": "M", "name": "process_name", "pid": 1, "args": {}}], "metadata args.name"),
        ([{"ph": "i", "s": "x", "name": "f", "pid": 1, "tid": 1, "ts": 0}], "instant scope"),
    ],
)
def test_the_check_rejects_what_perfetto_would_not_show(events: list, why: str) -> None:
    with pytest.raises(AssertionError, match=why):
        check_trace(json.dumps({"traceEvents": events}))


def test_the_check_takes_nested_and_sibling_slices() -> None:
    ok = [_x(0, 10), _x(1, 3), _x(4, 6), _x(10, 1), _x(2, 20, tid=2)]
    assert len(check_trace(json.dumps({"traceEvents": ok}))) == 5
    with pytest.raises(AssertionError, match="not strict JSON"):
        check_trace('{"traceEvents": [{"ph": "C", "name": "c", "pid": 1, "ts": NaN}]}')
