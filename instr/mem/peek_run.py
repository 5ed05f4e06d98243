"""Attach, read, detach: the process keeps running unchanged."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import frida

from instr import target as tgt
from instr.agent import load_bundle
from instr.errors import TargetError
from instr.mem.peek import parse_peek, render


def _short(e: Exception) -> str:
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    return first.removeprefix("Error: ")


def peek_values(target: tgt.TargetSpec, device: tgt.DeviceSpec, texts: list[str]) -> Iterator[str]:
    """One rendered line (or block) per spec, read in order; a spec that fails ends it."""
    specs = [parse_peek(t) for t in texts]  # bad specs fail before attaching
    dev = tgt.open_device(device)
    pid = target.pid if target.pid is not None else tgt.resolve_name(dev, str(target.name))
    session = tgt.attach(dev, pid)
    try:
        script = session.create_script(load_bundle(), name="instr-peek")
        script.load()
        for spec in specs:
            try:
                result = script.exports_sync.peek([spec.request()])[0]
            except frida.RPCException as e:
                raise TargetError(f"{spec.text}: {_short(e)}") from e
            yield render(spec, result)
    finally:
        with contextlib.suppress(frida.InvalidOperationError, frida.TransportError):
            session.detach()
