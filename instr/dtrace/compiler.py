"""D program -> instr's probe IR (through the probe-set compiler) + the host's part.

Each clause on a pid or syscall probe becomes one probe of a generated probe
set (``set d``): its captures, its predicate when the target can evaluate it,
its aggregations. The probe-set compiler then checks it and picks its tier,
exactly as for a YAML probe set. What the target does not do (printf, trace,
exit, variables, predicates over variables) runs on the host, from the probe's
events, in the order the target wrote them: ``HostClause``.
BEGIN, END and tick clauses run on the host only.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from dataclasses import dataclass, field

import yaml

from instr.aggregate import llq
from instr.dtrace import ast as A
from instr.dtrace.destructive import is_destructive, patch_probes
from instr.dtrace.errors import DError, Loc, fail
from instr.dtrace.pairing import Unit, pair
from instr.dtrace.probes import ProbeSpec, parse_probe
from instr.dtrace.semantics import check_clause, start
from instr.dtrace.values import ARGS, HostOnly, Needs, canonical
from instr.errors import ProbeSetError
from instr.probes.compiler import load_text
from instr.probes.diag import did_you_mean
from instr.probes.ir import PlanOptions, ProbeTable
from instr.syscalls.table import SIGNATURES

SET = "d"
AGG_FUNCS = ("count", "sum", "min", "max", "avg", "stddev", "quantize", "lquantize", "llquantize")
_KEYS = {"execname": "execname", "probefunc": "probefunc", "probemod": "module",
         "pid": "pid", "tid": "tid"}  # fmt: skip


@dataclass
class AggInfo:
    name: str  # as written, without '@' ("" for @)
    func: str
    nkeys: int
    loc: Loc
    ir_names: list[str] = field(default_factory=list)  # "d/a1", ... (one per probe)


@dataclass
class HostClause:
    index: int
    clause: A.Clause
    spec: ProbeSpec
    predicate: A.Expr | None  # evaluated on the host (None: none, or the target did it)
    body: tuple[A.Stmt, ...]  # the statements the host runs (no aggregation updates)
    probe_id: int = 0  # the IR probe (pid/syscall)
    paired: bool = False  # a return clause hooked at entry too (instr.dtrace.pairing)
    emits: bool = True  # its events are the program's (False: written for --timeline only)


@dataclass
class DProgram:
    table: ProbeTable
    clauses: list[HostClause]
    by_probe: dict[int, HostClause]
    aggs: dict[str, AggInfo]
    ir_aggs: dict[str, str]  # IR table name -> D aggregation name
    quiet: bool
    probes: list[ProbeSpec]  # every pid/syscall probe, for -l
    macros: dict[str, str]
    strsize: int = 256  # copyinstr()'s default size (option strsize)


def compile_program(
    prog: A.Program,
    macros: dict[str, str],
    main_module: str | None,
    options: PlanOptions | None = None,
    quiet: bool = False,
    destructive: bool = False,
    offsets: dict[str, str] | None = None,
    timeline: bool = False,
) -> DProgram:
    """``offsets``: instruction probes resolved in the target (``offset_key(spec)`` ->
    ``MODULE+0xOFFSET``, see instr.dtrace.offsets); without it they are compiled as
    their function's entry, for resolving them. ``timeline``: every pid and syscall
    probe writes events (``--timeline``), also those whose clauses only aggregate."""
    strsize = 256
    for name, value, loc in prog.options:
        if name == "quiet" and value in (None, "", "yes", "true"):
            quiet = True
        elif name == "destructive" and value in (None, "", "yes", "true"):
            destructive = True
        elif name == "strsize":
            strsize = _size(value, loc, name, 1, 4096)
        elif name == "bufsize":
            base = options or PlanOptions()
            options = dataclasses.replace(
                base, buffer_bytes=_size(value, loc, name, 64 << 10, 1 << 30)
            )
        else:
            raise fail(loc, f"option '{name}' is not supported",
                       "supported: quiet, destructive, strsize=N, bufsize=N[k|m|g]")  # fmt: skip
    probes_yaml: list[dict[str, object]] = []
    origins: dict[str, Loc] = {}  # generated probe name -> where it comes from
    clauses: list[HostClause] = []
    aggs: dict[str, AggInfo] = {}
    agg_seq = 0
    specs: list[ProbeSpec] = []
    units: list[Unit] = []
    for ci, clause in enumerate(prog.clauses):
        kinds = set()
        for desc in clause.probes:
            spec = parse_probe(desc.loc, desc.text, macros, main_module)
            kinds.add("profile" if spec.kind == "profile" else spec.is_host)
            check_clause(clause, spec, macros)
            units.append(Unit(ci, clause, spec))
        if "profile" in kinds and len(kinds) > 1:
            raise fail(clause.loc, "a clause cannot mix profile probes with other probes",
                       "write two clauses")  # fmt: skip
        if len(kinds) > 1:
            raise fail(clause.loc, "a clause cannot mix BEGIN/END/tick with pid or syscall "
                       "probes", "write two clauses")  # fmt: skip
    for unit in pair(units):
        ci, clause, spec = unit.index, unit.clause, unit.spec
        if spec.is_host:
            clauses.append(HostClause(ci, clause, spec, clause.predicate, _host_body(clause)))
            continue
        if spec.kind == "profile":  # counted on the host from the sampler (instr.dtrace.profiling)
            for st in clause.body:
                assert isinstance(st, A.Assign) and isinstance(st.target, A.AggRef)
                _agg_info(st.target, "count", aggs)
            clauses.append(HostClause(ci, clause, spec, clause.predicate, ()))
            continue
        specs.append(spec)
        for patch, loc in patch_probes(clause, spec, macros, _consts(spec, macros), destructive):
            name = f"w{len(origins) + 1}"
            probes_yaml.append({"name": name, **patch})
            origins[name] = loc
        needs = Needs(spec, strsize=strsize)
        probe: dict[str, object] = {"name": f"c{sum(1 for n in origins if n[0] == 'c') + 1}"}
        if spec.kind == "pid" and spec.offset is not None and offsets is not None:
            probe["offset"] = offsets[offset_key(spec)]
            probe["on"] = "entry"
        elif spec.kind == "pid":
            probe["function"] = f"{spec.module or '*'}!{spec.func}"
            probe["on"] = (
                ["entry", "exit"] if unit.paired else "exit" if spec.name == "return" else "entry"
            )
        else:
            probe["syscall"] = _syscalls(spec)
        host_pred: A.Expr | None = None
        if clause.predicate is not None:
            try:
                probe["where"] = needs.predicate(clause.predicate, _consts(spec, macros))
            except HostOnly:
                host_pred = clause.predicate
                _host_values(clause.predicate, needs)
        agg_specs: dict[str, str] = {}
        on_host: set[int] = set()  # aggregations the host updates from the events
        for st in clause.body:
            if isinstance(st, A.Assign) and isinstance(st.target, A.AggRef):
                ir = f"a{agg_seq + 1}"
                try:
                    agg_specs[ir] = _agg_spec(
                        st, needs, spec, aggs, f"{SET}/{ir}", on_host=host_pred is not None
                    )
                    agg_seq += 1
                except HostOnly:
                    on_host.add(id(st))
        body = _host_body(clause, on_host)
        for st in body:
            _host_values(st, needs)
        emit = bool(body) or host_pred is not None or not clause.body
        if not emit and not agg_specs:  # destructive actions only: the patch probes do it all
            clauses.append(HostClause(ci, clause, spec, None, body))
            continue
        if emit and spec.kind == "syscall":
            needs.cap(A.Ident(spec.loc, "probefunc"))  # FUNCTION:NAME, and probefunc
        if timeline and spec.kind == "syscall":
            needs.cap(A.Elapsed(spec.loc))  # a call's slice: from its start, for this long
        if needs.captures:
            probe["capture"] = dict(needs.captures)
        if agg_specs:
            probe["aggregate"] = agg_specs
        probe["emit"] = emit or timeline
        probes_yaml.append(probe)
        origins[str(probe["name"])] = spec.loc
        hc = HostClause(ci, clause, spec, host_pred, body, len(probes_yaml), unit.paired, emit)
        clauses.append(hc)
    table = _table(probes_yaml, options, origins, prog)
    ir_aggs = {ir: a.name for a in aggs.values() for ir in a.ir_names}
    by_probe = {c.probe_id: c for c in clauses if c.probe_id}
    return DProgram(table, clauses, by_probe, aggs, ir_aggs, quiet, specs, macros, strsize)


def offset_key(spec: ProbeSpec) -> str:
    """An instruction probe's key in ``compile_program``'s ``offsets``."""
    return f"{spec.loc}"


def _table(
    probes: list[dict[str, object]],
    options: PlanOptions | None,
    origins: dict[str, Loc],
    prog: A.Program,
) -> ProbeTable:
    if not probes:
        return ProbeTable(options=options or PlanOptions())
    text = yaml.safe_dump({"version": 1, "sets": {SET: {"probes": probes}}}, sort_keys=False)
    try:
        return load_text(text, "<dtrace>").compile([SET], options)
    except ProbeSetError as e:
        # Point at the clause: the generated probe set is not the user's text.
        items = []
        for d in e.diagnostics:
            loc = origins.get(_owner(text, d.line), prog.clauses[0].loc)
            items.append((loc, d.message, d.hint))
        raise DError(items) from None


def _owner(text: str, line: int) -> str:
    """The generated probe that holds ``line`` of the YAML."""
    current = ""
    for i, row in enumerate(text.splitlines(), 1):
        m = re.match(r"\s*- name: ([cw]\d+)$", row)
        if m:
            current = m.group(1)
        if i >= line:
            break
    return current


def _consts(spec: ProbeSpec, macros: dict[str, str]) -> dict[str, object]:
    out: dict[str, object] = {"probename": spec.name, "probeprov": spec.kind}
    if spec.kind == "pid" and not _is_glob(spec.func):
        out["probefunc"] = spec.func
    if spec.kind == "pid" and spec.module is not None and not _is_glob(spec.module):
        out["probemod"] = spec.module
    for name, value in macros.items():
        if name in ("target", "pid") and not value.isdigit():
            continue  # -c: known once spawned
        out[f"${name}"] = int(value) if value.lstrip("-").isdigit() else value
    target = macros.get("target", "")
    if target.isdigit():
        out["pid"] = int(target)
    return out


def _is_glob(s: str) -> bool:
    return any(c in s for c in "*?[")


def _syscalls(spec: ProbeSpec) -> list[str] | str:
    if spec.func == "*":
        return "all"
    if not _is_glob(spec.func):
        if spec.func not in SIGNATURES:
            hint = did_you_mean(spec.func, SIGNATURES) or "instr syscalls lists the names"
            raise fail(spec.loc, f"unknown system call '{spec.func}'", hint)
        return [spec.func]
    names = sorted(n for n in SIGNATURES if fnmatch.fnmatchcase(n, spec.func))
    if not names:
        raise fail(spec.loc, f"no system call matches '{spec.func}'")
    return names


def _host_body(clause: A.Clause, on_host: set[int] = frozenset()) -> tuple[A.Stmt, ...]:  # type: ignore[assignment]
    """What the host runs: neither the aggregation updates the target does (all but
    ``on_host``'s) nor destructive actions."""
    return tuple(
        st
        for st in clause.body
        if not (
            isinstance(st, A.Assign) and isinstance(st.target, A.AggRef) and id(st) not in on_host
        )
        and not is_destructive(st)
    )


def _host_values(node: A.Stmt | A.Expr, needs: Needs) -> None:
    """Capture every argument, retval and string the host will evaluate."""
    for e in walk(node):
        if isinstance(e, A.Ident) and (
            canonical(e.name) in (*ARGS, "retval", "errno")
            or (canonical(e.name) == "probefunc" and needs.spec.kind == "syscall")
        ):
            needs.cap(e)
        elif isinstance(e, A.Call) and e.name in ("copyinstr", "str"):
            needs.string(e)
        elif isinstance(e, A.Call) and e.name == "copyin":
            needs.copyin(e)
        elif isinstance(e, A.Entry | A.Elapsed) or (isinstance(e, A.Call) and e.name == "ustack"):
            needs.cap(e)


def walk(node: A.Stmt | A.Expr) -> list[A.Expr]:
    out: list[A.Expr] = []

    def go(n: A.Stmt | A.Expr) -> None:
        if isinstance(n, A.Assign):
            go(n.target)
            go(n.value)
        elif isinstance(n, A.ExprStmt):
            go(n.expr)
        else:
            out.append(n)
            if isinstance(n, A.Unary):
                go(n.arg)
            elif isinstance(n, A.Binary):
                go(n.left)
                go(n.right)
            elif isinstance(n, A.Ternary):
                go(n.cond)
                go(n.then)
                go(n.other)
            elif isinstance(n, A.Call):
                for a in n.args:
                    go(a)
            elif isinstance(n, A.AggRef):
                for k in n.keys:
                    go(k)

    go(node)
    return out


def _agg_spec(
    st: A.Assign,
    needs: Needs,
    spec: ProbeSpec,
    aggs: dict[str, AggInfo],
    ir_name: str,
    on_host: bool = False,
) -> str:
    """The aggregation's IR text (``sum(a0) by execname``), its table named
    ``ir_name``; ``HostOnly`` when the target cannot compute its value, a key, or
    (``on_host``) the clause's predicate: the host then updates it from the events
    (``instr.aggregate.host``), as DTrace would, only slower."""
    ref = st.target
    assert isinstance(ref, A.AggRef)
    call = st.value
    if not isinstance(call, A.Call):
        raise fail(call.loc, "an aggregation is assigned an aggregating function",
                   "e.g. @n[probefunc] = count(); bpftrace's @start[tid] = nsecs is "
                   "self->start = timestamp in D")  # fmt: skip
    func = call.name
    if func not in AGG_FUNCS:
        bt = {"hist": "quantize", "lhist": "lquantize"}.get(func)
        hint = (
            f"bpftrace's {func}() is {bt}() in D"
            if bt
            else did_you_mean(func, AGG_FUNCS) or f"one of: {', '.join(AGG_FUNCS)}"
        )
        raise fail(call.loc, f"unknown aggregating function '{func}'", hint)
    want = {"count": (0, 0), "lquantize": (3, 4), "llquantize": (5, 5)}.get(func, (1, 1))
    if not want[0] <= len(call.args) <= want[1]:
        n = f"{want[0]}" if want[0] == want[1] else f"{want[0]} or {want[1]}"
        raise fail(call.loc, f"{func}() takes {n} argument{'s' if want[1] != 1 else ''}, "
                   f"not {len(call.args)}")  # fmt: skip
    info = _agg_info(ref, func, aggs, call.loc)
    bounds = []
    for extra in call.args[1:]:
        if not isinstance(extra, A.Int):
            raise fail(extra.loc, f"{func}()'s bounds must be integer constants")
        bounds.append(str(extra.value))
    if func == "llquantize":
        ps = [int(a) for a in bounds]
        bad = llq.check((ps[0], ps[1], ps[2], ps[3]))
        if bad is not None:
            raise fail(call.args[bad[0]].loc, bad[1], bad[2] or None)
    if on_host:
        raise HostOnly(st.loc, "the predicate runs on the host")
    args = [_value(call.args[0], needs), *bounds] if call.args else []
    keys = [_key(k, needs, spec) for k in ref.keys]
    info.ir_names.append(ir_name)
    text = f"{func}({', '.join(args)})"
    return f"{text} by {', '.join(keys)}" if keys else text


def _agg_info(ref: A.AggRef, func: str, aggs: dict[str, AggInfo], at: Loc | None = None) -> AggInfo:
    """The D aggregation ``ref`` names, checked against its earlier updates."""
    info = aggs.get(ref.name)
    shown = f"@{ref.name}"
    if info is None:
        info = aggs[ref.name] = AggInfo(ref.name, func, len(ref.keys), ref.loc)
    elif info.func != func:
        raise fail(at or ref.loc, f"{shown} is {info.func}() at {info.loc.line}:{info.loc.col}, "
                   f"not {func}()", "an aggregation keeps one function")  # fmt: skip
    elif info.nkeys != len(ref.keys):
        raise fail(ref.loc, f"{shown} has {info.nkeys} key(s) at {info.loc.line}:"
                   f"{info.loc.col}, not {len(ref.keys)}")  # fmt: skip
    return info


def _value(e: A.Expr, needs: Needs) -> str:
    """The capture of an aggregation's value; ``HostOnly`` when it is an
    expression the target does not compute (the host will)."""
    name = needs.cap(e)
    if not name or name.startswith(("s", "es", "caller")) or name == "pf":
        raise fail(start(e), "this value cannot be aggregated in the target",
                   "aggregate an argument (arg0..arg9), retval, or timestamp - self->ts "
                   "with self->ts = timestamp at the same function's entry")  # fmt: skip
    return name


def _key(e: A.Expr, needs: Needs, spec: ProbeSpec) -> str:
    if isinstance(e, A.Ident):
        name = canonical(e.name)
        if name == "probefunc" and spec.kind == "syscall":
            return "syscall"
        if name in _KEYS:
            return _KEYS[name]
    return needs.cap(e)  # HostOnly: the host computes it


def _size(value: str | None, loc: Loc, name: str, low: int, high: int) -> int:
    """An option's size: N, or N with k, m or g (DTrace's spelling)."""
    m = re.fullmatch(r"(\d+)([kmgKMG]?)", value or "")
    if m is None:
        raise fail(loc, f"option {name} needs a size, e.g. {name}=4k")
    n = int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30}[m.group(2).lower()]
    if not low <= n <= high:
        raise fail(loc, f"option {name}={value} is out of range ({low} to {high} bytes)")
    return n
