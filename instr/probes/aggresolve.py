"""Resolve a probe's ``aggregate:`` specs against its captures -> ``Aggregation``.

A value or key names a declared capture, a built-in key, or a capture source
written in place (``arg0:size_t``, ``retval``, ``caller``, ``backtrace(4)``,
``duration``), which becomes an implicit capture of the probe.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from instr.probes.aggspec import BUILTIN_KEYS, IMPLICIT, AggSpecError, Ref, parse_agg
from instr.probes.captures import SpecError, parse_capture
from instr.probes.diag import Diagnostics, did_you_mean
from instr.probes.ir import INT_TYPES, AggKey, Aggregation, Capture, Phase, SourceLoc
from instr.probes.schema import AggSrc

VALUE_KINDS = (*INT_TYPES, "duration")


@dataclass
class Resolved:
    aggregations: list[Aggregation] = field(default_factory=list)
    # captures the aggregations need that the probe did not declare
    implicit: list[tuple[Capture, Phase, SourceLoc]] = field(default_factory=list)


def _value_kind(cap: Capture) -> str:
    return "duration" if cap.src == "duration" else "ptr" if cap.src == "caller" else cap.type


class AggResolver:
    def __init__(
        self,
        declared: list[tuple[Capture, Phase, SourceLoc]],
        broken: list[str],
        max_keys: int,
        diags: Diagnostics,
    ) -> None:
        self.caps: dict[str, tuple[Capture, Phase]] = {c.name: (c, ph) for c, ph, _ in declared}
        self.broken = set(broken)
        self.max_keys = max_keys
        self.d = diags
        self.out = Resolved()

    def resolve(self, srcs: list[AggSrc]) -> Resolved:
        for src in srcs:
            agg = self.one(src)
            if agg is not None:
                self.out.aggregations.append(agg)
        return self.out

    def one(self, src: AggSrc) -> Aggregation | None:
        errors = len(self.d)
        try:
            spec = parse_agg(src.spec.text)
        except AggSpecError as e:
            self.d.error(src.spec.pos(e.offset), e.message, e.hint)
            return None
        phases: list[Phase] = []
        arg: str | None = None
        if spec.value is not None:
            got = self.capture(spec.value, src, "value")
            if got is not None:
                cap, phase = got
                if _value_kind(cap) not in VALUE_KINDS:
                    self.d.error(
                        src.spec.pos(spec.value.offset),
                        f"{spec.func}() needs an integer value; '{spec.value.name}' is {cap.type}",
                        "aggregate an int capture, a duration or arg N:TYPE; "
                        "strings and backtraces can be keys",
                    )
                arg = cap.name
                phases.append(phase)
        keys: list[AggKey] = []
        for ref in spec.keys:
            if ref.name in BUILTIN_KEYS and ref.name not in self.caps and ref.text == ref.name:
                keys.append(AggKey(ref.name, ref.name))  # type: ignore[arg-type]
                continue
            got = self.capture(ref, src, "key")
            if got is not None:
                cap, phase = got
                keys.append(AggKey(ref.name, "capture", cap.name))
                phases.append(phase)
        if len(self.d) > errors:
            return None
        return Aggregation(
            name=src.name,
            func=spec.func,
            arg=arg,
            keys=tuple(keys),
            phase="exit" if "exit" in phases else "entry",
            max_keys=self.max_keys,
            lquantize=spec.lquantize,
            llquantize=spec.llquantize,
            source=src.spec.text.strip(),
            loc=src.name_loc,
        )

    def capture(self, ref: Ref, src: AggSrc, role: str) -> tuple[Capture, Phase] | None:
        """The capture a ref names, declaring an implicit one when needed."""
        loc = src.spec.pos(ref.offset)
        if ref.text == ref.name and ref.name in self.caps:
            return self.caps[ref.name]
        if ref.name in self.broken:
            return None  # its own error is reported already
        if not IMPLICIT.match(ref.name):
            options = [*self.caps, "caller", "retval", "duration", "backtrace"]
            options += list(BUILTIN_KEYS) if role == "key" else []
            hint = did_you_mean(ref.name, options)
            if hint is None:
                builtins = f"; built-in keys: {', '.join(BUILTIN_KEYS)}" if role == "key" else ""
                hint = f"declare it under 'capture', or write e.g. arg0:u64{builtins}"
            self.d.error(loc, f"unknown capture '{ref.name}' in aggregation '{src.name}'", hint)
            return None
        name = ref.text.replace(":", "_").replace("(", "").replace(")", "").replace("*", "p")
        if name in self.caps:
            return self.caps[name]
        try:
            pc = parse_capture(name, ref.text)
        except SpecError as e:
            self.d.error(src.spec.pos(ref.offset + e.offset), e.message, e.hint)
            return None
        self.caps[name] = (pc.capture, pc.phase)
        self.out.implicit.append((pc.capture, pc.phase, loc))
        return pc.capture, pc.phase
