"""Patch actions from probe sets (``patch: {ret: V}`` / ``patch: {skip: V}``, run with
``instr run -w``): the probes become ``PatchSpec``s that the agent's patcher applies
in the run's own script, recorded in the in-target ledger and reverted when the run
closes, as ``instr patch`` does."""

from __future__ import annotations

from typing import Any

import frida

from instr.events import ProbeReport
from instr.patch.model import LedgerEntry, PatchError, PatchSpec, RevertResult
from instr.probes.ir import Probe, ProbeTable

_GONE = (frida.InvalidOperationError, frida.TransportError, frida.ProcessNotFoundError)


def spec_of(probe: Probe) -> PatchSpec:
    """The patch a probe asks for; its ``where`` gates it, over its captures."""
    action = probe.patch
    assert action is not None
    return PatchSpec(
        kind="ret" if action["patch"] == "ret" else "skip",
        point=probe.point,
        source=f"{probe.loc} {probe.name}" if probe.loc is not None else probe.name,
        value=int(action["value"]),
        where=probe.where,
        entry=probe.entry or (),
        exit=probe.exit or (),
    )


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
