"""Following children (-F, docs/follow.md): every forked and exec'ed image
gets the run's probes before it runs; events carry pid; aggregations are one
table over the process tree; the summary says how each process ended."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from helpers import run_instr, start_instr, start_target
from jsonl import db, read_jsonl

pytestmark = pytest.mark.frida

N = 1000

WORK_SET = """
version: 1
sets:
  work:
    probes:
      - name: work
        function: "forker!target_work"
        capture: {i: "arg0:i64", r: "retval:i64"}
        aggregate:
          calls: count() by pid
          total: sum(i)
          sizes: quantize(i)
"""


def _aggregations(path: Path, name: str) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text().splitlines():
        obj = json.loads(line)
        if obj["type"] == "aggregation" and obj["final"] and obj["name"] == name:
            rows.append(obj)
    return rows


def _processes(summary: dict[str, Any]) -> list[tuple[str, int | None, int | None]]:
    """(origin, parent, exit code) of each process, in pid order."""
    procs = sorted(summary["processes"], key=lambda p: p["pid"])
    for p in procs:
        assert p["ending"] is not None and p["ending"]["reason"] in ("exit", "exec"), p
    return [(p["origin"], p["parent"], p["ending"]["code"]) for p in procs]


def test_four_forked_children_and_the_parent_each_give_their_calls(
    targets, pie, tmp_path: Path
) -> None:
    """The gate of issue 18: 4 forked children and the parent call
    target_work 1,000 times each: exactly 5 x 1,000 entry (and exit) events,
    from 5 distinct pids, 1,000 each; every process ended as it should."""
    out, out_db = tmp_path / "run.jsonl", tmp_path / "run.db"
    prog = targets.path("forker", pie=pie)
    res = run_instr("trace", "-F", "-i", "forker!target_work", "-a", "1",
                    "-o", out, "-o", out_db, "--", prog, "fork", N)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "forker ok" in res.stdout
    events, summary = read_jsonl(out)
    entries = Counter(e["pid"] for e in events if e["phase"] == "entry")
    exits = Counter(e["pid"] for e in events if e["phase"] == "exit")
    assert len(entries) == 5 and set(entries.values()) == {N}, entries
    assert exits == entries
    for pid in entries:  # each process's calls, in order: arg0 = 0 .. N-1
        args = [e["args"]["arg0"] for e in events if e["pid"] == pid and e["phase"] == "entry"]
        assert args == list(range(N)), pid
    root = next(p["pid"] for p in summary["processes"] if p["origin"] == "root")
    assert sorted(p["pid"] for p in summary["processes"]) == sorted(entries)
    assert _processes(summary) == [("root", None, 0)] + [("fork", root, 10 + k) for k in range(4)]
    assert summary["ending"] == {"reason": "exit", "code": 0, "signal": None,
                                 "address": None, "symbol": None}  # fmt: skip
    assert summary["errors"] == [] and summary["lost_batches"] == 0 and summary["drops"] == 0
    assert summary["events"] == 10 * N
    for k in range(4):
        assert f"(forked by {root}): exited with status {10 + k}" in res.stderr
    with db(out_db) as conn:  # SQLite has every event with its pid too
        rows = conn.execute(
            "SELECT pid, phase, count(*), sum(args->>'arg0') FROM events GROUP BY 1, 2"
        ).fetchall()
        (procs,) = conn.execute("SELECT processes FROM runs").fetchone()
    assert sorted(rows) == sorted(
        (pid, phase, N, N * (N - 1) // 2 if phase == "entry" else None)
        for pid in entries
        for phase in ("entry", "exit")
    )
    assert json.loads(procs) == summary["processes"]


ENTRY_SET = """
version: 1
sets:
  work:
    probes:
      - name: work
        function: "forker!target_work"
        on: entry
        capture: {i: "arg0:i64"}
"""


def test_sqlite_alone_stores_each_events_pid(targets, probe_file, tmp_path: Path) -> None:
    """SQLite as the only output takes uniform batches as columns (the fast
    path): the pid is still each event's. 5 distinct pids x 1,000 entries, the
    arguments 0..N-1 of each process in its own order, via SQL."""
    out = tmp_path / "run.db"
    prog = targets.path("forker")
    res = run_instr("run", "-F", "-P", probe_file(ENTRY_SET), "-s", "work", "-o", out,
                    "--", prog, "fork", N)  # fmt: skip
    assert res.returncode == 0, res.stderr
    with db(out) as conn:
        per_pid = conn.execute(
            "SELECT pid, count(*), count(DISTINCT args->>'i'), min(args->>'i'), max(args->>'i')"
            " FROM events WHERE phase = 'entry' GROUP BY pid"
        ).fetchall()
        (procs,) = conn.execute("SELECT processes FROM runs").fetchone()
        (events, errors) = conn.execute("SELECT events, errors FROM runs").fetchone()
        unordered = conn.execute(  # within a process, seq order is call order
            "SELECT count(*) FROM (SELECT pid, args->>'i' AS i,"
            " lag(args->>'i') OVER (PARTITION BY pid ORDER BY seq) AS prev FROM events)"
            " WHERE prev IS NOT NULL AND i != prev + 1"
        ).fetchone()[0]
    pids = {p["pid"] for p in json.loads(procs)}
    assert len(pids) == 5 and sorted(per_pid) == sorted((p, N, N, 0, N - 1) for p in pids)
    assert unordered == 0 and events == 5 * N and json.loads(errors) == []


def test_count_by_pid_is_one_table_over_the_tree(targets, probe_file, tmp_path: Path) -> None:
    """instr run -F with a probe set: `count() by pid` gives 5 rows of 1,000;
    unkeyed sum and quantize are merged over the 5 processes."""
    out = tmp_path / "run.jsonl"
    prog = targets.path("forker")
    res = run_instr("run", "-F", "-P", probe_file(WORK_SET), "-s", "work", "-o", out,
                    "--", prog, "fork", N)  # fmt: skip
    assert res.returncode == 0, res.stderr
    events, summary = read_jsonl(out)
    pids = {p["pid"] for p in summary["processes"]}
    calls = _aggregations(out, "work/calls")
    assert {r["keys"]["pid"]: r["value"] for r in calls} == {pid: N for pid in pids}
    assert len(pids) == 5
    (total,) = _aggregations(out, "work/total")
    assert (total["count"], total["value"]) == (5 * N, 5 * (N * (N - 1) // 2))
    (sizes,) = _aggregations(out, "work/sizes")
    assert sizes["count"] == 5 * N
    one = Counter(0 if i == 0 else 1 << (i.bit_length() - 1) for i in range(N))
    assert {lo: n for lo, _hi, n in sizes["buckets"]} == {lo: 5 * n for lo, n in one.items()}
    assert events == [] and summary["errors"] == []  # aggregations only
    tables = [json.loads(ln) for ln in out.read_text().splitlines() if "aggregation_table" in ln]
    assert sorted(t["name"] for t in tables) == ["work/calls", "work/sizes", "work/total"]
    assert {t["tier"] for t in tables} == {"fast"}  # one report, of the fast tier's C


def test_an_exec_ed_image_is_armed_before_its_main(targets, tmp_path: Path) -> None:
    """A forked child execs forker, whose main calls target_work 7 times at
    once: exactly 7 events, all from the child's pid, so its probes were armed
    before main ran. The child's first image ended in the exec; its new one
    exited 4."""
    out = tmp_path / "run.jsonl"
    prog = targets.path("forker")
    res = run_instr("trace", "-F", "-i", "forker!target_work", "-o", out,
                    "--", prog, "exec", 7)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "again 7" in res.stdout and "forker ok" in res.stdout
    events, summary = read_jsonl(out)
    entries = Counter(e["pid"] for e in events if e["phase"] == "entry")
    procs = summary["processes"]
    root = next(p["pid"] for p in procs if p["origin"] == "root")
    child = next(p["pid"] for p in procs if p["origin"] == "fork")
    assert entries == {child: 7}
    assert [(p["pid"], p["origin"], p["parent"], p["ending"]["reason"], p["ending"]["code"])
            for p in procs] == [
        (root, "root", None, "exit", 0),
        (child, "fork", root, "exec", None),
        (child, "exec", child, "exit", 4),
    ]  # fmt: skip
    assert f"pid {child} (after exec): exited with status 4" in res.stderr


def test_a_posix_spawned_child_is_followed_from_its_exec(targets, tmp_path: Path) -> None:
    """posix_spawn: Frida holds the child at its exec (before main): exactly 5
    events from it; it is said as spawned by the program."""
    out = tmp_path / "run.jsonl"
    res = run_instr("trace", "-F", "-i", "forker!target_work", "-o", out,
                    "--", targets.path("forker"), "spawn", 5)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "forker ok" in res.stdout
    events, summary = read_jsonl(out)
    root, child = summary["processes"]
    assert (root["origin"], child["origin"], child["parent"]) == ("root", "spawn", root["pid"])
    assert child["ending"]["code"] == 4
    assert Counter(e["pid"] for e in events if e["phase"] == "entry") == {child["pid"]: 5}


def test_attached_with_follow(targets, tmp_path: Path) -> None:
    """-p PID -F: the children the program forks after the attach are followed."""
    out = tmp_path / "run.jsonl"
    target = start_target(targets.path("forker"), "fork", N)
    try:
        tracer = start_instr("trace", "-F", "-i", "forker!target_work", "-o", out,
                             "-p", target.pid)  # fmt: skip
        tracer.wait_armed()
        target.go()
        assert target.readline() == "forker ok"
        done = tracer.finish()
    finally:
        target.kill()
    assert done.returncode == 0, done.err
    events, summary = read_jsonl(out)
    entries = Counter(e["pid"] for e in events if e["phase"] == "entry")
    assert len(entries) == 5 and set(entries.values()) == {N}, entries
    assert target.pid in entries
    assert summary["ending"]["reason"] == "exit"


def _spinners(prog: Path) -> list[int]:
    """The pids of the `PROG spin` processes (a zombie has no command line)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if cmdline.read_bytes().split(b"\0")[:2] == [str(prog).encode(), b"spin"]:
                pids.append(int(cmdline.parent.name))
    return pids


def _alive(pids: list[int], within_s: float = 10.0) -> list[int]:
    """Those of PIDS that still run after WITHIN_S (a bound, not a timing)."""
    deadline = time.monotonic() + within_s
    while True:
        left = [p for p in pids if Path(f"/proc/{p}/cmdline").exists()
                and Path(f"/proc/{p}/cmdline").read_bytes()]  # fmt: skip
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def _kill_spinners(prog: Path) -> None:
    for pid in _spinners(prog):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def test_ctrl_c_stops_every_process_of_a_spawned_tree(targets, instr_bg, tmp_path: Path) -> None:
    """Ctrl-C under -F: every child's agent leaves (Agent.leave), and the
    tree instr started is killed; the summary says so for each process."""
    out = tmp_path / "run.jsonl"
    prog = targets.path("forker")
    tracer = instr_bg("trace", "-F", "-i", "forker!target_work", "--agg", "c=count() by pid",
                      "-o", out, "--", prog, "spin", N)  # fmt: skip
    try:
        assert tracer.out.readline() == "ready"
        tracer.send("")  # the target's stdin is instr's
        up = {tracer.out.readline() for _ in range(5)}  # printed once each is followed
        assert up == {"up parent", "up 0", "up 1", "up 2", "up 3"}
        spun = _spinners(prog)
        tracer.interrupt()
        done = tracer.finish()
    finally:
        alive = _alive(_spinners(prog))  # SIGKILL is sent, not waited for
        _kill_spinners(prog)  # never left spinning when the test fails
    assert alive == [], "instr did not kill the tree it started"
    assert done.returncode == 0, done.err
    _, summary = read_jsonl(out)
    procs = summary["processes"]
    assert [p["origin"] for p in procs] == ["root", "fork", "fork", "fork", "fork"]
    assert all(p["ending"]["reason"] == "stopped" for p in procs), procs
    assert sorted(p["pid"] for p in procs) == sorted(spun)
    counts = {r["keys"]["pid"]: r["value"] for r in _aggregations(out, "cli/c")}
    assert set(counts) == {p["pid"] for p in procs}  # every process counted in the one table
    assert counts[procs[0]["pid"]] == N


def test_follow_refuses_syscall_points(targets, probe_file) -> None:
    """-F follows function probes; a set with syscall points is refused before
    anything is spawned (exit status 2, one line)."""
    probes = probe_file(
        "version: 1\nsets:\n  s:\n    probes:\n      - syscall: [write]\n        emit: true\n"
    )
    res = run_instr("run", "-F", "-P", probes, "-s", "s", "--", targets.path("forker"), "fork", 1)
    assert res.returncode == 2, res.stderr
    assert res.stderr == (
        "instr: error: -F follows function probes only, not patch or syscall probes\n"
    )
    assert res.stdout == ""
