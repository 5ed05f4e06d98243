"""Instruction probes, ``pid$target:MOD:FUNC:OFFSET``: found in the target before arming.

The agent's listing resolver (``agents/src/dtrace/list.ts``, what ``-l`` uses)
finds FUNC as arming would, walks its instructions from its start with Frida's
``Instruction.parse`` and says where the instruction at OFFSET is, relative to
its module, or why there is none (inside an instruction, past the function's
end, or too close to another hook in the function). The probe is then armed as a ``MODULE+OFFSET`` point, which is the same
place in any process of the same files: with ``-c`` the program is spawned,
resolved and killed, then spawned again for the run.
"""

from __future__ import annotations

import fnmatch
import itertools
from dataclasses import dataclass
from typing import Any

from instr.dtrace.compiler import DProgram, offset_key
from instr.dtrace.errors import DError, Loc
from instr.dtrace.listing import resolve_points
from instr.dtrace.probes import ProbeSpec
from instr.probes.ir import FunctionPoint
from instr.target import DeviceSpec, TargetSpec

HOOK_SPAN = 16  # the most bytes Frida's Interceptor writes at a hook (x86-64, arm64)


@dataclass(frozen=True)
class _InsnPoint(FunctionPoint):
    insn_offset: int = 0

    def to_plan(self) -> dict[str, Any]:
        return {**super().to_plan(), "insn_offset": self.insn_offset}


def resolve_offsets(prog: DProgram, device: DeviceSpec, target: TargetSpec) -> dict[str, str]:
    """``offset_key(spec)`` -> ``MODULE+0xOFFSET`` for every instruction probe."""
    specs = {offset_key(s): s for s in prog.probes if s.offset is not None}
    if not specs:
        return {}
    todo = list(specs.values())
    points: list[FunctionPoint] = [
        _InsnPoint(s.module, s.func, insn_offset=s.offset or 0) for s in todo
    ]
    _, results = resolve_points(device, target, points)
    out: dict[str, str] = {}
    problems: list[tuple[Loc, str, str | None]] = []
    for spec, r in zip(todo, results, strict=True):
        sites = r.get("sites") or []
        if r.get("state") != "sites" or not sites:
            problems.append((spec.loc, f"{spec.text}: {r.get('reason') or 'no such function'}",
                             "instr dtrace -l lists what a description matches"))  # fmt: skip
            continue
        places = {(s["module"], s["offset"]) for s in sites if s.get("offset") is not None}
        why = next((s["why"] for s in sites if s.get("why")), None)
        if why is not None:
            problems.append((spec.loc, why, "instr dtrace -l lists the function; "
                             "objdump -d shows its instructions"))  # fmt: skip
        elif len(places) != 1:
            names = ", ".join(sorted(f"{m}!{spec.func}" for m, _ in places))
            problems.append((spec.loc, f"{spec.text} matches {len(places)} functions ({names})",
                             "name the module: pid$target:MODULE:FUNC:OFFSET"))  # fmt: skip
        else:
            ((module, offset),) = places
            out[offset_key(spec)] = f"{module}+{offset:#x}"
    problems += _too_close(prog, out)
    if problems:
        raise DError(problems)
    return out


def _too_close(prog: DProgram, resolved: dict[str, str]) -> list[tuple[Loc, str, str | None]]:
    """Hooks in one function closer than a hook's jump: Frida writes its jump over the
    first instructions at each hook, so a second hook inside them breaks the first (the
    entry counts when the function has an :entry or :return probe too)."""
    hooks: dict[str, list[tuple[int, ProbeSpec]]] = {}
    for spec in prog.probes:
        if spec.offset is not None and offset_key(spec) in resolved:
            module = resolved[offset_key(spec)].partition("+")[0]
            hooks.setdefault(f"{module}!{spec.func}", []).append((spec.offset, spec))
    problems: list[tuple[Loc, str, str | None]] = []
    for where, at in hooks.items():
        func = where.split("!", 1)[1]
        entry = [
            (0, s)
            for s in prog.probes
            if s.kind == "pid" and s.offset is None and fnmatch.fnmatchcase(func, s.func)
        ]
        ordered = sorted(at + entry[:1], key=lambda t: t[0])
        for (a, _), (b, spec) in itertools.pairwise(ordered):
            if 0 < b - a < HOOK_SPAN:  # one address: one hook, shared
                first = "the entry" if a == 0 and spec.offset != 0 else f"{a:#x}"
                problems.append((spec.loc, f"the hooks at {first} and {b:#x} of {func} are "
                                 f"{b - a} bytes apart: each takes up to {HOOK_SPAN} bytes",
                                 f"probe instructions at least {HOOK_SPAN} bytes apart "
                                 "(and from the entry, when it is probed too)"))  # fmt: skip
    return problems
