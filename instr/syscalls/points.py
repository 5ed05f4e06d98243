"""Syscall points of probe sets, on the host.

A probe set's ``syscall:`` probes are not in the agent's plan. The session
arms the syscall monitor (``agents/src/syscalls/syscalls.ts``, trace mode, only the
selected syscalls) after the plan; its ``syscalls`` messages carry one record
per call (arguments, result, errno, duration, copied paths, buffers and
sockaddrs). ``SyscallPoints.handle`` decodes each record with the signature
table and a per-process fd table (as ``instr syscalls`` does), takes every
matching probe's captures, runs its ``where`` and makes the events and the
aggregation rows (the ``host`` aggregation tier).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from instr.aggregate.host import HostAgg
from instr.aggregate.model import AggTable, KeyValue
from instr.collectors.layout import build_layout
from instr.events import Event, Site
from instr.probes.ir import Aggregation, Probe, SyscallPoint, SysCapture
from instr.syscalls import names as nr_names
from instr.syscalls import numbers
from instr.syscalls.decode import (
    FdTable,
    _s32,
    errno_name,
    format_arg,
    format_result,
    memory_kinds,
    peer,
)
from instr.syscalls.records import Record, parse
from instr.syscalls.table import SIGNATURES

Value = int | str | bytes | None
# Calls the fd table learns from (FdTable.learn): always recorded.
FD_CALLS = frozenset(
    {"open", "openat", "creat", "socket", "connect", "bind", "accept", "accept4", "close"}
    | {"dup", "dup2", "dup3", "fcntl"}
)
MAX_BUF = 4096  # bytes of a buffer argument copied per call (captures ':raw')


class PredicateFailed(Exception):
    pass


def _arg_index(name: str, source: str) -> tuple[int, str] | None:
    sig = SIGNATURES.get(name, ((), ()))[1]
    if source.startswith("arg") and source[3:].isdigit():
        i = int(source[3:])
        return (i, sig[i][2] if i < len(sig) else "int") if i < 6 else None
    for i, (aname, _ctype, kind) in enumerate(sig[:6]):
        if aname == source:
            return i, kind
    return None


def _fd_what(fds: FdTable, fd: int, form: str) -> str:
    if form == "peer" and fd not in fds.socks:
        return ""
    what = fds.fds.get(fd, "")
    return "" if form == "peer" and what == "socket" else what


def capture_value(c: SysCapture, name: str, rec: Record, fds: FdTable) -> Value:
    """One capture of one call (``fds`` as it was before the call, except for retval)."""
    src, form = c.source, c.form
    if src == "syscall":
        return name
    if src == "errno":
        return (errno_name(rec.errno) if rec.errno else "") if form == "str" else rec.errno
    if src == "duration":
        return rec.dur
    if src == "retval":
        if form == "str":
            return format_result(name, rec, fds)
        if form in ("path", "peer"):
            return _fd_what(fds, rec.ret, form) if rec.errno == 0 else ""
        return rec.ret
    where = _arg_index(name, src)
    if where is None:
        return None  # not an argument of this syscall
    i, kind = where
    v = rec.args[i]
    if form == "int":
        return _s32(v) if kind in ("fd", "dirfd") else v
    if form in ("path", "peer") and kind in ("fd", "dirfd"):
        return _fd_what(fds, _s32(v), form)
    if form == "raw":
        return rec.mem.get(i, b"")
    if kind == "path":
        return rec.mem[i].decode(errors="replace") if i in rec.mem else ""
    if kind in ("sockaddr", "sockaddr_out") and form != "str":
        return peer(rec.mem[i]) if i in rec.mem else ""
    return format_arg(name, i, kind, rec, fds)


# -- predicates ------------------------------------------------------------------


def _num(v: Any) -> int:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    raise PredicateFailed


def evaluate(e: dict[str, Any], caps: list[Value], tid: int) -> Any:
    """The predicate language's Expr tree (``instr.probes.predicate``), in Python."""
    op = e["op"]
    if op == "const":
        return e["value"]
    if op == "int":
        return int(e["value"])
    if op == "cap":
        return caps[e["index"]]
    if op == "tid":
        return tid
    if op == "and":
        return all(_truth(evaluate(a, caps, tid)) for a in e["args"])
    if op == "or":
        return any(_truth(evaluate(a, caps, tid)) for a in e["args"])
    if op == "not":
        return not _truth(evaluate(e["arg"], caps, tid))
    if op == "neg":
        return -_num(evaluate(e["arg"], caps, tid))
    if op == "invert":
        return ~_num(evaluate(e["arg"], caps, tid))
    if op == "in":
        needle, hay = evaluate(e["needle"], caps, tid), evaluate(e["haystack"], caps, tid)
        if isinstance(hay, str):
            return isinstance(needle, str) and needle in hay
        return False
    if op == "call":
        args = [evaluate(a, caps, tid) for a in e["args"]]
        if e["fn"] == "len":
            if not isinstance(args[0], (str, bytes)):
                raise PredicateFailed
            return len(args[0])
        if not isinstance(args[0], str) or not isinstance(args[1], str):
            return False
        return args[0].startswith(args[1]) if e["fn"] == "startswith" else args[0].endswith(args[1])
    a, b = evaluate(e["left"], caps, tid), evaluate(e["right"], caps, tid)
    if op in ("==", "!="):
        return (a == b) == (op == "==")
    if op in ("<", "<=", ">", ">="):
        if type(a) is not type(b) or a is None:
            return False
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
    x, y = _num(a), _num(b)
    if op in ("//", "%") and y == 0:
        raise PredicateFailed
    ops: dict[str, Callable[[int, int], int]] = {
        "+": lambda p, q: p + q,
        "-": lambda p, q: p - q,
        "*": lambda p, q: p * q,
        "//": lambda p, q: p // q,
        "%": lambda p, q: p % q,
        "&": lambda p, q: p & q,
        "|": lambda p, q: p | q,
        "^": lambda p, q: p ^ q,
        "<<": lambda p, q: p << q,
        ">>": lambda p, q: p >> q,
    }
    return ops[op](x, y)


def _truth(v: Any) -> bool:
    return bool(v) if isinstance(v, (int, bool)) else v is not None and v != ""


# -- aggregations ------------------------------------------------------------------


def _key(v: Value) -> KeyValue:
    if v is None:
        return ""
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    return v


# -- the engine ------------------------------------------------------------------


class SyscallPoints:
    """Decodes the monitor's records into the syscall probes' events and tables."""

    def __init__(self, probes: list[Probe], pid: int, arch: str = "x64", execname: str = "?"):
        self.probes = probes
        self.pid = pid
        self.execname = execname
        self.arch = "x86_64" if arch == "x64" else arch
        self.names = nr_names(arch)
        self.fds = FdTable.from_proc(pid)
        self.tick_ns = 1.0
        self.clock: tuple[int, int] | None = None
        self.drops = 0
        self.lock = threading.Lock()
        self.aggs = [(p, a, HostAgg.of(p, a)) for p in probes for a in p.aggregations]
        self.sites: set[tuple[int, int]] = set()
        self.by_name: dict[str, list[Probe]] = {}
        for p in probes:
            assert isinstance(p.point, SyscallPoint)
            for n in p.point.names:
                self.by_name.setdefault(n, []).append(p)
        self.layouts = {p.id: build_layout(p, "exit") for p in probes}
        self.errors: list[str] = []

    def selected(self) -> set[str]:
        """The syscalls to arm (those this architecture has): the probes', and those
        that tell what an fd is (the fd table must see every open and close)."""
        return (set(self.by_name) | FD_CALLS) & set(numbers(self.arch))

    def kinds(self) -> list[list[Any]]:
        nrs = numbers(self.arch)
        out: list[list[Any]] = []
        for name in sorted(self.selected()):
            k, lens = memory_kinds(name)
            if any(k):
                out.append([nrs[name], k, lens])
        return out

    def handle(self, env: dict[str, Any], data: bytes | None) -> tuple[list[Event], list[Site]]:
        """One ``syscalls`` message -> events (seq 0: the dispatcher numbers them), new sites."""
        self.tick_ns = float(env.get("tick_ns", self.tick_ns))
        if env.get("clock"):
            t0, n0 = env["clock"]
            self.clock = (int(t0), int(n0))
        self.drops = int(env.get("drops", self.drops))
        events: list[Event] = []
        sites: list[Site] = []
        if not data:
            return events, sites
        with self.lock:
            for rec in parse(data):
                name = self.names.get(rec.nr, f"syscall_{rec.nr}")
                self._one(name, rec, events, sites)
        return events, sites

    def _ts(self, ticks: int) -> int:
        if self.clock is None:
            return round(ticks * self.tick_ns)
        t0, n0 = self.clock
        return n0 + round((ticks - t0) * self.tick_ns)

    def _one(self, name: str, rec: Record, events: list[Event], sites: list[Site]) -> None:
        rec.dur = round(rec.dur * self.tick_ns)
        if rec.errno != 0:
            rec.ret = -1  # the wrapper's -1 (an int's: its upper half is not sign-extended)
        probes = self.by_name.get(name, ())
        before: list[list[Value]] = []
        for p in probes:
            assert isinstance(p.point, SyscallPoint)
            before.append(
                [
                    None if c.source == "retval" else capture_value(c, name, rec, self.fds)
                    for c in p.point.captures
                ]
            )
        self.fds.learn(name, rec)
        for p, vals in zip(probes, before, strict=True):
            assert isinstance(p.point, SyscallPoint)
            for i, c in enumerate(p.point.captures):
                if c.source == "retval":
                    vals[i] = capture_value(c, name, rec, self.fds)
            if p.where is not None:
                try:
                    if not _truth(evaluate(p.where.expr, vals, rec.tid)):
                        continue
                except (PredicateFailed, TypeError, KeyError, IndexError):
                    continue
            for pa in self.aggs:
                if pa[0] is p:
                    self._update(pa, name, rec, vals)
            if not p.emit:
                continue
            if (p.id, rec.nr) not in self.sites:
                self.sites.add((p.id, rec.nr))
                sites.append(Site(p.id, rec.nr, 0, None, name))
            events.append(self._event(p, rec, vals))

    def _update(
        self, pa: tuple[Probe, Aggregation, HostAgg], name: str, rec: Record, vals: list[Value]
    ) -> None:
        p, agg, h = pa
        caps = {c.name: i for i, c in enumerate(p.exit or ())}
        keys: list[KeyValue] = []
        for k in agg.keys:
            if k.src == "syscall":
                keys.append(name)
            elif k.src in ("tid",):
                keys.append(rec.tid)
            elif k.src == "pid":
                keys.append(self.pid)
            elif k.src == "execname":
                keys.append(self.execname)
            elif k.src in ("probefunc", "module"):
                keys.append(name if k.src == "probefunc" else "kernel")
            else:
                keys.append(_key(vals[caps[k.capture or ""]]))
        value = 0
        if agg.arg is not None:
            v = vals[caps[agg.arg]]
            if not isinstance(v, int):
                return  # the argument is not one of this syscall's
            value = v
        h.update(tuple(keys), value)

    def _event(self, p: Probe, rec: Record, vals: list[Value]) -> Event:
        lay = self.layouts[p.id]
        args: dict[str, Any] = {}
        retval: int | None = None
        dur: int | None = None
        for slot, v in zip(lay.slots, vals, strict=True):
            if slot.role == "retval":
                retval = v if isinstance(v, int) else None
            elif slot.role == "duration":
                dur = v if isinstance(v, int) else None
            else:
                args[slot.name] = v
        return Event(0, p.id, p.name, "exit", rec.tid, self._ts(rec.ts), rec.nr, args, retval, dur)

    def tables(self) -> list[AggTable]:
        with self.lock:
            return [h.table() for _, _, h in self.aggs]


def arm_points(
    script: Any, table: Any, pid: int, arch: str, device_kind: str = "local"
) -> tuple[SyscallPoints, list[Any]]:
    """Arm the agent's syscall monitor (trace mode) for ``table``'s syscall probes."""
    from instr.cbuild import object_for
    from instr.events import ProbeReport
    from instr.syscalls.monitor import start_monitor

    probes = table.syscall_probes()
    try:
        with open(f"/proc/{pid}/comm") as f:
            execname = f.read().strip()
    except OSError:
        execname = "?"
    points = SyscallPoints(probes, pid, arch, execname)
    started, _sites = start_monitor(
        script,
        points.arch,
        points.selected(),
        {},
        stream=True,
        bufmax=MAX_BUF,
        buffer_bytes=table.options.buffer_bytes,
        kinds=points.kinds(),
        built=object_for(script, "syscalls", device_kind)[0],
    )
    armed = int(started["armed"])
    reports = [
        ProbeReport(
            p.id,
            p.name,
            "armed" if armed else "failed",
            "syscall",
            armed,
            None if armed else "no libc syscall wrapper could be hooked",
        )
        for p in probes
    ]
    return points, reports
