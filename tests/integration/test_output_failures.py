"""Outputs that fail, and a console whose reader goes away, on real targets.

A failed output is a non-zero exit with the events it did not write; a SQLite
file left behind is valid, its run closed with what it really holds. A closed
pipe (instr ... | head) stops the run as Ctrl-C does, quietly, and instr dies
of SIGPIPE as grep does."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import LineReader, instr_argv, instr_env, run_instr


def closed_pipe(target, *args: object) -> tuple[list[str], str]:
    """Run instr ARGS -p TARGET into a pipe, read its first output, close the
    pipe, make the target call again; return the lines read and the line on
    stderr that says the run started. Asserts the quiet SIGPIPE ending and
    that the target was left as on Ctrl-C."""
    r, w = os.pipe()
    instr = subprocess.Popen(
        instr_argv(*args, "-p", target.pid),
        stdin=subprocess.DEVNULL,
        stdout=w,
        stderr=subprocess.PIPE,
        text=True,
        env=instr_env(),
    )
    os.close(w)
    try:
        assert instr.stderr is not None
        err = LineReader(instr.stderr)
        started = err.expect(re.compile(r"\b(armed|tracing)\b"))
        target.send("100 sum")  # 100 target_add calls, one write
        assert target.readline() == "sum=5050"
        assert select.select([r], [], [], 60)[0], "no output within 60 s"
        first = os.read(r, 4096).decode().splitlines()
        os.close(r)  # the reader goes away, as head does after its line
        r = -1
        target.send("10 sum")  # the next output meets the closed pipe
        assert target.readline() == "sum=55"
        assert instr.wait(60) == -signal.SIGPIPE  # killed by SIGPIPE, as grep is
        assert err.rest() == []  # no BrokenPipeError, no traceback, no summary
        # left as on Ctrl-C: hooks gone, the armed mark gone, the program unchanged
        assert "instr-armed-by" not in Path(f"/proc/{target.pid}/maps").read_text()
        target.send("3 sum")  # alive: instr closed Frida before dying (else SIGSEGV, 3 in 24)
        assert target.readline() == "sum=6"
        return first, started
    finally:
        if r >= 0:
            os.close(r)
        if instr.poll() is None:
            instr.kill()
            instr.wait()


def test_closed_pipe_trace(targets, launch):
    target = launch(targets.path("sleeper"))
    first, armed = closed_pipe(target, "trace", "-i", "sleeper!target_add")
    assert armed == f"instr: armed 1 of 1 probes (1 sites) in pid {target.pid}"
    assert first[:2] == [
        "TIME             TID PROBE                  CALL",
        f"    0.000 ms {target.pid:>7} cli/sleeper!target_add → sleeper!target_add",
    ]


def test_closed_pipe_syscalls(targets, launch):
    target = launch(targets.path("sleeper"))
    lines, started = closed_pipe(target, "syscalls", "-e", "trace=write")
    first = lines[0]
    assert started.startswith(f"instr: tracing system calls in pid {target.pid} (")
    assert re.fullmatch(r'write\(1<pipe:\[\d+\]>, "sum=5050\\n", 9\) = 9 <[\d.]+>', first), first


def test_jsonl_on_a_full_device(targets, tmp_path):
    out = tmp_path / "run.jsonl"
    out.symlink_to("/dev/full")
    res = run_instr("trace", "-i", "calls!target_add", "-o", out, "--", targets.path("calls"), 1000)
    assert res.returncode == 1, res.stderr  # the program exited 0; the output failed
    assert "Traceback" not in res.stderr
    assert res.stderr.splitlines()[-1] == (
        f"instr: error: output {out} failed: No space left on device;"
        " 2000 of 2000 events were not written"
    )


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, unmounted after the test; skipped where mount is not allowed."""
    where = tmp_path / "small"
    where.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {res.stderr.strip()}")
    try:
        yield where
    finally:
        with contextlib.suppress(OSError):
            subprocess.run(["umount", str(where)], check=True, timeout=60)


def test_sqlite_on_a_full_disk(targets, small_disk):
    db_path = small_disk / "run.db"
    calls = 200_000
    res = run_instr(
        "trace", "-i", "calls!target_add", "-o", db_path, "--", targets.path("calls"), calls
    )
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr and "cannot rollback" not in res.stderr
    last = res.stderr.splitlines()[-1]
    m = re.fullmatch(
        rf"instr: error: output {re.escape(str(db_path))} failed: database or disk is full;"
        r" (\d+) of (\d+) events were not written",
        last,
    )
    assert m is not None, last
    unwritten, events = int(m.group(1)), int(m.group(2))
    assert events == 2 * calls
    assert not (small_disk / "run.db-instr-reserve").exists()
    db = sqlite3.connect(db_path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows = db.execute("SELECT count(*) FROM events").fetchone()[0]
        assert unwritten == events - rows and rows < events
        run = db.execute("SELECT ended_ns, ending_reason, events, errors FROM runs").fetchall()
        ((ended_ns, reason, run_events, errors),) = run
        assert ended_ns is not None and reason == "exit"
        assert run_events == rows  # what the file holds, not what the run produced
        assert json.loads(errors) == [last.removeprefix("instr: error: ")]
        probes = db.execute("SELECT name, events FROM probes").fetchall()
        assert probes == [("cli/calls!target_add", rows)]
    finally:
        db.close()
