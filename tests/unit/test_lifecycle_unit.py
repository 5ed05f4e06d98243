"""What instr says when its agent goes away under it (instr/lifecycle.py).

Frida words a call into an agent whose process died as "script has been
destroyed"; instr says instead what became of the target, from Frida's
detach notice. Pure formatting: the Agent's Frida parts are left out.
"""

from __future__ import annotations

import threading
import weakref
from types import SimpleNamespace

import pytest

from instr import lifecycle
from instr.lifecycle import Agent, lost_target


def _agent(pid: int, reason: str | None, crash: object = None) -> Agent:
    proc = SimpleNamespace(kernel_ending=lambda: None)
    agent = Agent.__new__(Agent)
    agent.proc = proc  # type: ignore[assignment]
    agent.pid = pid
    agent.script = object()
    agent.ended = threading.Event()
    agent.detach_reason = reason
    agent.crash = crash
    if reason is not None:
        agent.ended.set()
    return agent


@pytest.fixture(autouse=True)
def _no_agents(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lifecycle, "_loaded", weakref.WeakSet())


def test_a_crash_is_named_with_its_pid() -> None:
    a = _agent(4242, "process-terminated", SimpleNamespace(summary="SIGSEGV"))
    lifecycle._loaded.add(a)
    assert lost_target(0) == "target crashed: SIGSEGV (pid 4242); its agent went with it"


def test_a_killed_target() -> None:
    a = _agent(7, "process-terminated")
    lifecycle._loaded.add(a)
    assert lost_target(0) == "target was killed (pid 7); its agent went with it"


def test_a_live_target_or_a_requested_detach_says_nothing() -> None:
    live = _agent(1, None)
    left = _agent(2, "application-requested")
    lifecycle._loaded.update([live, left])
    assert lost_target(0) is None
