"""Following children (``instr run -F``, ``instr trace -F``; docs/follow.md).

Frida's child gating holds every process a followed process forks, and every
image one of them execs, before it runs; Frida then says ``child-added``.
Each such image gets its own agent through the one lifecycle
(``instr.lifecycle.Agent``): attach, the same plan, child gating again (its own
children), and only then is it resumed, so its probes are armed before its
code goes on (a forked child inside ``fork()``, an exec'ed image before its
``main``). Its messages reach the run's one dispatcher as their own source;
every agent leaves through ``Agent.leave``.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import frida

from instr import target as tgt
from instr.lifecycle import Agent, TargetProcess

Message = Callable[[dict[str, Any], bytes | None], None]


@dataclass
class Image:
    """One process image the run follows, and its agent."""

    key: int  # the dispatcher's source number (0: the root)
    pid: int
    agent: Agent | None = None
    detach_reason: str | None = None


class Children:
    """The images of a run that follows children; ``on_child`` is Frida's
    ``child-added`` handler. ``arm(agent)`` configures a loaded agent (raises
    when it cannot), ``on_message(key)`` makes an image's message handler,
    ``added(key, pid, parent, origin)`` registers an image before its agent
    loads, ``changed()`` runs when the run may be over, ``error(text)`` reports."""

    def __init__(
        self,
        proc: TargetProcess,
        arm: Callable[[Agent], None],
        on_message: Callable[[int], Message],
        added: Callable[[int, int, int | None, str], None],
        changed: Callable[[], None],
        error: Callable[[str], None],
        gate: bool = True,
    ) -> None:
        self.proc = proc
        self._gate = gate  # -F: each image's own children are held (not for --all alone)
        self._arm = arm
        self._on_message = on_message
        self._added = added
        self._changed = changed
        self._error = error
        self._lock = threading.Lock()
        self.images: list[Image] = []
        self.pending: set[int] = set()  # held by child gating, being armed
        self._replaced: Counter[int] = Counter()  # images that ended in an exec, by pid
        self._execs: Counter[int] = Counter()  # new images Frida announced, by pid
        self._stopped = False
        self._next_key = 0  # the root's is 0
        self.on_ended: Callable[[Image, str], None] | None = None  # --all: said at once

    def root(self, pid: int) -> Image:
        """The root's image (its agent is set once loaded)."""
        img = Image(0, pid)
        with self._lock:
            self.images.append(img)
        return img

    def listen(self) -> None:
        self.proc.device.on("child-added", self.on_child)

    def unlisten(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.device.off("child-added", self.on_child)

    # -- Frida's threads ---------------------------------------------------------

    def on_child(self, child: Any) -> None:
        with self._lock:
            if self._stopped:  # the run is leaving: let it go unfollowed
                self._resume(child.pid)
                return
            if child.origin != "exec" and (
                child.pid in self.pending or any(i.pid == child.pid for i in self.images)
            ):  # --all --watch attached to it first (its parent had died)
                self._resume(child.pid)
                return
            self.pending.add(child.pid)
            if child.origin == "exec":
                self._execs[child.pid] += 1
            self._next_key += 1
            key = self._next_key
        threading.Thread(target=self._adopt, args=(child, key), daemon=True).start()

    def detached(self, img: Image, reason: str) -> None:
        with self._lock:
            img.detach_reason = reason
            if reason == "process-replaced":
                self._replaced[img.pid] += 1  # its new image comes as a child (exec)
        if self.on_ended is not None:
            self.on_ended(img, reason)
        self._changed()

    def _adopt(self, child: Any, key: int) -> None:
        origin = "exec" if child.origin == "exec" else "fork"
        parent = child.pid if origin == "exec" else child.parent_pid
        if origin == "exec" and not self._known(child.pid):
            # posix_spawn (system(), popen()): Frida holds the child only at
            # its exec, and names it as its own parent
            origin, parent = "spawn", self._ppid(child.pid)
        try:
            self._load(key, child.pid, parent, origin)
        finally:  # the child is resumed even when it failed: never leave it held
            self._resume(child.pid)
            with self._lock:
                self.pending.discard(child.pid)
            self._changed()

    def attach(self, pid: int, parent: int | None) -> bool:
        """A running process the run attaches to (--all, docs/all.md): the
        same steps as a child's, on the caller's thread, with nothing to
        resume. False when it could not be attached (said as an error) or the
        run is leaving."""
        with self._lock:
            if self._stopped or pid in self.pending or any(i.pid == pid for i in self.images):
                return False
            self.pending.add(pid)
            self._next_key += 1
            key = self._next_key
        try:
            return self._load(key, pid, parent, "attach")
        finally:
            with self._lock:
                self.pending.discard(pid)
            self._changed()

    def _load(self, key: int, pid: int, parent: int | None, origin: str) -> bool:
        """Attach to image ``pid``, arm it, gate its children (-F)."""
        img = Image(key, pid)
        try:
            if origin != "attach":  # listed before it runs (an attach: once it is reached)
                self._added(key, pid, parent, origin)
            img.agent = Agent.load(
                self.proc,
                "instr",
                on_message=self._on_message(key),
                on_detached=lambda reason, crash: self.detached(img, reason),
                pid=pid,
            )
            if origin == "attach":
                self._added(key, pid, parent, origin)
            with self._lock:
                self.images.append(img)
            self._arm(img.agent)
            if self._gate:
                note = img.agent.gate_children()  # its own children, before it runs
                if note is not None:
                    self._error(note)
            return True
        except Exception as e:
            if origin != "attach" or not _gone(pid):  # --watch: gone first, as processes go
                verb = "attach to" if origin == "attach" else "follow"
                self._error(f"cannot {verb} pid {pid} ({origin}): {e}")
            if img.agent is not None:
                img.agent.leave()  # whatever was armed is reverted (docs/leaving.md)
                with self._lock:  # not waited for: the run ends without it
                    img.detach_reason = img.detach_reason or "not followed"
            return False

    def _known(self, pid: int) -> bool:
        with self._lock:
            return any(i.pid == pid for i in self.images)

    def _ppid(self, pid: int) -> int | None:
        if not self.proc.local:
            return None
        fields = tgt.proc_stat(pid)
        return (
            int(fields[1]) if fields is not None and fields[1:2] and fields[1].isdigit() else None
        )

    def _resume(self, pid: int) -> None:
        # A child already gone: Frida says NotSupported (instr/syscalls/monitor.py),
        # or "invalid PID" when the run's stop killed it while it was being armed
        with contextlib.suppress(
            frida.InvalidOperationError,
            frida.ProcessNotFoundError,
            frida.NotSupportedError,
            frida.InvalidArgumentError,
        ):
            self.proc.device.resume(pid)

    # -- the run -------------------------------------------------------------------

    def all_done(self) -> bool:
        """Every image has ended (or been left), none is being armed, and every
        exec has brought its new image."""
        with self._lock:
            if self.pending:
                return False
            if any(self._execs[pid] < n for pid, n in self._replaced.items()):
                return False
            return all(i.detach_reason is not None for i in self.images)

    def agent(self, key: int) -> Agent | None:
        with self._lock:
            for img in self.images:
                if img.key == key:
                    return img.agent
        return None

    def stop(self) -> list[int]:
        """No more adoptions; returns the pids still held (resumed here)."""
        with self._lock:
            self._stopped = True
            held = sorted(self.pending)
        for pid in held:
            self._resume(pid)
        self.unlisten()
        return held

    def live(self, root: bool = False) -> list[Image]:
        """The children whose agent is still attached (the root's too with ``root``)."""
        with self._lock:
            return [
                i
                for i in self.images
                if (root or i.key != 0) and i.detach_reason is None and i.agent is not None
            ]


def _gone(pid: int) -> bool:
    """Local process ``pid`` has ended (gone, or a zombie)."""
    fields = tgt.proc_stat(pid)
    return fields is None or fields[:1] == ["Z"]
