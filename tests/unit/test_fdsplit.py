"""instr/syscalls/fdsplit.py: the one check that needs no agent."""

from __future__ import annotations

import os
import signal
import subprocess

from instr.syscalls.fdsplit import stopped


def test_stopped_follows_sigstop_and_sigcont() -> None:
    p = subprocess.Popen(["sleep", "60"])
    try:
        assert not stopped(p.pid)
        os.kill(p.pid, signal.SIGSTOP)
        os.waitpid(p.pid, os.WUNTRACED)  # returns once it is stopped
        assert stopped(p.pid)
        os.kill(p.pid, signal.SIGCONT)
        os.waitpid(p.pid, os.WCONTINUED)
        assert not stopped(p.pid)
    finally:
        p.kill()
        p.wait()


def test_a_gone_process_is_not_stopped() -> None:
    p = subprocess.Popen(["true"])
    p.wait()
    assert not stopped(p.pid)
