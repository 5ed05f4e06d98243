"""The ``instr`` command runs as two processes: the one a user starts and sees
(its pid is what ``$!``, ``pgrep`` and a harness hold), which only waits, and
a forked worker that does everything else. So a SIGKILL of instr cannot land
in the middle of Frida's injection.

Frida injects its agent from inside the host process with ptrace: it stops a
thread of the program, points it at code of its own with a made-up return
address, lets it run and catches the fault it ends in, then puts the
registers back. A host killed in between leaves the program running on those
registers, and it dies of SIGSEGV (a CI run saw it: a kill 0.33 s into an
attach). No signal handler can defer a SIGKILL, so the injector is kept out
of the killed process instead:

- the user's instr (the *guard*) forks the worker before Frida is loaded,
  then waits for it and ends as it ends (its exit code, or its signal);
- a stopping signal (SIGINT, SIGTERM, SIGHUP) or SIGUSR1 sent to the guard's
  pid is passed on to the worker; one from the terminal reaches the worker
  itself (it is in the same process group), so it is not passed twice;
- when the guard dies (SIGKILL, or any signal it did not expect), the worker
  sees its pipe close and stops as on SIGTERM: Frida's injection finishes,
  and instr leaves in order (docs/leaving.md).

A worker killed by SIGKILL itself is still the old case: Frida's agent
unloads when its host dies, safely once the hooks are armed. ``INSTR_GUARD=0``
runs instr as one process (to profile it, or to test that case).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from pathlib import Path
from typing import NoReturn

# Passed on to the worker when sent to the guard's pid (kill(2), not the terminal).
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)
_SI_KERNEL = 0x80  # siginfo si_code of a signal the kernel sent (a terminal's ^C, ^\)

_guard_pid: int | None = None  # in the worker: its guard's pid


def main() -> None:
    """The ``instr`` command (``python -m instr``): split, then run the CLI."""
    supervise()
    try:
        from instr.cli import main as cli_main  # Frida is loaded from here on
    except KeyboardInterrupt:  # stopped while it started: nothing was touched
        print("instr: interrupted", file=sys.stderr)
        sys.exit(130)
    cli_main()


def supervise() -> None:
    """Fork the worker; in the guard, never return. Does nothing where there is
    no fork (Windows), when ``INSTR_GUARD=0``, or when this process already
    runs threads (Frida is loaded: a fork would copy it half-held)."""
    if os.environ.get("INSTR_GUARD", "1") == "0" or not hasattr(os, "fork"):
        return
    if threading.active_count() > 1 or _threads() > 1:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    r, w = os.pipe()  # not inherited by the programs instr starts (O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(w)
        _worker(r)
        return
    os.close(r)
    _guard(pid)


def public_pid() -> int:
    """The pid the user knows this instr by: its guard's, or its own."""
    return _guard_pid if _guard_pid is not None else os.getpid()


def guard_of(pid: int) -> int:
    """The pid a user knows the instr process ``pid`` by: its parent when that
    is its guard (a fork of the same command line), else ``pid`` itself."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
        ppid = int(stat.rpartition(")")[2].split()[1])
        if Path(f"/proc/{ppid}/cmdline").read_bytes() == Path(f"/proc/{pid}/cmdline").read_bytes():
            return ppid
    except (OSError, ValueError, IndexError):
        pass
    return pid


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def _worker(r: int) -> None:
    global _guard_pid
    _guard_pid = os.getppid()
    # A stopping signal is a KeyboardInterrupt from the first moment on (not
    # only inside a run): one that killed the worker mid-injection would do
    # the very harm the split is for.
    from instr.signals import install_stopping

    install_stopping()
    threading.Thread(target=_watch, args=(r,), name="instr-guard", daemon=True).start()


def _watch(r: int) -> None:
    """Wait for the guard to go (the pipe's far end closes), then stop."""
    with contextlib.suppress(OSError):
        while os.read(r, 1):
            pass
    os.kill(os.getpid(), signal.SIGTERM)


def _guard(child: int) -> NoReturn:
    """Wait for the worker; pass signals on; end as it ended."""
    waited = {*FORWARDED, signal.SIGCHLD}
    for sig in FORWARDED:
        # SIG_IGN (a script's ``instr ... &``) would discard them, blocked or not.
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    with contextlib.suppress(OSError):  # hold no end of the worker's pipes and terminal
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
    while True:
        done, status = os.waitpid(child, os.WNOHANG)
        if done:
            _end_as(status)
        info = signal.sigwaitinfo(waited)
        if info.si_signo != signal.SIGCHLD and info.si_code != _SI_KERNEL:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, info.si_signo)


def _end_as(status: int) -> NoReturn:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        with contextlib.suppress(OSError, ValueError):  # SIGKILL has no handler to reset
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status))
