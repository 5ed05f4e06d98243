"""Waiting until Frida's agent has left a local process after a detach.

``Session.detach()`` returns before the target has finished unloading Frida's
agent: measured here, the agent image stays mapped 1-35 ms longer. A target
that calls ``exit()`` inside that window enters Frida's own hook on ``exit``
(frida-core's ExitMonitor), which waits for the agent's main loop to prepare
the exit; that loop has already stopped, so the process either hangs in
``exit()`` or, when the unload then unmaps the agent, dies with SIGSEGV in the
unmapped code it was waiting in (see docs/patching.md, "Leaving the process").
Waiting here until the image is gone means that whatever the caller does
next (a test that tells the target to exit, a user who stops it) happens
after Frida has left.

Only local processes can be checked (``/proc/PID/maps``); elsewhere there is
nothing to wait for.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from instr.target import proc_stat

_AGENT_IMAGE = re.compile(r"frida-agent-\w+\.so")
_POLL_S = 0.002


def agent_images(pid: int) -> frozenset[str]:
    """The Frida agent images mapped in local process ``pid``, as ``device:inode``.

    Empty when the process is gone or its maps cannot be read.
    """
    try:
        text = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return frozenset()
    found: set[str] = set()
    for line in text.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and _AGENT_IMAGE.search(fields[5]):
            found.add(f"{fields[3]}:{fields[4]}")
    return frozenset(found)


def gone(pid: int) -> bool:
    """Local process ``pid`` has ended (a zombie, or no longer there)."""
    fields = proc_stat(pid)
    return fields is None or fields[:1] in (["Z"], ["X"])


def threads(pid: int) -> frozenset[int]:
    """The thread ids of local process ``pid`` (empty when it is gone)."""
    try:
        return frozenset(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return frozenset()


def wait_unloaded(
    pid: int,
    images: frozenset[str],
    timeout_s: float = 10.0,
    tids: frozenset[int] = frozenset(),
) -> bool:
    """Wait until none of ``images`` is mapped in ``pid`` any more and none of
    the threads ``tids`` runs (or the process is gone); False if one still is
    or does after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while images & agent_images(pid) or tids & threads(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)
    return True


class AgentWatch:
    """The Frida agent images and threads one attach brings into a local
    process, to wait for them to leave after the detach (``wait``). The
    threads too: Frida's fds (its sockets, its eventfds) were seen still open
    just after the image was unmapped (in a CI run under load); its injected
    loader thread, the last of its threads to end, closes them. ``local``
    False: nothing to watch (a remote or USB device), and ``wait`` returns
    None at once.

        watch = AgentWatch(pid, local=True)
        session = device.attach(pid)
        watch.attached()
        ...
        session.detach()
        watch.wait()
    """

    def __init__(self, pid: int, local: bool) -> None:
        self.pid = pid
        self._before = (agent_images(pid), threads(pid)) if local else None
        self.images: frozenset[str] = frozenset()
        self.tids: frozenset[int] = frozenset()

    def attached(self) -> None:
        if self._before is not None:
            self.images = agent_images(self.pid) - self._before[0]
            self.tids = threads(self.pid) - self._before[1]

    def frida_threads(self, tids: object) -> None:
        """Narrow the threads to wait for to those the agent names as Frida's
        (its ``hello``): a program that starts threads of its own while Frida
        injects (redis-server's jemalloc starts four at the first attach) must
        not be waited for, for 10 s, as if they were Frida's."""
        if isinstance(tids, list) and tids:
            self.tids &= frozenset(int(t) for t in tids)

    def wait(self, timeout_s: float = 10.0) -> bool | None:
        """True once the images and threads are gone (or the process is),
        False after ``timeout_s``; None when there was nothing to watch."""
        if not self.images:
            return None
        return wait_unloaded(self.pid, self.images, timeout_s, self.tids)


def leave_bounded(
    leave: Callable[[], None],
    grace_s: float,
    pid: int | None,
    spawned: bool,
    kill: Callable[[], None],
) -> str | None:
    """Run ``leave`` (dispose, detach, wait for the agent) in a thread, but not
    for ever: an agent that no longer answers (a deadlock inside Frida at a
    spawned program's exit: docs/syscalls.md) gets ``grace_s``; then a program
    instr spawned is killed (``kill``), which ends its session, and ``leave``
    gets ``grace_s`` more. Returns the error to report, or None."""
    leaver = threading.Thread(target=leave, daemon=True)
    leaver.start()
    leaver.join(grace_s)
    if not leaver.is_alive():
        return None
    if spawned:
        kill()
    leaver.join(grace_s)
    return (
        f"instr's agent in pid {pid} stopped answering while instr was leaving"
        f" (a deadlock inside Frida, see docs/syscalls.md); instr {'killed' if spawned else 'left'} it"
    )


HELD_NOTE = (
    "{n} thread(s) of pid {pid} ({tids}) were blocked inside a hooked call when instr"
    " left; instr's agent stays in the process until they return from it, then unloads"
    " itself (docs/leaving.md)"
)
LEAVING_NOTE = (
    "a thread of pid {pid} was still inside a hooked call when instr left; instr's agent"
    " stays in the process until it returns from it, then unloads itself (docs/leaving.md)"
)
# Frida's detach completes once the agent has unloaded; with no thread inside
# a hook that takes milliseconds, but took over 3 s on a loaded machine (load
# average 8 on 2 cores), and a target that exits before it has finished meets
# Frida's exit hook half-unloaded. Bounded all the same: a thread the agent
# could not see inside a hook (one of Frida's own, blocked in a replace()d
# wrapper) holds it up.
DETACH_WAIT_S = 10.0


def held_threads(disposed: Any, key: str = "held") -> list[int]:
    """The program threads the agent's ``dispose`` found inside instr's code
    (agents/src/core/leave.ts: ``held``), or inside functions hooked with
    listeners or replace() (``waiting``, Gum counts them): the agent stays
    until they have left."""
    if not isinstance(disposed, dict):
        return []
    leave = disposed.get("leave")
    if not isinstance(leave, dict):
        return []
    return [int(t) for t in leave.get(key) or []]


def held_note(pid: int | None, held: list[int]) -> str:
    if not held:
        return LEAVING_NOTE.format(pid=pid)
    tids = ", ".join(f"tid {t}" for t in held[:8]) + (", ..." if len(held) > 8 else "")
    return HELD_NOTE.format(n=len(held), pid=pid, tids=tids)


def detach(session: Any, watch: AgentWatch | None, held: list[int]) -> bool | None:
    """Detach from a target whose agent was disposed.

    Frida's detach completes only once the script has unloaded, and the
    unload waits for every program thread inside a hook: those the agent
    holds (inside instr's own code) and those inside Frida's listeners and
    replace() trampolines, which Gum counts itself; ``held`` is both. Such a
    thread may be blocked for ever (read on an idle pipe), so with one the
    detach is started and not waited for: instr leaves, and the agent unloads
    itself once the thread returns. Without, it is waited for up to
    DETACH_WAIT_S. Returns False when the detach had not completed, else
    ``AgentWatch.wait``'s answer (None: nothing to watch)."""
    import frida

    def run() -> None:
        with contextlib.suppress(frida.InvalidOperationError, frida.TransportError):
            session.detach()

    detacher = threading.Thread(target=run, daemon=True)
    detacher.start()
    detacher.join(0.0 if held else DETACH_WAIT_S)
    if detacher.is_alive():
        return False
    # detach() returns before the agent has left the target; a target that
    # exits meanwhile hangs or crashes in Frida's exit hook (above).
    if watch is None:
        return None
    left = watch.wait()
    if left is False:
        raise Lingering(watch.pid)
    return left


class Lingering(Exception):
    """Frida's detach finished, but its image or threads were still in the
    process DETACH_WAIT_S later."""

    def __init__(self, pid: int) -> None:
        super().__init__(
            f"Frida's agent had not finished unloading from pid {pid} {DETACH_WAIT_S:.0f} s"
            " after instr detached; it goes on unloading by itself"
        )
