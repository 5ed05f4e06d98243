"""Signals while instr runs: SIGTERM and SIGHUP (a closed terminal) stop a run
as Ctrl-C does, and all three are held while a run closes (flush, revert,
detach) so a second one cannot cut it short."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from types import FrameType
from typing import NoReturn

STOPPING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Raise KeyboardInterrupt on SIGINT, SIGTERM and SIGHUP, so a killed instr,
    or one whose terminal closed, still flushes and detaches. SIGINT too: a
    shell without job control starts a background command (``instr ... &`` in
    a script) with SIGINT ignored, and Python then leaves it ignored, so a
    ``kill -INT`` of that instr did nothing (and a harness that ran it so
    waited for ever)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        previous = [(sig, signal.signal(sig, handler)) for sig in STOPPING]
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        for sig, old in previous:
            signal.signal(sig, old)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ignore SIGINT, SIGTERM and SIGHUP inside the block."""
    try:
        previous = [(sig, signal.signal(sig, signal.SIG_IGN)) for sig in STOPPING]
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous:
            signal.signal(sig, handler)


def die_of_sigpipe() -> NoReturn:
    """End as a Unix filter does when its reader has gone (``instr ... | head``):
    killed by SIGPIPE, as grep is, with nothing more written (stdout is pointed
    at /dev/null first, so Python's final flush cannot complain). Call it only
    once Frida is closed (instr.lifecycle.release_frida): a host that dies while
    Frida's injector finishes in the target can leave the target to crash."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGPIPE)
    os._exit(128 + signal.SIGPIPE)  # not reached: SIGPIPE ends the process
