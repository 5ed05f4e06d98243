"""Points by address and module+offset, caller and backtrace symbolised on the host,
predicates filtering in the target, drop accounting, and partial failure."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from helpers import run_instr
from jsonl import db, read_jsonl

pytestmark = pytest.mark.frida


def symbol_value(exe: Path, name: str) -> int:
    out = subprocess.run(["nm", str(exe)], capture_output=True, text=True, check=True).stdout
    return next(int(ln.split()[0], 16) for ln in out.splitlines() if ln.endswith(f" {name}"))


def one_probe(point: str) -> str:
    return f"""
        version: 1
        sets:
          p:
            probes:
              - name: add
                {point}
                capture: {{a: "arg0:i64", r: "retval:i64"}}
        """


def test_address_point_on_a_non_pie_binary(targets, probe_file, tmp_path):
    exe = targets.path("calls", pie=False)
    addr = symbol_value(exe, "target_add")
    out = tmp_path / "run.jsonl"
    res = run_instr("run", "-q", "-P", probe_file(one_probe(f"address: {addr:#x}")), "-s", "p",
                    "-o", out, "--", exe, "add", 1000)  # fmt: skip
    assert res.returncode == 0, res.stderr
    events, summary = read_jsonl(out)
    assert [e["args"]["a"] for e in events if e["phase"] == "entry"] == list(range(1000))
    assert [e["retval"] for e in events if e["phase"] == "exit"] == [3 * i for i in range(1000)]
    assert summary["probes"][0]["state"] == "armed"


def test_module_offset_point_on_a_pie_binary(targets, probe_file, tmp_path):
    exe = targets.path("calls", pie=True)
    off = symbol_value(exe, "target_add")
    out = tmp_path / "run.jsonl"
    res = run_instr("run", "-q", "-P", probe_file(one_probe(f'offset: "calls+{off:#x}"')), "-s",
                    "p", "-o", out, "--", exe, "add", 1000)  # fmt: skip
    assert res.returncode == 0, res.stderr
    events, _ = read_jsonl(out)
    assert [e["args"]["a"] for e in events if e["phase"] == "entry"] == list(range(1000))


STACKS = """
version: 1
sets:
  bt:
    probes:
      - function: "calls!target_add"
        capture: {a: "arg0:i64", who: caller, stack: "backtrace(4)"}
        where: "a % 3 == 0 and a < 30"
        on: [entry]
"""


def test_predicate_caller_and_backtrace(targets, probe_file, tmp_path):
    out, store = tmp_path / "run.jsonl", tmp_path / "run.db"
    res = run_instr("run", "-q", "-P", probe_file(STACKS), "-s", "bt", "-o", out, "-o", store,
                    "--", targets.path("calls"), "add", 1000)  # fmt: skip
    assert res.returncode == 0, res.stderr
    events, _ = read_jsonl(out)
    assert [e["args"]["a"] for e in events] == list(range(0, 30, 3))
    for e in events:
        assert e["args"]["who"]["symbol"].startswith("calls!run_add+0x")
        frames = [f["symbol"] for f in e["args"]["stack"]]
        assert frames[0] == e["args"]["who"]["symbol"]
        assert frames[1].startswith("calls!main+0x")
        assert len(frames) == 4
    con = db(store)
    assert con.execute("SELECT count(*), count(DISTINCT stack_id) FROM events").fetchone() == (
        10,
        1,
    )
    (frames,) = con.execute("SELECT frames FROM stacks").fetchone()
    assert [f["symbol"].split("+")[0] for f in json.loads(frames)[:2]] == [
        "calls!run_add",
        "calls!main",
    ]


def test_drop_mode_counts_every_drop(targets, probe_file, tmp_path):
    n = 300_000
    out = tmp_path / "run.jsonl"
    path = probe_file("""
        version: 1
        sets:
          p:
            probes:
              - function: "calls!target_add"
                capture: {a: "arg0:i64"}
                on: [entry]
        """)
    res = run_instr("run", "-P", path, "-s", "p", "-o", out, "--on-full", "drop",
                    "--buffer-size", 131072, "--", targets.path("calls"), "add", n)  # fmt: skip
    assert res.returncode == 0, res.stderr
    events, summary = read_jsonl(out)
    dropped = summary["probes"][0]["drops"]
    assert len(events) + dropped == n
    assert summary["drops"] == dropped
    if dropped:
        assert f"dropped {dropped} records" in res.stderr
    # What arrived is in order and has no gaps other than the dropped records.
    got = [e["args"]["a"] for e in events]
    assert got == sorted(got) and len(set(got)) == len(got)


def test_one_bad_probe_does_not_stop_the_others(targets, probe_file, tmp_path):
    out = tmp_path / "run.jsonl"
    path = probe_file("""
        version: 1
        sets:
          p:
            probes:
              - function: "calls!no_such_function"
              - function: "calls!target_add"
                capture: {a: "arg0:i64"}
                on: [entry]
        """)
    res = run_instr("run", "-P", path, "-s", "p", "-o", out, "--", targets.path("calls"), "add", 50)
    assert res.returncode == 0, res.stderr
    assert "probe p/no_such_function failed: no function matches 'calls!no_such_function'" in (
        res.stderr
    )
    assert "armed 1 of 2 probes" in res.stderr
    events, summary = read_jsonl(out)
    assert len(events) == 50
    assert [p["state"] for p in summary["probes"]] == ["failed", "armed"]
