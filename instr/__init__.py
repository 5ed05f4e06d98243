"""instr: dynamic instrumentation of native programs with Frida.

The library API a script or notebook uses::

    import instr

    table = instr.load_file("probes.yaml").compile(["calls"])
    with instr.Session.spawn(["./demo"], table) as run:
        for event in run.events():
            print(event.probe, event.phase, event.args, event.retval)
    print(run.summary)

Names are imported on first use, not with the package: ``python -m instr``
must start without Frida loaded (instr.guard forks before it is).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from instr.attach_all import AllSpec
    from instr.errors import InstrError, ProbeSetError
    from instr.events import Ending, Event, RunSummary
    from instr.probes import compile_quick, compile_sets, load_file
    from instr.runner import RunConfig, run
    from instr.session import Session
    from instr.target import DeviceSpec, TargetSpec

_WHERE = {
    "AllSpec": "instr.attach_all",
    "InstrError": "instr.errors",
    "ProbeSetError": "instr.errors",
    "Ending": "instr.events",
    "Event": "instr.events",
    "RunSummary": "instr.events",
    "compile_quick": "instr.probes",
    "compile_sets": "instr.probes",
    "load_file": "instr.probes",
    "RunConfig": "instr.runner",
    "run": "instr.runner",
    "Session": "instr.session",
    "DeviceSpec": "instr.target",
    "TargetSpec": "instr.target",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'instr' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "AllSpec",
    "DeviceSpec",
    "Ending",
    "Event",
    "InstrError",
    "ProbeSetError",
    "RunConfig",
    "RunSummary",
    "Session",
    "TargetSpec",
    "compile_quick",
    "compile_sets",
    "load_file",
    "run",
]
