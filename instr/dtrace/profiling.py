"""profile-N clauses: counts of ``instr profile``'s samples, kept on the host.

A profile clause is a host clause fed by the sampler (``AgentSampler`` on the
dtrace session's agent): each sample is unwound here anyway, so its keys
(``ustack()``, ``tid``...) are computed here and the aggregation is a host
table beside the target's. One sampler runs per program, at the highest rate
asked for; a clause at a lower rate takes its share of the samples (every
k-th, spread evenly), so a thread's CPU second still gives it about N.

A profile clause updates aggregations with ``count()`` only, keyed by
``ustack()``, ``ustack(N)``, ``tid``, ``pid``, ``execname``, ``ufunc(arg1)``
and ``umod(arg1)`` (in DTrace arg1 is the user PC), and filtered by a
predicate over ``tid``, ``pid``, ``execname`` and constants.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from instr.aggregate.model import AggRow, AggTable
from instr.dtrace import ast as A
from instr.dtrace.errors import fail
from instr.dtrace.probes import ProbeSpec
from instr.dtrace.values import canonical
from instr.profile.framenames import FrameNames

MAX_DEPTH = 1024  # ustack(N): the most frames
_IDENTS = ("tid", "pid", "execname")
_KEY_NAMES = {"stack": "stack", "func": "caller", "mod": "module"}  # caller: shown mod`func
_KEY_HINT = "keys here: ustack(), ustack(N), tid, pid, execname, ufunc(arg1), umod(arg1)"


def check_profile_clause(clause: A.Clause, spec: ProbeSpec) -> None:
    """What a profile clause may say: count() updates, keyed by what a sample knows."""
    from instr.dtrace.compiler import walk

    if clause.predicate is not None:
        for n in walk(clause.predicate):
            if isinstance(n, A.Ident) and canonical(n.name) in _IDENTS:
                continue
            if isinstance(n, A.Int | A.Str | A.Macro | A.Unary | A.Binary | A.Ternary):
                continue
            raise fail(n.loc, f"a {spec.text} predicate can test tid, pid and execname only",
                       "a sample has no arguments or variables")  # fmt: skip
    if not clause.body:
        raise fail(clause.loc, f"a {spec.text} clause needs an aggregation",
                   "e.g. profile-99 { @[ustack()] = count(); }")  # fmt: skip
    for st in clause.body:
        if not (isinstance(st, A.Assign) and isinstance(st.target, A.AggRef)):
            where = st.expr.loc if isinstance(st, A.ExprStmt) else st.target.loc
            raise fail(where, "profile clauses only count samples into aggregations",
                       "e.g. @[ustack()] = count(); actions go in other clauses")  # fmt: skip
        if st.op != "=":
            raise fail(st.loc, f"'{st.op}' cannot update an aggregation", "write @[...] = count()")
        call = st.value
        if not isinstance(call, A.Call) or call.name != "count" or call.args:
            where = call.loc if isinstance(call, A.Call) else st.loc
            raise fail(where, "a profile clause counts samples: its aggregations use count()",
                       "e.g. @[ustack()] = count()")  # fmt: skip
        for k in st.target.keys:
            key_kind(k)


def key_kind(k: A.Expr) -> str:
    """ "stack" | "func" | "mod" | "tid" | "pid" | "execname", or a line:col error."""
    if isinstance(k, A.Ident) and canonical(k.name) in _IDENTS:
        return canonical(k.name)
    if isinstance(k, A.Ident) and k.name == "ustack":  # bpftrace's spelling
        return "stack"
    if isinstance(k, A.Call) and k.name == "ustack":
        if len(k.args) > 1 or (k.args and not isinstance(k.args[0], A.Int)):
            raise fail(k.loc, "ustack() takes an optional constant depth", "e.g. ustack(5)")
        if k.args and isinstance(k.args[0], A.Int) and not 1 <= k.args[0].value <= MAX_DEPTH:
            raise fail(k.args[0].loc, f"ustack()'s depth must be from 1 to {MAX_DEPTH}")
        return "stack"
    if isinstance(k, A.Call) and k.name in ("ufunc", "umod", "usym"):
        arg = k.args[0] if len(k.args) == 1 else None
        if not (isinstance(arg, A.Ident) and arg.name == "arg1"):
            raise fail(k.loc, f"in a profile clause {k.name}() takes arg1, the sampled user PC",
                       f"write {k.name}(arg1)")  # fmt: skip
        return "mod" if k.name == "umod" else "func"
    raise fail(k.loc, "this key has no value in a profile clause", _KEY_HINT)


def depth_of(k: A.Expr) -> int:
    if isinstance(k, A.Call) and k.args and isinstance(k.args[0], A.Int):
        return k.args[0].value
    return MAX_DEPTH


@dataclass
class _Update:
    agg: str  # the D aggregation's name
    kinds: tuple[str, ...]
    depths: tuple[int, ...]


@dataclass
class ProfileClause:
    hc: Any  # HostClause
    hz: int
    updates: list[_Update]
    acc: int = 0  # the share of the samples: fires when acc reaches the sampler's rate


class ProfileAggs(FrameNames):
    """The host's tables of the program's profile clauses."""

    def __init__(self, clauses: list[Any], runtime: Any) -> None:
        super().__init__()
        self.rt = runtime
        self.clauses: list[ProfileClause] = []
        for hc in clauses:
            ups = []
            for st in hc.clause.body:
                assert isinstance(st, A.Assign) and isinstance(st.target, A.AggRef)
                keys = st.target.keys
                ups.append(_Update(st.target.name, tuple(key_kind(k) for k in keys),
                                   tuple(depth_of(k) for k in keys)))  # fmt: skip
            self.clauses.append(ProfileClause(hc, hc.spec.hz, ups))
        self.hz = max((c.hz for c in self.clauses), default=0)
        self.counts: dict[str, Counter[tuple[Any, ...]]] = {}
        self.key_names: dict[str, tuple[str, ...]] = {
            u.agg: tuple(_KEY_NAMES.get(k, k) for k in u.kinds)
            for c in self.clauses
            for u in c.updates
        }
        self.samples = 0
        self.drops = 0
        self._needs_walk = any(
            kind in ("stack", "func", "mod")
            for c in self.clauses
            for u in c.updates
            for kind in u.kinds
        )

    def add(self, samples: list[Any], walk: Callable[[Any], Any]) -> set[int]:
        """Count a batch; returns the addresses its keys hold (for symbols)."""
        from instr.dtrace.runtime import Env, _truth

        addrs: set[int] = set()
        rt = self.rt
        for s in samples:
            self.samples += 1
            frames: tuple[int, ...] | None = None
            for c in self.clauses:
                c.acc += c.hz
                if c.acc < self.hz:
                    continue
                c.acc -= self.hz
                if c.hc.predicate is not None:
                    env = Env(c.hc, None, "", "", s.ts_ns, s.tid)
                    with rt.lock:
                        if not _truth(rt.eval(c.hc.predicate, env)):
                            continue
                if frames is None and self._needs_walk:
                    frames = walk(s).frames
                for u in c.updates:
                    key: list[Any] = []
                    for kind, depth in zip(u.kinds, u.depths, strict=True):
                        if kind == "stack":
                            st = (frames or ())[:depth]
                            addrs.update(st)
                            key.append(st)
                        elif kind in ("func", "mod"):
                            pc = (frames or (0,))[0]
                            addrs.add(pc)
                            key.append((kind, pc))
                        elif kind == "tid":
                            key.append(s.tid)
                        elif kind == "pid":
                            key.append(rt.pid)
                        else:
                            key.append(rt.execname)
                    with rt.lock:
                        self.counts.setdefault(u.agg, Counter())[tuple(key)] += 1
        return addrs

    def table(self, name: str) -> AggTable | None:
        counts = self.counts.get(name)
        if not counts:
            return None
        rows: dict[tuple[Any, ...], int] = {}
        for keys, n in counts.items():
            shown = tuple(self.key(k) for k in keys)
            rows[shown] = rows.get(shown, 0) + n
        return AggTable(f"@{name}", "profile", "count", None, self.key_names.get(name, ()),
                        tuple(AggRow(k, n, n) for k, n in rows.items()), 0, 0)  # fmt: skip


_AGG_KEYS = {"stack": "backtrace", "func": "probefunc", "mod": "module"}


def probe_set_aggregations(clause: A.Clause) -> list[tuple[str, tuple[Any, ...]]]:
    """A profile clause of a probe set's D program as the set's profile probe says
    it (docs/probes.md, "Profile probes"): (the D aggregation's name, its keys as
    ``AggKey``s) per update. ``ustack(N)`` is ``backtrace(N)``, ``ufunc(arg1)``
    ``probefunc`` and ``umod(arg1)`` ``module``."""
    from instr.probes.ir import AggKey

    out: list[tuple[str, tuple[Any, ...]]] = []
    for st in clause.body:
        assert isinstance(st, A.Assign) and isinstance(st.target, A.AggRef)
        keys = []
        for k in st.target.keys:
            kind = key_kind(k)
            src = _AGG_KEYS.get(kind, kind)
            depth = depth_of(k) if kind == "stack" else 0
            keys.append(AggKey(src, src, depth=depth))  # type: ignore[arg-type]
        out.append((st.target.name, tuple(keys)))
    return out
