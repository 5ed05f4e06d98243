"""instr: dynamic instrumentation of native programs with Frida.

The library API a script or notebook uses::

    import instr

    table = instr.load_file("probes.yaml").compile(["calls"])
    with instr.Session.spawn(["./demo"], table) as run:
        for event in run.events():
            print(event.probe, event.phase, event.args, event.retval)
    print(run.summary)
"""

from instr.errors import InstrError, ProbeSetError
from instr.events import Ending, Event, RunSummary
from instr.probes import compile_quick, compile_sets, load_file
from instr.runner import RunConfig, run
from instr.session import Session
from instr.target import DeviceSpec, TargetSpec

__all__ = [
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
