"""instr trace -a N --where: raw arguments and return values of every call
that passes the predicate, exactly (tests/targets/oneliners.c: its mallocs are
known by size)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from dtrace_table import ALLOC, N
from helpers import Targets, run_instr
from jsonl import read_jsonl

pytestmark = pytest.mark.frida


def test_raw_arguments_filtered_by_where(targets: Targets, tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    res = run_instr("trace", "-q", "-a", "2", "-i", "libc.so*!malloc", "--where", "arg0 > 100",
                    "-o", out, "--", targets.path("oneliners"), N)  # fmt: skip
    assert res.returncode == 0, res.stderr
    events, summary = read_jsonl(out)
    assert summary["drops"] == 0 and summary["ending"]["reason"] == "exit", summary
    entries = [e for e in events if e["phase"] == "entry"]
    exits = [e for e in events if e["phase"] == "exit"]
    # stdout's and stdin's 4096-byte stdio buffers, then the 128-byte blocks;
    # the 16-, 32- and 64-byte ones fail the predicate
    want = Counter({4096: 2, 128: ALLOC[128]})
    assert Counter(e["args"]["arg0"] for e in entries) == want, entries[:3]
    assert all(set(e["args"]) == {"arg0", "arg1"} for e in entries), entries[:3]
    # each call's return value (a heap address) is the exit event's retval
    assert len(exits) == sum(want.values())
    assert all(e["retval"] > 4096 for e in exits), exits[:3]
    assert len({e["tid"] for e in events}) == 1  # the program's one thread, not Frida's


def test_where_without_captures_says_what_to_add(targets: Targets) -> None:
    res = run_instr(
        "trace", "-i", "malloc", "--where", "size > 1", "--", targets.path("oneliners"), 1
    )
    assert res.returncode == 2, res.stderr
    assert "--where (for cli/malloc), column 1: unknown name 'size'" in res.stderr
    assert "give -a N" in res.stderr and "Traceback" not in res.stderr
