"""instr trace -o run.json: a timeline Perfetto UI opens (Chrome trace JSON), checked exactly."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import pytest
from helpers import run_instr
from timeline_check import check_trace

pytestmark = pytest.mark.frida

DEPTH = 24  # profile_split.c's RECURSE_DEPTH: 25 nested calls of recurse a round


def test_trace_timeline_nests_calls(targets, tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    prog = targets.path("profile_split")
    done = run_instr(
        "trace", "-q", "-i", "profile_split!recurse", "-i", "profile_split!hot_b", "-o", out,
        "--", prog, 2, 1000,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    events = check_trace(out.read_text())
    assert Counter((e["ph"], e["name"]) for e in events) == {
        ("M", "process_name"): 1,
        ("X", "profile_split!recurse"): 2 * (DEPTH + 1),
        ("X", "profile_split!hot_b"): 2,
    }
    assert {e["tid"] for e in events if e["ph"] == "X"} == {events[0]["pid"]}
    calls = sorted(
        (e for e in events if e["name"] == "profile_split!recurse"), key=lambda e: e["ts"]
    )
    for round_calls in (calls[: DEPTH + 1], calls[DEPTH + 1 :]):
        for outer, inner in itertools.pairwise(round_calls):
            assert outer["ts"] <= inner["ts"], (outer, inner)
            assert inner["ts"] + inner["dur"] <= outer["ts"] + outer["dur"], (outer, inner)
    # the two rounds do not overlap, and hot_b runs before each round's recursion
    assert calls[DEPTH]["ts"] + calls[DEPTH]["dur"] <= calls[DEPTH + 1]["ts"]
    hot_b = sorted(e["ts"] for e in events if e["name"] == "profile_split!hot_b")
    assert hot_b[0] < calls[0]["ts"] and calls[DEPTH]["ts"] < hot_b[1] < calls[DEPTH + 1]["ts"]


def test_aggregation_snapshots_are_counters(targets, tmp_path: Path) -> None:
    """The final snapshot of each aggregation: a counter event, one series per key."""
    from dtrace_table import ALLOC, N

    out = tmp_path / "aggs.json"
    done = run_instr("trace", "-q", "-i", "libc.so*!malloc", "--agg", "n=count()",
                     "--agg", "bytes=sum(arg0:size_t) by probefunc", "-o", out,
                     "--", targets.path("oneliners"), N)  # fmt: skip
    assert done.returncode == 0, done.stderr
    events = check_trace(out.read_text())
    counters = {e["name"]: e["args"] for e in events if e["ph"] == "C"}
    # stdout's and stdin's 4096-byte stdio buffers, then oneliners' own blocks
    calls = 2 + sum(ALLOC.values())
    nbytes = 2 * 4096 + sum(size * n for size, n in ALLOC.items())
    assert counters == {"cli/n": {"count": calls}, "cli/bytes": {"malloc": nbytes}}, counters


def test_system_calls_are_slices(targets, tmp_path: Path) -> None:
    """instr syscalls -o run.json: one slice per call, ending at its return, the
    same calls as the JSON Lines of the same program."""
    prog = targets.path("oneliners")
    runs = {}
    for name in ("calls.json", "calls.jsonl"):
        done = run_instr("syscalls", "-e", "trace=read,write,openat,close", "-o",
                         tmp_path / name, "--", prog, 3)  # fmt: skip
        assert done.returncode == 0, done.stderr
        runs[name] = (tmp_path / name).read_text()
    events = check_trace(runs["calls.json"])
    slices = [e for e in events if e["ph"] == "X"]
    lines = [json.loads(ln) for ln in runs["calls.jsonl"].splitlines()]
    want = Counter(ln["function"] for ln in lines if ln["type"] == "event")
    assert Counter(e["name"] for e in slices) == want and sum(want.values()) > 8, want
    assert [e for e in events if e["ph"] not in ("X", "M")] == []
    # one thread, calls one after another: no slice overlaps the next
    slices.sort(key=lambda e: e["ts"])
    for a, b in itertools.pairwise(slices):
        assert a["ts"] + a["dur"] <= b["ts"], (a, b)
    assert all(e["args"]["syscall"] == e["name"] and "retval" in e["args"] for e in slices)
