"""Patch actions from probe sets (``patch:``, see ``instr.probes.patchspec``; run with
``instr run -w``): the probes become ``PatchSpec``s that the agent's patcher applies
in the run's own script, recorded in the in-target ledger and reverted when the run
closes, as ``instr patch`` does."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import frida

from instr.errors import UsageError
from instr.events import ProbeReport
from instr.patch.model import LedgerEntry, PatchError, PatchSpec, RevertResult
from instr.probes.ir import PlanOptions, Probe, ProbeTable

_GONE = (frida.InvalidOperationError, frida.TransportError, frida.ProcessNotFoundError)


def spec_of(probe: Probe) -> PatchSpec:
    """The patch a probe asks for; its ``where`` gates it, over its captures."""
    a = probe.patch
    assert a is not None
    return PatchSpec(
        kind=a.kind,
        point=probe.point,
        source=f"{probe.loc} {probe.name}" if probe.loc is not None else probe.name,
        where=probe.where,
        entry=probe.entry or (),
        exit=probe.exit or (),
        **a.patch_params(),
    )


def specs_from_sets(path: str, set_names: Sequence[str]) -> list[PatchSpec]:
    """The patches of probe sets, for ``instr patch -P FILE -s SET`` (which can persist them).
    Every probe of those sets must be a patch: tracing probes belong to ``instr run``."""
    from instr.probes import compile_sets, load_file

    table = compile_sets(load_file(path), list(set_names), PlanOptions())
    others = [p.name for p in table.probes.values() if p.patch is None]
    if others:
        raise UsageError(
            f"{', '.join(others)} {'does' if len(others) == 1 else 'do'} not patch; "
            "instr patch applies only patch probes",
            hint="run sets that also trace with 'instr run -w'",
        )
    return [spec_of(p) for p in table.probes.values()]


def apply_probes(script: Any, table: ProbeTable) -> list[ProbeReport]:
    """Apply every patch probe (all or none), one report per probe."""
    probes = table.patch_probes()
    if not probes:
        return []
    try:
        raw = script.exports_sync.patch_apply([spec_of(p).to_plan() for p in probes])
    except frida.RPCException as e:
        lines = [ln for ln in str(e).splitlines() if not ln.lstrip().startswith("at ")]
        raise PatchError("\n".join(lines).removeprefix("Error: ").strip()) from None
    entries = [LedgerEntry.from_agent(e) for e in raw]
    reports = []
    for p in probes:
        mine = [e for e in entries if e.source == spec_of(p).source]
        reports.append(ProbeReport(p.id, p.name, "armed", "patch", len(mine), None))
    return reports


def revert_owned(script: Any) -> list[RevertResult]:
    """Undo this run's patches and check the bytes (nothing when the target is gone)."""
    try:
        raw = script.exports_sync.patch_revert_owned()
    except (*_GONE, frida.RPCException):
        return []
    return [RevertResult.from_agent(r) for r in raw]
