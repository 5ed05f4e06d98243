"""``instr syscalls``: the program's thread gets an fd table of its own while
instr is attached (``-p``: at once; spawned: when it enters main) (agents/src/fdtable.ts; docs/syscalls.md, "Frida's threads
and the fd table"). What must hold: the program's fds keep their meaning (a
pipe it closes reaches EOF while instr is still attached), counts stay exact,
and after the detach the program's fd table is exactly what it was before."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from helpers import TargetProcess, Targets, start_instr, start_target

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
def holding_a_pipe(targets: Targets, *args: str) -> Iterator[tuple[TargetProcess, int, str]]:
    """sys_fdhold with a pipe's write end; yields it, the read end and the pipe's link."""
    r, w = os.pipe()
    pipe = f"pipe:[{os.fstat(w).st_ino}]"
    try:
        with start_target(targets.path("sys_fdhold"), w, *args, pass_fds=(w,)) as t:
            os.close(w)
            yield t, r, pipe
            t.send("quit")
            assert t.finish().returncode == 0
    finally:
        os.close(r)


def test_the_program_gets_its_own_fd_table(targets: Targets) -> None:
    with holding_a_pipe(targets) as (t, r, pipe):
        before = links(t.pid)
        held = next(fd for fd, link in before.items() if link == pipe)
        assert holders(t.pid, pipe) == {t.pid}
        with start_instr("syscalls", "-c", "-e", "trace=write", "-p", t.pid) as ins:
            assert ins.err.expect("fd table") == f"instr: {SEPARATE}"
            frida = threads(t.pid) - {t.pid}
            assert frida, "Frida's threads are in the process"
            # Frida's threads no longer hold the program's files...
            assert holders(t.pid, pipe) == {t.pid}
            # ...nor the program's table Frida's sockets (its connection must
            # close when Frida closes it).
            mine = set(links(t.pid).values())
            for tid in frida:
                theirs = {v for v in links(t.pid, tid).values() if v.startswith("socket:")}
                assert theirs and not theirs & mine
            t.send(f"write {N}")
            assert t.readline() == f"wrote {N}"
            t.send("close")
            assert t.readline() == "closed"
            # The program closed the pipe's only writer: EOF, with instr attached.
            os.set_blocking(r, False)
            assert os.read(r, 1) == b""
            ins.interrupt()
            done = ins.finish()
        assert done.returncode == 0, done.err
        # N writes and the two answers.
        assert writes(done.stdout) == N + 2
        # Frida's fds (sockets, eventfds, /dev/null covers) left with Frida.
        del before[held]
        assert links(t.pid) == before


def test_a_program_with_threads_keeps_the_shared_table(targets: Targets) -> None:
    with holding_a_pipe(targets, "thread") as (t, _r, pipe):
        with start_instr("syscalls", "-c", "-e", "trace=write", "-p", t.pid) as ins:
            line = ins.err.expect("fd table")
            assert line.endswith("stays shared with Frida's threads: the program has 2 threads")
            assert holders(t.pid, pipe) == threads(t.pid)
            t.send(f"write {N}")
            assert t.readline() == f"wrote {N}"
            ins.interrupt()
            done = ins.finish()
        assert done.returncode == 0, done.err
        assert writes(done.stdout) == N + 1


def test_shared_fds_leaves_the_table_alone(targets: Targets) -> None:
    with holding_a_pipe(targets) as (t, _r, pipe):
        before = links(t.pid)
        with start_instr("syscalls", "-c", "--shared-fds", "-e", "trace=write", "-p", t.pid) as ins:
            ins.err.expect("counting system calls")
            t.send(f"write {N}")
            assert t.readline() == f"wrote {N}"
            # Every thread, Frida's included, still shares the program's table.
            assert holders(t.pid, pipe) == threads(t.pid)
            ins.interrupt()
            done = ins.finish()
        assert done.returncode == 0, done.err
        assert not [ln for ln in done.stderr if "fd table" in ln]
        assert writes(done.stdout) == N + 1
        assert links(t.pid) == before


def test_a_spawned_program_gets_its_own_fd_table_at_main(targets: Targets) -> None:
    r, w = os.pipe()
    pipe = f"pipe:[{os.fstat(w).st_ino}]"
    try:
        argv = ("syscalls", "-c", "-e", "trace=write", "--", targets.path("sys_fdhold"), w)
        with start_instr(*argv, pass_fds=(w,)) as ins:
            os.close(w)
            pid = int(ins.err.expect("counting system calls in pid").split()[6])
            assert ins.readline() == "ready"
            # Sent once the agent has closed the program's fds in Frida's table.
            assert ins.err.expect("fd table") == f"instr: {SEPARATE}"
            # instr itself holds the pipe (it passed it on): look inside the target.
            assert holders(pid, pipe) == {pid}
            ins.send(f"write {N}")
            assert ins.readline() == f"wrote {N}"
            ins.send("close")
            assert ins.readline() == "closed"
            assert holders(pid, pipe) == set()
            done = ins.finish()  # EOF on stdin: the program exits
        assert done.returncode == 0, done.err
        # N writes and the three lines it printed.
        assert writes(done.stdout) == N + 3
    finally:
        os.close(r)
