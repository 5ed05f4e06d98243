"""Pass 1, validate: the structure of a probe-set file, version 1.

Walks the located YAML tree, reports every structural problem (unknown and
reserved keys, wrong value types, bad points) with its ``file:line:col``, and
returns ``FileSpec``: the same content, typed, with the capture specs and the
predicate still as located strings for the later passes. The published JSON
Schema (``instr/schema/probes.schema.json``) describes the same format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from instr.probes.captures import parse_int
from instr.probes.diag import Diagnostics, did_you_mean, one_of
from instr.probes.ir import (
    AddressPoint,
    FunctionPoint,
    OffsetPoint,
    PatchAction,
    Phase,
    Point,
    SourceLoc,
    SyscallPoint,
    Tier,
)
from instr.probes.loader import YMap, YNode, YScalar, YSeq, check_integer, describe
from instr.probes.patchspec import validate_patch

VERSION = 1
TOP_KEYS = ("version", "sets")
SET_KEYS = ("description", "probes", "dtrace", "dtrace_file")
POINT_KEYS = ("function", "address", "offset", "syscall", "profile")
PROBE_KEYS = (
    "name",
    *POINT_KEYS,
    "exclude",
    "capture",
    "on",
    "where",
    "emit",
    "aggregate",
    "max_keys",
    "tier",
    "max_sites",
    "patch",
)
# Keys kept for later versions: a clear "not yet" instead of "unknown key".
RESERVED_PROBE_KEYS: dict[str, str] = {
    "dump": "memory dumps are not supported yet in version 1",
    "log": "the log action is not supported yet in version 1",
    "latency": "'latency' is not supported in version 1; capture 'duration' instead",
    "timer": "timer points are not supported yet in version 1",
    "lifecycle": "lifecycle points are not supported yet in version 1",
}
TIERS: tuple[Tier, ...] = ("auto", "native", "js")
PHASES: tuple[Phase, ...] = ("entry", "exit")
SET_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
PROBE_NAME = re.compile(r"^[^/\s,]+$")
MAX_SITES_DEFAULT = 5000
MAX_KEYS_DEFAULT = 4096
MAX_KEYS_LIMIT = 1 << 20
AGG_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
MAX_ADDRESS = 2**64 - 1


@dataclass
class CaptureSrc:
    name: str
    name_loc: SourceLoc
    spec: YScalar


@dataclass
class ProbeSpec:
    loc: SourceLoc
    name: str | None = None
    name_loc: SourceLoc | None = None
    point: Point | None = None
    captures: list[CaptureSrc] = field(default_factory=list)
    on: tuple[Phase, ...] | None = None
    on_loc: SourceLoc | None = None
    where: YScalar | None = None
    tier: Tier = "auto"
    tier_loc: SourceLoc | None = None
    max_sites: int = MAX_SITES_DEFAULT
    aggregates: list[AggSrc] = field(default_factory=list)
    emit: bool | None = None  # None: emit unless the probe aggregates
    max_keys: int = MAX_KEYS_DEFAULT
    patch: PatchAction | None = None  # a patch action (needs `instr run -w`)


@dataclass
class AggSrc:
    name: str
    name_loc: SourceLoc
    spec: YScalar


@dataclass
class SetSpec:
    name: str
    loc: SourceLoc
    description: str | None = None
    probes: list[ProbeSpec] = field(default_factory=list)
    # a D program instead of 'probes' (instr/dtrace/embed.py): its text, or a .d file
    dtrace: YScalar | None = None
    dtrace_file: bool = False


@dataclass
class FileSpec:
    file: str
    version: int | None = None
    sets: dict[str, SetSpec] = field(default_factory=dict)


def parse_function(text: str) -> tuple[str | None, str] | str:
    """``"module!symbol"`` or ``"symbol"`` -> (module or None, symbol), or an error message."""
    module, bang, symbol = text.partition("!")
    if not bang:
        module, symbol = "", text
    module, symbol = module.strip(), symbol.strip()
    if "!" in symbol:
        return f"'{text}' has more than one '!'; write MODULE!SYMBOL"
    if not symbol:
        return f"'{text}' has no symbol; write MODULE!SYMBOL or SYMBOL"
    if bang and not module:
        return f"'{text}' has an empty module; write MODULE!SYMBOL, or SYMBOL for any module"
    return (None if module in ("", "*") else module), symbol


class _Validator:
    def __init__(self, file: str, diags: Diagnostics) -> None:
        self.file = file
        self.d = diags

    # -- helpers ------------------------------------------------------------

    def keys(self, node: YMap, allowed: tuple[str, ...], where: str) -> None:
        for key, entry in node.entries.items():
            if key in allowed:
                continue
            if where == "probe" and key in RESERVED_PROBE_KEYS:
                self.d.error(entry.key_loc, RESERVED_PROBE_KEYS[key])
                continue
            hint = did_you_mean(key, allowed) or f"{where} keys are {one_of(allowed)}"
            self.d.error(entry.key_loc, f"unknown key '{key}' in {where}", hint)

    def string(self, node: YNode, key: str) -> YScalar | None:
        if isinstance(node, YScalar) and isinstance(node.value, str):
            return node
        self.d.error(node.loc, f"'{key}' must be a string, not {describe(node)}")
        return None

    def integer(self, node: YNode, key: str, low: int, high: int) -> int | None:
        return check_integer(self.d, node, key, low, high)

    def choice(
        self, node: YNode, key: str, options: tuple[str, ...], what: str | None = None
    ) -> str | None:
        s = self.string(node, key)
        if s is None:
            return None
        if s.text not in options:
            hint = did_you_mean(s.text, options) or f"use {one_of(options)}"
            self.d.error(s.loc, f"unknown {what or key} '{s.text}'", hint)
            return None
        return s.text

    # -- the document -------------------------------------------------------

    def document(self, root: YNode) -> FileSpec:
        spec = FileSpec(self.file)
        if not isinstance(root, YMap):
            self.d.error(root.loc, f"a probe-set file must be a mapping, not {describe(root)}")
            return spec
        self.keys(root, TOP_KEYS, "the file")
        version = root.get("version")
        if version is None:
            self.d.error(root.loc, "missing 'version'", "start the file with 'version: 1'")
        elif isinstance(version, YScalar) and version.value == VERSION:
            spec.version = VERSION
        elif isinstance(version, YScalar) and isinstance(version.value, int):
            self.d.error(
                version.loc,
                f"unsupported probe-set version {version.value}",
                f"this instr reads version {VERSION}",
            )
        else:
            self.d.error(version.loc, f"'version' must be the integer 1, not {describe(version)}")
        sets = root.get("sets")
        if sets is None:
            self.d.error(root.loc, "missing 'sets'", "add 'sets:' with at least one named set")
        elif not isinstance(sets, YMap):
            self.d.error(sets.loc, f"'sets' must be a mapping of set names, not {describe(sets)}")
        elif not sets.entries:
            self.d.error(sets.loc, "'sets' is empty", "define at least one set")
        else:
            for name, entry in sets.entries.items():
                if not SET_NAME.match(name):
                    self.d.error(
                        entry.key_loc,
                        f"invalid set name '{name}'",
                        "set names use letters, digits, '_', '.' and '-'",
                    )
                spec.sets[name] = self.probe_set(name, entry.key_loc, entry.value)
        return spec

    def probe_set(self, name: str, loc: SourceLoc, node: YNode) -> SetSpec:
        out = SetSpec(name, loc)
        if not isinstance(node, YMap):
            self.d.error(node.loc, f"set '{name}' must be a mapping, not {describe(node)}")
            return out
        self.keys(node, SET_KEYS, f"set '{name}'")
        desc = node.get("description")
        if desc is not None and (s := self.string(desc, "description")) is not None:
            out.description = s.text
        probes = node.get("probes")
        d_text, d_file = node.get("dtrace"), node.get("dtrace_file")
        if d_text is not None or d_file is not None:
            if d_text is not None and d_file is not None:
                self.d.error(loc, f"set '{name}' has both 'dtrace' and 'dtrace_file'",
                             "give the D program once")  # fmt: skip
            elif probes is not None:
                self.d.error(loc, f"set '{name}' has both 'probes' and a D program",
                             "write the probes in D, or as 'probes', in two sets")  # fmt: skip
            else:
                key = "dtrace" if d_text is not None else "dtrace_file"
                d_node = d_text if d_text is not None else d_file
                assert d_node is not None
                s = self.string(d_node, key)
                if s is not None:
                    out.dtrace, out.dtrace_file = s, d_file is not None
            return out
        if probes is None:
            self.d.error(
                loc, f"set '{name}' has no 'probes'",
                "add 'probes:' with a list of probes (or 'dtrace:' with a D program)",
            )  # fmt: skip
        elif not isinstance(probes, YSeq):
            self.d.error(probes.loc, f"'probes' must be a list, not {describe(probes)}")
        elif not probes.items:
            self.d.error(probes.loc, f"set '{name}' has an empty 'probes' list")
        else:
            out.probes = [p for item in probes.items if (p := self.probe(item)) is not None]
        return out

    # -- one probe ----------------------------------------------------------

    def probe(self, node: YNode) -> ProbeSpec | None:
        if not isinstance(node, YMap):
            self.d.error(node.loc, f"a probe must be a mapping, not {describe(node)}")
            return None
        self.keys(node, PROBE_KEYS, "probe")
        p = ProbeSpec(node.loc)
        if (n := node.get("name")) is not None and (s := self.string(n, "name")) is not None:
            if PROBE_NAME.match(s.text):
                p.name, p.name_loc = s.text, s.loc
            else:
                self.d.error(s.loc, f"invalid probe name '{s.text}'", "no '/', ',' or spaces")
        self.point(node, p)
        if (cap := node.get("capture")) is not None:
            self.captures(cap, p)
        if (on := node.get("on")) is not None:
            p.on, p.on_loc = self.phases(on), on.loc
        if (where := node.get("where")) is not None:
            p.where = self.string(where, "where")
        if (emit := node.get("emit")) is not None:
            p.emit = self.boolean(emit, "emit")
        if (agg := node.get("aggregate")) is not None:
            self.aggregates(agg, p)
        if p.emit is False and not p.aggregates and emit is not None:
            self.d.error(
                emit.loc,
                "'emit: false' without 'aggregate': this probe would do nothing",
                "add 'aggregate:', or remove 'emit: false'",
            )
        if (mk := node.get("max_keys")) is not None:
            p.max_keys = self.integer(mk, "max_keys", 1, MAX_KEYS_LIMIT) or MAX_KEYS_DEFAULT
        if (tier := node.get("tier")) is not None:
            t = self.choice(tier, "tier", TIERS)
            if t is not None:
                p.tier, p.tier_loc = TIERS[TIERS.index(t)], tier.loc
        if (ms := node.get("max_sites")) is not None:
            p.max_sites = self.integer(ms, "max_sites", 1, 1_000_000) or MAX_SITES_DEFAULT
        if (patch := node.get("patch")) is not None:
            p.patch = validate_patch(patch, self.d)
            if isinstance(p.point, SyscallPoint):
                self.d.error(patch.loc, "'patch' needs a function, address or offset point")
            for key in ("aggregate", "emit", "on"):
                if key in node.entries:
                    self.d.error(
                        node.entries[key].key_loc,
                        f"a probe with 'patch' cannot also '{key}'",
                        "a patch probe records no events; trace the function with another probe",
                    )
        return p

    def point(self, node: YMap, p: ProbeSpec) -> None:
        given = [k for k in POINT_KEYS if k in node.entries]
        if not given:
            self.d.error(
                node.loc,
                "probe has no point",
                "give one of 'function: MODULE!SYMBOL', 'address: 0x...', 'offset: MODULE+0x...', "
                "'syscall: [NAME, %CATEGORY, ...]' or 'profile: HZ'",
            )
        for extra in given[1:]:
            self.d.error(
                node.entries[extra].key_loc,
                f"'{extra}' cannot be combined with '{given[0]}'",
                "a probe has exactly one point; write one probe per point",
            )
        exclude = node.entries.get("exclude")
        if exclude is not None and given[:1] != ["function"]:
            self.d.error(exclude.key_loc, "'exclude' only applies to 'function' points")
        if not given:
            return
        value = node.entries[given[0]].value
        if given[0] == "function":
            s = self.string(value, "function")
            excl = self.excludes(exclude.value) if exclude is not None else ()
            if s is not None:
                parsed = parse_function(s.text)
                if isinstance(parsed, str):
                    self.d.error(s.loc, parsed)
                else:
                    p.point = FunctionPoint(parsed[0], parsed[1], excl)
        elif given[0] == "syscall":
            p.point = self.syscalls(value)
        elif given[0] == "profile":
            from instr.probes.profilepoint import profile_point

            p.point = profile_point(value, node, self.d)
        elif given[0] == "address":
            p.point = self.address(value)
        else:
            p.point = self.offset(value)

    def excludes(self, node: YNode) -> tuple[tuple[str | None, str], ...]:
        items = node.items if isinstance(node, YSeq) else [node]
        out: list[tuple[str | None, str]] = []
        for item in items:
            s = self.string(item, "exclude")
            if s is None:
                continue
            parsed = parse_function(s.text)
            if isinstance(parsed, str):
                self.d.error(s.loc, parsed)
            else:
                out.append(parsed)
        return tuple(out)

    def syscalls(self, node: YNode) -> SyscallPoint | None:
        """``syscall: read``, ``syscall: [read, "%network"]``, ``syscall: all``."""
        from instr.syscalls import CATEGORIES, category
        from instr.syscalls.table import NUMBERS

        known = sorted(set().union(*(set(t) for t in NUMBERS.values())))
        items = node.items if isinstance(node, YSeq) else [node]
        if not items:
            self.d.error(node.loc, "'syscall' is empty", "name system calls or %categories")
            return None
        written: list[str] = []
        chosen: set[str] = set()
        ok = True
        for item in items:
            s = self.string(item, "syscall")
            if s is None:
                ok = False
                continue
            text = s.text.strip()
            written.append(text)
            if text == "all":
                chosen |= set(known)
            elif text.startswith("%"):
                if text[1:] not in CATEGORIES:
                    cats = tuple(f"%{c}" for c in CATEGORIES)
                    self.d.error(
                        s.loc,
                        f"unknown syscall category '{text}'",
                        did_you_mean(text, cats) or f"categories are {one_of(cats)}",
                    )
                    ok = False
                else:
                    chosen |= category(text) & set(known)
            elif text in known:
                chosen.add(text)
            else:
                self.d.error(
                    s.loc,
                    f"unknown system call '{text}'",
                    did_you_mean(text, known) or "write a Linux syscall name, a %category or all",
                )
                ok = False
        del ok  # errors are reported; the point is kept so its captures are checked as such
        return SyscallPoint(tuple(written), tuple(sorted(chosen)))

    def address(self, node: YNode) -> AddressPoint | None:
        v = node.value if isinstance(node, YScalar) else None
        if isinstance(v, str):
            text, v = v, parse_int(v)
            if v is None:
                self.d.error(node.loc, f"invalid address '{text}'", "write it like 0x401000")
                return None
        if not isinstance(v, int) or isinstance(v, bool):
            self.d.error(node.loc, f"'address' must be an integer, not {describe(node)}")
            return None
        if not 0 < v <= MAX_ADDRESS:
            self.d.error(node.loc, f"address {v:#x} is out of range")
            return None
        return AddressPoint(v)

    def offset(self, node: YNode) -> OffsetPoint | None:
        s = self.string(node, "offset")
        if s is None:
            return None
        module, plus, off = s.text.rpartition("+")
        if not plus or not module.strip():
            self.d.error(
                s.loc, f"invalid offset '{s.text}'", "write MODULE+OFFSET, e.g. demo+0x1234"
            )
            return None
        value = parse_int(off)
        if value is None:
            self.d.error(
                s.pos(len(module) + 1), f"invalid offset '{off.strip()}'", "write it like 0x1234"
            )
            return None
        if not 0 <= value <= MAX_ADDRESS:
            self.d.error(s.pos(len(module) + 1), f"offset {value:#x} is out of range")
            return None
        return OffsetPoint(module.strip(), value)

    def captures(self, node: YNode, p: ProbeSpec) -> None:
        if not isinstance(node, YMap):
            self.d.error(
                node.loc,
                f"'capture' must be a mapping of names to specs, not {describe(node)}",
                "e.g. capture: {size: arg0:u64, caller: caller}",
            )
            return
        for name, entry in node.entries.items():
            s = entry.value
            if isinstance(s, YScalar) and isinstance(s.value, str):
                p.captures.append(CaptureSrc(name, entry.key_loc, s))
            else:
                self.d.error(
                    s.loc,
                    f"capture '{name}' must be a spec string, not {describe(s)}",
                    "e.g. 'arg0:u64', 'arg1:cstr', 'retval:i32', 'caller'",
                )

    def phases(self, node: YNode) -> tuple[Phase, ...] | None:
        items = node.items if isinstance(node, YSeq) else [node]
        if not items:
            self.d.error(node.loc, "'on' is empty", "use on: entry, on: exit or on: [entry, exit]")
            return None
        seen: list[Phase] = []
        for item in items:
            c = self.choice(item, "on", PHASES, "phase")
            if c is None:
                return None
            phase = PHASES[PHASES.index(c)]
            if phase in seen:
                self.d.error(item.loc, f"phase '{phase}' is listed twice")
            seen.append(phase)
        return tuple(ph for ph in PHASES if ph in seen)

    def boolean(self, node: YNode, key: str) -> bool | None:
        v = node.value if isinstance(node, YScalar) else None
        if isinstance(v, bool):
            return v
        self.d.error(node.loc, f"'{key}' must be true or false, not {describe(node)}")
        return None

    def aggregates(self, node: YNode, p: ProbeSpec) -> None:
        if not isinstance(node, YMap) or not node.entries:
            self.d.error(
                node.loc,
                f"'aggregate' must be a mapping of names to aggregations, not {describe(node)}",
                "e.g. aggregate: {bytes: sum(size) by caller, calls: count()}",
            )
            return
        for name, entry in node.entries.items():
            if not AGG_NAME.match(name):
                self.d.error(
                    entry.key_loc,
                    f"invalid aggregation name '{name}'",
                    "use letters, digits, '_', '.' and '-'",
                )
                continue
            s = entry.value
            if isinstance(s, YScalar) and isinstance(s.value, str):
                p.aggregates.append(AggSrc(name, entry.key_loc, s))
            else:
                self.d.error(
                    s.loc,
                    f"aggregation '{name}' must be a string, not {describe(s)}",
                    "e.g. 'sum(size) by caller', 'count()', 'quantize(arg0:size_t)'",
                )


def validate(root: YNode, file: str, diags: Diagnostics) -> FileSpec:
    """Check the structure of ``root``; report into ``diags``."""
    return _Validator(file, diags).document(root)
