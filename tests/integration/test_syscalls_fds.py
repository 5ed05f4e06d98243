"""The program's own fd table under ``instr syscalls``: a spawned program's
thread gets one by default (said only when --own-fds asks), an attached
one's with --own-fds, at its next
hooked call (agents/src/syscalls/fdtable.ts; docs/syscalls.md, "Frida's threads and
the fd table"). What must hold: the program's fds keep their meaning (a pipe
it closes is held by no thread of it), the threads it makes later share its
table, and counts stay exact. With --shared-fds, with threads, and attached
without --own-fds, the table is left alone."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from helpers import InstrProcess, TargetProcess, Targets, start_instr, start_target

from instr.syscalls.fdsplit import SEPARATE

N = 1000


def links(pid: int, tid: int | None = None) -> dict[int, str]:
    d = f"/proc/{pid}/fd" if tid is None else f"/proc/{pid}/task/{tid}/fd"
    return {int(fd): os.readlink(f"{d}/{fd}") for fd in os.listdir(d)}


def holders(pid: int, target: str) -> set[int]:
    """The threads whose fd table has ``target`` open."""
    return {
        int(tid)
        for tid in os.listdir(f"/proc/{pid}/task")
        if target in links(pid, int(tid)).values()
    }


def threads(pid: int) -> set[int]:
    return {int(t) for t in os.listdir(f"/proc/{pid}/task")}


def writes(summary: list[str]) -> int:
    rows = [ln.split() for ln in summary if ln.endswith(" write")]
    assert len(rows) == 1, summary
    return int(rows[0][3])


@contextmanager
def spawned(
    targets: Targets,
    options: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    program: Path | None = None,
) -> Iterator[tuple[InstrProcess, int, str]]:
    """instr (with ``options``) spawning sys_fdhold (or ``program``) with a
    pipe's write end: yields instr, the program's pid (once it printed
    "ready") and the pipe's /proc link."""
    r, w = os.pipe()
    pipe = f"pipe:[{os.fstat(w).st_ino}]"
    try:
        argv = ("syscalls", "-c", "-e", "trace=write", *options, "--")
        argv += (str(program or targets.path("sys_fdhold")), str(w))
        with start_instr(*argv, pass_fds=(w,), env=env) as ins:
            os.close(w)
            pid = int(ins.err.expect("counting system calls in pid").split()[6])
            assert ins.readline() == "ready"
            yield ins, pid, pipe
    finally:
        os.close(r)


def assert_own_table(pid: int, pipe: str) -> None:
    """Only the program's thread holds the pipe, and none of Frida's sockets
    is in its table (Frida's connection must close when Frida closes it)."""
    assert holders(pid, pipe) == {pid}
    frida = threads(pid) - {pid}
    assert frida, "Frida's threads are in the process"
    mine = set(links(pid).values())
    for tid in frida:
        theirs = {v for v in links(pid, tid).values() if v.startswith("socket:")}
        assert theirs and not theirs & mine


def test_a_spawned_program_gets_its_own_fd_table_without_a_word(targets: Targets) -> None:
    """The default for a spawned program; instr does not talk about it."""
    with spawned(targets) as (ins, _, _):
        ins.send(f"write {N}")
        assert ins.readline() == f"wrote {N}"
        done = ins.finish()
    assert done.returncode == 0, done.err
    assert not [ln for ln in done.stderr if "fd table" in ln], done.stderr
    assert writes(done.stdout) == N + 2


def test_a_spawned_program_gets_its_own_fd_table(targets: Targets) -> None:
    with spawned(targets, ("--own-fds",)) as (ins, pid, pipe):  # asked: said
        # Done in the write of "ready" (the first hooked call); said once the
        # agent has closed the program's fds in Frida's table. instr itself
        # holds the pipe (it passed it on): look inside the target.
        assert ins.err.expect("fd table") == f"instr: {SEPARATE}"
        assert_own_table(pid, pipe)
        ins.send(f"write {N}")
        assert ins.readline() == f"wrote {N}"
        ins.send("close")
        assert ins.readline() == "closed"
        assert holders(pid, pipe) == set()
        done = ins.finish()  # EOF on stdin: the program exits
    assert done.returncode == 0, done.err
    # N writes and the three lines it printed.
    assert writes(done.stdout) == N + 3


def test_a_stripped_program_gets_its_own_fd_table(targets: Targets, tmp_path: Path) -> None:
    """No symbols needed: the work is done in a hooked call, not at main."""
    program = tmp_path / "sys_fdhold"
    shutil.copy(targets.path("sys_fdhold"), program)
    subprocess.run(["strip", program], check=True)
    assert b" main\n" not in subprocess.run(["nm", "-D", program], capture_output=True).stdout
    with spawned(targets, ("--own-fds",), program=program) as (ins, pid, pipe):
        assert ins.err.expect("fd table") == f"instr: {SEPARATE}"
        assert_own_table(pid, pipe)
        ins.send(f"write {N}")
        assert ins.readline() == f"wrote {N}"
        done = ins.finish()
    assert done.returncode == 0, done.err
    assert writes(done.stdout) == N + 2


def test_threads_the_program_makes_later_share_its_table(targets: Targets) -> None:
    with spawned(targets, ("--own-fds",)) as (ins, pid, pipe):
        assert ins.err.expect("fd table") == f"instr: {SEPARATE}"
        ins.send("thread")
        assert ins.readline() == "started"
        # The program's two threads, and none of Frida's.
        mine = {int(t) for t in os.listdir(f"/proc/{pid}/task")} & holders(pid, pipe)
        assert pid in mine and len(mine) == 2
        assert len(threads(pid)) > 2
        done = ins.finish()
    assert done.returncode == 0, done.err


def test_a_program_with_two_threads_keeps_the_shared_table(targets: Targets) -> None:
    with spawned(targets, ("--own-fds",), env={"FDHOLD_THREAD": "1"}) as (ins, pid, pipe):
        line = ins.err.expect("fd table")
        assert line == (
            "instr: the fd table stays shared with Frida's threads:"
            " the program had 2 threads at its next hooked call"
        )
        ins.send(f"write {N}")
        assert ins.readline() == f"wrote {N}"
        assert holders(pid, pipe) == threads(pid)
        done = ins.finish()
    assert done.returncode == 0, done.err
    assert writes(done.stdout) == N + 2


def test_with_shared_fds_the_table_is_left_alone(targets: Targets) -> None:
    with spawned(targets, options=("--shared-fds",)) as (ins, pid, pipe):
        ins.send(f"write {N}")
        assert ins.readline() == f"wrote {N}"
        # Every thread, Frida's included, still shares the program's table.
        assert holders(pid, pipe) == threads(pid)
        done = ins.finish()
    assert done.returncode == 0, done.err
    assert not [ln for ln in done.stderr if "fd table" in ln]
    assert writes(done.stdout) == N + 2


@contextmanager
def running(targets: Targets) -> Iterator[tuple[TargetProcess, str]]:
    """sys_fdhold started (not by instr) with a pipe's write end: the target
    (once it printed "ready") and the pipe's /proc link."""
    r, w = os.pipe()
    pipe = f"pipe:[{os.fstat(w).st_ino}]"
    try:
        try:
            t = start_target(targets.path("sys_fdhold"), w, pass_fds=(w,))
        finally:
            os.close(w)  # the target's now
        with t:
            yield t, pipe
    finally:
        os.close(r)


def test_an_attached_program_keeps_its_table_unless_asked(targets: Targets) -> None:
    with running(targets) as (t, pipe):
        before = links(t.pid)
        argv = ("syscalls", "-c", "-e", "trace=write", "-p", t.pid)
        with start_instr(*argv) as ins:
            ins.err.expect("counting system calls")
            t.send(f"write {N}")
            assert t.readline() == f"wrote {N}"
            assert holders(t.pid, pipe) == threads(t.pid)
            ins.interrupt()
            done = ins.finish()
        assert done.returncode == 0, done.err
        assert not [ln for ln in done.stderr if "fd table" in ln]
        assert writes(done.stdout) == N + 1
        if any("blocked inside a hooked call" in ln for ln in done.stderr):
            # The program's thread was in a hooked read when instr left: the
            # agent (and its fds) stays until that read returns
            # (docs/leaving.md); then it unloads by itself.
            t.send(f"write {N}")
            assert t.readline() == f"wrote {N}"
            deadline = time.monotonic() + 10
            while links(t.pid) != before and time.monotonic() < deadline:
                time.sleep(0.01)
        assert links(t.pid) == before
        t.send("quit")
        assert t.finish().returncode == 0


def test_an_attached_program_gets_its_own_table_with_own_fds(targets: Targets) -> None:
    with running(targets) as (t, pipe):
        before = links(t.pid)
        argv = ("syscalls", "-c", "--own-fds", "-e", "trace=write", "-p", t.pid)
        with start_instr(*argv) as ins:
            ins.err.expect("counting system calls")
            # The first of these writes separates the table, and is counted.
            t.send(f"write {N}")
            assert t.readline() == f"wrote {N}"
            assert ins.err.expect("fd table") == f"instr: {SEPARATE}"
            assert_own_table(t.pid, pipe)
            ins.interrupt()
            done = ins.finish()
        assert done.returncode == 0, done.err
        assert writes(done.stdout) == N + 1
        # What stays in the program's table (docs): Frida's four eventfds,
        # and /dev/null where Frida's two sockets were.
        after = links(t.pid)
        assert {fd: v for fd, v in after.items() if fd in before} == before
        left = sorted(v for fd, v in after.items() if fd not in before)
        assert left == ["/dev/null"] * 2 + ["anon_inode:[eventfd]"] * 4
        # The program goes on: its pipe is its own to close.
        t.send(f"write {N}")
        assert t.readline() == f"wrote {N}"
        t.send("close")
        assert t.readline() == "closed"
        assert holders(t.pid, pipe) == set()
        t.send("quit")
        assert t.finish().returncode == 0


def test_an_attached_program_with_threads_keeps_its_table(targets: Targets) -> None:
    with running(targets) as (t, pipe):
        t.send("thread")
        assert t.readline() == "started"
        argv = ("syscalls", "-c", "--own-fds", "-e", "trace=write", "-p", t.pid)
        with start_instr(*argv) as ins:
            ins.err.expect("counting system calls")
            assert ins.err.expect("fd table") == (
                "instr: the fd table stays shared with Frida's threads: the program has 2 threads"
            )
            t.send(f"write {N}")
            assert t.readline() == f"wrote {N}"
            assert holders(t.pid, pipe) == threads(t.pid)
            ins.interrupt()
            done = ins.finish()
        assert done.returncode == 0, done.err
        assert writes(done.stdout) == N + 1
        t.send("quit")
        assert t.finish().returncode == 0
