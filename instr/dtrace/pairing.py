"""Thread-locals paired by the hook: ``self->x`` set at a function's entry, read at its return.

    pid$target::f:entry  { self->ts = timestamp; self->n = arg0; }
    pid$target::f:return /self->ts/ { @[self->n] = quantize(timestamp - self->ts); self->ts = 0; }

DTrace keeps ``self->`` per thread. When a variable is set only in ``f:entry``
clauses and read only in ``f:return`` clauses, instr's hooks already pair a
call's entry with its return on the same thread (recursion included), so the
return clause is compiled as one probe with both hooks (for a system call, the
monitor's one record per call already holds both): ``self->n`` becomes the
entry capture of ``arg0`` (``Entry``), ``timestamp - self->ts`` the call's
``duration`` (``Elapsed``), and ``self->x = 0`` at return is dropped. The
aggregations then stay in the target, exact under any number of threads.
Anything else about ``self->`` (set elsewhere, read elsewhere, set to another
expression) runs on the host from the events, per thread id.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from instr.dtrace import ast as A
from instr.dtrace.probes import ProbeSpec
from instr.dtrace.values import ARGS, canonical


@dataclass(frozen=True)
class Unit:
    """One clause on one probe description."""

    index: int  # the clause's position in the program
    clause: A.Clause
    spec: ProbeSpec
    paired: bool = False  # a return clause compiled with its entry (both hooks)


def _fn(spec: ProbeSpec) -> tuple[str | None, str] | None:
    """What a pair must share: the function (pid), or the system call (one record
    per call carries its arguments, result and duration)."""
    if spec.kind == "pid":
        return (spec.module, spec.func)
    if spec.kind == "syscall":
        return ("syscall", spec.func)
    return None


def _self_assigns(clause: A.Clause) -> dict[str, A.Expr]:
    return {
        st.target.name: st.value
        for st in clause.body
        if isinstance(st, A.Assign) and isinstance(st.target, A.Var) and st.target.scope == "self"
    }


def _vars_read(node: A.Stmt | A.Expr | None) -> set[str]:
    from instr.dtrace.compiler import walk

    if node is None:
        return set()
    if isinstance(node, A.Assign) and isinstance(node.target, A.Var):
        node = node.value
    return {e.name for e in walk(node) if isinstance(e, A.Var) and e.scope == "self"}


def _pairable(value: A.Expr) -> bool:
    if isinstance(value, A.Int):
        return True
    if isinstance(value, A.Ident):
        return canonical(value.name) in (*ARGS, "timestamp")
    if isinstance(value, A.Call) and value.name in ("copyinstr", "str") and value.args:
        a = value.args[0]
        return isinstance(a, A.Ident) and canonical(a.name) in ARGS
    return False


def pair(units: list[Unit]) -> list[Unit]:
    """Rewrite entry/return pairs (see the module); other units are returned unchanged."""
    sets: dict[str, list[Unit]] = {}  # var -> units that assign it
    reads: dict[str, list[Unit]] = {}  # var -> units that read it
    for u in units:
        for name in _self_assigns(u.clause):
            sets.setdefault(name, []).append(u)
        nodes: list[A.Stmt | A.Expr | None] = [u.clause.predicate, *u.clause.body]
        for n in nodes:
            for name in _vars_read(n):
                reads.setdefault(name, []).append(u)
    chosen: dict[str, tuple[tuple[str | None, str], A.Expr]] = {}
    for name, setters in sets.items():
        entries = [u for u in setters if u.spec.name == "entry" and _fn(u.spec) is not None]
        values = {
            id(u): _self_assigns(u.clause)[name] for u in entries
        }  # the value each setter gives
        fn = _fn(setters[0].spec)
        returns = [u for u in setters if u not in entries]
        ok = (
            fn is not None
            and len(entries) == 1
            and all(_fn(u.spec) == fn and u.spec.name == "return" for u in returns)
            and all(_is_zero(_self_assigns(u.clause)[name]) for u in returns)
            and all(_fn(u.spec) == fn and u.spec.name == "return" for u in reads.get(name, []))
            and _pairable(values[id(entries[0])])
            and entries[0].clause.predicate is None
        )
        if ok and fn is not None:
            chosen[name] = (fn, values[id(entries[0])])
    if not chosen:
        return units
    out: list[Unit] = []
    for u in units:
        fn = _fn(u.spec)
        mine = {n: v for n, (f, v) in chosen.items() if f == fn}
        if not mine:
            out.append(u)
        elif u.spec.name == "entry":
            body = tuple(st for st in u.clause.body if not _assigns(st, mine))
            if body:  # what else the entry clause does still runs
                out.append(dataclasses.replace(u, clause=dataclasses.replace(u.clause, body=body)))
        else:
            uses = _vars_read(u.clause.predicate) | {
                n for st in u.clause.body for n in _vars_read(st)
            }
            if not uses & set(mine):
                body = tuple(st for st in u.clause.body if not _assigns(st, mine))
                out.append(dataclasses.replace(u, clause=dataclasses.replace(u.clause, body=body)))
                continue
            out.append(Unit(u.index, _rewrite(u.clause, mine), u.spec, paired=True))
    return out


def _is_zero(e: A.Expr) -> bool:
    return isinstance(e, A.Int) and e.value == 0


def _assigns(st: A.Stmt, names: dict[str, A.Expr]) -> bool:
    return (
        isinstance(st, A.Assign)
        and isinstance(st.target, A.Var)
        and st.target.scope == "self"
        and st.target.name in names
    )


def _rewrite(clause: A.Clause, mine: dict[str, A.Expr]) -> A.Clause:
    def sub(e: A.Expr) -> A.Expr:
        if isinstance(e, A.Binary) and e.op == "-":
            left, right = e.left, e.right
            if (
                isinstance(left, A.Ident)
                and canonical(left.name) == "timestamp"
                and isinstance(right, A.Var)
                and right.scope == "self"
                and _is_timestamp(mine.get(right.name))
            ):
                return A.Elapsed(left.loc)
        if isinstance(e, A.Var) and e.scope == "self" and e.name in mine:
            v = mine[e.name]
            if _is_timestamp(v):
                return A.Int(e.loc, 1)  # set at entry: in a truth test, "the entry was seen"
            return v if isinstance(v, A.Int) else A.Entry(e.loc, v)
        return _map(e, sub)

    body: list[A.Stmt] = []
    for st in clause.body:
        if _assigns(st, mine):
            continue
        if isinstance(st, A.Assign):
            body.append(dataclasses.replace(st, target=_map(st.target, sub), value=sub(st.value)))
        else:
            body.append(dataclasses.replace(st, expr=sub(st.expr)))
    pred = sub(clause.predicate) if clause.predicate is not None else None
    return dataclasses.replace(clause, predicate=pred, body=tuple(body))


def _is_timestamp(v: A.Expr | None) -> bool:
    return isinstance(v, A.Ident) and canonical(v.name) == "timestamp"


def _map(e: A.Expr, f: Callable[[A.Expr], A.Expr]) -> A.Expr:
    """``e`` with ``f`` applied to its children."""
    if isinstance(e, A.Unary):
        return dataclasses.replace(e, arg=f(e.arg))
    if isinstance(e, A.Binary):
        return dataclasses.replace(e, left=f(e.left), right=f(e.right))
    if isinstance(e, A.Ternary):
        return dataclasses.replace(e, cond=f(e.cond), then=f(e.then), other=f(e.other))
    if isinstance(e, A.Call):
        return dataclasses.replace(e, args=tuple(f(a) for a in e.args))
    if isinstance(e, A.AggRef):
        return dataclasses.replace(e, keys=tuple(f(k) for k in e.keys))
    return e
