"""A controller for live patches in one process: apply, list, persist, revert.

    with PatchController(TargetSpec(pid=1234)) as ctl:
        entries = ctl.apply(parse_quick(ret=("demo!compute=0",)))
        ...
    # leaving the block reverts what this controller applied and checks the bytes

``persist()`` instead leaves the patches in place: the agent script is
eternalized, and a later controller finds them through the in-target ledger.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Literal

import frida

from instr import target as tgt
from instr.agent import load_bundle
from instr.errors import AgentError, TargetError
from instr.patch.model import LedgerEntry, PatchError, PatchSpec, RevertResult
from instr.protocol import PROTOCOL_VERSION
from instr.unload import AgentWatch, detach, held_threads

_FRIDA_GONE = (frida.InvalidOperationError, frida.TransportError, frida.ProcessNotFoundError)


def _agent_message(e: Exception) -> str:
    """The agent's error without its JavaScript stack; TinyCC messages span several lines."""
    lines = [ln for ln in str(e).splitlines() if not ln.lstrip().startswith("at ")]
    return "\n".join(lines).removeprefix("Error: ").strip()


class PatchController:
    """One Frida session on one target, with the agent loaded for patching."""

    def __init__(self, target: tgt.TargetSpec, device: tgt.DeviceSpec | None = None) -> None:
        self.target = target
        self.device_spec = device or tgt.DeviceSpec()
        self.pid: int | None = None
        self.persisted = False
        self._device: Any = None
        self._session: Any = None
        self._script: Any = None
        self._ended = threading.Event()
        self._resumed = False
        self._closed = False
        # Frida agent images this controller brought into a local target (see instr/unload.py).
        self._watch: AgentWatch | None = None  # the agent this controller brought (instr/unload.py)
        self.agent_left: bool | None = None  # after close(): the agent had unloaded in time
        self.held: list[int] = []  # threads inside a hook at the leave (docs/leaving.md)

    # -- lifecycle ------------------------------------------------------------

    def open(self) -> int:
        """Spawn (suspended) or attach, and load the agent. Returns the pid."""
        self._device, self.pid = tgt.open_target(self.device_spec, self.target)
        try:
            self._load()
        except BaseException:
            self._abandon()
            raise
        return self.pid

    def _load(self) -> None:
        assert self.pid is not None
        self._watch = AgentWatch(self.pid, local=self.device_spec.kind == "local")
        self._session = tgt.attach(self._device, self.pid)
        self._session.on("detached", lambda reason, crash: self._ended.set())
        try:
            self._script = self._session.create_script(load_bundle(), name="instr-patch")
            self._script.on("message", lambda message, data: None)
            self._script.load()
            self._watch.attached()
            hello = self._script.exports_sync.hello()
        except (frida.InvalidOperationError, frida.TransportError) as e:
            raise TargetError(f"lost pid {self.pid} while loading the agent: {e}") from e
        if hello.get("protocol") != PROTOCOL_VERSION:
            raise AgentError(
                f"agent speaks protocol {hello.get('protocol')}, host speaks {PROTOCOL_VERSION}"
            )

    def _abandon(self) -> None:
        if self._session is not None:
            with contextlib.suppress(*_FRIDA_GONE):
                self._session.detach()
        if self.target.spawns and self.pid is not None and self._device is not None:
            tgt.kill(self._device, self.pid)

    def _call(self, method: str, *args: Any) -> Any:
        if self._script is None:
            raise TargetError("the patch controller is not open")
        try:
            return getattr(self._script.exports_sync, method)(*args)
        except frida.RPCException as e:
            raise PatchError(_agent_message(e)) from None
        except _FRIDA_GONE as e:
            raise TargetError(f"lost pid {self.pid}: {e}") from e

    # -- patches --------------------------------------------------------------

    def apply(self, specs: Sequence[PatchSpec]) -> list[LedgerEntry]:
        """Apply all specs or none; returns the new ledger entries."""
        raw = self._call("patch_apply", [s.to_plan() for s in specs])
        return [LedgerEntry.from_agent(e) for e in raw]

    def ledger(self) -> list[LedgerEntry]:
        """Every patch in the target's ledger, whoever made it."""
        return [LedgerEntry.from_agent(e) for e in self._call("patch_list")]

    def revert(self, ids: Sequence[int] | Literal["all"]) -> list[RevertResult]:
        arg: Any = "all" if ids == "all" else list(ids)
        return [RevertResult.from_agent(r) for r in self._call("patch_revert", arg)]

    def persist(self) -> list[LedgerEntry]:
        """Keep this controller's patches after it leaves; detaches."""
        entries = [LedgerEntry.from_agent(e) for e in self._call("patch_persist")]
        try:
            self._script.eternalize()
        except _FRIDA_GONE as e:
            raise TargetError(
                f"lost pid {self.pid} while making the patches persistent: {e}"
            ) from e
        self.persisted = True
        return entries

    # -- running --------------------------------------------------------------

    def resume(self) -> None:
        if self.target.spawns and not self._resumed and self.pid is not None:
            self._resumed = True
            try:
                self._device.resume(self.pid)
            except (frida.InvalidOperationError, frida.ProcessNotFoundError) as e:
                raise TargetError(f"cannot resume pid {self.pid}: {e}") from e

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the target ends (or the session is lost); False on timeout."""
        return self._ended.wait(timeout)

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    def close(self) -> list[RevertResult]:
        """Revert this controller's patches (unless persisted), verify them, detach,
        and wait (up to 10 s) until Frida's agent has left a local target."""
        if self._closed:
            return []
        self._closed = True
        results: list[RevertResult] = []
        if self._script is not None and not self._ended.is_set() and not self.persisted:
            with contextlib.suppress(*_FRIDA_GONE):
                raw = self._script.exports_sync.patch_revert_owned()
                results = [RevertResult.from_agent(r) for r in raw]
            # Every instrument's leave (agents/src/core/leave.ts): a thread
            # still inside a replacement holds the agent until it returns.
            with contextlib.suppress(*_FRIDA_GONE, frida.RPCException):
                self.held = held_threads(self._script.exports_sync.dispose())
        if self._session is not None and not self._ended.is_set():
            watch = self._watch if self._watch is not None and not self.persisted else None
            self.agent_left = detach(self._session, watch, self.held)
        return results

    def __enter__(self) -> PatchController:
        if self._script is None:
            self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
