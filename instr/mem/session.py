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
from instr.cbuild import object_for
from instr.errors import AgentError, TargetError
from instr.lifecycle import Agent, TargetProcess
from instr.mem.model import Frame, MemReport, decode, symbolize_frames, wanted_stacks

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
    # Count the calls made on Frida's and instr's own threads too (left out by default).
    include_tool: bool = False


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
        self._proc: TargetProcess | None = None
        self._agent: Agent | None = None
        self._script: Any = None
        self.held: list[int] = []  # threads inside a hook at the leave (docs/leaving.md)
        self.leave_note: str | None = None  # when the agent stays for them
        self._messages: queue.SimpleQueue[tuple[dict[str, Any], bytes | None]] = queue.SimpleQueue()
        self.ended = threading.Event()
        self.detach_reason: str | None = None
        self._symbols: dict[int, Frame] = {}

    def start(self) -> dict[str, Any]:
        self._proc = TargetProcess.open(self.device_spec, self.target)
        self.pid = self._proc.pid
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
            assert self._proc is not None
            for p in self._proc.device.enumerate_processes(pids=[self.pid]):
                return str(p.name)
        return None

    def _arm(self) -> None:
        assert self._proc is not None
        self._agent = Agent.load(
            self._proc, "instr-mem", on_message=self._on_message, on_detached=self._on_detached
        )
        self._script = self._agent.script
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
            "include_tool": o.include_tool,
        }
        start = self._script.exports_sync.mem_start
        try:
            self.started = start(options) if built is None else start(options, built)
        except frida.RPCException as e:
            raise AgentError(f"cannot start memory tracking: {e}") from e
        if why is not None and not self.started.get("toolchain_error"):
            self.started["toolchain_error"] = why

    def resume(self) -> None:
        if self._proc is not None:
            self._proc.resume()

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

    def request(self, reason: str, oldest: int, scan: bool = False) -> int | None:
        """Ask for a report (delivered through ``next_report``); its token, or None when the
        target is gone (it exited between two reports: its exit report came or comes first)."""
        if self._script is None:
            raise TargetError("the session is not started")
        try:
            token: int = self._script.exports_sync.mem_report(
                {"scan": scan, "oldest": oldest, "reason": reason}
            )
        except (frida.InvalidOperationError, frida.TransportError):
            return None
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
        if self._agent is not None:
            self._agent.post({"type": "mem-ack", "token": token})

    def stop(self, kill: bool) -> None:
        """Stop tracking and leave (instr/lifecycle.py); ``kill``: a spawned target dies too."""
        agent = self._agent
        if agent is not None and not self.ended.is_set():
            with contextlib.suppress(
                frida.InvalidOperationError, frida.TransportError, frida.RPCException
            ):
                agent.rpc.mem_stop()
            left = agent.leave(wait=not kill)
            self.held, self.leave_note = left.held, left.note
        if kill and not self.ended.is_set() and self._proc is not None:
            self._proc.kill()
        if self._proc is not None:
            self._proc.close()

    def _abort(self) -> None:
        if self._proc is not None:
            self._proc.abandon(self._agent)
