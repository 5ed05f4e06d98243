"""D programs inside probe sets: a set's ``dtrace:`` (the program's text) or
``dtrace_file:`` (a ``.d`` file, relative to the probe-set file).

The program is compiled as ``instr dtrace`` compiles it, onto the same probe IR,
and its probes become the set's. A probe set keeps what runs in the target:
events (a clause without actions), aggregations, predicates the target can
evaluate and destructive actions (``instr run -w``). What only the host runs
(``printf``, ``trace``, ``exit``, variables, ``BEGIN``/``END``/``tick``) is an
error that says to use ``instr dtrace``. Errors point at the probe-set file
(line and column inside the block scalar) or at the ``.d`` file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from instr.dtrace import ast as A
from instr.dtrace.compiler import SET, HostClause, compile_program
from instr.dtrace.errors import DError, Loc, Src, fail
from instr.dtrace.parser import parse
from instr.dtrace.semantics import start
from instr.probes.diag import Diagnostics
from instr.probes.ir import Probe, SourceLoc
from instr.probes.loader import YScalar

_HOST = "instr run keeps the target's part of a D program"
_USE_DTRACE = "run the whole program with instr dtrace -s FILE.d"


def set_probes(
    set_name: str, node: YScalar, from_file: bool, yaml_file: str, diags: Diagnostics
) -> list[Probe]:
    """The probes of a set written in D; problems are reported to ``diags``."""
    if from_file:
        path = Path(yaml_file).parent / node.text
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            diags.error(node.loc, f"cannot read D program '{node.text}': {e.strerror or e}")
            return []
        src = Src(str(path), text)
    else:
        src = Src(yaml_file, node.text)

    def where(loc: Loc) -> SourceLoc:
        if from_file:
            return SourceLoc(src.name, loc.line, loc.col)
        lines = src.text.split("\n")
        offset = sum(len(x) + 1 for x in lines[: loc.line - 1]) + loc.col - 1
        return node.pos(offset)

    try:
        prog = parse(src)
        d = compile_program(prog, {"target": "$target", "pid": "$target"}, None, destructive=True)
        _target_only(d.clauses)
    except DError as e:
        for loc, message, hint in e.items:
            diags.error(where(loc), message, hint)
        return []
    out: list[Probe] = []
    names = _agg_names(d.ir_aggs)
    for probe in d.table.probes.values():
        clause = d.by_probe.get(probe.id)
        at = where(clause.spec.loc) if clause is not None else node.loc
        short = probe.name.split("/", 1)[1]
        aggs = tuple(
            dataclasses.replace(a, name=names.get(f"{SET}/{a.name}", a.name), loc=at)
            for a in probe.aggregations
        )
        out.append(
            dataclasses.replace(probe, id=0, name=f"{set_name}/{short}", loc=at, aggregations=aggs)
        )
    taken = set(names.values())
    return out + _profile_probes(set_name, d.clauses, taken, where)


def _profile_probes(
    set_name: str, clauses: list[HostClause], taken: set[str], where: Callable[[Loc], SourceLoc]
) -> list[Probe]:
    """The program's profile clauses as the set's profile probes (``profile: HZ``),
    named ``profile-HZ`` (then ``-2``...); their aggregations keep their D names
    (``@`` is ``agg``; a name the set has already gets ``.2``, ``.3``...)."""
    from instr.dtrace.profiling import probe_set_aggregations
    from instr.probes.ir import Aggregation, ProfilePoint
    from instr.probes.schema import MAX_KEYS_DEFAULT

    out: list[Probe] = []
    seen: dict[str, int] = {}
    for hc in clauses:
        if hc.spec.kind != "profile":
            continue
        at = where(hc.spec.loc)
        name = f"profile-{hc.spec.hz}"
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            name += f"-{seen[name]}"
        aggs = []
        for d_name, keys in probe_set_aggregations(hc.clause):
            agg = first = d_name or "agg"
            n = 1
            while agg in taken:
                n += 1
                agg = f"{first}.{n}"
            taken.add(agg)
            by = ", ".join(
                f"backtrace({k.depth})" if k.src == "backtrace" else k.name for k in keys
            )
            aggs.append(Aggregation(agg, "count", None, keys, "entry", MAX_KEYS_DEFAULT,
                                    source=f"count() by {by}" if by else "count()", loc=at))  # fmt: skip
        out.append(Probe(
            id=0, name=f"{set_name}/{name}", point=ProfilePoint(hc.spec.hz), entry=None,
            exit=None, actions=(), loc=at, aggregations=tuple(aggs), emit=False,
            agg_tier="host", agg_tier_why="samples are unwound and counted on the host",
        ))  # fmt: skip
    return out


def _target_only(clauses: list[HostClause]) -> None:
    for hc in clauses:
        if hc.spec.kind == "profile":
            if hc.predicate is not None:
                raise fail(start(hc.predicate), f"a {hc.spec.text} predicate runs on the host: "
                           f"{_HOST}", "key the aggregation by tid instead")  # fmt: skip
            continue  # a profile probe of the set (_profile_probes)
        if hc.spec.is_host:
            raise fail(hc.spec.loc, f"{hc.spec.text} clauses run on the host: {_HOST}",
                       _USE_DTRACE)  # fmt: skip
        if hc.predicate is not None:
            raise fail(start(hc.predicate), f"this predicate runs on the host: {_HOST}",
                       "use arguments, retval, tid and constants here")  # fmt: skip
        if hc.body:
            st = hc.body[0]
            what = (
                f"{st.expr.name}()"
                if isinstance(st, A.ExprStmt) and isinstance(st.expr, A.Call)
                else "this statement"
            )
            raise fail(st.loc, f"{what} runs on the host: {_HOST}", _USE_DTRACE)


def _agg_names(ir_aggs: dict[str, str]) -> dict[str, str]:
    """IR table -> the report's name: the D name when one table keeps it (``@`` is
    ``agg``), else ``NAME.1``, ``NAME.2``..."""
    counts: dict[str, int] = {}
    for d in ir_aggs.values():
        counts[d] = counts.get(d, 0) + 1
    seen: dict[str, int] = {}
    out: dict[str, str] = {}
    for ir, d in ir_aggs.items():
        base = d or "agg"
        if counts[d] == 1:
            out[ir] = base
        else:
            seen[d] = seen.get(d, 0) + 1
            out[ir] = f"{base}.{seen[d]}"
    return out
