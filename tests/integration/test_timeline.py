"""instr trace -o run.json: a timeline Perfetto UI opens (Chrome trace JSON), checked exactly."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import pytest
from helpers import run_instr

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
    events = json.loads(out.read_text())["traceEvents"]
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
