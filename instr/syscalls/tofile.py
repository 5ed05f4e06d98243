"""``instr syscalls -o run.jsonl`` / ``-o run.db``: the calls as JSON Lines or
SQLite, with the schemas of every other command (docs/outputs.md).

The run is a probe set of syscall points (docs/syscalls.md, "Syscall points in
probe sets"), compiled from YAML text like any other and run by the runner, so
the events, aggregation tables, losses and endings are written exactly as
``instr run`` writes them. List mode: one event per call, its arguments in
strace's text (``arg0`` ...: ``O_RDONLY|O_CLOEXEC``, a path, ``3</etc/hosts>``),
``retval`` (the integer, -1 on failure), ``errno`` (the name, ``""`` on
success) and the duration. ``-c``: the aggregations ``calls`` (count by
syscall), ``errors`` (failed calls, by syscall and errno) and ``time`` (sum of
durations by syscall).
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from instr.collectors import JSONL_EXTENSIONS, SQLITE_EXTENSIONS, TIMELINE_EXTENSIONS
from instr.errors import UsageError
from instr.syscalls import ARCHES, select
from instr.syscalls.table import SIGNATURES
from instr.target import DeviceSpec, TargetSpec

STRUCTURED = JSONL_EXTENSIONS + SQLITE_EXTENSIONS + TIMELINE_EXTENSIONS
SET = "syscalls"


def structured(outputs: tuple[str, ...]) -> bool:
    """Whether any ``-o`` asks for JSON Lines, SQLite or a timeline (others get strace's text)."""
    return any(Path(o).suffix.lower() in STRUCTURED for o in outputs if o != "-")


def probe_set(names: list[str], summary: bool) -> str:
    """The YAML of the run's probe set (JSON flow style, which is YAML)."""
    point = "all" if names == ["all"] else names
    if summary:
        probes: list[dict[str, Any]] = [
            {
                "syscall": point,
                "aggregate": {"calls": "count() by syscall", "time": "sum(duration) by syscall"},
            },
            {
                "syscall": point,
                "capture": {"err": "errno:str"},
                "where": "err != ''",
                "aggregate": {"errors": "count() by syscall, err"},
            },
        ]
    else:
        arity = max((len(SIGNATURES.get(n, ((), ()))[1]) for n in names), default=6)
        capture = {"syscall": "syscall"}
        capture.update({f"arg{i}": f"arg{i}:str" for i in range(min(arity, 6))})
        capture.update({"retval": "retval", "errno": "errno:str", "took": "duration"})
        probes = [{"syscall": point, "capture": capture}]
    return json.dumps({"version": 1, "sets": {SET: {"probes": probes}}}, indent=1)


def run_to_files(
    target: TargetSpec,
    device: DeviceSpec,
    trace_spec: str | None,
    summary: bool,
    follow: bool,
    kw: dict[str, Any],
) -> None:
    """Run and exit (``runner.finish``)."""
    from instr.probes import compile_sets, load_text
    from instr.probes.ir import PlanOptions
    from instr.runner import RunConfig, finish, run

    for flag, given in (("-F", follow), ("--complete", kw.get("complete"))):
        if given:
            raise UsageError(
                f"{flag} cannot write JSON Lines or SQLite yet",
                hint="write strace's text instead (-o FILE.txt, or the console)",
            )
    arch = ARCHES.get(platform.machine(), "x86_64")
    chosen = select(trace_spec, arch)
    names = ["all"] if trace_spec in (None, "", "all", "trace=all") else sorted(chosen)
    if not names:
        raise UsageError(f"-e {trace_spec} selects no system call")
    psf = load_text(probe_set(names, summary), "<instr syscalls>")
    options = PlanOptions(buffer_bytes=kw.get("buffer_size", 8 << 20), on_full=kw["on_full"])
    table = compile_sets(psf, [SET], options)
    config = RunConfig(
        table=table,
        target=target,
        device=device,
        outputs=tuple(kw.get("outputs") or ()),
        source="instr syscalls -c" if summary else "instr syscalls",
        sets=(SET,),
        duration_s=kw.get("duration"),
        quiet=bool(kw.get("quiet")),
        interval_s=kw.get("interval"),
        top=kw.get("top"),
    )
    finish(*run(config))
