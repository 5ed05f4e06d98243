"""The probe-set compiler: YAML text -> ``ProbeSetFile`` -> ``ProbeTable``.

Passes, each small and reporting into one ``Diagnostics``:

1. parse      (``loader``)     YAML -> located nodes
2. validate   (``schema``)     structure, keys, points -> ``FileSpec``
3. resolve    (``captures``)   capture specs -> typed ``Capture`` + phase;
              (``predicate``)  ``where`` -> ``Expr`` tree + phase
4. build IR   (here)           hooks, names, checks -> ``Probe`` (id 0)
5. number     (``compile_sets``) the selected sets' probes get ids 1, 2, ...

``load_*`` runs passes 1-4 over the whole file and raises ``ProbeSetError``
with every diagnostic; ``compile_sets`` selects and numbers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from instr.ctier.emit import fast_blockers
from instr.ctier.native import event_blockers
from instr.errors import Diagnostic, ProbeSetError, UsageError
from instr.probes import limits
from instr.probes.aggresolve import AggResolver
from instr.probes.captures import MAX_RECORD, SpecError, check_name, parse_capture, record_size
from instr.probes.diag import Diagnostics, did_you_mean, one_of
from instr.probes.ir import (
    AddressPoint,
    Aggregation,
    Capture,
    FunctionPoint,
    Phase,
    PlanOptions,
    Point,
    Predicate,
    Probe,
    ProbeTable,
    ProfilePoint,
    SourceLoc,
    SyscallPoint,
)
from instr.probes.loader import parse_yaml
from instr.probes.patchspec import GATED
from instr.probes.predicate import capture_env, compile_predicate
from instr.probes.schema import ProbeSpec, SetSpec, validate


@dataclass(frozen=True)
class SetInfo:
    name: str
    description: str | None
    probes: tuple[Probe, ...]  # compiled, with id 0 until compile_sets numbers them
    loc: SourceLoc


@dataclass(frozen=True)
class ProbeSetFile:
    path: str
    version: int
    sets: dict[str, SetInfo]

    def compile(self, names: list[str], options: PlanOptions | None = None) -> ProbeTable:
        return compile_sets(self, names, options)


def default_name(point: Point) -> str:
    """A probe's name when it has no ``name:``: the symbol, address or module+offset."""
    if isinstance(point, FunctionPoint):
        return point.symbol
    if isinstance(point, AddressPoint):
        return hex(point.address)
    if isinstance(point, SyscallPoint):
        return "+".join(i.lstrip("%") for i in point.items) or "syscall"
    return str(point)


def _is_exit_only(cap: Capture) -> bool:
    return cap.src in ("retval", "duration")


def _needs_entry_hook(cap: Capture) -> str | None:
    """Why an exit capture needs the entry hook too, or None."""
    if cap.src == "duration":
        return "a duration is measured from entry to exit"
    if cap.src == "arg":
        return "arguments read at exit are saved at entry"
    return None


class _ProbeBuilder:
    def __init__(self, set_name: str, diags: Diagnostics) -> None:
        self.set_name = set_name
        self.d = diags
        self.agg_names: dict[str, SourceLoc] = {}

    def check_patch(self, spec: ProbeSpec, where: Predicate | None, captures: bool) -> bool:
        """What a patch probe's ``where`` and captures may be, for its kind."""
        assert spec.patch is not None
        kind = spec.patch.kind
        if spec.where is not None and kind not in GATED:
            self.d.error(
                spec.where.loc,
                f"'where' cannot gate a '{kind}' patch",
                f"only {one_of(GATED)} patches decide per call",
            )
            return False
        if where is not None and where.phase == "exit" and kind != "ret":
            self.d.error(
                spec.where.loc if spec.where is not None else spec.loc,
                f"a '{kind}' patch decides before the call: its 'where' can only use entry captures",
            )
            return False
        if captures and spec.where is None:
            self.d.error(
                spec.captures[0].name_loc,
                "a patch probe records no events: its captures are only for its 'where'",
                "add a 'where', or trace the function with another probe",
            )
            return False
        return True

    def build(self, spec: ProbeSpec, name: str) -> Probe | None:
        if isinstance(spec.point, SyscallPoint):
            from instr.probes.syscallpoint import SyscallProbeBuilder

            return SyscallProbeBuilder(self.set_name, self.d).build(
                spec, name, self.check_agg_names
            )
        if isinstance(spec.point, ProfilePoint):
            from instr.probes.profilepoint import ProfileProbeBuilder

            return ProfileProbeBuilder(self.set_name, self.d).build(
                spec, name, self.check_agg_names
            )
        errors = len(self.d)
        parsed: list[tuple[Capture, Phase, SourceLoc]] = []
        broken: list[str] = []
        for src in spec.captures:
            bad = check_name(src.name)
            if bad is not None:
                self.d.error(src.name_loc, *bad)
                continue
            try:
                pc = parse_capture(src.name, src.spec.text)
            except SpecError as exc:
                self.d.error(src.spec.pos(exc.offset), exc.message, exc.hint)
                broken.append(src.name)
                continue
            parsed.append((pc.capture, pc.phase, src.name_loc))
        aggs = AggResolver(parsed, broken, spec.max_keys, self.d).resolve(spec.aggregates)
        self.check_agg_names(aggs.aggregations)
        for a in aggs.aggregations:
            if any(k.src == "syscall" for k in a.keys) and a.loc is not None:
                self.d.error(a.loc, "the key 'syscall' needs a syscall point")
        parsed += aggs.implicit
        entry = [c for c, ph, _ in parsed if ph == "entry"]
        exit_ = [c for c, ph, _ in parsed if ph == "exit"]
        on = spec.on or (("entry", "exit") if exit_ else ("entry",))
        self.check_phases(spec, on, parsed)
        hooks_entry = "entry" in on
        env = capture_env(entry, exit_, broken)
        where = None
        if spec.where is not None:
            where, perrs = compile_predicate(spec.where.text, env, entry_hook=hooks_entry)
            for e in perrs:
                self.d.error(spec.where.pos(e.offset), e.message, e.hint)
        emits = spec.emit if spec.emit is not None else not spec.aggregates
        for phase, caps in (("entry", entry), ("exit", exit_)):
            size = record_size(tuple(caps))
            if size > MAX_RECORD:
                self.d.error(
                    spec.loc,
                    f"the {phase} record of this probe can reach {size} bytes; the limit is {MAX_RECORD}",
                    "lower the cstr/bytes lengths or the backtrace depth",
                )
        if len(self.d) > errors or spec.point is None:
            return None
        emit = spec.emit if spec.emit is not None else not aggs.aggregations
        if spec.patch is not None and not self.check_patch(spec, where, bool(parsed)):
            return None
        probe = Probe(
            id=0,
            name=f"{self.set_name}/{name}",
            point=spec.point,
            entry=tuple(entry) if hooks_entry else None,
            exit=tuple(exit_) if "exit" in on else None,
            where=where,
            tier=spec.tier,
            max_sites=spec.max_sites,
            loc=spec.loc,
            aggregations=tuple(aggs.aggregations),
            # a patch probe is applied by the agent's patcher and records nothing
            emit=emit and spec.patch is None,
            actions=() if spec.patch is not None else ({"kind": "emit"},),
            patch=spec.patch,
        )
        if spec.tier == "native" and spec.tier_loc is not None and emits:
            blockers = event_blockers(probe)
            if blockers:
                self.d.error(
                    spec.tier_loc,
                    f"'tier: native' cannot run {'; '.join(blockers)}",
                    "use 'tier: auto' (native when possible) or 'tier: js'",
                )
                return None
        if not aggs.aggregations:
            return probe
        if where is not None and where.phase == "exit":
            # the predicate decides at exit, so every aggregation updates there
            exit_aggs = tuple(dataclasses.replace(a, phase="exit") for a in probe.aggregations)
            probe = dataclasses.replace(probe, aggregations=exit_aggs)
        blockers = fast_blockers(probe)
        if spec.tier == "native" and blockers and spec.tier_loc is not None:
            self.d.error(
                spec.tier_loc,
                f"'tier: native' cannot aggregate here: {'; '.join(blockers)}",
                "use 'tier: auto' (compiled C when possible) or 'tier: js'",
            )
            return None
        if spec.tier == "js":
            return dataclasses.replace(probe, agg_tier="js", agg_tier_why="'tier: js' was asked")
        if blockers:
            return dataclasses.replace(probe, agg_tier="js", agg_tier_why="; ".join(blockers))
        return dataclasses.replace(probe, agg_tier="fast")

    def check_agg_names(self, aggs: list[Aggregation]) -> None:
        for a in aggs:
            first = self.agg_names.get(a.name)
            if first is not None and a.loc is not None:
                self.d.error(
                    a.loc,
                    f"duplicate aggregation name '{a.name}' in set '{self.set_name}'",
                    f"the first is at line {first.line}",
                )
            elif a.loc is not None:
                self.agg_names[a.name] = a.loc

    def check_phases(
        self,
        spec: ProbeSpec,
        on: tuple[Phase, ...],
        parsed: list[tuple[Capture, Phase, SourceLoc]],
    ) -> None:
        for cap, phase, loc in parsed:
            if phase not in on:
                hint = f"add {phase} to 'on'"
                if cap.src == "arg" and phase == "entry":
                    hint += ", or read it at exit with '@exit'"
                self.d.error(
                    loc,
                    f"capture '{cap.name}' is taken at {phase}, but 'on' does not include {phase}",
                    hint,
                )
            elif phase == "exit" and "entry" not in on and (why := _needs_entry_hook(cap)):
                self.d.error(
                    loc, f"capture '{cap.name}' needs the entry hook: {why}", "add entry to 'on'"
                )


def _names(spec: SetSpec, diags: Diagnostics) -> list[str]:
    """Each probe's name within its set: its ``name:``, or a unique default."""
    taken: dict[str, SourceLoc] = {}
    for p in spec.probes:
        if p.name is None or p.name_loc is None:
            continue
        if p.name in taken:
            first = taken[p.name]
            diags.error(
                p.name_loc,
                f"duplicate probe name '{p.name}' in set '{spec.name}'",
                f"the first is at line {first.line}",
            )
        taken.setdefault(p.name, p.name_loc)
    names: list[str] = []
    for p in spec.probes:
        if p.name is not None:
            names.append(p.name)
            continue
        base = default_name(p.point) if p.point is not None else "probe"
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}-{n}"
        taken[name] = p.loc
        names.append(name)
    return names


def _too_big(file: str, head: str) -> ProbeSetError:
    """The error for a file longer than the limit; ``head`` is its text up to
    the limit, so the location is where the limit was crossed."""
    line = head.count("\n") + 1
    col = len(head) - (head.rfind("\n") + 1) + 1
    size = limits.size_text(limits.MAX_FILE_BYTES)
    return ProbeSetError(
        [
            Diagnostic(
                file,
                line,
                col,
                f"probe-set file is larger than {size}",
                "probe sets are small; is this the right file?",
            )
        ]
    )


def _compile(text: str, file: str) -> ProbeSetFile:
    if len(text) > limits.MAX_FILE_BYTES:
        raise _too_big(file, text[: limits.MAX_FILE_BYTES])
    diags = Diagnostics()
    root = parse_yaml(text, file, diags)
    if root is None:
        diags.check()
        raise AssertionError("unreachable: parse_yaml failed without a diagnostic")
    spec = validate(root, file, diags)
    sets: dict[str, SetInfo] = {}
    for set_name, set_spec in spec.sets.items():
        builder = _ProbeBuilder(set_name, diags)
        probes: list[Probe] = []
        if set_spec.dtrace is not None:
            from instr.dtrace.embed import set_probes

            probes = set_probes(set_name, set_spec.dtrace, set_spec.dtrace_file, file, diags)
        for probe_spec, name in zip(set_spec.probes, _names(set_spec, diags), strict=True):
            probe = builder.build(probe_spec, name)
            if probe is not None:
                probes.append(probe)
        sets[set_name] = SetInfo(set_name, set_spec.description, tuple(probes), set_spec.loc)
    diags.check()
    return ProbeSetFile(file, spec.version or 1, sets)


def load_text(text: str, file: str = "<string>") -> ProbeSetFile:
    """Compile probe-set YAML ``text``; ``file`` is the name used in diagnostics."""
    return _compile(text, file)


def load_file(path: str | Path) -> ProbeSetFile:
    """Read and compile a probe-set file. Raises ``ProbeSetError`` (every
    problem, as ``file:line:col``) or ``UsageError`` (cannot read it)."""
    file = str(path)
    try:
        with open(path, "rb") as f:  # bounded: -P /dev/zero must not eat memory
            data = f.read(limits.MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read probe-set file '{file}': {exc.strerror or exc}") from exc
    if len(data) > limits.MAX_FILE_BYTES:
        raise _too_big(file, data[: limits.MAX_FILE_BYTES].decode("utf-8", errors="replace"))
    try:
        # universal newlines, as reading in text mode gives
        text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except UnicodeDecodeError as exc:
        raise UsageError(f"probe-set file '{file}' is not UTF-8 text: {exc.reason}") from exc
    return _compile(text, file)


def check_file(path: str | Path) -> str:
    """Validate a file; returns a one-line summary, raises like ``load_file``."""
    psf = load_file(path)
    probes = sum(len(s.probes) for s in psf.sets.values())
    sets = len(psf.sets)
    return (
        f"{psf.path}: ok ({sets} set{'s' if sets != 1 else ''}, "
        f"{probes} probe{'s' if probes != 1 else ''})"
    )


def compile_sets(
    psf: ProbeSetFile, names: list[str], options: PlanOptions | None = None
) -> ProbeTable:
    """The ``ProbeTable`` of the named sets, with probe ids 1, 2, ... in order."""
    available = list(psf.sets)
    if not names:
        raise UsageError(
            f"no probe set selected from {psf.path}", f"available sets: {', '.join(available)}"
        )
    unknown = [n for n in names if n not in psf.sets]
    if unknown:
        hints = [h for n in unknown if (h := did_you_mean(n, available))]
        listed = ", ".join(f"'{n}'" for n in unknown)
        plural = "s" if len(unknown) > 1 else ""
        hint = " ".join([*hints, f"available sets: {', '.join(available)}"])
        raise UsageError(f"unknown probe set{plural} {listed} in {psf.path}", hint)
    table = ProbeTable(options=options or PlanOptions())
    n_aggs = 0
    for name in dict.fromkeys(names):
        for probe in psf.sets[name].probes:
            aggs = []
            for a in probe.aggregations:
                n_aggs += 1
                aggs.append(dataclasses.replace(a, id=n_aggs))
            table.add(dataclasses.replace(probe, id=len(table) + 1, aggregations=tuple(aggs)))
    return table
