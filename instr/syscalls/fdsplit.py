"""The program's own fd table while ``instr syscalls`` is attached
(agents/src/syscalls/fdtable.ts; docs/syscalls.md, "Frida's threads and the fd table").

While Frida's threads share the program's fd table, the kernel takes a
reference on the file in every fd syscall (55-75 ns a write() here). The
agent arms the monitor's C so that the program's only thread gives itself a
table of its own in its next hooked call, and then closes the program's fds
in Frida's table. The outcome comes as an ``fds`` message (told()).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import frida

SEPARATE = "the program's thread has its own fd table while instr is attached"
SHARED = "the fd table stays shared with Frida's threads: {}"
_RPC_ERRORS = (frida.InvalidOperationError, frida.TransportError, frida.RPCException)


def why_shared(*, spawned: bool, asked: bool | None, follow: bool, complete: bool) -> str | None:
    """Why the table is left shared, or None to separate it.

    Attached (-p) only when asked (--own-fds): when instr leaves a program
    that goes on running, Frida's eventfds and the /dev/null covers stay in
    its table (only its thread could close them). -F: a forked child's Frida
    would find its sockets covered. --complete: Stalker runs the program's
    code, and the hooks that do the work are not there.
    """
    if asked is False:
        return "--shared-fds"
    if follow:
        return "not with -F"
    if complete:
        return "not with --complete"
    if not spawned and not asked:
        return "instr attached to the program (-p): only with --own-fds"
    return None


def separate(script: Any) -> str | None:
    """Arm the program's next hooked call to separate the tables; the outcome
    comes as an ``fds`` message (told()). Why not, when it cannot be armed."""
    try:
        got = script.exports_sync.fds_separate()
    except _RPC_ERRORS as e:
        return str(e)
    return None if got.get("waiting") else str(got.get("reason"))


def told(outcome: dict[str, Any], say: Callable[[str], None]) -> None:
    """An ``fds`` message: how separating went."""
    if outcome.get("separate"):
        say(SEPARATE)
    else:
        say(SHARED.format(outcome.get("reason")))
