"""The one lifecycle every command uses: a target process, and instr's agent in it.

    proc = TargetProcess.open(DeviceSpec(), TargetSpec(pid=1234))   # or argv: spawned, suspended
    agent = Agent.load(proc, "instr", on_message=handle)            # attach, load, hello
    agent.rpc.configure(plan)                                       # the instrument's own calls
    proc.resume()
    ...
    left = agent.leave()      # dispose (every instrument reverts; held threads), bounded detach
    proc.close()

Instruments (probes: ``instr.session``; syscalls: ``instr.syscalls.monitor``;
``instr.mem``; ``instr.patch``; peek and poke) plug into these two and
repeat none of it: spawning or attaching, loading the agent and checking its
protocol, resuming, how a process ended when its agent could not say, and
leaving safely and in bounded time (docs/leaving.md) live here.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import frida

from instr import target as tgt
from instr.agent import load_bundle
from instr.errors import AgentError, TargetError
from instr.events import Ending
from instr.guard import guard_of
from instr.leftover import AttachRecord
from instr.protocol import PROTOCOL_VERSION
from instr.signals import deferred
from instr.unload import AgentWatch, Lingering, detach, gone, held_note, held_threads

Message = Callable[[dict[str, Any], bytes | None], None]
Detached = Callable[[str, Any], None]


class TargetProcess:
    """A process instr spawned (suspended until ``resume``) or attached to."""

    def __init__(
        self, device: Any, device_spec: tgt.DeviceSpec, spec: tgt.TargetSpec, pid: int
    ) -> None:
        self.device = device
        self.device_spec = device_spec
        self.spec = spec
        self.pid = pid
        self.resumed = False
        # A spawned local program's pidfd: how it ended when no agent can say (SIGKILL).
        self._pidfd = tgt.open_pidfd(device_spec, spec, pid)

    @classmethod
    def open(cls, device_spec: tgt.DeviceSpec, spec: tgt.TargetSpec) -> TargetProcess:
        with deferred():  # Frida's spawn, too, is not to be cut short (instr.signals)
            device, pid = tgt.open_target(device_spec, spec)
        return cls(device, device_spec, spec, pid)

    @property
    def spawned(self) -> bool:
        return self.spec.spawns

    @property
    def local(self) -> bool:
        return self.device_spec.kind == "local"

    def resume(self) -> None:
        """Let a spawned program run (once); nothing for an attached one."""
        if not self.spawned or self.resumed:
            return
        self.resumed = True
        try:
            self.device.resume(self.pid)
        except (frida.InvalidOperationError, frida.ProcessNotFoundError) as e:
            raise TargetError(f"cannot resume pid {self.pid}: {e}") from e

    def input(self, data: bytes) -> None:
        """Write to the stdin of a program spawned with ``stdio="pipe"``."""
        try:
            self.device.input(self.pid, data)
        except (frida.InvalidOperationError, frida.ProcessNotFoundError) as e:
            raise TargetError(f"cannot write to pid {self.pid}: {e}") from e

    def kill(self) -> None:
        tgt.kill(self.device, self.pid)

    def kernel_ending(self, wait_s: float = 1.0) -> Ending | None:
        """How a program instr spawned ended, from the kernel (its pidfd), once
        Frida has reaped it; None for an attached process or where the kernel
        cannot say."""
        if self._pidfd is None:
            return None
        status = tgt.exit_status(self._pidfd, wait_s=wait_s)
        return None if status is None else Ending.from_wait_status(status)

    def close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def abandon(self, agent: Agent | None) -> None:
        """Undo a half-started session: the agent detaches without disposing, a
        spawned program is killed (it never ran, or ran only under a broken
        start), and the process is closed."""
        if agent is not None:
            agent.abandon()
        if self.spawned:
            self.kill()
        self.close()


@dataclass
class Left:
    """How a leave went (docs/leaving.md)."""

    held: list[int]  # program threads inside instr's code: the agent stays until they return
    done: bool | None  # the agent had unloaded; False: still leaving; None: not watched
    died: bool = False  # the target ended while the agent was leaving it
    note: str | None = None  # what to tell the user when the agent stays behind


class Agent:
    """instr's agent in one process, from the attach to the leave."""

    child = False  # a followed child's (-F), not the target's: its end is not the pidfd's

    def __init__(self, proc: TargetProcess, pid: int) -> None:
        self.proc = proc
        self.pid = pid
        self.session: Any = None
        self.script: Any = None
        self.hello: dict[str, Any] = {}
        self.ended = threading.Event()
        self.detach_reason: str | None = None
        self.crash: Any = None
        self.watch = AgentWatch(pid, local=proc.local)
        self.record: AttachRecord | None = None  # local: instr.leftover

    @classmethod
    def load(
        cls,
        proc: TargetProcess,
        name: str,
        on_message: Message | None = None,
        on_detached: Detached | None = None,
        pid: int | None = None,
        exclusive: bool = True,
    ) -> Agent:
        """Attach to ``pid`` (the target's by default: a forked child's under
        child gating), load the agent bundle and check its protocol."""
        agent = cls(proc, proc.pid if pid is None else pid)
        agent.child = agent.pid != proc.pid
        _loaded.add(agent)
        agent._load(name, on_message, on_detached, exclusive)
        return agent

    def _load(
        self,
        name: str,
        on_message: Message | None,
        on_detached: Detached | None,
        exclusive: bool = True,
    ) -> None:
        if self.proc.local:
            if exclusive:
                refuse_if_armed(self.pid)
            self.record = AttachRecord.take(self.pid)
        with deferred():  # a stop waits for Frida's injection to finish (instr.signals)
            self._attach(name, on_message, on_detached)

    def _attach(self, name: str, on_message: Message | None, on_detached: Detached | None) -> None:
        self.session = tgt.attach(self.proc.device, self.pid)
        self.watch.attached()

        def detached(reason: str, crash: Any) -> None:
            self.detach_reason = reason
            self.crash = crash
            self.ended.set()
            if on_detached is not None:
                on_detached(reason, crash)

        self.session.on("detached", detached)
        try:
            self.script = self.session.create_script(load_bundle(), name=name)
            self.script.on("message", on_message or (lambda message, data: None))
            self.script.load()
            self.hello = self.script.exports_sync.hello(os.getpid())
        except (frida.InvalidOperationError, frida.TransportError) as e:
            raise TargetError(
                f"the target (pid {self.pid}) ended before the agent loaded: {e}"
            ) from e
        self.watch.frida_threads(self.hello.get("frida_threads"))
        if self.hello.get("protocol") != PROTOCOL_VERSION:
            raise AgentError(
                f"agent speaks protocol {self.hello.get('protocol')}, host speaks {PROTOCOL_VERSION}",
                hint="reinstall instr so that agent and host match",
            )

    @property
    def rpc(self) -> Any:
        return self.script.exports_sync

    def post(self, message: dict[str, object]) -> None:
        """A message to the agent; a target that is already gone cannot take it."""
        if self.script is not None:
            with contextlib.suppress(frida.InvalidOperationError, frida.TransportError):
                self.script.post(message)

    def dispose(self) -> dict[str, Any] | None:
        """Every instrument in the agent reverts its hooks (agents/src/index.ts);
        None when the agent could not be reached."""
        if self.script is None or self.ended.is_set():
            return None
        with contextlib.suppress(
            frida.InvalidOperationError, frida.TransportError, frida.RPCException
        ):
            result = self.rpc.dispose()
            return result if isinstance(result, dict) else {}
        return None

    def leave(self, disposed: dict[str, Any] | None = None, wait: bool = True) -> Left:
        """Dispose (unless ``disposed`` is its answer already), then detach
        within a bounded time; ``wait``: also wait for Frida's agent to be gone
        from a local process before returning, when it can leave at once (a
        target told to exit right after must not meet it half-unloaded)."""
        if disposed is None:
            disposed = self.dispose()
        if os.environ.get("INSTR_DEBUG", "") not in ("", "0") and disposed is not None:
            # --debug: what the agent's leave did (core/leave.ts, core/hooks.ts)
            print(
                f"instr: debug: leave of pid {self.pid}: {disposed.get('leave')}", file=sys.stderr
            )
        try:
            return self._leave(disposed, wait)
        finally:
            self._release()

    def _leave(self, disposed: dict[str, Any] | None, wait: bool) -> Left:
        held = held_threads(disposed)
        blocked = list(dict.fromkeys(held + held_threads(disposed, "waiting")))
        if self.session is None or self.ended.is_set():
            return Left(held=held, done=None)
        try:
            done = detach(self.session, self.watch if wait else None, blocked)
        except Lingering as e:
            _staying.add(self.pid)
            return Left(held=held, done=False, note=str(e))
        if done is False:
            _staying.add(self.pid)
            return Left(held=held, done=False, note=held_note(self.pid, blocked))
        died = wait and bool(self.watch.images) and gone(self.pid)
        return Left(held=held, done=done, died=died)

    def _release(self) -> None:
        if self.record is not None:
            self.record.release()

    def gate_children(self, bound_s: float = 2.0) -> str | None:
        """Frida's child gating, in force when this returns: its fork() hook is
        written only when the agent's JS leaves its current scope, so a fork()
        made right after enable_child_gating() returned could go ungated (a
        child missed, 1 run in about 30 under load). The agent reads fork()'s
        first bytes before and then after, from a new scope each time
        (agents/src/core/gating.ts). Returns what to tell the user when the
        hook was not seen within ``bound_s``."""
        before = self.rpc.fork_prologue()
        self.session.enable_child_gating()
        if before is None or _jumps(before):
            return None  # no fork(), or hooked already (gating was on)
        deadline = time.monotonic() + bound_s
        while time.monotonic() < deadline:
            if self.rpc.fork_prologue() != before:
                return None
            time.sleep(0.001)  # a poll of the target, bounded; not a test's wait
        return (
            f"pid {self.pid}: Frida's fork() hook was not in place after {bound_s:.0f} s;"
            " a child forked before it is not followed"
        )

    def abandon(self) -> None:
        """Detach without disposing: a half-loaded agent, or a process being torn down."""
        if self.session is not None:
            with contextlib.suppress(frida.InvalidOperationError, frida.TransportError):
                self.session.detach()
        self._release()

    def ending(self) -> Ending | None:
        """How the process ended when its agent could not say (SIGKILL, a lost
        device), from Frida's detach reason and the kernel; None while attached."""
        reason = self.detach_reason
        if reason is None or reason == "application-requested":
            return None
        if self.crash is not None:
            summary = getattr(self.crash, "summary", None) or str(self.crash)
            return Ending("crash", signal=str(summary))
        if reason == "process-terminated":
            if self.child:  # the pidfd is the root's
                return Ending("killed")
            return self.proc.kernel_ending() or Ending("killed")
        if reason == "process-replaced":
            return Ending("exec")
        return Ending("lost", signal=reason)


def _jumps(prologue: str) -> bool:
    """Code that starts with an x86 jump (Gum's hook: ``jmp rel32`` or
    ``jmp [rip]``); other architectures wait for the bytes to change."""
    return prologue.startswith(("e9", "ff25"))


_loaded: weakref.WeakSet[Agent] = weakref.WeakSet()


def lost_target(wait_s: float = 1.0) -> str | None:
    """What became of the target when an agent went away under instr (the
    program crashed while hooks were armed, or was killed): for the message
    of an error that Frida words as "script has been destroyed". Frida's
    detach notice may come just after the failed call: waits up to WAIT_S."""
    for agent in list(_loaded):
        if agent.script is None:
            continue
        agent.ended.wait(wait_s)
        ending = agent.ending()
        if ending is not None:
            return f"{ending.describe()} (pid {agent.pid}); its agent went with it"
    return None


# Frida's injector finishes a leave after the detach has returned: when the
# agent's loader thread says goodbye, it stops that thread with ptrace and
# frees the loader's pages in the target. A host that exits in the middle of
# that leaves the target stopped with half-restored registers (a SIGSEGV at
# pc 0x320 was seen that way). Closing the device manager waits for it.
FRIDA_RELEASE_S = 5.0
# With an agent left behind for a blocked thread, closing waits for that
# agent, which says goodbye only when the thread returns: a short bound then.
FRIDA_RELEASE_STAYING_S = 0.3
_staying: set[int] = set()  # pids whose agent stays after instr's leave


def release_frida(timeout_s: float = FRIDA_RELEASE_S) -> None:
    """Let Frida finish whatever it still does in a target before instr exits
    (bounded: an agent that stays for a blocked thread says goodbye later,
    to nobody, and needs nothing from the host). Nothing when Frida was never
    loaded."""
    import sys

    frida = sys.modules.get("frida")
    if frida is None:
        return

    def close() -> None:
        with contextlib.suppress(Exception):
            frida.shutdown()

    closer = threading.Thread(target=close, name="instr-release-frida", daemon=True)
    closer.start()
    closer.join(min(timeout_s, FRIDA_RELEASE_STAYING_S) if _staying else timeout_s)


_ARMED_MARK = re.compile(r"/memfd:instr-armed-by-(\d+)")


def armed_by(pid: int) -> list[int]:
    """The pids of live instr hosts whose agent has hooks armed in local
    process ``pid`` (their mark in its maps: agents/src/core/marker.ts). A
    mark whose host is gone (instr killed) is its agent's last moments."""
    try:
        text = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return []
    hosts = sorted({int(m[1]) for m in _ARMED_MARK.finditer(text)})
    return [h for h in hosts if h != os.getpid() and Path(f"/proc/{h}").exists()]


def refuse_if_armed(pid: int) -> None:
    """Refuse a second instr with hooks in a process another instr traces:
    two sets of hooks on the same functions can crash the program when they
    leave in the other order (docs/leaving.md)."""
    hosts = armed_by(pid)
    if hosts:
        other = guard_of(hosts[0])  # the pid its user knows it by (instr.guard)
        raise TargetError(
            f"pid {pid} is already traced by instr (pid {other}), whose hooks are armed;"
            " a second set of hooks could crash it when the two leave",
            hint=f"stop the other instr first (kill -INT {other})",
        )
