"""``instr dtrace -l``: what each probe description matches, without arming anything.

Function probes are resolved in the target by the agent's own resolver (the
one arming uses), through the one lifecycle; syscall probes from instr's
syscall table; BEGIN, END and tick need no target.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TextIO

from instr.demangle import demangle
from instr.dtrace.compiler import DProgram
from instr.lifecycle import Agent, TargetProcess
from instr.probes.ir import FunctionPoint, ProbeTable, SyscallPoint
from instr.target import DeviceSpec, TargetSpec

if TYPE_CHECKING:
    from instr.dtrace.run import DConfig

HEADER = f"{'ID':>5} {'PROVIDER':>10} {'MODULE':>24} {'FUNCTION':>32} NAME"


def list_probes(
    prog: DProgram, config: DConfig, argv: tuple[str, ...] | None, out: TextIO | None = None
) -> int:
    out = out or sys.stdout
    rows: list[tuple[str, str, str, str]] = []
    functions = [(p.id, p.point) for p in prog.table if isinstance(p.point, FunctionPoint)]
    listed: dict[int, Any] = {}
    pid = config.pid
    if functions:
        pid, listed = _resolve(config, argv, [pt for _, pt in functions], [i for i, _ in functions])
    for hc in prog.clauses:
        spec = hc.spec
        if spec.is_host or spec.kind == "profile":  # profile: the sampler, nothing to resolve
            rows.append(("dtrace" if spec.is_host else "profile", "", "", spec.text))
            continue
        probe = prog.table.probes[hc.probe_id]
        if isinstance(probe.point, SyscallPoint):
            rows += [("syscall", "", n, spec.name) for n in probe.point.names]
            continue
        result = listed.get(hc.probe_id, {"state": "failed", "sites": [], "reason": "?"})
        if result["state"] != "sites":
            print(f"instr: {spec.text}: {result['state']}: {result['reason']}", file=sys.stderr)
        provider = f"pid{pid}"
        pretty = demangle(s["symbol"] for s in result["sites"] if s["symbol"])
        for s in sorted(result["sites"], key=lambda s: (s["module"] or "", s["symbol"] or "")):
            name = pretty.get(s["symbol"], s["symbol"]) or s["address"]
            rows.append((provider, s["module"] or "?", name, spec.name))
    print(HEADER, file=out)
    seen: set[tuple[str, str, str, str]] = set()
    n = 0
    for row in rows:
        if row in seen:
            continue
        seen.add(row)
        n += 1
        prov, mod, func, name = row
        print(f"{n:>5} {prov:>10} {mod:>24} {func:>32} {name}", file=out)
    return 0


def _resolve(
    config: DConfig, argv: tuple[str, ...] | None, points: list[FunctionPoint], ids: list[int]
) -> tuple[int, dict[int, Any]]:
    target = TargetSpec(argv=argv) if argv is not None else TargetSpec(pid=config.pid)
    pid, results = resolve_points(config.device, target, points)
    return pid, dict(zip(ids, results, strict=True))


def resolve_points(
    device: DeviceSpec, target: TargetSpec, points: list[FunctionPoint]
) -> tuple[int, list[dict[str, Any]]]:
    """What each point matches in the target, by the agent's own resolver; nothing is
    armed, a spawned target is never resumed (it is killed), an attached one runs on."""
    proc = TargetProcess.open(device, target)
    agent: Agent | None = None
    try:
        agent = Agent.load(proc, "instr-list", exclusive=False)
        results: list[dict[str, Any]] = agent.rpc.dtrace_list([p.to_plan() for p in points])
        return proc.pid, results
    finally:
        if agent is not None:
            agent.leave()
        if target.spawns:
            proc.kill()
        proc.close()


def list_table(device: DeviceSpec, target: TargetSpec, table: ProbeTable) -> list[str]:
    """``instr trace -l``: one ``MODULE!SYMBOL`` line per function the table would hook."""
    points = [p.point for p in table if isinstance(p.point, FunctionPoint)]
    _, results = resolve_points(device, target, points)
    lines: list[str] = []
    for point, result in zip(points, results, strict=True):
        if result["state"] != "sites":
            print(f"instr: {point}: {result['state']}: {result['reason']}", file=sys.stderr)
        sites = sorted(result["sites"], key=lambda s: (s["module"] or "", s["symbol"] or ""))
        pretty = demangle(s["symbol"] for s in sites if s["symbol"])
        lines += [
            f"{s['module'] or '?'}!{pretty.get(s['symbol'], s['symbol']) or s['address']}"
            for s in sites
        ]
    return list(dict.fromkeys(lines))
