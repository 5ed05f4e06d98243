"""Attach, read, detach: the process keeps running unchanged."""

from __future__ import annotations

import contextlib

import frida

from instr import target as tgt
from instr.agent import load_bundle
from instr.errors import TargetError
from instr.mem.peek import parse_peek, render


def peek_values(target: tgt.TargetSpec, device: tgt.DeviceSpec, texts: list[str]) -> list[str]:
    specs = [parse_peek(t) for t in texts]  # bad specs fail before attaching
    dev = tgt.open_device(device)
    pid = target.pid if target.pid is not None else tgt.resolve_name(dev, str(target.name))
    session = tgt.attach(dev, pid)
    try:
        script = session.create_script(load_bundle(), name="instr-peek")
        script.load()
        lines = []
        for spec in specs:
            try:
                result = script.exports_sync.peek([spec.request()])[0]
            except frida.RPCException as e:
                raise TargetError(f"{spec.text}: {e}") from e
            lines.append(render(spec, result))
        return lines
    finally:
        with contextlib.suppress(frida.InvalidOperationError, frida.TransportError):
            session.detach()
