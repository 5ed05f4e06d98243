"""A controller for live patches in one process: apply, list, persist, revert.

    with PatchController(TargetSpec(pid=1234)) as ctl:
        entries = ctl.apply(parse_quick(ret=("demo!compute=0",)))
        ...
    # leaving the block reverts what this controller applied and checks the bytes

``persist()`` instead leaves the patches in place, and a later controller
finds them through the in-target ledger. Code writes (``--ret``/``--skip``
stubs, ``--bytes``, ``--nop``) need nothing of the agent, which then leaves as
after any run; only Interceptor hooks keep the agent script (eternalized).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Literal

import frida

from instr import target as tgt
from instr.errors import TargetError
from instr.lifecycle import Agent, TargetProcess
from instr.patch.model import LedgerEntry, PatchError, PatchSpec, RevertResult

_FRIDA_GONE = (frida.InvalidOperationError, frida.TransportError, frida.ProcessNotFoundError)


def _agent_message(e: Exception) -> str:
    """The agent's error without its JavaScript stack; TinyCC messages span several lines."""
    lines = [ln for ln in str(e).splitlines() if not ln.lstrip().startswith("at ")]
    return "\n".join(lines).removeprefix("Error: ").strip()


class PatchController:
    """One Frida session on one target, with the agent loaded for patching."""

    def __init__(
        self,
        target: tgt.TargetSpec,
        device: tgt.DeviceSpec | None = None,
        exclusive: bool = True,
    ) -> None:
        self.target = target
        # False: only reads the ledger (--list), never refused next to
        # another instr (docs/leaving.md)
        self.exclusive = exclusive
        self.device_spec = device or tgt.DeviceSpec()
        self.pid: int | None = None
        self.persisted = False
        # persisted hooks (not only code writes): the eternalized agent stays
        self.agent_stays = False
        self._proc: TargetProcess | None = None
        self._agent: Agent | None = None
        self._script: Any = None
        self._ended = threading.Event()
        self._closed = False
        self.agent_left: bool | None = None  # after close(): the agent had unloaded in time
        self.held: list[int] = []  # threads inside a hook at the leave (docs/leaving.md)

    # -- lifecycle ------------------------------------------------------------

    def open(self) -> int:
        """Spawn (suspended) or attach, and load the agent. Returns the pid."""
        self._proc = TargetProcess.open(self.device_spec, self.target)
        self.pid = self._proc.pid
        try:
            self._load()
        except BaseException:
            self._abandon()
            raise
        return self.pid

    def _load(self) -> None:
        assert self._proc is not None
        self._agent = Agent.load(
            self._proc,
            "instr-patch",
            on_detached=lambda reason, crash: self._ended.set(),
            exclusive=self.exclusive,
        )
        self._script = self._agent.script

    def _abandon(self) -> None:
        if self._proc is not None:
            self._proc.abandon(self._agent)

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
        """Keep this controller's patches after it leaves. Only Interceptor
        hooks need the agent's code: then (only) the script is eternalized."""
        raw = self._call("patch_persist")
        entries = [LedgerEntry.from_agent(e) for e in raw]
        if any(bool(e.get("hook")) for e in raw):
            try:
                self._script.eternalize()
            except _FRIDA_GONE as e:
                raise TargetError(
                    f"lost pid {self.pid} while making the patches persistent: {e}"
                ) from e
            self.agent_stays = True
        self.persisted = True
        return entries

    # -- running --------------------------------------------------------------

    def resume(self) -> None:
        if self._proc is not None:
            self._proc.resume()

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
        agent = self._agent
        if agent is not None and not self._ended.is_set():
            if not self.persisted:
                with contextlib.suppress(*_FRIDA_GONE):
                    raw = agent.rpc.patch_revert_owned()
                    results = [RevertResult.from_agent(r) for r in raw]
            # Persisted hooks: the eternalized script stays, and is not disposed.
            # Persisted code writes: the agent leaves (its dispose keeps them).
            stays = self.agent_stays
            left = agent.leave(disposed={} if stays else None, wait=not stays)
            self.held, self.agent_left = left.held, left.done
        if self._proc is not None:
            self._proc.close()
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
