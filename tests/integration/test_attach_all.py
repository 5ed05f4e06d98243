"""Attach to every matching process (--all -n NAME, --all-matching REGEX,
--watch; docs/all.md): one run, one agent per process through the one
lifecycle, one merged table with exact per-pid counts; every process keeps
running after the leave."""

from __future__ import annotations

import json
import re
import shutil
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from helpers import run_instr
from jsonl import read_jsonl

import instr

pytestmark = pytest.mark.frida

COUNTS = (100, 200, 300)


def _copy(targets: Any, tmp_path: Path) -> tuple[Path, str]:
    """The attach target under a name of this test's own (no other test's
    process may match it; a command name is at most 15 characters)."""
    name = f"all{uuid.uuid4().hex[:8]}"
    exe = tmp_path / name
    shutil.copy2(targets.path("attach"), exe)
    return exe, name


def _counts(path: Path, name: str) -> dict[int, int]:
    rows = {}
    for line in path.read_text().splitlines():
        obj = json.loads(line)
        if obj["type"] == "aggregation" and obj["final"] and obj["name"] == name:
            rows[obj["keys"]["pid"]] = obj["value"]
    return rows


def _work(procs: list[Any], counts: tuple[int, ...]) -> None:
    for proc, n in zip(procs, counts, strict=True):
        proc.send(str(n))
        assert proc.readline() == f"sum={n * (n + 1) // 2}"


SET = """
version: 1
sets:
  adds:
    probes:
      - name: add
        function: "{name}!target_add"
        aggregate:
          n: count() by pid
"""


@pytest.mark.parametrize("how", ["name", "matching", "run"])
def test_every_matching_process_gives_its_own_count(
    targets, launch, instr_bg, probe_file, tmp_path: Path, how: str
) -> None:
    """Three copies of one program: `count() by pid` has one exact row each
    (instr trace, and instr run with a probe set); instr's own processes
    (whose command lines hold the regex) are never attached to; all three
    keep running, and answer right, after Ctrl-C."""
    exe, name = _copy(targets, tmp_path)
    procs = [launch(exe) for _ in COUNTS]
    out = tmp_path / "run.jsonl"
    if how == "run":
        probes = probe_file(SET.format(name=name))
        tracer = instr_bg("run", "-P", probes, "-s", "adds", "--all", "-n", name, "-o", out)
        agg = "adds/n"
    else:
        who = ("--all", "-n", name) if how == "name" else ("--all-matching", name)
        tracer = instr_bg("trace", *who, "-i", f"{name}!target_add",
                          "--agg", "n=count() by pid", "-o", out)  # fmt: skip
        agg = "cli/n"
    armed = tracer.wait_armed()
    pids = sorted(p.pid for p in procs)
    assert f"in 3 processes (pids {', '.join(map(str, pids))})" in armed, armed
    _work(procs, COUNTS)
    tracer.interrupt()
    done = tracer.finish()
    assert done.returncode == 0, done.err
    assert _counts(out, agg) == {p.pid: n for p, n in zip(procs, COUNTS, strict=True)}
    _events, summary = read_jsonl(out)
    assert summary["errors"] == []
    assert sorted((p["pid"], p["origin"], p["ending"]["reason"]) for p in summary["processes"]) == [
        (pid, "attach", "detach") for pid in pids
    ]
    for pid in pids:
        assert f"pid {pid} (attached): detached; the target keeps running" in done.err
    _work(procs, (10, 20, 30))  # left in order: still there, still right
    for proc in procs:
        assert proc.finish().returncode == 0


def test_watch_attaches_to_a_process_started_later(
    targets, launch, instr_bg, tmp_path: Path
) -> None:
    """--watch: a fourth process started after the run armed is attached to
    (said on stderr) and counted exactly; one that exits meanwhile is
    reported and the run goes on."""
    exe, name = _copy(targets, tmp_path)
    procs = [launch(exe) for _ in COUNTS]
    out = tmp_path / "run.jsonl"
    tracer = instr_bg("trace", "--all", "-n", name, "--watch", "-i", f"{name}!target_add",
                      "--agg", "n=count() by pid", "-o", out)  # fmt: skip
    armed = tracer.wait_armed()
    assert "in 3 processes" in armed and "watching for more every 200 ms" in armed, armed
    fourth = launch(exe)
    tracer.err.expect(re.compile(rf"attached to pid {fourth.pid} \("))
    _work([*procs, fourth], (*COUNTS, 400))
    gone = procs.pop(0)  # exits 0 on EOF while the run goes on
    assert gone.finish().returncode == 0
    _work([*procs, fourth], (5, 6, 7))
    tracer.interrupt()
    done = tracer.finish()
    assert done.returncode == 0, done.err
    want = {gone.pid: 100, procs[0].pid: 205, procs[1].pid: 306, fourth.pid: 407}
    assert _counts(out, "cli/n") == want
    _events, summary = read_jsonl(out)
    assert summary["errors"] == []
    endings = {p["pid"]: p["ending"] for p in summary["processes"]}
    assert endings[gone.pid]["reason"] == "exit" and endings[gone.pid]["code"] == 0
    # said as it happened, and again at the end
    assert f"pid {gone.pid} (attached): exited with status 0; the run goes on" in done.err
    assert f"pid {gone.pid} (attached): exited with status 0\n" in done.err
    for p in [*procs, fourth]:
        assert endings[p.pid]["reason"] == "detach"
        assert p.finish().returncode == 0


def test_a_process_another_instr_traces_is_left_out(
    targets, launch, instr_bg, tmp_path: Path
) -> None:
    """The lowest pid is already traced by another instr: it is left out (not
    refused as the run's target), the other two are counted exactly, and the
    first instr's own count is untouched."""
    exe, name = _copy(targets, tmp_path)
    procs = [launch(exe) for _ in COUNTS]
    first, out = tmp_path / "first.jsonl", tmp_path / "run.jsonl"
    other = instr_bg("trace", "-p", procs[0].pid, "-i", f"{name}!target_add",
                     "--agg", "n=count() by pid", "-o", first)  # fmt: skip
    other.wait_armed()
    tracer = instr_bg("trace", "--all", "-n", name, "-i", f"{name}!target_add",
                      "--agg", "n=count() by pid", "-o", out)  # fmt: skip
    armed = tracer.wait_armed()
    assert f"pid {procs[0].pid} is already traced by another instr: left out" in tracer.err.seen[0]
    assert f"in 2 processes (pids {procs[1].pid}, {procs[2].pid})" in armed, armed
    _work(procs, COUNTS)
    for host in (tracer, other):
        host.interrupt()
        done = host.finish()
        assert done.returncode == 0, done.err
    assert _counts(out, "cli/n") == {procs[1].pid: 200, procs[2].pid: 300}
    assert _counts(first, "cli/n") == {procs[0].pid: 100}


@pytest.mark.parametrize("stop", ["SIGTERM", "duration"])
def test_sigterm_and_duration_leave_every_process(
    targets, launch, instr_bg, tmp_path: Path, stop: str
) -> None:
    """SIGTERM, and --duration, leave every process in order, as Ctrl-C does:
    each is said to keep running, and does (its answers right)."""
    exe, name = _copy(targets, tmp_path)
    procs = [launch(exe) for _ in range(2)]
    out = tmp_path / "run.jsonl"
    extra = ("--duration", "1") if stop == "duration" else ()
    tracer = instr_bg("trace", "--all", "-n", name, *extra, "-i", f"{name}!target_add",
                      "--agg", "n=count() by pid", "-o", out)  # fmt: skip
    tracer.wait_armed()
    if stop == "SIGTERM":
        _work(procs, (10, 20))
        tracer.proc.terminate()
    done = tracer.finish()
    assert done.returncode == 0, done.err
    for proc in procs:
        assert f"pid {proc.pid} (attached): detached; the target keeps running" in done.err
    if stop == "SIGTERM":
        assert _counts(out, "cli/n") == {procs[0].pid: 10, procs[1].pid: 20}
    _work(procs, (30, 40))
    for proc in procs:
        assert proc.finish().returncode == 0


def test_the_library_streams_each_process_s_events_with_its_pid(
    targets, launch, tmp_path: Path
) -> None:
    """Session.every: one stream of events, each with its process's pid;
    without --watch the run ends when the last process has ended."""
    exe, name = _copy(targets, tmp_path)
    procs = [launch(exe) for _ in range(2)]
    table = instr.compile_quick([f"{name}!target_add"], [])
    with instr.Session.every(instr.AllSpec(name=name), table) as run:
        run.start()
        _work(procs, (30, 40))
        for proc in procs:
            proc.close_stdin()  # each exits 0 on EOF
        entries = Counter(e.pid for e in run.events() if e.phase == "entry")
    assert entries == {procs[0].pid: 30, procs[1].pid: 40}
    assert run.summary is not None and run.summary.errors == []
    ended = sorted((p.pid, p.origin, p.ending) for p in run.summary.processes)
    assert ended == [(p.pid, "attach", instr.Ending("exit", code=0)) for p in procs]


def test_zero_matches_is_an_error_unless_watching(tmp_path: Path) -> None:
    name = f"none{uuid.uuid4().hex[:8]}"
    res = run_instr("trace", "--all", "-n", name, "-i", "target_add")
    assert res.returncode == 1
    assert f"instr: error: no process named {name!r}" in res.stderr
    assert "Traceback" not in res.stderr
    res = run_instr("trace", "--all-matching", name, "-i", "target_add")
    assert res.returncode == 1 and "no process matching" in res.stderr
    res = run_instr("trace", "--all", "-n", name, "--watch", "--duration", "0.5", "-i", "x")
    assert res.returncode == 1
    assert f"waiting for a process named {name!r}" in res.stderr
    assert f"no process named {name!r} appeared in 0.5 s" in res.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("--all", "-i", "f"), "--all needs -n NAME"),
        (("--watch", "-n", "x", "-i", "f"), "--watch goes with --all"),
        (("--all", "-n", "x", "--all-matching", "x", "-i", "f"), "not both"),
        (("--all", "-p", "1", "-i", "f"), "no -p, no program"),
        (("--all-matching", "(", "-i", "f"), "--all-matching '('"),
        (("--all", "-n", "x", "-U", "-i", "f"), "local only"),
        (("--all", "-n", "x", "-l", "-i", "f"), "-l lists the functions of one process"),
    ],
)
def test_bad_all_flags_say_why(args: tuple[str, ...], said: str) -> None:
    res = run_instr("trace", *args)
    assert res.returncode == 2, res.stderr
    assert said in res.stderr and "Traceback" not in res.stderr
