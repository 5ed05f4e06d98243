"""Compile a probe whose point is ``profile:`` (DTrace's ``profile-N``,
bpftrace's ``profile:hz:N``): stack samples counted into aggregations.

    - profile: 99                       # samples a second of each thread's CPU time
      aggregate:
        stacks: count() by backtrace    # @[ustack()] = count()
        leaf: count() by probefunc      # the sampled function (DTrace's ufunc(arg1))
        threads: count() by tid

The samples come from ``instr profile``'s sampler and are unwound on the host
(``instr.profile.probes``), so a profile probe has its own small grammar: it
only counts (``count()``), keyed by ``backtrace`` or ``backtrace(N)`` (the
sampled stack, leaf first, at most N frames), ``probefunc`` and ``module``
(the function and module the thread was in), ``tid``, ``pid`` and
``execname``. It has no captures, predicate or hooks, and writes no events.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from instr.probes.aggspec import AggSpecError, parse_agg
from instr.probes.diag import Diagnostics, one_of
from instr.probes.ir import AggKey, Aggregation, Probe, ProfilePoint, SourceLoc
from instr.probes.loader import YMap, YNode, YScalar, describe
from instr.probes.schema import ProbeSpec
from instr.profile.limits import HZ_MAX, HZ_MIN

MAX_DEPTH = 1024  # backtrace(N): the most frames (as instr dtrace's ustack(N))
KEYS: tuple[str, ...] = ("backtrace", "probefunc", "module", "tid", "pid", "execname")
# what else a probe may say, and why a profile probe cannot
_NOT_HERE: dict[str, str] = {
    "capture": "a sample has no arguments or return value to capture",
    "where": "profile probes take every sample; key the aggregation by tid to tell threads apart",
    "on": "a profile probe has no entry or exit hook",
    "emit": "a profile probe only counts samples into its aggregations",
    "tier": "the sampler is the only tier of a profile probe",
    "max_sites": "a profile probe hooks no functions",
    "patch": "a profile probe hooks no functions",
}
_HZ = re.compile(r"^(?:profile[-:])?(?:hz:)?([0-9]+)$")
_DEPTH = re.compile(r"^backtrace\s*\(\s*(-?[0-9]+)\s*\)$")
_EXAMPLE = "e.g. stacks: count() by backtrace"


def profile_point(value: YNode, probe: YMap, d: Diagnostics) -> ProfilePoint | None:
    """``profile: 99`` (also ``"hz:99"``, ``"profile-99"``), checked; the keys a
    profile probe cannot have are reported at the key."""
    for key, why in _NOT_HERE.items():
        if key in probe.entries:
            d.error(probe.entries[key].key_loc, f"a profile probe cannot have '{key}'", why)
    hz: object = value.value if isinstance(value, YScalar) else None
    if isinstance(hz, str) and (m := _HZ.match(hz.strip())) is not None:
        hz = int(m.group(1))
    if not isinstance(hz, int) or isinstance(hz, bool):
        d.error(value.loc, f"'profile' must be a rate in Hz, not {describe(value)}",
                "e.g. profile: 99 (samples a second of each thread's CPU time)")  # fmt: skip
        return None
    if not HZ_MIN <= hz <= HZ_MAX:
        d.error(value.loc, f"'profile' must be between {HZ_MIN} and {HZ_MAX} Hz, not {hz}")
        return None
    return ProfilePoint(hz)


class ProfileProbeBuilder:
    def __init__(self, set_name: str, diags: Diagnostics) -> None:
        self.set_name = set_name
        self.d = diags

    def build(
        self, spec: ProbeSpec, name: str, check_names: Callable[[list[Aggregation]], None]
    ) -> Probe | None:
        assert isinstance(spec.point, ProfilePoint)
        if not spec.aggregates:
            self.d.error(spec.loc, "a profile probe needs 'aggregate'",
                         f"samples are counted into aggregations: {_EXAMPLE}")  # fmt: skip
            return None
        aggs = [a for src in spec.aggregates if (a := self._agg(src, spec)) is not None]
        if len(aggs) < len(spec.aggregates):
            return None
        check_names(aggs)
        return Probe(
            id=0,
            name=f"{self.set_name}/{name}",
            point=spec.point,
            entry=None,
            exit=None,
            actions=(),
            loc=spec.loc,
            aggregations=tuple(aggs),
            emit=False,
            agg_tier="host",
            agg_tier_why="samples are unwound and counted on the host",
        )

    def _agg(self, src: object, spec: ProbeSpec) -> Aggregation | None:
        from instr.probes.schema import AggSrc

        assert isinstance(src, AggSrc)
        text = src.spec.text
        try:
            parsed = parse_agg(text)
        except AggSpecError as e:
            self.d.error(src.spec.pos(e.offset), e.message, e.hint)
            return None
        if parsed.func != "count" or parsed.value is not None:
            self.d.error(src.spec.loc, "a profile probe counts samples: its aggregations use count()",
                         _EXAMPLE)  # fmt: skip
            return None
        keys: list[AggKey] = []
        for ref in parsed.keys:
            key = self._key(ref.text, src.spec.pos(ref.offset))
            if key is None:
                return None
            keys.append(key)
        return Aggregation(
            name=src.name,
            func="count",
            arg=None,
            keys=tuple(keys),
            phase="entry",
            max_keys=spec.max_keys,
            source=text,
            loc=src.name_loc,
        )

    def _key(self, text: str, loc: SourceLoc) -> AggKey | None:
        text = text.strip()
        if text in KEYS:
            src = "backtrace" if text == "backtrace" else text
            depth = MAX_DEPTH if text == "backtrace" else 0
            return AggKey(text, src, depth=depth)  # type: ignore[arg-type]
        m = _DEPTH.match(text)
        if m is not None:
            depth = int(m.group(1))
            if not 1 <= depth <= MAX_DEPTH:
                self.d.error(loc, f"backtrace()'s depth must be from 1 to {MAX_DEPTH}, not {depth}")
                return None
            return AggKey("backtrace", "backtrace", depth=depth)
        self.d.error(loc, f"'{text}' has no value in a profile probe",
                     f"keys here: {one_of(KEYS)}, backtrace(N)")  # fmt: skip
        return None
