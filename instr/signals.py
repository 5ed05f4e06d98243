"""Signals while instr runs: SIGTERM and SIGHUP (a closed terminal) stop a run
as Ctrl-C does, and all three are held while a run closes (flush, revert,
detach) so a second one cannot cut it short."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import NoReturn

STOPPING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

# A stopping signal this soon after another is the same one twice: a kill of
# the process group (a closed terminal's SIGHUP, ``timeout``'s SIGTERM) reaches
# instr's worker both directly and passed on by its guard (instr.guard).
TWICE_S = 0.5
_stopped_at: float | None = None


def stop(signum: int, frame: FrameType | None) -> None:
    """The handler of SIGINT, SIGTERM and SIGHUP: KeyboardInterrupt, once."""
    global _stopped_at
    now = time.monotonic()
    if _stopped_at is not None and now - _stopped_at < TWICE_S:
        return
    _stopped_at = now
    raise KeyboardInterrupt


def install_stopping() -> None:
    """Make SIGINT, SIGTERM and SIGHUP a KeyboardInterrupt for the whole life
    of the process (instr's worker, instr.guard)."""
    for sig in STOPPING:
        signal.signal(sig, stop)


Handler = Callable[[int, FrameType | None], object] | int | signal.Handlers


@contextlib.contextmanager
def _handling(handler: Handler) -> Iterator[None]:
    """``handler`` for SIGINT, SIGTERM and SIGHUP inside the block; outside the
    main thread, where handlers cannot be set, signals are left alone."""
    try:
        previous = [(sig, signal.signal(sig, handler)) for sig in STOPPING]
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        for sig, old in previous:
            signal.signal(sig, old)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Raise KeyboardInterrupt on SIGINT, SIGTERM and SIGHUP, so a killed instr,
    or one whose terminal closed, still flushes and detaches. SIGINT too: a
    shell without job control starts a background command (``instr ... &`` in
    a script) with SIGINT ignored, and Python then leaves it ignored, so a
    ``kill -INT`` of that instr did nothing (and a harness that ran it so
    waited for ever)."""
    with _handling(stop):
        yield


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ignore SIGINT, SIGTERM and SIGHUP inside the block."""
    with _handling(signal.SIG_IGN):
        yield


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP inside the block and act on the first
    one after it, as the handler then in force would. For Frida's attach and
    the agent's load: frida-python waits for them on a threading.Event, which
    a KeyboardInterrupt cuts short while Frida's injector goes on in the
    program, and a host that exits then leaves the program to crash, or
    Frida's agent idle in it (instr.guard)."""
    got: list[int] = []
    with _handling(lambda signum, frame: got.append(signum)):
        yield
    if got:
        signal.raise_signal(got[0])


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
