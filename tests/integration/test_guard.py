"""instr runs as a guard (the pid its user holds) and a worker (instr.guard):
a SIGKILL of instr in the middle of Frida's injection must not harm the
program, a signal to instr's process group must stop it once, and instr must
end as its worker ends.

The moment of the injection is found, not guessed: Frida's injector traces
the program with ptrace while it runs its code in it, so /proc/PID/status
shows a TracerPid exactly then.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import LineReader, instr_argv, instr_env
from test_stress_leave import ended, frida_maps_settled, unarmed

pytestmark = pytest.mark.frida

KILLS = 3


def status(pid: int, key: str) -> int:
    """A number of /proc/PID/status (-1: the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1


def tracer(pid: int) -> int:
    """The thread tracing ``pid``'s main thread (0: none; -1: it is gone)."""
    return status(pid, "TracerPid")


def tgid(tid: int) -> int:
    """The process of thread ``tid`` (-1: gone)."""
    return status(tid, "Tgid")


def test_sigkill_of_instr_while_frida_injects(targets, launch, instr_bg) -> None:
    """SIGKILL to instr while Frida's injector holds the program (its
    TracerPid set): the worker finishes the attach and leaves in order, and
    the program answers exactly and ends normally. With instr as one process
    (INSTR_GUARD=0) this killed the program with SIGSEGV: the registers Frida
    had pointed at its own code were never put back (6 of 8 such kills)."""
    for i in range(KILLS):
        t = launch(targets.path("sleeper"))
        instr = instr_bg("syscalls", "-c", "-p", t.pid)
        deadline = time.monotonic() + 60
        while tracer(t.pid) == 0:
            assert time.monotonic() < deadline, f"kill {i}: Frida never traced pid {t.pid}"
            time.sleep(0.0005)
        worker, by = instr.worker(), tracer(t.pid)
        assert worker is not None and by > 0 and tgid(by) == worker, (by, worker)  # Frida's thread
        # Into the injection (about 45 ms on an idle machine): at 3 to 15 ms,
        # 6 kills in 8 of a one-process instr killed the program.
        time.sleep(0.003 + 0.006 * i)
        instr.kill()  # the user's instr: its guard
        assert instr.proc.returncode == -signal.SIGKILL
        assert ended(worker, 60), f"kill {i}: the worker {worker} did not end"
        t.send(f"{i + 3} sum")
        want = (i + 3) * (i + 4) // 2
        assert t.readline(timeout=30) == f"sum={want}", f"kill {i}: {t.err.rest(5)}"
        assert frida_maps_settled(t.pid, 30)[0] == 0, f"kill {i}: Frida stayed in pid {t.pid}"
        assert "instr-armed-by-" not in Path(f"/proc/{t.pid}/maps").read_text()
        end = t.finish()
        assert end.returncode == 0, (end.returncode, end.err)


def test_a_signal_to_instrs_process_group_stops_it_once(targets, launch, tmp_path) -> None:
    """A closed terminal's SIGHUP or ``timeout``'s SIGTERM goes to the whole
    process group: the worker gets it and also its guard's copy. It stops
    once, with the whole summary, as after one Ctrl-C."""
    t = launch(targets.path("sleeper"))
    p = subprocess.Popen(
        instr_argv("syscalls", "-c", "-p", t.pid),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=instr_env(),
        start_new_session=True,
    )
    try:
        assert p.stdout is not None and p.stderr is not None
        out, err = LineReader(p.stdout), LineReader(p.stderr)
        err.expect("counting system calls", timeout=60)
        t.send("2 sum")
        assert t.readline() == "sum=3"
        os.killpg(p.pid, signal.SIGTERM)
        assert p.wait(60) == 0
        lines, errs = out.rest(10), err.rest(10)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    text = "\n".join(lines)
    # The one system call between the attach and the stop: "sum=3"'s write.
    assert re.search(r"\b1\s+write$", text, re.M), text
    assert len(re.findall(r"\btotal$", text, re.M)) == 1, text  # one summary
    assert "interrupted" not in "\n".join(errs), errs
    assert "Traceback" not in "\n".join(errs), errs
    t.send("1 sum")
    assert t.readline() == "sum=1"
    assert t.finish().returncode == 0


def test_instr_ends_as_its_worker_ends(targets, launch, instr_bg, tmp_path) -> None:
    """The guard's exit code is the worker's; a worker killed by a signal
    kills its guard with the same signal (a shell sees what it would have
    seen of one process). The program outlives its tracer's SIGKILL: Frida's
    agent unloads when its host dies, once the hooks are armed."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("sets: [\n")
    checked = subprocess.run(
        instr_argv("check", bad), capture_output=True, text=True, env=instr_env(), check=False
    )
    assert checked.returncode != 0 and "bad.yaml:" in checked.stderr, checked.stderr

    t = launch(targets.path("sleeper"))
    instr = instr_bg("syscalls", "-c", "-p", t.pid)
    instr.err.expect("counting system calls", timeout=60)
    worker = instr.worker()
    assert worker is not None
    os.kill(worker, signal.SIGKILL)
    assert instr.proc.wait(60) == -signal.SIGKILL
    # Frida's agent reverts the hooks in its own time: until then the
    # program's read would go through them again, and block in one (which
    # rightly keeps the agent until it returns: docs/leaving.md).
    unarmed(t.pid, 30)
    t.send("4 sum")
    assert t.readline(timeout=30) == "sum=10"
    assert frida_maps_settled(t.pid, 30)[0] == 0
    assert t.finish().returncode == 0
