"""The fast tier's C, generated from the probe IR.

For each probe whose aggregations (and predicate) C can express, this emits:

- ``agg_pN_enter`` / ``agg_pN_leave``: native ``Interceptor.attach``
  callbacks (``GumInvocationContext``), for any function;
- ``agg_pN_replace``: an ``Interceptor.replaceFast`` replacement that calls
  the original, for functions whose signature is known to be integer-only
  (``signatures.py``); the agent uses it for the probe's first site when no
  other probe hooks that function.

Each aggregation's table is ``agg_tID`` and the original function of a
replaced one is at ``agg_orig_pN``; the agent binds both to memory it owns.
The runtime the generated code calls is ``runtime.c``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any

from instr.ctier.cast import (
    Assign,
    Bin,
    Call,
    Cast,
    Decl,
    Do,
    Expr,
    Extern,
    Field,
    Func,
    If,
    Index,
    Int,
    Return,
    Stmt,
    Struct,
    TopLevel,
    Unary,
    Var,
    addr,
    unit,
)
from instr.ctier.predicate import NotC, collect_caps, predicate_c
from instr.ctier.signatures import replace_ok
from instr.probes.ir import Aggregation, Capture, Phase, Probe, ProbeTable

FUNC_CODES: dict[str, int] = {
    "count": 0,
    "sum": 1,
    "min": 2,
    "max": 3,
    "avg": 4,
    "stddev": 5,
    "quantize": 6,
    "lquantize": 7,
    "llquantize": 8,
}
_SIGNED = ("i8", "i16", "i32", "i64")
_NARROW = {"i8": "gint8", "i16": "gint16", "i32": "gint32"}
_NARROW_U = {"u8": "guint8", "u16": "guint16", "u32": "guint32"}


def runtime_source() -> str:
    return files("instr.ctier").joinpath("runtime.c").read_text(encoding="utf-8")


def is_signed(cap: Capture) -> bool:
    return cap.src == "duration" or (cap.src in ("arg", "retval") and cap.type in _SIGNED)


def typed(raw: Expr, cap: Capture) -> Expr:
    """A capture's value as a gint64, from its raw 64-bit register value."""
    t = cap.type if cap.src in ("arg", "retval") else "u64"
    if t in _NARROW:
        return Cast("gint64", Cast(_NARROW[t], raw))
    if t in _NARROW_U:
        return Cast("gint64", Cast(_NARROW_U[t], raw))
    if t == "bool":
        return Cast("gint64", Bin("!=", Bin("&", raw, Int(0xFF, unsigned=True)), Int(0)))
    return Cast("gint64", raw)


# ---------------------------------------------------------------- blockers


def _used_captures(probe: Probe) -> set[str]:
    used: set[str] = set()
    for a in probe.aggregations:
        if a.arg is not None:
            used.add(a.arg)
        used.update(k.capture for k in a.keys if k.capture is not None)
    return used


def fast_blockers(probe: Probe) -> list[str]:
    """Why this probe's aggregations cannot run as compiled C ([] if they can)."""
    out: list[str] = []
    for name in sorted(_used_captures(probe)):
        _, _, cap = probe.capture_ref(name)
        if cap.src == "backtrace":
            out.append(f"the backtrace '{name}' is a key")
        elif cap.type in ("cstr", "bytes"):
            out.append(f"the {cap.type} '{name}' is a key")
    if probe.where is not None:
        refs: set[tuple[Phase, int]] = set()
        collect_caps(probe.where.expr, refs)
        for ph, i in sorted(refs):
            cap = probe.captures(ph)[i]
            if cap.type in ("cstr", "bytes") or cap.src == "backtrace":
                out.append(f"'where' reads the {cap.type} '{cap.name}'")
        try:
            predicate_c(probe.where.expr, lambda ph, i: Var("v"))
        except NotC as e:
            out.append(str(e))
    return out


# ---------------------------------------------------------------- code


@dataclass
class _Ctx:
    """How one generated function reads values."""

    probe: Probe
    replace: bool
    phase: Phase  # the function runs at entry or at exit
    stmts: list[Stmt] = field(default_factory=list)
    declared: set[str] = field(default_factory=set)

    def raw_arg(self, i: int) -> Expr:
        if self.replace:
            return Var(f"a{i}")
        return Cast(
            "guint64",
            Cast("gsize", Call("gum_invocation_context_get_nth_argument", (Var("ic"), Int(i)))),
        )

    def raw_retval(self) -> Expr:
        if self.replace:
            return Var("r")
        return Cast(
            "guint64", Cast("gsize", Call("gum_invocation_context_get_return_value", (Var("ic"),)))
        )

    def raw_caller(self) -> Expr:
        if self.replace:
            return Cast("guint64", Cast("gsize", Call("__builtin_return_address", (Int(0),))))
        return Cast(
            "guint64",
            Cast("gsize", Call("gum_invocation_context_get_return_address", (Var("ic"),))),
        )

    def t0(self) -> Expr:
        return Var("t0") if self.replace else Field(Var("inv"), "t0")

    def saved(self, name: str) -> Expr:
        return Var(name) if self.replace else Field(Var("inv"), name)


def _var_name(phase: Phase, index: int) -> str:
    return f"{'e' if phase == 'entry' else 'x'}{index}"


def _entry_value(cx: _Ctx, cap: Capture) -> Expr:
    if cap.src == "caller":
        return Cast("gint64", cx.raw_caller())
    return typed(cx.raw_arg(cap.index), cap)


def _exit_value(cx: _Ctx, cap: Capture) -> Expr:
    if cap.src == "retval":
        return typed(cx.raw_retval(), cap)
    if cap.src == "duration":
        return Cast("gint64", Bin("-", Call("agg_now"), cx.t0()))
    if cap.src == "caller":
        return Cast("gint64", cx.raw_caller())
    # an argument read at exit: saved at entry
    return typed(cx.saved(f"a{cap.index}"), cap)


def _needs(probe: Probe) -> tuple[set[tuple[Phase, int]], set[int], bool]:
    """Captures used (phase, index), args saved for exit, whether t0 is needed."""
    used: set[tuple[Phase, int]] = set()
    for name in _used_captures(probe):
        phase, i, _ = probe.capture_ref(name)
        used.add((phase, i))
    if probe.where is not None:
        collect_caps(probe.where.expr, used)
    saved = {
        c.index
        for ph, i in used
        if ph == "exit"
        for c in [probe.captures("exit")[i]]
        if c.src == "arg"
    }
    t0 = any(ph == "exit" and probe.captures("exit")[i].src == "duration" for ph, i in used)
    return used, saved, t0


def _exit_refs(probe: Probe) -> set[tuple[Phase, int]]:
    """Captures the exit hook reads: those of exit-phase aggregations and predicate."""
    refs: set[tuple[Phase, int]] = set()
    for a in probe.aggregations:
        if _agg_phase(probe, a) != "exit":
            continue
        names = [a.arg] if a.arg is not None else []
        names += [k.capture for k in a.keys if k.capture is not None]
        for name in names:
            phase, i, _ = probe.capture_ref(name)
            refs.add((phase, i))
    if probe.where is not None and probe.where.phase == "exit":
        collect_caps(probe.where.expr, refs)
    return refs


def _site(cx: _Ctx) -> Expr:
    if cx.replace:
        return Int(0, unsigned=True)
    data = Call("gum_invocation_context_get_listener_function_data", (Var("ic"),))
    return Index(Cast("guint64 *", data), Int(0))


def _key(cx: _Ctx, agg: Aggregation, i: int) -> Expr:
    k = agg.keys[i]
    if k.src == "capture":
        assert k.capture is not None
        phase, index, _ = cx.probe.capture_ref(k.capture)
        return Cast("guint64", Var(_var_name(phase, index)))
    if k.src == "tid":
        return Call("agg_tid")
    if k.src == "pid":
        return Cast("guint64", Field(Var("agg_state"), "pid", arrow=False))
    if k.src in ("probefunc", "module"):
        return _site(cx)
    return Int(0, unsigned=True)  # execname: one process


def _update(cx: _Ctx, agg: Aggregation) -> list[Stmt]:
    table = addr(Var(f"agg_t{agg.id}"))
    v = Var(f"v{agg.id}")
    out: list[Stmt] = []
    if len(agg.keys) == 1:
        out.append(Decl("volatile guint64 *", v.name, Call("agg_row1", (table, _key(cx, agg, 0)))))
    elif agg.keys:
        kname = f"k{agg.id}"
        out.append(Decl("guint64", kname, count=len(agg.keys)))
        out += [Assign(Index(Var(kname), Int(i)), _key(cx, agg, i)) for i in range(len(agg.keys))]
        out.append(Decl("volatile guint64 *", v.name, Call("agg_row", (table, Var(kname)))))
    else:
        out.append(Decl("volatile guint64 *", v.name, Call("AGG_ROW0", (table,))))
    body: list[Stmt] = []
    if agg.arg is None:
        x: Expr = Int(0)
    else:
        phase, index, _ = cx.probe.capture_ref(agg.arg)
        x = Cast("guint64", Var(_var_name(phase, index)))
    if agg.func == "count":
        body.append(Do(Call("AGG_ADD", (addr(Index(v, Int(0))), Int(1)))))
    elif agg.func in ("sum", "avg"):
        body.append(Do(Call("AGG_ADD", (addr(Index(v, Int(0))), Int(1)))))
        body.append(Do(Call("AGG_ADD", (addr(Index(v, Int(1))), x))))
    elif agg.func == "quantize":
        bucket = Bin("+", Int(1), Call("agg_qbucket", (table, x)))
        body.append(Do(Call("AGG_ADD", (addr(Index(v, bucket)), Int(1)))))
    else:
        body.append(Do(Call("agg_apply", (table, v, x))))
    if agg.keys:
        out.append(If(Bin("!=", v, Var("NULL")), tuple(body)))
    else:
        out += body
    return out


def _phase_code(cx: _Ctx, used: set[tuple[Phase, int]], skip: list[Stmt]) -> list[Stmt]:
    """Declare this phase's values, test the predicate, update its aggregations."""
    probe = cx.probe
    out: list[Stmt] = []
    at_exit = _exit_refs(probe) if cx.phase == "exit" else set()
    for ph, i in sorted(used):
        if ph != cx.phase and not (ph == "entry" and cx.phase == "exit"):
            continue
        if cx.phase == "exit" and (ph, i) not in at_exit:
            continue
        name = _var_name(ph, i)
        if name in cx.declared:
            continue
        cap = probe.captures(ph)[i]
        if ph == "entry" and cx.phase == "exit":
            value: Expr = cx.saved(name)
        elif ph == "entry":
            value = _entry_value(cx, cap)
        else:
            value = _exit_value(cx, cap)
        out.append(Decl("gint64", name, value))
        cx.declared.add(name)
    where = probe.where
    if where is not None and where.phase == cx.phase:

        def var(ph: str, i: int) -> Expr:
            return Var(_var_name(ph, i))  # type: ignore[arg-type]

        out.append(If(Unary("!", predicate_c(where.expr, var)), tuple(skip)))
    for agg in probe.aggregations:
        if _agg_phase(probe, agg) == cx.phase:
            out += _update(cx, agg)
    return out


def _agg_phase(probe: Probe, agg: Aggregation) -> Phase:
    if probe.where is not None and probe.where.phase == "exit":
        return "exit"
    return agg.phase


def _hooks(probe: Probe, used: set[tuple[Phase, int]], t0: bool) -> tuple[bool, bool]:
    phases = {_agg_phase(probe, a) for a in probe.aggregations}
    exit_hook = "exit" in phases
    entry_hook = (
        "entry" in phases
        or t0
        or (probe.where is not None and probe.where.phase == "entry")
        or (exit_hook and any(ph == "entry" for ph, _ in used))
        or (exit_hook and any(c.src == "arg" for c in probe.captures("exit")))
    )
    return entry_hook, exit_hook


def _inv_struct(probe: Probe, used: set[tuple[Phase, int]], saved: set[int], t0: bool) -> Struct:
    fields: list[tuple[str, str]] = [("guint64", "skip")]
    if t0:
        fields.append(("guint64", "t0"))
    fields += [("guint64", f"a{i}") for i in sorted(saved)]
    fields += [
        ("gint64", _var_name("entry", i)) for ph, i in sorted(_exit_refs(probe)) if ph == "entry"
    ]
    return Struct(f"AggInv{probe.id}", tuple(fields))


def _saves(cx: _Ctx, used: set[tuple[Phase, int]], saved: set[int], t0: bool) -> list[Stmt]:
    out: list[Stmt] = []
    if t0:
        out.append(Assign(cx.t0(), Call("agg_now")))
    out += [Assign(cx.saved(f"a{i}"), cx.raw_arg(i)) for i in sorted(saved)]
    out += [
        Assign(cx.saved(_var_name("entry", i)), Var(_var_name("entry", i)))
        for ph, i in sorted(_exit_refs(cx.probe))
        if ph == "entry"
    ]
    return out


def _attach_fns(probe: Probe, entry_hook: bool, exit_hook: bool) -> list[TopLevel]:
    used, saved, t0 = _needs(probe)
    inv = _inv_struct(probe, used, saved, t0)
    inv_decl = Decl(
        f"{inv.name} *",
        "inv",
        Cast(
            f"{inv.name} *",
            Call(
                "gum_invocation_context_get_listener_invocation_data",
                (Var("ic"), Call("sizeof", (Var(inv.name),))),
            ),
        ),
    )
    out: list[TopLevel] = [inv]
    params = ("GumInvocationContext * ic",)
    if entry_hook:
        cx = _Ctx(probe, replace=False, phase="entry")
        body: list[Stmt] = []
        skip: list[Stmt] = [Return()]
        if exit_hook:
            body += [inv_decl, Assign(Field(Var("inv"), "skip"), Int(0))]
            skip.insert(0, Assign(Field(Var("inv"), "skip"), Int(1)))
        code = _phase_code(cx, used, skip)
        # values the exit needs are saved before the aggregations run
        body += [s for s in code if isinstance(s, Decl) and s.name.startswith("e")]
        body += _saves(cx, used, saved, t0) if exit_hook else []
        body += [s for s in code if not (isinstance(s, Decl) and s.name.startswith("e"))]
        out.append(Func("void", f"agg_p{probe.id}_enter", params, tuple(body)))
    if exit_hook:
        cx = _Ctx(probe, replace=False, phase="exit")
        body = [inv_decl]
        if entry_hook:
            body.append(If(Field(Var("inv"), "skip"), (Return(),)))
        body += _phase_code(cx, used, [Return()])
        out.append(Func("void", f"agg_p{probe.id}_leave", params, tuple(body)))
    return out


def _replace_fn(probe: Probe, exit_hook: bool) -> Func:
    used, _saved, t0 = _needs(probe)
    entry = _Ctx(probe, replace=True, phase="entry")
    call = Call("AGG_CALL_ORIG", (Var(f"agg_orig_p{probe.id}"),))
    skip: list[Stmt] = [Return(call)]
    # Frida's and the agent's own calls are not the program's (runtime.c)
    body: list[Stmt] = [If(Call("AGG_TOOL_THREAD", ()), (Return(call),))]
    body += _phase_code(entry, used, skip)
    if exit_hook:
        if t0:
            body.append(Decl("guint64", "t0", Call("agg_now")))
        body.append(Decl("guint64", "r", call))
        ex = _Ctx(probe, replace=True, phase="exit", declared=entry.declared)
        body += _phase_code(ex, used, [Return(Var("r"))])
        body.append(Return(Var("r")))
    else:
        body.append(Return(call))
    return Func("guint64", f"agg_p{probe.id}_replace", ("AGG_PARAMS",), tuple(body))


def probe_source(probe: Probe) -> tuple[list[TopLevel], dict[str, Any]]:
    """The C for one fast-tier probe, and the plan entry naming its functions."""
    used, _saved, t0 = _needs(probe)
    entry_hook, exit_hook = _hooks(probe, used, t0)
    items: list[TopLevel] = [Extern("AggTable", f"agg_t{a.id}") for a in probe.aggregations]
    items += _attach_fns(probe, entry_hook, exit_hook)
    fns: dict[str, Any] = {
        "enter": f"agg_p{probe.id}_enter" if entry_hook else None,
        "leave": f"agg_p{probe.id}_leave" if exit_hook else None,
        "replace": None,
    }
    if replace_ok(probe):
        items.append(Extern("gpointer", f"agg_orig_p{probe.id}"))
        items.append(_replace_fn(probe, exit_hook))
        fns["replace"] = f"agg_p{probe.id}_replace"
    return items, fns


def table_source(table: ProbeTable) -> dict[str, Any] | None:
    """The fast tier for a table: C source and, per probe id, its functions."""
    fast = [p for p in table if p.agg_tier == "fast"]
    if not any(p.aggregations for p in table):
        return None
    items: list[TopLevel] = []
    probes: dict[str, Any] = {}
    for p in fast:
        code, fns = probe_source(p)
        items += code
        probes[str(p.id)] = fns
    return {"source": runtime_source() + "\n" + unit(items), "probes": probes}
