"""Leaving never harms the program (docs/leaving.md).

A program thread blocked inside a hooked call when instr leaves (a sleep in
a replaced libc wrapper, a read in a listener) must wake later into valid
code and go on exactly as before; instr must leave promptly however it is
stopped (Ctrl-C, SIGTERM, SIGHUP, --duration, SIGKILL) and say when its
agent stays behind for such a thread.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from instr.unload import agent_images, wait_unloaded
from tests.helpers import Finished, InstrProcess, instr_argv, instr_env

# How long a leave takes is measured by hand, not asserted here (no timing
# in tests): what proves that instr did not wait for the blocked thread is
# its note that the agent stays until the thread returns.
HELD = "inside a hooked call"


def _disarmed(pid: int, timeout_s: float = 30.0) -> bool:
    """Whether the agent's armed mark (agents/src/core/marker.ts), removed once
    its hooks are reverted, leaves pid's maps within the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if "instr-armed-by-" not in Path(f"/proc/{pid}/maps").read_text():
            return True
        time.sleep(0.01)
    return False


def _stop(instr, how: str) -> Finished:
    if how == "SIGKILL":
        instr.kill_all()  # the worker too: Frida's own unload (a guard alone leaves in order)
        return Finished(-9, [], [])
    instr.proc.send_signal(getattr(signal, how))
    return instr.finish(timeout=60)


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "SIGHUP", "SIGKILL"])
def test_syscalls_leave_while_the_program_sleeps_in_a_replaced_wrapper(
    targets, launch, instr_bg, how
):
    """instr syscalls -c -p replaces libc's wrappers with replaceFast; the
    program sleeps in usleep (clock_nanosleep) inside one when instr leaves.
    It used to die of SIGSEGV there: 3 of 3 runs."""
    target = launch(targets.path("sleeper"))
    instr = instr_bg("syscalls", "-c", "-p", target.pid)
    instr.err.expect("counting system calls", timeout=60)
    target.send("6")  # 1.8 s asleep in a hooked usleep
    assert target.readline() == "sleeping 6"
    done = _stop(instr, how)
    if how != "SIGKILL":
        assert done.returncode == 0, done.err
        # The one finished call: the write of "sleeping 6" (the sleep still
        # runs, and strace -c counts a call when it returns, as instr does).
        assert re.search(r"\b1\s+write$", done.out, re.M), done.out
        assert HELD in done.err, done.err
    assert target.readline(timeout=30) == "slept 6"
    target.send("3 sum")
    assert target.readline() == "sum=6"
    end = target.finish()
    assert end.returncode == 0, end.err


SIGINT_IGNORED = {  # command -> (arguments before -p PID, the line that says it is armed, a check)
    "syscalls": (("syscalls", "-c"), "counting system calls", r"\b1\s+write$"),  # "sum=3"
    "trace": (("trace", "-i", "sleeper!target_add"), "armed", r"target_add"),
    "mem": (("mem",), "armed", r"^== instr mem: sleeper \(pid \d+\), at detach$"),
}


@pytest.mark.parametrize("command", list(SIGINT_IGNORED))
def test_sigint_stops_an_instr_started_with_sigint_ignored(targets, launch, tmp_path, command):
    """A shell script without job control starts ``instr ... &`` with SIGINT
    ignored (and Python keeps it so); ``kill -INT`` must still stop it as
    Ctrl-C does. It used to be ignored: the run went on for ever."""
    args, armed, check = SIGINT_IGNORED[command]
    target = launch(targets.path("sleeper"))
    argv = ["sh", "-c", "trap '' INT; exec \"$@\"", "sh", *instr_argv(*args, "-p", target.pid)]
    instr = InstrProcess(argv, cwd=tmp_path, env=instr_env())
    try:
        instr.err.expect(armed, timeout=60)
        target.send("2 sum")
        assert target.readline() == "sum=3"
        instr.proc.send_signal(signal.SIGINT)
        done = instr.finish(timeout=60)
    finally:
        instr.kill()
    assert done.returncode == 0, done.err
    assert re.search(check, done.out, re.M), done.out
    target.send("1 sum")
    assert target.readline() == "sum=1"
    assert target.finish().returncode == 0


def test_syscalls_duration_leave_while_the_program_sleeps(targets, launch, instr_bg):
    target = launch(targets.path("sleeper"))
    instr = instr_bg("syscalls", "-c", "-p", target.pid, "--duration", "1")
    instr.err.expect("counting system calls", timeout=60)
    target.send("8")  # 2.4 s: instr leaves at about 1 s, mid-sleep
    assert target.readline() == "sleeping 8"
    done = instr.finish(timeout=60)
    assert done.returncode == 0, done.err
    assert target.readline(timeout=30) == "slept 8"
    assert target.finish().returncode == 0


@pytest.mark.parametrize("how", ["SIGINT", "SIGKILL"])
def test_trace_leave_while_the_program_reads_an_idle_pipe(
    targets, launch, instr_bg, probe_file, how
):
    """A listener on read, the program blocked in it: Ctrl-C used to wait for
    the read (20 s, then 'a deadlock inside Frida')."""
    target = launch(targets.path("sleeper"))
    instr = instr_bg("trace", "-i", "libc.so*!read", "-p", target.pid)
    instr.wait_armed(timeout=60)
    target.send("1 sum")  # through the hooked read, and back into it
    assert target.readline() == "sum=1"
    done = _stop(instr, how)
    if how == "SIGINT":
        assert done.returncode == 0, done.err
        # The thread is named: the agent saw it blocked inside Gum's hook,
        # and instr did not wait for the unload (the other note says that a
        # detach did not finish in its bounded time).
        assert re.search(
            rf"1 thread\(s\) of pid {target.pid} \(tid \d+\) were blocked inside a hooked call",
            done.err,
        ), done.err
    # The agent stays mapped while the thread is inside the hooked read ...
    images = agent_images(target.pid)
    if how == "SIGINT":
        assert images
    else:
        # With no host, the agent reverts its hooks when it notices, in its
        # own time: a line sent before then is read through the hook and the
        # thread is back inside it, where it stays (no more input).
        assert _disarmed(target.pid), "the agent never reverted its hooks"
    target.send("4 sum")
    assert target.readline(timeout=30) == "sum=10"
    # ... and unloads itself once the read has returned. The program is told
    # to exit only then: one that exits while Frida's agent is tearing itself
    # down can die in Frida's own exit hook (docs/leaving.md, "Exiting while
    # Frida unloads").
    assert wait_unloaded(target.pid, images, timeout_s=30), "agent still mapped"
    assert target.finish().returncode == 0


def test_an_aggregation_on_read_falls_back_to_listeners(targets, instr_bg):
    """DTrace's commonest one-liner on read: replaceFast has no room in read's
    prologue; the aggregation's C runs through listeners instead, counts
    exactly, and the probe table says why."""
    instr = instr_bg(
        "trace", "-i", "libc.so*!read", "--agg", "n=count()", "--", targets.path("sleeper")
    )
    instr.wait_armed(timeout=60)
    assert instr.readline() == "ready"
    for line, answer in (("2 sum", "sum=3"), ("4 sum", "sum=10")):
        instr.send(line)
        assert instr.readline() == answer
    done = instr.finish(timeout=60)  # EOF: the third read returns 0 and the program exits
    assert done.returncode == 0, done.err
    assert re.search(r"^cli/n = count\(\): 3$", done.out, re.M), done.out
    assert "aggregated through listeners" in done.out + done.err
    assert "please file a bug" not in done.out + done.err


def test_tracing_all_of_libc_leaves_the_program_working(targets, launch, instr_bg, tmp_path):
    """`-i 'libc.so*!*'` hooks some 2,000 functions, among them
    pthread_getspecific, which the hooks themselves call (Gum's thread-local
    state): a hook on it called itself and the program died of SIGSEGV.
    instr leaves those out, says so, traces the rest, and the trace holds the
    program's calls only (not the ones instr's agent makes as it arms)."""
    target = launch(targets.path("sleeper"))
    out = tmp_path / "libc.jsonl"
    instr = instr_bg("trace", "-i", "libc.so*!*", "-p", target.pid, "-o", out)
    instr.wait_armed(timeout=120)
    target.send("3 sum")
    assert target.readline() == "sum=6"
    done = _stop(instr, "SIGINT")
    assert done.returncode == 0, done.err
    images = agent_images(target.pid)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    (summary,) = [r for r in records if r["type"] == "summary"]
    (probe,) = summary["probes"]
    assert probe["state"] == "armed" and probe["sites"] > 1000, probe
    assert "left out pthread_getspecific, pthread_setspecific" in probe["reason"], probe
    events = [r for r in records if r["type"] == "event"]
    assert {e["tid"] for e in events} == {target.pid}, Counter(e["tid"] for e in events)
    entries = Counter(e["function"].split("!")[1] for e in events if e["phase"] == "entry")
    # "3 sum": one number parsed, one printf, one flush, one write, then the
    # next fgets (blocked in read when instr left).
    for name in ("printf", "fflush", "fgets"):
        assert entries[name] == 1, entries
    assert sum(n for f, n in entries.items() if f.startswith("strto")) == 1, entries
    assert sum(n for f, n in entries.items() if f in ("write", "__write")) == 1, entries
    assert summary["drops"] == 0
    target.send("2 sum")
    assert target.readline(timeout=30) == "sum=3"
    assert wait_unloaded(target.pid, images, timeout_s=30), "agent still mapped"
    assert target.finish().returncode == 0


def _pairs_check(line: str | None) -> tuple[int, int]:
    m = re.fullmatch(r"allocated pairs=(\d+) check=(\d+)", line or "")
    assert m, line
    return int(m[1]), int(m[2])


def _check_of(pairs: int) -> int:
    """condwait.c's check: the sum of i % 251 over i < PAIRS."""
    full, rest = divmod(pairs, 251)
    return full * (250 * 251 // 2) + rest * (rest - 1) // 2


@pytest.mark.parametrize("command", ["trace", "agg"])
def test_leaving_a_thread_that_calls_malloc_in_a_loop(targets, launch, instr_bg, tmp_path, command):
    """A worker calls malloc and free as fast as it can while instr leaves,
    five times over: a thread on its way into one of Gum's trampolines when
    the hook went used to resume in freed memory (3 of 26 leaves under load,
    docs/leaving.md). The worker's own check of every block it wrote must
    still add up, and the program ends normally."""
    target = launch(targets.path("condwait"))
    args = {
        "trace": [
            "trace",
            "-i",
            "libc.so*!malloc",
            "-o",
            tmp_path / "t.jsonl",
            "--buffer-size",
            1 << 20,
        ],
        "agg": ["trace", "-i", "libc.so*!malloc", "--agg", "n=count()"],
    }[command]
    for _ in range(5):
        # Armed while the worker waits: arming a hook on a function another
        # thread is running through is a known gap of its own (docs/leaving.md).
        instr = instr_bg(*args, "-p", target.pid)
        instr.wait_armed(timeout=60)
        target.send("0 alloc")  # until SIGUSR1
        assert target.readline() == "allocating 0"
        instr.interrupt()
        done = instr.finish(timeout=60)
        assert done.returncode == 0, done.err
        os.kill(target.pid, signal.SIGUSR1)
        pairs, check = _pairs_check(target.readline(timeout=30))
        assert pairs > 0 and check == _check_of(pairs)
    target.send("2")
    assert target.readline() == "job 2 sum=3"
    end = target.finish()
    assert (end.returncode, end.stdout) == (6, ["bye lines=6"]), end


def test_a_second_syscall_monitor_is_refused_and_the_first_goes_on(targets, launch, instr_bg):
    """Two instr syscalls on one process: two sets of hooks on the same
    wrappers can crash it when they leave in the other order. The second is
    refused before it attaches (the first's mark in the process's maps), says
    by whom, and exits 1; the first still counts exactly and leaves the
    program unharmed."""
    target = launch(targets.path("sleeper"))
    first = instr_bg("syscalls", "-c", "-p", target.pid)
    first.err.expect("counting system calls", timeout=60)
    second = instr_bg("syscalls", "-c", "-p", target.pid)
    done2 = second.finish(timeout=60)
    assert done2.returncode == 1, done2.err
    assert f"pid {target.pid} is already traced by instr (pid {first.proc.pid})" in done2.err
    assert "Traceback" not in done2.err
    target.send("1")
    assert target.readline() == "sleeping 1"
    assert target.readline(timeout=30) == "slept 1"
    first.interrupt()
    done1 = first.finish(timeout=60)
    assert done1.returncode == 0, done1.err
    # Exact: the second instr never attached, so made no call in the program.
    assert re.search(r"\s1\s+clock_nanosleep$", done1.out, re.M), done1.out
    target.send("2 sum")
    assert target.readline() == "sum=3"
    assert target.finish().returncode == 0


def test_a_second_trace_waits_for_the_first_to_revert_its_hooks(targets, launch, instr_bg):
    """instr trace twice on one process: refused while the first's hooks are
    armed; allowed once the first has left, even though the first's agent
    stays for the thread blocked in the hooked read (its hooks are reverted),
    and the second then traces exactly."""
    target = launch(targets.path("sleeper"))
    first = instr_bg("trace", "-i", "libc.so*!read", "-p", target.pid)
    first.wait_armed(timeout=60)
    refused = instr_bg("trace", "-i", "libc.so*!read", "-p", target.pid).finish(timeout=60)
    assert refused.returncode == 1, refused.err
    assert f"already traced by instr (pid {first.proc.pid})" in refused.err, refused.err
    target.send("1 sum")
    assert target.readline() == "sum=1"
    first.interrupt()
    assert first.finish(timeout=60).returncode == 0
    second = instr_bg("trace", "-i", "libc.so*!read", "-p", target.pid)
    second.wait_armed(timeout=60)
    target.send("2 sum")  # the first read, blocked under the first agent, returns now
    assert target.readline(timeout=30) == "sum=3"
    second.interrupt()
    done = second.finish(timeout=60)
    assert done.returncode == 0, done.err
    # The program's thread: exactly the read it entered under the second's
    # hook, still blocked in it. (The first agent's own threads, still there,
    # are counted too: another agent's threads are not told apart yet,
    # docs/leaving.md.)
    mine = [line.split()[4] for line in done.stdout if line.split()[2:3] == [str(target.pid)]]
    assert mine == ["→"], done.out
    assert target.finish().returncode == 0
