"""Attach, read (peek) or write (poke), detach: the process keeps running."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import frida

from instr import target as tgt
from instr.errors import TargetError
from instr.lifecycle import Agent, TargetProcess
from instr.mem.peek import parse_peek, render
from instr.mem.poke import parse_poke, poke_all


def _short(e: Exception) -> str:
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    return first.removeprefix("Error: ")


@contextlib.contextmanager
def _script(target: tgt.TargetSpec, device: tgt.DeviceSpec, name: str) -> Iterator[Any]:
    """The agent in ``target`` for the block's reads or writes, then left
    (instr/lifecycle.py)."""
    proc = TargetProcess.open(device, target)
    agent: Agent | None = None
    try:
        agent = Agent.load(proc, name, exclusive=False)
        yield agent.script
    finally:
        if agent is not None:
            agent.leave()
        proc.close()


def peek_values(target: tgt.TargetSpec, device: tgt.DeviceSpec, texts: list[str]) -> Iterator[str]:
    """One rendered line (or block) per spec, read in order; a spec that fails ends it."""
    specs = [parse_peek(t) for t in texts]  # bad specs fail before attaching
    with _script(target, device, "instr-peek") as script:
        for spec in specs:
            try:
                result = script.exports_sync.peek([spec.request()])[0]
            except frida.RPCException as e:
                raise TargetError(f"{spec.text}: {_short(e)}") from e
            yield render(spec, result)


def poke_values(target: tgt.TargetSpec, device: tgt.DeviceSpec, texts: list[str]) -> Iterator[str]:
    """Write each ``SPEC=VALUE`` in order, one line each (before -> after); a failure ends it."""
    specs = [parse_poke(t) for t in texts]  # bad specs fail before attaching
    with _script(target, device, "instr-poke") as script:
        done = 0
        try:
            for line in poke_all(script, specs):
                done += 1
                yield line
        except frida.RPCException as e:
            raise TargetError(f"{specs[done].target.text}: {_short(e)}") from e
