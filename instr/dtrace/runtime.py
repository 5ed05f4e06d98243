"""The host's half of a D program: BEGIN/END/tick clauses, printf/trace/exit,
variables, predicates over them, and printing aggregations the DTrace way.

Statements run in the order the target wrote its events (the dispatcher's
worker calls ``on_events`` in batch order). Values are 64-bit: integers wrap
like C's int64_t, ``/`` and ``%`` truncate toward zero.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from instr.aggregate.host import HostAgg
from instr.aggregate.model import AggRow, AggSnapshot, AggTable
from instr.dtrace import ast as A
from instr.dtrace.aggtext import frame_text, merge, minus, render_table, sorted_rows
from instr.dtrace.compiler import DProgram, HostClause
from instr.dtrace.errors import Loc
from instr.dtrace.printf import Piece, parse_format, render, tracemem
from instr.dtrace.values import ARGS, Needs, canonical
from instr.events import Event, RunContext

Value = int | str


class DRuntimeError(Exception):
    def __init__(self, loc: Loc, message: str) -> None:
        super().__init__(message)
        self.loc = loc


class Exit(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def wrap(v: int) -> int:
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >= 1 << 63 else v


@dataclass
class Env:
    """What the built-ins are for one firing."""

    clause: HostClause
    event: Event | None = None
    probefunc: str = ""
    probemod: str = ""
    ts_ns: int = 0
    tid: int = 0
    this: dict[str, Value] = field(default_factory=dict)
    entry: dict[str, Any] | None = None  # paired clauses: the entry event's captures


class Runtime:
    def __init__(
        self,
        prog: DProgram,
        out: TextIO,
        pid: int,
        execname: str,
        warn: Callable[[str], None],
    ) -> None:
        self.prog = prog
        self.out = out
        self.pid = pid
        self.execname = execname
        self.warn = warn
        self.ctx: RunContext | None = None
        self.globals: dict[str, Value] = {}
        self.tls: dict[tuple[int, str], Value] = {}
        self.lock = threading.RLock()
        self.exit_code: int | None = None
        self.exited = threading.Event()
        self.snapshot: AggSnapshot | None = None
        # the host's own table of an aggregation (profile clauses: instr.dtrace.profiling)
        self.host_table: Callable[[str], AggTable | None] | None = None
        # aggregations whose value, keys or predicate only the host computes
        self.host_aggs: dict[str, HostAgg] = {}
        self.baseline: dict[str, dict[tuple[Any, ...], AggRow]] = {}  # clear(): rows at the time
        self.hidden: dict[str, set[tuple[Any, ...]]] = {}  # trunc(): keys dropped
        self.printed: set[str] = set()  # printa'd in END: not printed again at exit
        self.errors = 0
        self.entries: dict[tuple[int, int], list[dict[str, Any]]] = {}  # paired: per thread
        self._caps: dict[tuple[int, int], str] = {}
        self.factor: dict[str, int] = {}  # normalize(): values printed divided by this
        self._formats: dict[int, list[Piece]] = {}
        self.in_end = False  # END is running: printa() there replaces the final print
        self.start_ns = time.monotonic_ns()
        self.wall_offset_ns = time.time_ns() - time.monotonic_ns()

    # -- firing -------------------------------------------------------------------

    def fire(self, hc: HostClause, env: Env, prefix: str | None = None) -> None:
        """Run one clause: its host predicate, then (after ``prefix``, DTrace's
        ``FUNCTION:NAME`` column when not quiet) its statements. A firing that fails
        (division by zero) prints nothing, as in DTrace."""
        if self.exited.is_set():
            return
        out, self.out = self.out, io.StringIO()
        try:
            if hc.predicate is not None and not _truth(self.eval(hc.predicate, env)):
                return
            if prefix is not None:
                self.out.write(prefix)
            try:
                for st in hc.body:
                    self.stmt(st, env)
            except Exit as e:
                self.exit_code = e.code
                self.exited.set()
            if prefix is not None:
                self.out.write("\n")
            out.write(self.out.getvalue())
        except DRuntimeError as e:
            self.errors += 1
            self.warn(f"error in the clause at {e.loc}: {e}")
        finally:
            self.out = out

    def on_event(self, ev: Event) -> None:
        hc = self.prog.by_probe.get(ev.probe_id)
        if hc is None or not hc.emits:  # not emits: an event for --timeline only
            return
        func, mod = "", ""
        if hc.spec.kind == "syscall":
            func = str(ev.args.get("pf", ""))
        elif self.ctx is not None:
            site = self.ctx.site(ev.probe_id, ev.site)
            if site is not None:
                func, mod = site.symbol or "", site.module or ""
            if hc.spec.offset is not None:  # the site is FUNC+OFFSET: probefunc is FUNC
                func = hc.spec.func
        entry = None
        if hc.paired:  # the entry event only carries the call's entry values to its return
            stack = self.entries.setdefault((ev.probe_id, ev.tid), [])
            if ev.phase == "entry":
                stack.append(ev.args)
                return
            entry = stack.pop() if stack else None
        env = Env(hc, ev, func, mod, ev.ts_ns, ev.tid, entry=entry)
        prefix = None
        if (not self.prog.quiet and not _aggregates_only(hc)) or not hc.clause.body:
            # DTrace's FUNCTION:NAME column (alone: a clause without actions); none for a
            # clause that only aggregates, whose firings record nothing
            prefix = f"{func}:{hc.spec.name}" + (" " if hc.body else "")
        with self.lock:
            self.fire(hc, env, prefix)

    def host_clauses(self, kind: str) -> list[HostClause]:
        return [c for c in self.prog.clauses if c.spec.kind == kind]

    def run_host(self, hc: HostClause, ts_ns: int = 0) -> None:
        with self.lock:
            self.fire(hc, Env(hc, None, "", "", ts_ns, 0))
            self.out.flush()

    def on_events(self, events: list[Event]) -> None:
        """One batch, in order; the output is flushed once a batch."""
        for ev in events:
            self.on_event(ev)
        with self.lock:
            self.out.flush()

    def _cap(self, hc: HostClause, e: A.Expr) -> str:
        """The capture that holds ``e`` in ``hc``'s events (cached: it never changes)."""
        key = (id(hc), id(e))
        name = self._caps.get(key)
        if name is None:
            needs = Needs(hc.spec, strsize=self.prog.strsize)
            if isinstance(e, A.Call) and e.name != "ustack":
                name = needs.copyin(e) if e.name == "copyin" else needs.string(e)
            else:
                name = needs.cap(e)
            self._caps[key] = name
        return name

    def _format(self, fmt: A.Str) -> list[Piece]:
        pieces = self._formats.get(id(fmt))
        if pieces is None:
            pieces = self._formats[id(fmt)] = parse_format(fmt.value, fmt.loc)
        return pieces

    # -- statements -----------------------------------------------------------------

    def stmt(self, st: A.Stmt, env: Env) -> None:
        if isinstance(st, A.Assign):
            self.assign(st, env)
            return
        e = st.expr
        assert isinstance(e, A.Call)
        if e.name == "printf":
            fmt = e.args[0]
            assert isinstance(fmt, A.Str)
            values = [self.eval(a, env) for a in e.args[1:]]
            self.out.write(render(self._format(fmt), values))
        elif e.name == "tracemem":
            mem, size = e.args
            assert isinstance(mem, A.Call) and isinstance(size, A.Int)
            self.out.write(tracemem(self.mem(mem, env)[: size.value]))
        elif e.name == "ustack":
            self.out.write("\n" + self.ustack(e, env))
        elif e.name == "trace":
            v = self.eval(e.args[0], env)
            self.out.write(f"{v}" if self.prog.quiet else f" {v}")
        elif e.name == "exit":
            code = self.eval(e.args[0], env)
            raise Exit(code if isinstance(code, int) else 0)
        elif e.name == "printa":
            self.printa(e)
        elif e.name == "clear":
            self.clear(e.args[0])
        elif e.name in ("normalize", "denormalize"):
            ref, n = e.args[0], e.args[1] if len(e.args) > 1 else None
            assert isinstance(ref, A.AggRef)
            self.factor[ref.name] = n.value if isinstance(n, A.Int) else 1
        elif e.name == "trunc":
            n = e.args[1] if len(e.args) > 1 else None
            self.trunc(e.args[0], n.value if isinstance(n, A.Int) else 0)

    def ustack(self, e: A.Call, env: Env) -> str:
        """``ustack()``'s output: one frame a line (``module`symbol+0x10``, indented
        as DTrace does), innermost first, and a blank line."""
        addrs = env.event.args.get(self._cap(env.clause, e)) if env.event is not None else None
        ctx = self.ctx
        frames = [ctx.symbolize(a) if ctx is not None else hex(a) for a in addrs or ()]
        return "".join(f"{'':14}{frame_text(f)}\n" for f in frames) + "\n"

    def assign(self, st: A.Assign, env: Env) -> None:
        target = st.target
        if isinstance(target, A.AggRef):  # one the target cannot compute (compiler._agg_spec)
            self.aggregate(target, st.value, env)
            return
        value = self.eval(st.value, env)
        if st.op != "=":
            old = self.read(target, env)
            value = self.arith(st.op[:-1], old, value, st.loc)
        if isinstance(target, A.Var):
            if target.scope == "this":
                env.this[target.name] = value
            elif value == 0 and isinstance(value, int):
                self.tls.pop((env.tid, target.name), None)  # D frees a zeroed self->
            else:
                self.tls[(env.tid, target.name)] = value
        elif isinstance(target, A.Ident):
            self.globals[target.name] = value

    def aggregate(self, ref: A.AggRef, call: A.Expr, env: Env) -> None:
        """Update aggregation ``ref`` on the host (``instr.aggregate.host``)."""
        assert isinstance(call, A.Call)
        keys = tuple(_key_value(self.eval(k, env)) for k in ref.keys)
        value = self.eval(call.args[0], env) if call.args else 0
        if not isinstance(value, int):
            raise DRuntimeError(call.loc, f"{call.name}() needs an integer, not a string")
        h = self.host_aggs.get(ref.name)
        if h is None:
            bounds = tuple(a.value for a in call.args[1:] if isinstance(a, A.Int))
            h = self.host_aggs[ref.name] = HostAgg(
                name=f"@{ref.name}", probe="d/host", func=call.name,
                key_names=tuple(_key_name(k) for k in ref.keys), arg="value" if call.args else None,
                lquantize=(*bounds, 1)[:3] if call.name == "lquantize" else None,  # type: ignore[arg-type]
                llquantize=bounds if call.name == "llquantize" else None,  # type: ignore[arg-type]
            )  # fmt: skip
        h.update(keys, value)

    def read(self, e: A.Expr, env: Env) -> Value:
        if isinstance(e, A.Var):
            if e.scope == "this":
                if e.name not in env.this:
                    raise DRuntimeError(e.loc, f"this->{e.name} is read before it is set")
                return env.this[e.name]
            return self.tls.get((env.tid, e.name), 0)
        assert isinstance(e, A.Ident)
        return self.globals.get(e.name, 0)

    # -- expressions ------------------------------------------------------------------

    def eval(self, e: A.Expr, env: Env) -> Value:
        if isinstance(e, A.Int):
            return wrap(e.value)
        if isinstance(e, A.Str):
            return e.value
        if isinstance(e, A.Macro):
            if e.name in ("target", "pid"):
                return self.pid
            text = self.prog.macros.get(e.name, "")
            return wrap(int(text)) if text.lstrip("-").isdigit() else text
        if isinstance(e, A.Var):
            return self.read(e, env)
        if isinstance(e, A.Ident):
            return self.builtin(e, env)
        if isinstance(e, A.Elapsed):
            d = env.event.duration_ns if env.event is not None else None
            return d if d is not None else 0
        if isinstance(e, A.Entry):
            cap = self._cap(env.clause, e)
            v = env.entry.get(cap) if env.entry else None
            if v is None and env.event is not None:
                v = env.event.args.get(cap)
            return v if isinstance(v, int | str) else 0
        if isinstance(e, A.Call):
            return self.call(e, env)
        if isinstance(e, A.Unary):
            v = self.eval(e.arg, env)
            if e.op == "!":
                return int(not _truth(v))
            if not isinstance(v, int):
                raise DRuntimeError(e.loc, f"'{e.op}' needs an integer")
            return wrap(-v if e.op == "-" else ~v)
        if isinstance(e, A.Ternary):
            return self.eval(e.then if _truth(self.eval(e.cond, env)) else e.other, env)
        if isinstance(e, A.Binary):
            if e.op in ("&&", "||"):
                left = _truth(self.eval(e.left, env))
                if e.op == "&&" and not left:
                    return 0
                if e.op == "||" and left:
                    return 1
                return int(_truth(self.eval(e.right, env)))
            return self.arith(e.op, self.eval(e.left, env), self.eval(e.right, env), e.loc)
        raise DRuntimeError(e.loc, "an aggregation has no value here")

    def arith(self, op: str, a: Value, b: Value, loc: Loc) -> Value:
        if op in ("==", "!=", "<", "<=", ">", ">="):
            if isinstance(a, str) != isinstance(b, str):
                raise DRuntimeError(loc, f"'{op}' compares a string with an integer")
            r = {"==": a == b, "!=": a != b, "<": a < b, "<=": a <= b,  # type: ignore[operator]
                 ">": a > b, ">=": a >= b}[op]  # type: ignore[operator]  # fmt: skip
            return int(r)
        if op == "^^":
            return int(_truth(a) != _truth(b))
        if not isinstance(a, int) or not isinstance(b, int):
            raise DRuntimeError(loc, f"'{op}' needs integers")
        if op in ("/", "%"):
            if b == 0:
                raise DRuntimeError(loc, "division by zero")
            q = abs(a) // abs(b) * (1 if (a < 0) == (b < 0) else -1)
            return wrap(q if op == "/" else a - q * b)
        if op in ("<<", ">>"):
            b &= 63
            return wrap(a << b) if op == "<<" else wrap(a >> b)
        fn = {"+": int.__add__, "-": int.__sub__, "*": int.__mul__, "&": int.__and__,
              "|": int.__or__, "^": int.__xor__}[op]  # fmt: skip
        return wrap(fn(a, b))

    def builtin(self, e: A.Ident, env: Env) -> Value:
        name = canonical(e.name)
        ev = env.event
        if name in ARGS or name in ("retval", "errno"):
            if ev is None:
                return 0
            cap = self._cap(env.clause, e)
            if cap == "rv":
                v = ev.retval if ev.retval is not None else ev.args.get("rv")
            else:
                v = ev.args.get(cap)
            return v if isinstance(v, int) else 0
        if name == "probefunc":
            return env.probefunc
        if name == "probemod":
            return env.probemod
        if name == "probename":
            return env.clause.spec.name or env.clause.spec.text
        if name == "probeprov":
            return env.clause.spec.kind
        if name == "execname":
            return self.execname
        if name == "pid":
            return self.pid
        if name == "tid":
            return env.tid
        if name == "timestamp":
            return env.ts_ns
        if name == "walltimestamp":  # the target's CLOCK_MONOTONIC, moved to the wall clock
            return env.ts_ns + self.wall_offset_ns
        if name == "elapsed":  # bpftrace's: since the program started
            return env.ts_ns - self.start_ns
        if name in ("self", "this"):
            raise DRuntimeError(e.loc, f"{name} needs ->")
        return self.globals.get(e.name, 0)

    def call(self, e: A.Call, env: Env) -> Value:
        if e.name in ("copyinstr", "str"):
            if env.event is None:
                return ""
            v = env.event.args.get(self._cap(env.clause, e))
            return v if isinstance(v, str) else ("" if v is None else str(v))
        if e.name == "copyin":  # as a string: up to the first NUL, as printf's %s shows it
            return self.mem(e, env).split(b"\0", 1)[0].decode("utf-8", "replace")
        if e.name == "stringof":
            v = self.eval(e.args[0], env)
            return v if isinstance(v, str) else str(v)
        if e.name == "strlen":
            s = self.eval(e.args[0], env)
            return len(s.encode()) if isinstance(s, str) else 0
        raise DRuntimeError(e.loc, f"{e.name}() has no value")

    def mem(self, e: A.Call, env: Env) -> bytes:
        """copyin()'s bytes (as many as the target could read; none outside an event)."""
        v = env.event.args.get(self._cap(env.clause, e)) if env.event is not None else None
        return bytes(v) if isinstance(v, bytes | bytearray | memoryview) else b""

    # -- aggregations -------------------------------------------------------------------

    def on_snapshot(self, snap: AggSnapshot) -> None:
        with self.lock:
            self.snapshot = snap

    def tables(self, name: str) -> AggTable | None:
        """The D aggregation ``name``: its tables (one per probe) merged, minus clear()."""
        parts = self._parts(name)
        if not parts:
            return None
        rows: dict[tuple[Any, ...], AggRow] = {}
        for t in parts:
            for r in t.rows:
                rows[r.keys] = merge(rows.get(r.keys), r)
        base = self.baseline.get(name, {})
        hidden = self.hidden.get(name, set())
        out = []
        for k, r in rows.items():
            if k in hidden:
                continue
            b = base.get(k)
            r = minus(r, b) if b is not None else r
            if r.count > 0:
                out.append(r)
        t0 = parts[0]
        return AggTable(f"@{name}", t0.probe, t0.func, t0.arg, t0.key_names, tuple(out),
                        sum(t.overflow for t in parts), t0.max_keys, t0.lquantize,
                        llquantize=t0.llquantize)  # fmt: skip

    def clear(self, ref: A.Expr) -> None:
        assert isinstance(ref, A.AggRef)
        t = self.tables(ref.name)
        snap_rows = self._raw_rows(ref.name)
        if t is not None:
            self.baseline[ref.name] = snap_rows

    def trunc(self, ref: A.Expr, keep: int) -> None:
        assert isinstance(ref, A.AggRef)
        t = self.tables(ref.name)
        if t is None:
            return
        rows = sorted_rows(t)
        drop = rows if keep == 0 else (rows[:-keep] if keep > 0 else rows[-keep:])
        self.hidden.setdefault(ref.name, set()).update(r.keys for r in drop)

    def _raw_rows(self, name: str) -> dict[tuple[Any, ...], AggRow]:
        rows: dict[tuple[Any, ...], AggRow] = {}
        for t in self._parts(name):
            for r in t.rows:
                rows[r.keys] = merge(rows.get(r.keys), r)
        return rows

    def _parts(self, name: str) -> list[AggTable]:
        """The tables of aggregation ``name``: the target's (one per probe), and the
        host's (profile clauses, ``host_table``)."""
        snap, info = self.snapshot, self.prog.aggs.get(name)
        if info is None:
            return []
        parts = [t for t in snap.tables if t.name in info.ir_names] if snap is not None else []
        host = self.host_table(name) if self.host_table is not None else None
        with self.lock:  # the events' thread updates it
            mine = self.host_aggs.get(name)
            computed = mine.table() if mine is not None else None
        return [t for t in (*parts, host, computed) if t is not None]

    def printa(self, e: A.Call) -> None:
        args = list(e.args)
        first = args[0] if args else None
        fmt = first if isinstance(first, A.Str) else None
        for ref in args[1:] if fmt is not None else args:
            assert isinstance(ref, A.AggRef)
            self.print_agg(ref.name, fmt)
            if self.in_end:
                self.printed.add(ref.name)

    def print_agg(self, name: str, fmt: A.Str | None = None) -> None:
        t = self.tables(name)
        if fmt is None:
            self.out.write("\n")
        if t is not None:
            self.out.write(render_table(t, fmt, self.factor.get(name, 1)))

    def print_all(self) -> None:
        """At the end, DTrace prints every aggregation not printed by END."""
        for name in self.prog.aggs:
            t = self.tables(name)
            if name not in self.printed and t is not None and t.rows:  # empty: not printed
                self.print_agg(name)


def _aggregates_only(hc: HostClause) -> bool:
    return all(
        isinstance(st, A.Assign) and isinstance(st.target, A.AggRef) for st in hc.clause.body
    )


def _key_value(v: Value) -> Any:
    """An aggregation key as the target's tables hold it (strings, integers)."""
    return v.decode(errors="replace") if isinstance(v, bytes | bytearray) else v


def _key_name(e: A.Expr) -> str:
    return canonical(e.name) if isinstance(e, A.Ident) else "key"


def _truth(v: Value) -> bool:
    return v != 0 if isinstance(v, int) else True
