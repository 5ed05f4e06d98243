"""A spawned program's own fd table while ``instr syscalls`` is attached
(agents/src/fdtable.ts; docs/syscalls.md, "Frida's threads and the fd table").

While Frida's threads share the program's fd table, the kernel takes a
reference on the file in every fd syscall (55-75 ns a write() here). The
agent gives the program's only thread a table of its own when it enters
main and, in Frida's table, closes the program's fds: those listed here
before Frida came in (Frida has fds it does not cloak, so nothing else tells
them apart).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import frida

SEPARATE = "the program's thread has its own fd table while instr is attached"
SHARED = "the fd table stays shared with Frida's threads: {}"
_RPC_ERRORS = (frida.InvalidOperationError, frida.TransportError, frida.RPCException)


def spawned_fds(pid: int) -> dict[int, str]:
    """A spawned program's fds, listed before Frida attaches: what it inherited.
    Frida's spawner leaks a memfd of its helper into the program: not the
    program's (the agent leaves it alone)."""
    out: dict[int, str] = {}
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for name in names:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if not link.startswith("/memfd:frida"):
            out[int(name)] = link
    return out


def why_shared(*, spawned: bool, follow: bool, complete: bool, listed: bool) -> str | None:
    """Why a program's table cannot be separated, or None when it can.

    Attached (-p): the only way onto the program's thread at a moment of
    instr's choosing, Process.runOnThread, hijacks it wherever it is. -F: a
    forked child's Frida would find its sockets covered. --complete: Stalker
    runs the program's code. Not listed: a remote device, whose fds from
    before Frida came in are not known here.
    """
    if not spawned:
        return "instr attached to the program (-p); only programs instr spawns get their own"
    if follow:
        return "not with -F"
    if complete:
        return "not with --complete"
    if not listed:
        return "the program's fds could not be listed before Frida came in (not a local device)"
    return None


def separate_at_main(script: Any, before: dict[int, str], say: Callable[[str], None]) -> None:
    """Arm the agent to separate the tables when the program's first thread
    enters main (a spawned program is held: its thread cannot be reached now);
    the outcome comes as an ``fds`` message (told())."""
    program = [{"fd": fd, "target": link} for fd, link in sorted(before.items())]
    try:
        got = script.exports_sync.fds_separate_at_main(program)
    except _RPC_ERRORS as e:
        got = {"waiting": False, "reason": str(e)}
    if not got.get("waiting"):
        say(SHARED.format(got.get("reason")))


def told(outcome: dict[str, Any], say: Callable[[str], None]) -> None:
    """An ``fds`` message: how separating at main went."""
    if outcome.get("separate"):
        say(SEPARATE)
    else:
        say(SHARED.format(outcome.get("reason")))
