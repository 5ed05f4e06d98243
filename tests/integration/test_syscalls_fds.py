"""``instr syscalls`` on a spawned program: by default its thread gets an fd
table of its own from main on (agents/src/fdtable.ts; docs/syscalls.md,
"Frida's threads and the fd table"). What must hold: the program's fds keep
their meaning (a pipe it closes is held by no thread of it), the threads it
makes share its table, and counts stay exact. With --shared-fds, and
attached (-p), the table is left alone."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from helpers import InstrProcess, Targets, start_instr, start_target

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
    extra: tuple[str, ...] = (),
    options: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> Iterator[tuple[InstrProcess, int, str]]:
    """instr (with ``options``) spawning sys_fdhold with a pipe's write end (and
    ``extra`` arguments): yields instr, the program's pid (once it printed
    "ready") and the pipe's /proc link."""
    r, w = os.pipe()
    pipe = f"pipe:[{os.fstat(w).st_ino}]"
    try:
        argv = ("syscalls", "-c", "-e", "trace=write", *options, "--")
        argv += (str(targets.path("sys_fdhold")), str(w), *extra)
        with start_instr(*argv, pass_fds=(w,), env=env) as ins:
            os.close(w)
            pid = int(ins.err.expect("counting system calls in pid").split()[6])
            assert ins.readline() == "ready"
            yield ins, pid, pipe
    finally:
        os.close(r)


def test_a_spawned_program_gets_its_own_fd_table_at_main(targets: Targets) -> None:
    with spawned(targets) as (ins, pid, pipe):
        # Sent once the agent has closed the program's fds in Frida's table.
        assert ins.err.expect("fd table") == f"instr: {SEPARATE}"
        # instr itself holds the pipe (it passed it on): look inside the target.
        assert holders(pid, pipe) == {pid}
        frida = threads(pid) - {pid}
        assert frida, "Frida's threads are in the process"
        # None of Frida's sockets is in the program's table (Frida's
        # connection must close when Frida closes it).
        mine = set(links(pid).values())
        for tid in frida:
            theirs = {v for v in links(pid, tid).values() if v.startswith("socket:")}
            assert theirs and not theirs & mine
        ins.send(f"write {N}")
        assert ins.readline() == f"wrote {N}"
        ins.send("close")
        assert ins.readline() == "closed"
        assert holders(pid, pipe) == set()
        done = ins.finish()  # EOF on stdin: the program exits
    assert done.returncode == 0, done.err
    # N writes and the three lines it printed.
    assert writes(done.stdout) == N + 3


def test_threads_the_program_makes_share_its_table(targets: Targets) -> None:
    with spawned(targets, ("thread",)) as (ins, pid, pipe):
        assert ins.err.expect("fd table") == f"instr: {SEPARATE}"
        # The program's two threads, and none of Frida's.
        assert pid in holders(pid, pipe)
        assert len(holders(pid, pipe)) == 2
        assert len(threads(pid)) > 2
        done = ins.finish()
    assert done.returncode == 0, done.err


def test_a_program_with_threads_at_main_keeps_the_shared_table(targets: Targets) -> None:
    with spawned(targets, env={"FDHOLD_THREAD": "1"}) as (ins, pid, pipe):
        line = ins.err.expect("fd table")
        assert line.endswith("stays shared with Frida's threads: the program has 2 threads at main")
        assert holders(pid, pipe) == threads(pid)
        ins.send(f"write {N}")
        assert ins.readline() == f"wrote {N}"
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


def test_an_attached_program_keeps_its_table(targets: Targets) -> None:
    """Attached, instr leaves the table alone; asked with --own-fds, it says
    why (docs: runOnThread is not safe)."""
    r, w = os.pipe()
    pipe = f"pipe:[{os.fstat(w).st_ino}]"
    try:
        with start_target(targets.path("sys_fdhold"), w, pass_fds=(w,)) as t:
            os.close(w)
            before = links(t.pid)
            for asked in ((), ("--own-fds",)):
                argv = ("syscalls", "-c", *asked, "-e", "trace=write", "-p", t.pid)
                with start_instr(*argv) as ins:
                    ins.err.expect("counting system calls")
                    t.send(f"write {N}")
                    assert t.readline() == f"wrote {N}"
                    assert holders(t.pid, pipe) == threads(t.pid)
                    ins.interrupt()
                    done = ins.finish()
                assert done.returncode == 0, done.err
                said = [ln for ln in done.stderr if "fd table" in ln]
                assert said == (
                    [
                        "instr: the fd table stays shared with Frida's threads: instr attached"
                        " to the program (-p); only programs instr spawns get their own"
                    ]
                    if asked
                    else []
                )
                assert writes(done.stdout) == N + 1
                assert links(t.pid) == before
            t.send("quit")
            assert t.finish().returncode == 0
    finally:
        os.close(r)
