"""The program's own fd table while ``instr syscalls`` is attached
(agents/src/fdtable.ts; docs/syscalls.md, "Frida's threads and the fd table").

While Frida's threads share the program's fd table, the kernel takes a
reference on the file in every fd syscall (55-75 ns a write() here). The
agent gives the program's only thread a table of its own and, in Frida's
table, closes the program's fds: those listed here before Frida came in
(Frida has fds it does not cloak, so nothing else tells them apart).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import frida

_RPC_ERRORS = (frida.InvalidOperationError, frida.TransportError, frida.RPCException)


def stopped(pid: int) -> bool:
    """Whether a local process is stopped (state T: SIGSTOP; t: a tracer's stop)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in ("T", "t")
    except (OSError, IndexError):
        return False


def separate(script: Any, pid: int, before: dict[int, str], say: Callable[[str], None]) -> bool:
    """Ask the agent to separate the tables; ``before``: fd -> /proc link, listed
    before attaching. Says what happened; True when separated."""
    if stopped(pid):
        # runOnThread would wait for the thread to run: arming would hang.
        say("the fd table stays shared with Frida's threads: the program is stopped")
        return False
    program = [{"fd": fd, "target": link} for fd, link in sorted(before.items())]
    try:
        got = script.exports_sync.fds_separate(program)
    except _RPC_ERRORS as e:
        got = {"separate": False, "reason": str(e)}
    if got.get("separate"):
        say(
            "the program's thread has its own fd table while instr is attached"
            " (--shared-fds keeps the shared one)"
        )
        return True
    say(f"the fd table stays shared with Frida's threads: {got.get('reason')}")
    return False


def release(script: Any) -> str | None:
    """Close what separate() left in the program's table (Frida's fds); an error
    message when some stay."""
    try:
        got = script.exports_sync.fds_release()
    except _RPC_ERRORS:
        return None  # the target has gone, and its table with it
    left = got.get("left") or []
    if not left:
        return None
    return (
        f"{len(left)} fd(s) of Frida's stay in the program's fd table"
        f" (not provably the same files any more): {', '.join(map(str, left))}"
    )
