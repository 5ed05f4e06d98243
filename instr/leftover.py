"""Frida agents that a killed instr left in a process, and the refusal to attach
to such a process again.

A host killed (SIGKILL) while Frida injects its agent can leave the agent
loaded and idle in the target: its connection to the host is closed, and no
thread of the agent notices. Rarely, a host killed after arming leaves one too.
Frida cannot reach or unload such an agent, and a new attach to the process
can abort it ("agent connection closed unexpectedly", then SIGABRT: seen in
the stress soak, docs/leaving.md). So every local attach leaves a record on
this host, held locked for as long as that instr lives:

    <tmp>/instr-<uid>/attach/<pid>-<start time>-<host pid>

It is removed when that instr leaves in order (Frida's agent may stay a
while after that, held by a thread blocked inside a hook: it then leaves on
its own), so a record outlives its instr only when instr died without
leaving: SIGKILL, a crash. An attach that finds a record whose host is dead
while Frida is still in the process's maps refuses, with what happened,
instead of attaching.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from pathlib import Path

from instr.errors import TargetError
from instr.target import proc_stat

UNLOADING_S = 1.0  # an agent whose host just left may still be unloading


def _dir() -> Path:
    return Path(tempfile.gettempdir()) / f"instr-{os.getuid()}" / "attach"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat): a
    pid reused by a new process has another."""
    fields = proc_stat(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None


def frida_in(pid: int) -> bool:
    """Whether Frida's agent library (``/memfd:frida-agent-64.so``, or a file of
    that name where memfd is not used) is mapped in process ``pid``."""
    try:
        return "frida-agent-" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


class AttachRecord:
    """This instr's record of its agent in one local process."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.path: Path | None = None
        self._fd: int | None = None

    @classmethod
    def take(cls, pid: int) -> AttachRecord:
        """Check for an agent left by a killed instr (refuse then), and note ours."""
        refuse_if_left_behind(pid)
        _prune()
        record = cls(pid)
        start = _start_time(pid)
        if start is None:
            return record  # no such process: the attach says so
        d = _dir()
        try:
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
            path = d / f"{pid}-{start}-{os.getpid()}"
            fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return record  # no writable temp dir: attach without a record
        record.path, record._fd = path, fd
        return record

    def release(self) -> None:
        """instr has left in order (its agent may still be held by a thread inside
        a hook, and then leaves on its own: docs/leaving.md): the record goes."""
        if self.path is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self.path, self._fd = None, None


def _prune() -> None:
    """Forget the records of processes that are gone."""
    with contextlib.suppress(OSError):
        for path in _dir().iterdir():
            parts = path.name.split("-")
            if len(parts) == 3 and parts[0].isdigit() and _start_time(int(parts[0])) != parts[1]:
                with contextlib.suppress(OSError):
                    path.unlink()


def _dead_hosts(pid: int) -> list[tuple[Path, int]]:
    """Records for this process whose instr is gone (their lock is free)."""
    start = _start_time(pid)
    if start is None:
        return []
    found = []
    for path in sorted(_dir().glob(f"{pid}-{start}-*")):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # its instr is alive
        finally:
            os.close(fd)
        host = path.name.rsplit("-", 1)[1]
        if host.isdigit() and int(host) != os.getpid():
            found.append((path, int(host)))
    return found


def refuse_if_left_behind(pid: int, wait_s: float = UNLOADING_S) -> None:
    """Refuse to attach where a killed instr left Frida's agent; forget records
    whose agent has gone."""
    dead = _dead_hosts(pid)
    if not dead:
        return
    deadline = time.monotonic() + wait_s
    while frida_in(pid) and time.monotonic() < deadline:
        time.sleep(0.05)  # an agent whose host just went may still be unloading
    if not frida_in(pid):
        for path, _host in dead:
            with contextlib.suppress(OSError):
                path.unlink()
        return
    host = dead[-1][1]
    raise TargetError(
        f"pid {pid} still holds a Frida agent that instr (pid {host}) left when it was"
        " killed while attached; Frida cannot reach or unload it, and attaching again"
        " could abort the process",
        hint=f"restart the program to instrument it again (its record: {dead[-1][0]})",
    )
