"""A Frida agent left in a process by an instr that was killed (instr.leftover):
the next instr refuses to attach there, and says why; a record whose agent has
gone is forgotten and the attach goes on.

Frida's idle agent itself cannot be made to order (its host must die in the
middle of the injection: a few kills in a hundred, see test_stress_leave.py's
attach-kill test), so here a program whose own image is named like Frida's
agent library stands for one, and a record is written as a killed instr's
would be: a file nobody holds locked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from helpers import run_instr

from instr import leftover

pytestmark = pytest.mark.frida


def dead_pid() -> int:
    """The pid of a process that has exited (an instr that was killed)."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def record_of_a_killed_instr(pid: int) -> Path:
    start = leftover._start_time(pid)
    assert start is not None
    d = Path(tempfile.gettempdir()) / f"instr-{os.getuid()}" / "attach"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{pid}-{start}-{dead_pid()}"
    path.write_text("")
    return path


def test_a_process_holding_a_killed_instrs_agent_is_refused(targets, launch, tmp_path):
    fake = tmp_path / "frida-agent-64.so"  # its own image: a Frida agent, to /proc/PID/maps
    shutil.copy(targets.path("sleeper"), fake)
    t = launch(fake)
    assert leftover.frida_in(t.pid)
    record = record_of_a_killed_instr(t.pid)
    done = run_instr("syscalls", "-c", "-p", t.pid, "--duration", "1")
    assert done.returncode == 1, done.stderr
    host = record.name.rsplit("-", 1)[1]
    assert f"pid {t.pid} still holds a Frida agent that instr (pid {host}) left" in done.stderr
    assert "restart the program" in done.stderr
    assert "Traceback" not in done.stderr
    assert record.exists()  # still true for the next instr
    t.send("3 sum")
    assert t.readline() == "sum=6"  # untouched: nothing was attached
    assert "frida-agent-64.so (deleted)" not in Path(f"/proc/{t.pid}/maps").read_text()
    record.unlink()


def test_a_record_whose_agent_has_gone_is_forgotten(targets, launch):
    t = launch(targets.path("sleeper"))
    assert not leftover.frida_in(t.pid)
    record = record_of_a_killed_instr(t.pid)
    done = run_instr("syscalls", "-c", "-p", t.pid, "--duration", "0.5")
    assert done.returncode == 0, done.stderr
    assert not record.exists()
    # instr's own record went with its clean leave
    start = leftover._start_time(t.pid)
    assert list(record.parent.glob(f"{t.pid}-{start}-*")) == []
    t.send("4 sum")
    assert t.readline() == "sum=10"
