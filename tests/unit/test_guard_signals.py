"""instr.guard's pid lookup and instr.signals' handlers, without Frida."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from instr import guard, signals


def test_a_stopping_signal_twice_at_once_is_one_interrupt(monkeypatch) -> None:
    monkeypatch.setattr(signals, "_stopped_at", None)
    with pytest.raises(KeyboardInterrupt):
        signals.stop(signal.SIGTERM, None)
    assert signals.stop(signal.SIGHUP, None) is None  # the group's copy: ignored
    monkeypatch.setattr(signals, "_stopped_at", signals._stopped_at - signals.TWICE_S)
    with pytest.raises(KeyboardInterrupt):  # a later one is a new stop
        signals.stop(signal.SIGINT, None)


def test_deferred_holds_a_stop_until_the_block_ends() -> None:
    seen: list[tuple[int, str]] = []
    where = ["before"]

    def handler(signum: int, frame: object) -> None:
        seen.append((signum, where[0]))

    old = signal.signal(signal.SIGTERM, handler)
    try:
        with signals.deferred():
            where[0] = "inside"
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
            assert seen == []
            where[0] = "after"
        assert seen == [(signal.SIGTERM, "after")]  # once, by the handler in force after
        assert signal.getsignal(signal.SIGTERM) is handler
    finally:
        signal.signal(signal.SIGTERM, old)


def test_guard_of_names_the_parent_that_forked_the_same_command() -> None:
    code = (
        "import os, sys, time\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    time.sleep(30); os._exit(0)\n"
        "print(pid, flush=True)\n"
        "sys.stdin.read()\n"
        "os.kill(pid, 9)\n"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert p.stdout is not None
        child = int(p.stdout.readline())
        assert guard.guard_of(child) == p.pid  # a fork: the same command line
        assert guard.guard_of(p.pid) == p.pid  # its parent (pytest) runs another command
    finally:
        p.communicate("", timeout=30)


def test_public_pid_is_the_guards_in_a_worker(monkeypatch) -> None:
    assert guard.public_pid() == os.getpid()
    monkeypatch.setattr(guard, "_guard_pid", 4242)
    assert guard.public_pid() == 4242
