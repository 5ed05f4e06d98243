"""Quick mode: ``instr trace -i GLOB -x GLOB [-a N] [-a KEY:NAME=SPEC]
[--where EXPR]`` -> ``ProbeTable``.

Each include (frida-trace style ``module!symbol`` glob, or a bare ``symbol``
for any module) becomes one probe named ``cli/<include>`` with entry and exit
hooks. Excludes apply to every include. Without ``-a`` a probe captures
nothing: its events carry the timestamp, thread and site. ``-a N`` captures
the first N arguments of every include as raw 64-bit values (``arg0`` ...,
shown in hex) and its return value (``ret``), DTrace's quick look. ``-a
KEY:NAME=SPEC`` adds captures with the probe-set spec syntax, e.g.
``malloc:size=arg0:u64`` or ``open:path=arg0:cstr,fd=retval:i32``; ``KEY`` is
an include as written or its symbol part. ``--where`` is a probe-set
predicate over those captures, applied to every include.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import yaml

from instr.errors import ProbeSetError, UsageError
from instr.probes.aggspec import AggSpecError, parse_agg
from instr.probes.captures import ParsedCapture, SpecError, check_name, parse_capture, parse_int
from instr.probes.diag import did_you_mean
from instr.probes.ir import (
    AddressPoint,
    Capture,
    FunctionPoint,
    OffsetPoint,
    PlanOptions,
    Point,
    Probe,
    ProbeTable,
)
from instr.probes.predicate import capture_env, compile_predicate
from instr.probes.schema import parse_function


def parse_target(text: str, flag: str) -> Point:
    """``MODULE!SYMBOL``, ``SYMBOL``, ``0xADDRESS`` or ``MODULE+0xOFFSET`` (the
    targets of ``instr patch`` and the includes of ``instr trace``)."""
    t = text.strip()
    if not t:
        raise UsageError(
            f"{flag}: the target is empty", hint="write MODULE!SYMBOL, 0xADDRESS or MODULE+0xOFFSET"
        )
    if t.lower().startswith("0x"):
        address = parse_int(t)
        if address is None or address <= 0:
            raise UsageError(f"{flag}: invalid address '{t}'", hint="write it like 0x401000")
        return AddressPoint(address)
    module, plus, off = t.rpartition("+")
    if plus and "!" not in t and module.strip():
        offset = parse_int(off)
        if offset is None:
            raise UsageError(f"{flag}: invalid offset '{off}' in '{t}'", hint="write MODULE+0x1234")
        return OffsetPoint(module.strip(), offset)
    parsed = parse_function(t)
    if isinstance(parsed, str):
        raise UsageError(f"{flag}: {parsed}")
    return FunctionPoint(parsed[0], parsed[1])


def _is_site(text: str) -> bool:
    """``0xADDRESS`` or ``MODULE+0xOFFSET``, as parse_target tells them from globs."""
    t = text.strip()
    module, plus, _ = t.rpartition("+")
    return t.lower().startswith("0x") or bool(plus and "!" not in t and module.strip())


def load_text(text: str, file: str) -> Any:
    from instr.probes.compiler import load_text as load  # compiler imports this module

    return load(text, file)


QUICK_SET = "cli"


def _glob(text: str, flag: str) -> tuple[str | None, str]:
    parsed = parse_function(text)
    if isinstance(parsed, str):
        raise UsageError(f"bad {flag} pattern: {parsed}")
    return parsed


MAX_RAW_ARGS = 8


def _raw_args(adds: Sequence[str]) -> tuple[int, list[str]]:
    """``-a N`` (the first N arguments, raw) out of the ``-a`` values: (N, the rest)."""
    n, rest = 0, []
    for add in adds:
        if add.strip().isdigit():
            n = int(add)
            if n > MAX_RAW_ARGS:
                raise UsageError(f"-a {n}: at most {MAX_RAW_ARGS} arguments")
        else:
            rest.append(add)
    return n, rest


def _where(source: str, probe_name: str, entry: list[Capture], exit_: list[Capture]) -> Any:
    """``--where``'s predicate for one probe; a usage error with a caret if it is bad."""
    env = capture_env(entry, exit_)
    pred, errors = compile_predicate(source, env)
    if errors:
        e = errors[0]
        caret = f"\n  {source}\n  {' ' * e.offset}^"
        if not env:
            hint = "give -a N (or -a KEY:NAME=SPEC) to capture what it tests"
        else:
            hint = e.hint or "-a N names the arguments arg0 ... and the return value ret"
        raise UsageError(f"--where (for {probe_name}), column {e.offset + 1}: {e.message}{caret}",
                         hint)  # fmt: skip
    return pred


def _parse_adds(adds: Sequence[str], keys: dict[str, int]) -> dict[int, list[ParsedCapture]]:
    """``-a KEY:NAME=SPEC[,NAME=SPEC...]`` -> include index -> captures."""
    out: dict[int, list[ParsedCapture]] = {}
    for add in adds:
        key, colon, rest = add.partition(":")
        if not colon or not rest.strip():
            raise UsageError(
                f"bad -a '{add}'", "write FUNCTION:NAME=SPEC, e.g. malloc:size=arg0:u64"
            )
        key = key.strip()
        if key not in keys:
            hint = did_you_mean(key, keys) or f"the includes are: {', '.join(keys)}"
            raise UsageError(f"-a '{add}' names '{key}', which is not an -i include", hint)
        caps = out.setdefault(keys[key], [])
        for item in rest.split(","):
            name, eq, spec = item.partition("=")
            name = name.strip()
            if not eq:
                raise UsageError(f"bad -a '{add}': '{item}' has no '='", "write NAME=SPEC")
            bad = check_name(name)
            if bad is not None:
                raise UsageError(f"bad -a '{add}': {bad[0]}", bad[1])
            if any(c.capture.name == name for c in caps):
                raise UsageError(f"bad -a '{add}': capture '{name}' is given twice")
            try:
                caps.append(parse_capture(name, spec))
            except SpecError as exc:
                raise UsageError(f"bad -a '{add}': {exc.message}", exc.hint) from exc
    return out


def compile_quick(
    includes: list[str],
    excludes: list[str],
    options: PlanOptions | None = None,
    *,
    captures: Sequence[str] = (),
    where: str | None = None,
) -> ProbeTable:
    """One entry+exit probe per include glob; ids 1, 2, ... in include order."""
    incs = list(dict.fromkeys(i.strip() for i in includes if i.strip()))
    if not incs:
        raise UsageError("nothing to trace", "give at least one -i MODULE!SYMBOL or -i SYMBOL")
    excl = tuple(_glob(x.strip(), "-x") for x in dict.fromkeys(excludes) if x.strip())
    points: list[Point] = []
    for inc in incs:  # globs like frida-trace's, or a site as instr patch takes it
        if _is_site(inc):
            points.append(parse_target(inc, "-i"))
        else:  # a glob's errors say "bad -i pattern", as they did
            points.append(FunctionPoint(*_glob(inc, "-i"), excl))
    keys: dict[str, int] = {}
    for n, (inc, point) in enumerate(zip(incs, points, strict=True)):
        keys.setdefault(inc, n)
        if isinstance(point, FunctionPoint):
            keys.setdefault(point.symbol, n)
    n_raw, specs = _raw_args(captures)
    raw = [parse_capture(f"arg{i}", f"arg{i}:ptr") for i in range(n_raw)]
    raw += [parse_capture("ret", "retval:ptr")] if n_raw else []
    added = _parse_adds(specs, keys)
    table = ProbeTable(options=options or PlanOptions())
    for n, (inc, point) in enumerate(zip(incs, points, strict=True)):
        mine = [c for c in added.get(n, []) if c.capture.name not in {r.capture.name for r in raw}]
        # one return value per event: a typed capture of it wins over -a N's raw one
        typed_ret = any(c.capture.src == "retval" for c in mine)
        caps = [r for r in raw if not (typed_ret and r.capture.src == "retval")] + mine
        entry = [c.capture for c in caps if c.phase == "entry"]
        exit_ = [c.capture for c in caps if c.phase == "exit"]
        name = f"{QUICK_SET}/{inc}"
        table.add(
            Probe(
                id=n + 1,
                name=name,
                point=point,
                entry=tuple(entry),
                exit=tuple(exit_),
                where=None if where is None else _where(where, name, entry, exit_),
            )
        )
    return table


def compile_quick_aggs(
    includes: list[str],
    excludes: list[str],
    aggs: Sequence[str],
    options: PlanOptions | None = None,
) -> ProbeTable:
    """``instr trace -i GLOB --agg NAME=SPEC``: every include aggregates, emits nothing.

    The flags become a one-set probe file that the regular compiler checks,
    so quick aggregations mean exactly what they mean in a probe set.
    """
    incs = list(dict.fromkeys(i.strip() for i in includes if i.strip()))
    if not incs:
        raise UsageError("nothing to trace", "give at least one -i MODULE!SYMBOL or -i SYMBOL")
    parsed: dict[str, str] = {}
    for a in aggs:
        name, eq, spec = a.partition("=")
        name = name.strip()
        if not eq or not name or not spec.strip():
            raise UsageError(
                f"bad --agg '{a}'", "write NAME=SPEC, e.g. bytes='sum(arg0) by caller'"
            )
        try:
            parse_agg(spec)
        except AggSpecError as e:
            raise UsageError(f"bad --agg '{a}': {e.message}", e.hint) from e
        if name in parsed:
            raise UsageError(f"--agg '{name}' is given twice")
        parsed[name] = spec.strip()
    excl = [x.strip() for x in dict.fromkeys(excludes) if x.strip()]
    probes = []
    for n, inc in enumerate(incs):
        suffix = "" if len(incs) == 1 else f".{n + 1}"
        kind = "function"
        if _is_site(inc):
            kind = "address" if isinstance(parse_target(inc, "-i"), AddressPoint) else "offset"
        probe: dict[str, object] = {
            "name": inc.replace("/", "_").replace(",", "_").replace(" ", "_"),
            kind: inc,
            "aggregate": {f"{k}{suffix}": v for k, v in parsed.items()},
        }
        if excl and kind == "function":
            probe["exclude"] = excl
        probes.append(probe)
    text = yaml.safe_dump({"version": 1, "sets": {QUICK_SET: {"probes": probes}}}, sort_keys=False)
    try:
        psf = load_text(text, "--agg")
    except ProbeSetError as e:
        # the locations point into the generated file: keep only the messages
        text = re.sub(r"(?m)^--agg:\d+:\d+: error: ", "", str(e))
        raise UsageError(f"bad --agg: {text}") from e
    table: ProbeTable = psf.compile([QUICK_SET], options)
    return table
