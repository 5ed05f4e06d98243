"""A Frida session running the agent's sampler (``agents/src/profile/``).

It plugs into the one lifecycle (``instr.lifecycle``): ``TargetProcess`` spawns
or attaches, ``Agent`` loads the bundle and leaves. The Frida callback thread
only queues messages; the caller's thread unwinds (``instr.profile.unwind``)
and symbolises through the agent while it is alive. At the process's exit
the agent's last batch is ``final``: the agent is being torn down and answers
no more calls, so addresses first seen there are named from the module's file
on this host (``instr.profile.elfsyms``), or keep a module+offset name.

The Python API for other instruments (a ``profile-N`` probe of the one-liner
language): ``ProfileSession(target).start(SamplerOptions(hz=99))``, then
``next_batch()`` gives raw samples and ``unwinder.walk(sample)`` their frames.
An instrument with a session of its own runs ``AgentSampler`` on that session's
agent instead (``instr dtrace``'s profile probes do).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import frida

from instr import target as tgt
from instr.errors import AgentError
from instr.lifecycle import Agent, Left, TargetProcess
from instr.profile.elfsyms import HostSymbols
from instr.profile.unwind import ModuleSpan, Sample, Unwinder, decode_samples

SYMBOL_CHUNK = 2000


@dataclass(frozen=True)
class SamplerOptions:
    hz: int = 99
    stack_bytes: int = 32 << 10  # stack copied per sample, from rsp up
    slots: int = 512  # ring slots in the target
    drain_ms: int = 20
    off_cpu: bool = False  # also sample threads blocked in system calls (wall time)


@dataclass
class Batch:
    samples: list[Sample]
    drops: int  # cumulative, in the target
    final: bool  # the process is exiting: the agent takes no more calls
    off_cpu: bool = False  # samples of blocked threads


class AgentSampler:
    """The sampler's calls and messages on an agent some session already loaded.

    ``rpc`` gives the agent's exports (``profileStart``... in agents/src/index.ts);
    ``post`` takes the agent's messages (on Frida's thread: it only queues).
    ``ProfileSession`` runs one on its own agent; ``instr dtrace``'s profile
    probes run one on the dtrace session's agent (``Session.tap``).
    """

    def __init__(self, rpc: Callable[[], Any]) -> None:
        self._get_rpc = rpc
        self.started: dict[str, Any] = {}
        self.errors: list[str] = []
        self.stats: dict[str, Any] = {}
        self.ended = threading.Event()
        self._messages: queue.SimpleQueue[tuple[dict[str, Any], bytes | None]] = queue.SimpleQueue()
        self._symbols: dict[int, tuple[str | None, str | None, int]] = {}
        self._host_symbols = HostSymbols()
        self.unwinder: Unwinder | None = None

    def start(self, options: SamplerOptions) -> dict[str, Any]:
        try:
            self.started = self._get_rpc().profile_start(asdict(options))
        except frida.RPCException as e:
            raise AgentError(f"cannot start the sampler: {e}") from e
        self.unwinder = Unwinder(self._modules, self._unwind_info)
        return self.started

    def _rpc(self) -> Any:
        return self._get_rpc()

    def _modules(self) -> list[ModuleSpan]:
        try:
            mods = self._rpc().profile_modules()
        except (frida.InvalidOperationError, frida.TransportError, frida.RPCException, AgentError):
            return []
        return [
            ModuleSpan(m["name"], m["path"], int(m["base"], 16), int(m["size"]), m.get("build_id"))
            for m in mods
        ]

    def _unwind_info(self, base: int) -> bytes | None:
        try:
            blob = self._rpc().profile_unwind_info(f"0x{base:x}")
        except (frida.InvalidOperationError, frida.TransportError, AgentError):
            return None  # the process has exited: walks through this module stop there
        except frida.RPCException as e:
            self.errors.append(f"unwind tables at 0x{base:x}: {e}")
            return None
        return bytes(blob) if blob else None

    def symbolize(
        self, addresses: set[int], ask_agent: bool = True
    ) -> dict[int, tuple[str | None, str | None, int]]:
        """[module, symbol, offset] of each address, cached: the agent's ``symbolize``
        while it answers (``ask_agent``), else the module's file on this host
        (``instr.profile.elfsyms``) when it is the one mapped. Addresses neither
        names are left out (they keep a module+offset name)."""
        wanted = sorted(a for a in addresses if a not in self._symbols)
        ask_agent = ask_agent and not self.ended.is_set()
        for i in range(0, len(wanted), SYMBOL_CHUNK) if ask_agent else ():
            chunk = [f"0x{a:x}" for a in wanted[i : i + SYMBOL_CHUNK]]
            try:
                got = self._rpc().symbolize(chunk)
            except (frida.InvalidOperationError, frida.TransportError, AgentError):
                break  # the process has exited: the host's files name the rest
            except frida.RPCException as e:
                self.errors.append(f"symbols: {e}")
                break
            for key, (mod, sym, off) in got.items():
                self._symbols[int(key, 16)] = (mod, sym, int(off))
        for a in wanted:
            if a not in self._symbols:
                named = self._from_file(a)
                if named is not None:
                    self._symbols[a] = named
        return {a: self._symbols[a] for a in addresses if a in self._symbols}

    def _from_file(self, address: int) -> tuple[str | None, str | None, int] | None:
        m = self.unwinder.module_at(address) if self.unwinder is not None else None
        if m is None:
            return None
        found = self._host_symbols.name(address, m.base, m.path, m.size, m.build_id)
        return None if found is None else (m.name, found[0], found[1])

    def post(self, message: dict[str, Any], data: bytes | None) -> None:
        self._messages.put((message, data))

    def detached(self) -> None:
        self.ended.set()
        self._messages.put(({"type": "detached"}, None))

    def next_batch(self, timeout: float | None) -> Batch | str | None:
        """The next batch of samples; "ended" once the session is gone; None on timeout."""
        try:
            message, data = self._messages.get(timeout=timeout)
        except queue.Empty:
            return None
        if message.get("type") == "detached":
            return "ended"
        if message.get("type") == "error":
            self.errors.append(str(message.get("description") or message.get("stack")))
            return self.next_batch(0)
        payload = message.get("payload")
        if not isinstance(payload, dict) or payload.get("type") != "profile":
            if isinstance(payload, dict) and payload.get("type") == "error":
                self.errors.append(str(payload.get("message")))
            return self.next_batch(0)
        count = int(payload.get("count", 0))
        off = bool(payload.get("off"))
        samples = list(decode_samples(data, count, off)) if data and count else []
        self.stats.update(drops=payload.get("drops", 0), samples=payload.get("samples", 0))
        return Batch(samples, int(payload.get("drops", 0)), bool(payload.get("final")), off)

    def stop(self) -> dict[str, Any] | None:
        """Stop the sampler; the agent sends what its ring still holds first."""
        if self.ended.is_set():
            return None
        with contextlib.suppress(
            frida.InvalidOperationError, frida.TransportError, frida.RPCException, AgentError
        ):
            stats = self._rpc().profile_stop()
            if isinstance(stats, dict):
                self.stats.update(stats)
                return stats
        return None


class ProfileSession:
    def __init__(
        self,
        target: tgt.TargetSpec,
        device: tgt.DeviceSpec | None = None,
    ) -> None:
        self.target = target
        self.device_spec = device or tgt.DeviceSpec()
        self.pid: int | None = None
        self.leave_note: str | None = None
        self.detach_reason: str | None = None
        self._proc: TargetProcess | None = None
        self._agent: Agent | None = None
        self.sampler = AgentSampler(self._rpc)

    # the sampler's state, under the names instr profile reads
    @property
    def started(self) -> dict[str, Any]:
        return self.sampler.started

    @property
    def errors(self) -> list[str]:
        return self.sampler.errors

    @property
    def stats(self) -> dict[str, Any]:
        return self.sampler.stats

    @property
    def ended(self) -> threading.Event:
        return self.sampler.ended

    @property
    def unwinder(self) -> Unwinder | None:
        return self.sampler.unwinder

    def start(self, options: SamplerOptions) -> dict[str, Any]:
        self._proc = TargetProcess.open(self.device_spec, self.target)
        self.pid = self._proc.pid
        try:
            # The sampler hooks no function, so another instr's hooks in the
            # process are no reason to refuse (docs/leaving.md, two sessions).
            self._agent = Agent.load(
                self._proc,
                "instr-profile",
                on_message=self.sampler.post,
                on_detached=self._on_detached,
                exclusive=False,
            )
            self.sampler.start(options)
        except BaseException:
            self._abort()
            raise
        return self.started

    def resume(self) -> None:
        if self._proc is not None:
            self._proc.resume()

    def _rpc(self) -> Any:
        if self._agent is None:
            raise AgentError("the profile session is not started")
        return self._agent.rpc

    def symbolize(
        self, addresses: set[int], ask_agent: bool = True
    ) -> dict[int, tuple[str | None, str | None, int]]:
        return self.sampler.symbolize(addresses, ask_agent)

    def _on_detached(self, reason: str, crash: Any) -> None:
        self.detach_reason = reason
        self.sampler.detached()

    def next_batch(self, timeout: float | None) -> Batch | str | None:
        return self.sampler.next_batch(timeout)

    # -- the end ---------------------------------------------------------------

    def stop_sampling(self) -> dict[str, Any] | None:
        """Stop the sampler; the agent sends what its ring still holds first."""
        if self._agent is None:
            return None
        return self.sampler.stop()

    def leave(self, kill: bool) -> Left | None:
        """Leave (instr/lifecycle.py); ``kill``: a spawned target dies too."""
        left = None
        if self._agent is not None and not self.ended.is_set():
            left = self._agent.leave(wait=not kill)
            self.leave_note = left.note
        if kill and not self.ended.is_set() and self._proc is not None:
            self._proc.kill()
        if self._proc is not None:
            self._proc.close()
        return left

    def exit_status(self) -> int | None:
        if self._proc is None:
            return None
        ending = self._proc.kernel_ending(wait_s=0.5)
        return None if ending is None else ending.status()

    def _abort(self) -> None:
        if self._proc is not None:
            self._proc.abandon(self._agent)
