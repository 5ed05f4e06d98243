"""The program's own fd table while ``instr syscalls`` is attached
(agents/src/fdtable.ts; docs/syscalls.md, "Frida's threads and the fd table").

While Frida's threads share the program's fd table, the kernel takes a
reference on the file in every fd syscall (55-75 ns a write() here). The
agent gives the program's only thread a table of its own and, in Frida's
table, closes the program's fds: those listed here before Frida came in
(Frida has fds it does not cloak, so nothing else tells them apart).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import frida

SEPARATE = (
    "the program's thread has its own fd table while instr is attached"
    " (--shared-fds keeps the shared one)"
)
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
        say(SEPARATE)
        return True
    say(f"the fd table stays shared with Frida's threads: {got.get('reason')}")
    return False


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


def separate_at_main(script: Any, before: dict[int, str], say: Callable[[str], None]) -> bool:
    """For a spawned program (held: its thread cannot be reached before it
    runs): the agent separates the tables when the first thread enters main
    and sends the outcome as an ``fds`` message (told())."""
    program = [{"fd": fd, "target": link} for fd, link in sorted(before.items())]
    try:
        got = script.exports_sync.fds_separate_at_main(program)
    except _RPC_ERRORS as e:
        got = {"waiting": False, "reason": str(e)}
    if got.get("waiting"):
        return True  # told() says how it went
    say(f"the fd table stays shared with Frida's threads: {got.get('reason')}")
    return False


def told(outcome: dict[str, Any], say: Callable[[str], None]) -> None:
    """An ``fds`` message: how separating at main went."""
    if outcome.get("separate"):
        say(SEPARATE)
    else:
        say(f"the fd table stays shared with Frida's threads: {outcome.get('reason')}")


def release(script: Any) -> str | None:
    """Close what separate() left in the program's table (Frida's fds); says how
    separate_at_main() went if it failed; an error message when fds stay."""
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
