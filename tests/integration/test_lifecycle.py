"""Threads, every way a process ends, and libraries loaded after the probes are armed."""

from __future__ import annotations

import os
import re
import signal
from collections import Counter
from pathlib import Path

import pytest
from helpers import run_instr, start_instr
from jsonl import read_jsonl

pytestmark = pytest.mark.frida

THREADS_SET = """
version: 1
sets:
  work:
    probes:
      - function: "threads!target_work"
        capture: {{t: "arg0:i32", k: "arg1:i64", r: "retval:i64"}}
        tier: {tier}
"""


@pytest.mark.parametrize("tier", ["native", "js"])
def test_four_threads_exact_per_thread_counts(targets, pie, tier, probe_file, tmp_path: Path):
    k = 20_000
    out = tmp_path / "run.jsonl"
    res = run_instr("run", "-q", "-P", probe_file(THREADS_SET.format(tier=tier)), "-s", "work",
                    "-o", out, "--", targets.path("threads", pie=pie), k, 4)  # fmt: skip
    assert res.returncode == 0, res.stderr
    tid_of = {int(m[1]): int(m[2]) for m in re.finditer(r"thread=(\d+) tid=(\d+)", res.stdout)}
    assert len(tid_of) == 4
    events, summary = read_jsonl(out)
    assert summary["drops"] == 0
    per_tid = Counter((e["tid"], e["phase"]) for e in events)
    assert per_tid == {(tid, ph): k for tid in tid_of.values() for ph in ("entry", "exit")}
    # Each thread's calls arrive in its own order, with its own arguments and results.
    for t, tid in tid_of.items():
        mine = [e for e in events if e["tid"] == tid]
        assert [e["args"]["k"] for e in mine if e["phase"] == "entry"] == list(range(k))
        assert {e["args"]["t"] for e in mine if e["phase"] == "entry"} == {t}
        assert [e["retval"] for e in mine if e["phase"] == "exit"] == [
            t * 1_000_000 + i for i in range(k)
        ]


TICK_SET = """
version: 1
sets:
  tick:
    probes:
      - function: "endings!target_tick"
        capture: {{i: "arg0:i64"}}
        on: [entry]
        tier: {tier}
"""

ENDINGS = {
    # mode: (instr's exit status, ending reason, signal, message on stderr)
    "return": (0, "exit", None, "target exited with status 0"),
    "exit": (3, "exit", None, "target exited with status 3"),
    "_exit": (4, "exit", None, "target exited with status 4"),
    "abort": (134, "crash", "SIGABRT", "target crashed: SIGABRT"),
    "segv": (139, "crash", "SIGSEGV", "target crashed: SIGSEGV"),
    "exec": (0, "exec", None, "target called exec"),
}


@pytest.mark.parametrize("mode", list(ENDINGS))
@pytest.mark.parametrize("tier", ["native", "js"])
def test_every_ending_keeps_every_event(targets, mode, tier, probe_file, tmp_path: Path):
    n = 50_000
    code, reason, sig, message = ENDINGS[mode]
    out = tmp_path / "run.jsonl"
    res = run_instr("run", "-P", probe_file(TICK_SET.format(tier=tier)), "-s", "tick",
                    "-o", out, "--", targets.path("endings"), mode, n)  # fmt: skip
    assert res.returncode == code, res.stderr
    assert message in res.stderr
    assert "Traceback" not in res.stderr
    events, summary = read_jsonl(out)
    assert [e["args"]["i"] for e in events] == list(range(n))
    assert summary["ending"]["reason"] == reason
    assert summary["ending"]["signal"] == sig
    assert summary["drops"] == 0 and summary["lost_batches"] == 0
    if mode == "exec":
        assert "replaced" in res.stdout
    if mode == "segv":
        assert "crash_here" in (summary["ending"]["symbol"] or "")
        assert "crash_here" in res.stderr


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_target_killed_from_outside_gives_the_signal_status(targets, sig, tmp_path: Path):
    """No agent sees SIGKILL (nor a SIGTERM the target does not catch): the
    ending comes from the kernel, through a pidfd opened at spawn (it was
    "killed", with status 0)."""
    out = tmp_path / "run.jsonl"
    argv = ("trace", "-i", "libc.so*!write", "-o", out, "--", targets.path("sys_fdhold"))
    with start_instr(*argv) as ins:
        pid = int(ins.err.expect("armed").split()[-1])
        assert ins.readline() == "ready"
        os.kill(pid, sig)
        done = ins.finish()
    assert done.returncode == 128 + sig, done.err
    assert f"instr: target was killed by {sig.name}" in done.stderr, done.err
    _, summary = read_jsonl(out)
    assert (summary["ending"]["reason"], summary["ending"]["signal"]) == ("killed", sig.name)


PLUGIN_SET = """
version: 1
sets:
  plugin:
    probes:
      - function: "libinstrplugin.so!plugin_fn"
        capture: {i: "arg0:i32", r: "retval:i32"}
      - function: "libinstrplugin.so!plugin_scale"
        capture: {i: "arg0:i32"}
        on: [entry]
"""


def test_library_loaded_later_is_armed_and_traced(targets, pie, probe_file, tmp_path: Path):
    n = 1000
    out = tmp_path / "run.jsonl"
    res = run_instr("run", "-P", probe_file(PLUGIN_SET), "-s", "plugin", "-o", out,
                    "--", targets.path("dlopen_main", pie=pie), n)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "2 pending" in res.stderr
    assert f"plugin calls={n} sum={sum(3 * i + 1 for i in range(n))}" in res.stdout
    events, summary = read_jsonl(out)
    fn = [e for e in events if e["probe"] == "plugin/plugin_fn"]
    assert [e["args"]["i"] for e in fn if e["phase"] == "entry"] == list(range(n))
    assert [e["retval"] for e in fn if e["phase"] == "exit"] == [3 * i + 1 for i in range(n)]
    hidden = [e["args"]["i"] for e in events if e["probe"] == "plugin/plugin_scale"]
    assert hidden == list(range(n))
    assert {p["name"]: p["state"] for p in summary["probes"]} == {
        "plugin/plugin_fn": "armed",
        "plugin/plugin_scale": "armed",
    }


FORK_SET = """
version: 1
sets:
  tick:
    probes:
      - function: "forkloop!tick"
        capture: {i: "arg0:i64", r: "retval:i64"}
        tier: native
"""


def test_a_forked_child_that_fills_its_copy_of_the_ring_does_not_hang(
    targets, probe_file, tmp_path: Path
):
    """Traced without -F, a forked child keeps the hooks it inherited and
    writes into its copy of the ring, which nobody drains. It used to wait
    for ever once that copy was full, its parent waited on it, and instr
    never ended. The child's calls are not the traced process's: exactly
    the parent's one call is reported, and nothing is dropped there."""
    out = tmp_path / "run.jsonl"
    # 200,000 calls of about 64 bytes each fill a 128 KiB ring many times over.
    res = run_instr("run", "-q", "-P", probe_file(FORK_SET), "-s", "tick", "--buffer-size", 128 * 1024,
                    "-o", out, "--", targets.path("forkloop"), 200_000, timeout=60)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "child status 0 ticks 42" in res.stdout
    events, summary = read_jsonl(out)
    # One thread (the parent's main thread), one call: entry and exit.
    assert len({e["tid"] for e in events}) == 1
    assert [(e["phase"], e["args"], e.get("retval")) for e in events] == [
        ("entry", {"i": 41}, None),
        ("exit", {}, 42),
    ]
    assert summary["drops"] == 0 and summary["ending"]["reason"] == "exit"
