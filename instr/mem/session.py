"""A Frida session running the agent's memory tracker (not a probe session).

The Frida callback thread only queues messages; the caller's thread decodes,
symbolises (the ``symbolize`` RPC, which the agent serves even while it waits
at exit) and acknowledges the exit report so the target may finish exiting.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from dataclasses import dataclass
from typing import Any

import frida

from instr import target as tgt
from instr.agent import load_bundle
from instr.cbuild import object_for
from instr.errors import AgentError, TargetError
from instr.mem.model import Frame, MemReport, decode, symbolize_frames, wanted_stacks
from instr.protocol import PROTOCOL_VERSION
from instr.unload import AgentWatch, detach, held_threads

MAX_SYMBOLS = 50_000


@dataclass(frozen=True)
class MemOptions:
    max_live: int = 1 << 20  # tracked live blocks before new ones go uncounted (reported)
    max_maps: int = 1 << 14
    max_stacks: int = 1 << 16
    depth: int = 16
    cxx: bool = True
    mmap: bool = True
    compiler: str = "auto"  # who builds the hooks: auto | system (the host's compiler) | tinycc


class MemSession:
    def __init__(
        self,
        target: tgt.TargetSpec,
        device: tgt.DeviceSpec | None = None,
        options: MemOptions | None = None,
    ) -> None:
        self.target = target
        self.device_spec = device or tgt.DeviceSpec()
        self.options = options or MemOptions()
        self.pid: int | None = None
        self.process: str | None = None
        self.started: dict[str, Any] = {}
        self.errors: list[str] = []
        self._device: Any = None
        self._watch: AgentWatch | None = None
        self.held: list[int] = []  # threads inside a hook at the leave (docs/leaving.md)
        self._session: Any = None
        self._script: Any = None
        self._messages: queue.SimpleQueue[tuple[dict[str, Any], bytes | None]] = queue.SimpleQueue()
        self.ended = threading.Event()
        self.detach_reason: str | None = None
        self._symbols: dict[int, Frame] = {}

    def start(self) -> dict[str, Any]:
        self._device, self.pid = tgt.open_target(self.device_spec, self.target)
        if self.target.argv is not None:
            self.process = os.path.basename(self.target.argv[0])
        elif self.target.name is not None:
            self.process = self.target.name
        try:
            self._arm()
        except BaseException:
            self._abort()
            raise
        if self.process is None:
            self.process = self._process_name()
        return self.started

    def _process_name(self) -> str | None:
        with contextlib.suppress(Exception):
            for p in self._device.enumerate_processes(pids=[self.pid]):
                return str(p.name)
        return None

    def _arm(self) -> None:
        assert self.pid is not None
        self._watch = AgentWatch(self.pid, local=self.device_spec.kind == "local")
        self._session = tgt.attach(self._device, self.pid)
        self._watch.attached()
        self._session.on("detached", self._on_detached)
        try:
            self._script = self._session.create_script(load_bundle(), name="instr-mem")
            self._script.on("message", self._on_message)
            self._script.load()
            hello = self._script.exports_sync.hello()
        except (frida.InvalidOperationError, frida.TransportError) as e:
            raise TargetError(f"the target (pid {self.pid}) went away while loading: {e}") from e
        if hello.get("protocol") != PROTOCOL_VERSION:
            raise AgentError(
                f"agent speaks protocol {hello.get('protocol')}, host speaks {PROTOCOL_VERSION}"
            )
        o = self.options
        # The hooks' C built by the host's compiler where it can (instr/cbuild.py).
        built, why = object_for(self._script, "mem", self.device_spec.kind, o.compiler)
        options = {
            "max_live": o.max_live,
            "max_maps": o.max_maps,
            "max_stacks": o.max_stacks,
            "depth": o.depth,
            "mode": "spawn" if self.target.spawns else "attach",
            "cxx": o.cxx,
            "mmap": o.mmap,
            "compiler": o.compiler,
        }
        start = self._script.exports_sync.mem_start
        try:
            self.started = start(options) if built is None else start(options, built)
        except frida.RPCException as e:
            raise AgentError(f"cannot start memory tracking: {e}") from e
        if why is not None and not self.started.get("toolchain_error"):
            self.started["toolchain_error"] = why

    def resume(self) -> None:
        if self.target.spawns and self.pid is not None:
            try:
                self._device.resume(self.pid)
            except (frida.InvalidOperationError, frida.ProcessNotFoundError) as e:
                raise TargetError(f"cannot resume pid {self.pid}: {e}") from e

    # -- messages --------------------------------------------------------------

    def _on_message(self, message: dict[str, Any], data: bytes | None) -> None:
        self._messages.put((message, data))

    def _on_detached(self, reason: str, crash: Any) -> None:
        self.detach_reason = reason
        self.ended.set()
        self._messages.put(({"type": "detached", "reason": reason}, None))

    def next_report(self, timeout: float | None) -> MemReport | str | None:
        """The next report; "ended" when the session is gone; None on timeout."""
        try:
            message, data = self._messages.get(timeout=timeout)
        except queue.Empty:
            return None
        if message.get("type") == "detached":
            return "ended"
        if message.get("type") == "error":
            self.errors.append(str(message.get("description") or message.get("stack")))
            return self.next_report(0)
        payload = message.get("payload", {})
        if not isinstance(payload, dict):
            return self.next_report(0)
        if payload.get("type") == "mem-report" and data is not None:
            report = decode(payload, data)
            report.pid, report.process = self.pid, self.process
            return report
        if payload.get("type") == "error":
            self.errors.append(str(payload.get("message")))
        return self.next_report(0)

    def request(self, reason: str, oldest: int, scan: bool = False) -> int:
        """Ask for a report (delivered through ``next_report``); its token."""
        if self._script is None:
            raise TargetError("the session is not started")
        token: int = self._script.exports_sync.mem_report(
            {"scan": scan, "oldest": oldest, "reason": reason}
        )
        return token

    def symbolize(self, report: MemReport, top: int, everything: bool = False) -> None:
        """Resolve the frames of the stacks a report shows (all of them with ``everything``,
        up to MAX_SYMBOLS addresses)."""
        wanted = wanted_stacks(report, top)
        if everything:
            wanted |= {s.id for s in report.stacks if s.allocs or s.live_blocks or s.map_blocks}
        addrs = sorted(
            {a for sid in wanted for a in report.stacks[sid].addresses} - set(self._symbols)
        )
        addrs = addrs[:MAX_SYMBOLS]
        for i in range(0, len(addrs), 2000):
            chunk = [f"0x{a:x}" for a in addrs[i : i + 2000]]
            try:
                resolved = self._script.exports_sync.symbolize(chunk)
            except (frida.InvalidOperationError, frida.TransportError, frida.RPCException):
                break
            for key, (mod, sym, off) in resolved.items():
                a = int(key, 16)
                self._symbols[a] = Frame(a, mod, sym, int(off))
        symbolize_frames(report, self._symbols, wanted)

    def ack(self, token: int) -> None:
        if self._script is not None:
            with contextlib.suppress(frida.InvalidOperationError, frida.TransportError):
                self._script.post({"type": "mem-ack", "token": token})

    def stop(self, kill: bool) -> None:
        if self._script is not None and not self.ended.is_set():
            with contextlib.suppress(
                frida.InvalidOperationError, frida.TransportError, frida.RPCException
            ):
                self._script.exports_sync.mem_stop()
                # Every instrument's leave (agents/src/core/leave.ts): a thread
                # still inside a hook holds the agent until it returns.
                self.held = held_threads(self._script.exports_sync.dispose())
        if self._session is not None and not self.ended.is_set():
            # the agent leaves before the target may exit (instr/unload.py)
            detach(self._session, None if kill else self._watch, self.held)
        if kill and not self.ended.is_set() and self.pid is not None and self._device is not None:
            tgt.kill(self._device, self.pid)

    def _abort(self) -> None:
        if self._session is not None:
            with contextlib.suppress(frida.InvalidOperationError, frida.TransportError):
                self._session.detach()
        if self.target.spawns and self.pid is not None and self._device is not None:
            tgt.kill(self._device, self.pid)
