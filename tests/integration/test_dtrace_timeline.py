"""instr dtrace --timeline run.json: the run as Chrome trace JSON, checked exactly.

A D program hooks a function's entry and its return in two clauses (two
probes), so the timeline pairs them by function; clauses that only aggregate
still give their calls' slices; system calls are slices of their span, one
per call though two clauses see it; the counters are the D aggregations.
"""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import pytest
from helpers import run_instr
from timeline_check import check_trace

pytestmark = pytest.mark.frida

DEPTH = 24  # profile_split.c's RECURSE_DEPTH: 25 nested calls of recurse a round
ROUNDS = 2

SPLIT = (
    "pid$target::recurse:entry { @c[probefunc] = count(); }"
    " pid$target::recurse:return { @r = count(); }"
    " pid$target::hot_b:entry { @h = count(); }"
)


def dtrace(targets, tmp_path: Path, program: str, timeline: str | None):
    args = ["dtrace", "-q", "-n", program]
    if timeline is not None:
        args += ["--timeline", tmp_path / timeline]
    prog = targets.path("profile_split")
    done = run_instr(*args, "-c", f"{prog} {ROUNDS} 1000", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return done


def test_entry_and_return_clauses_make_nested_slices(targets, tmp_path: Path) -> None:
    done = dtrace(targets, tmp_path, SPLIT, "run.json")
    events = check_trace((tmp_path / "run.json").read_text())
    assert Counter((e["ph"], e["name"]) for e in events) == {
        ("M", "process_name"): 1,
        ("X", "profile_split!recurse"): ROUNDS * (DEPTH + 1),
        ("i", "profile_split!hot_b"): ROUNDS,  # hooked at entry only: an instant
        ("C", "@c"): 1,
        ("C", "@r"): 1,
        ("C", "@h"): 1,
    }
    calls = sorted((e for e in events if e["ph"] == "X"), key=lambda e: e["ts"])
    for round_calls in (calls[: DEPTH + 1], calls[DEPTH + 1 :]):
        for outer, inner in itertools.pairwise(round_calls):
            assert outer["ts"] <= inner["ts"], (outer, inner)
            assert inner["ts"] + inner["dur"] <= outer["ts"] + outer["dur"], (outer, inner)
    counters = {e["name"]: e["args"] for e in events if e["ph"] == "C"}
    n = ROUNDS * (DEPTH + 1)
    assert counters == {"@c": {"recurse": n}, "@r": {"count": n}, "@h": {"count": ROUNDS}}
    # The program's own output is what it is without a timeline: the events
    # the timeline needs do not reach the D clauses.
    plain = dtrace(targets, tmp_path, SPLIT, None)
    assert done.stdout == plain.stdout
    assert f"{n}" in done.stdout


def test_a_return_paired_with_its_entry_is_one_slice_per_call(targets, tmp_path: Path) -> None:
    """self->ts at entry, read at return: compiled as one probe hooked at both
    (instr.dtrace.pairing); the separate entry clause gives no second slice."""
    program = (
        "pid$target::recurse:entry { self->ts = timestamp; }"
        " pid$target::recurse:return /self->ts/"
        " { @q = quantize(timestamp - self->ts); self->ts = 0; }"
    )
    dtrace(targets, tmp_path, program, "paired.json")
    events = check_trace((tmp_path / "paired.json").read_text())
    kinds = Counter((e["ph"], e["name"]) for e in events)
    assert kinds[("X", "profile_split!recurse")] == ROUNDS * (DEPTH + 1), kinds
    assert kinds[("C", "@q")] == 1, kinds
    assert not [e for e in events if e["ph"] == "i"], kinds


def test_system_calls_are_one_slice_per_call(targets, tmp_path: Path) -> None:
    program = (
        'syscall::write:entry { @w = count(); } syscall::write:return { printf("w %d\\n", arg0); }'
    )
    done = dtrace(targets, tmp_path, program, "sys.json")
    written = [int(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("w ")]
    assert written, done.stdout
    events = check_trace((tmp_path / "sys.json").read_text())
    slices = sorted((e for e in events if e["ph"] == "X"), key=lambda e: e["ts"])
    assert [e["name"] for e in slices] == ["write"] * len(written)
    assert [e["args"]["a0"] for e in slices] == written  # the return clause's arg0
    for a, b in itertools.pairwise(slices):
        assert a["ts"] + a["dur"] <= b["ts"], (a, b)
    assert {e["name"]: e["args"] for e in events if e["ph"] == "C"} == {
        "@w": {"count": len(written)}
    }


def test_a_timeline_needs_a_process(tmp_path: Path) -> None:
    done = run_instr("dtrace", "--timeline", tmp_path / "x.json", "-n", "BEGIN { exit(0); }")
    assert done.returncode == 2, done.stderr
    assert "--timeline records a process" in done.stderr
    assert not (tmp_path / "x.json").exists()
