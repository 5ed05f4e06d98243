"""A timeline: the Trace Event Format (Chrome JSON) that Perfetto UI and chrome://tracing open.

``-o run.json`` from ``instr trace`` / ``instr run``. One track per thread of
the target. A call seen at entry and exit is one slice (``"ph": "X"``) from
its entry to its exit, named after the function, in the probe's category,
with the captures of both phases as its arguments; nested calls nest. A
probe with no exit hook gives instant events (``"ph": "i"``) at its entry, and
an exit whose entry was not seen an instant at the exit, unless it carries
its call's duration (a system call point: ``instr syscalls -o run.json``):
then a slice of that duration. Each aggregation snapshot (every
``--interval``, and the final one) becomes counters (``"ph": "C"``): one
track per aggregation, one series per key (at most MAX_SERIES, the largest),
with the row's value as printa shows it. Times are the
target's clock in microseconds (fractions kept). The file is written as the
run goes (its ``traceEvents`` array is closed at the end), so a run cut
short leaves a file that Perfetto still opens (it accepts an unclosed array).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, TextIO

from instr.aggregate.model import AggSnapshot, AggTable
from instr.collectors.values import site_function
from instr.events import Event, RunContext, RunInfo, RunSummary
from instr.probes.ir import SyscallPoint
from instr.protocol import FLAG_NO_ENTRY


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    try:  # a backtrace: its addresses
        return [_plain(v) for v in value]
    except TypeError:
        return str(value)


MAX_SERIES = 16  # keys per aggregation counter track: the largest rows


def _series(table: AggTable) -> dict[str, int | float]:
    """One counter value per key of an aggregation: its largest rows."""
    rows = sorted(table.rows, key=lambda r: r.value(table.func), reverse=True)[:MAX_SERIES]
    out: dict[str, int | float] = {}
    for row in rows:
        label = ",".join(str(_plain(k)) for k in row.keys) if row.keys else table.func
        out[label] = row.value(table.func)
    return out


class TimelineCollector:
    """``by_function``: a call's entry and its exit may come from two probes on
    one function (``instr dtrace``'s ``f:entry`` and ``f:return`` clauses):
    they are paired by the function's address, not by the probe."""

    def __init__(self, path: str | Path, by_function: bool = False) -> None:
        self.path = Path(path)
        self.by_function = by_function
        self.stream: TextIO | None = None
        self.ctx: RunContext | None = None
        self.pid = 0
        self._exits: dict[int, bool] = {}  # probe id -> it has an exit hook
        self._starts: set[int] = set()  # system call points (see open)
        # (tid, probe id, or by_function the function's address) -> entries
        self._open: dict[tuple[int, int], list[Event]] = {}
        self._both: dict[int, bool] = {}  # probe id -> hooked at entry and exit
        self._returns: set[int] = set()  # by_function: addresses hooked at exit only
        self._sites_seen = 0
        # tid -> its last slice: (name, ts, dur), and the slice
        self._last_slice: dict[int, tuple[tuple[str, float, float], dict[str, Any]]] = {}
        self._names: dict[tuple[int, int], str] = {}
        self._first = True
        self.written = 0

    def open(self, ctx: RunContext, info: RunInfo) -> None:
        self.ctx = ctx
        self.pid = info.pid
        self._exits = {p.id: p.exit is not None for p in ctx.table}
        self._both = {p.id: p.exit is not None and p.entry is not None for p in ctx.table}
        # A system call point's one event is stamped at the call's start (its
        # record's time, agents/src/syscalls/syscalls_c.ts); a function's exit, at the exit.
        self._starts = {p.id for p in ctx.table if isinstance(p.point, SyscallPoint)}
        self.stream = self.path.open("w", encoding="utf-8", buffering=1 << 20)
        name = " ".join(info.argv) if info.argv else f"pid {info.pid}"
        self.stream.write('{"displayTimeUnit": "ns", "traceEvents": [\n')
        self._write([{"ph": "M", "name": "process_name", "pid": self.pid, "args": {"name": name}}])

    def _name(self, e: Event) -> str:
        key = (e.probe_id, e.site)
        name = self._names.get(key)
        if name is None:
            assert self.ctx is not None
            site = self.ctx.site(e.probe_id, e.site)
            name = site_function(site, e.site)
            if site is not None:
                self._names[key] = name
        return name

    def _args(self, *events: Event) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for e in events:
            out.update({k: _plain(v) for k, v in e.args.items()})
            if e.retval is not None:
                out["retval"] = e.retval
        return out

    def _instant(self, e: Event) -> dict[str, Any]:
        return {
            "ph": "i", "s": "t", "name": self._name(e), "cat": e.probe, "pid": self.pid,
            "tid": e.tid, "ts": e.ts_ns / 1000, "args": {"phase": e.phase, **self._args(e)},
        }  # fmt: skip

    def _key(self, e: Event) -> tuple[int, int]:
        """Where ``e``'s call is kept open: per probe, or (by_function, a probe
        hooked at entry only or at exit only) per function, as ``-1 - address``."""
        if not self.by_function or self._both.get(e.probe_id, False):
            return (e.tid, e.probe_id)
        assert self.ctx is not None
        site = self.ctx.site(e.probe_id, e.site)
        return (e.tid, -1 - site.address) if site is not None else (e.tid, e.probe_id)

    def _opens(self, e: Event, key: tuple[int, int]) -> bool:
        """Whether an exit will close entry ``e``: its probe has an exit hook; or
        (by_function) a probe hooks only its function's exit, and none hooks both
        (whose own pair is the call: this entry would be a second one)."""
        if self._exits.get(e.probe_id, False) or key[1] >= 0:
            return self._exits.get(e.probe_id, False)
        assert self.ctx is not None
        sites = self.ctx.sites
        if len(sites) != self._sites_seen:  # sites come as modules are hooked
            self._sites_seen = len(sites)
            both = {s.address for s in list(sites.values()) if self._both.get(s.probe)}
            self._returns = {
                s.address
                for s in list(sites.values())
                if self._exits.get(s.probe) and s.address not in both
            }
        return -1 - key[1] in self._returns

    def on_events(self, events: list[Event]) -> None:
        if self.stream is None:
            return
        out: list[dict[str, Any]] = []
        for e in events:
            key = self._key(e)
            if e.phase == "entry":
                if self._opens(e, key):
                    self._open.setdefault(key, []).append(e)
                else:
                    out.append(self._instant(e))
                continue
            stack = self._open.get(key)
            if (e.flags & FLAG_NO_ENTRY or not stack) and e.duration_ns is not None:
                start = e.ts_ns if e.probe_id in self._starts else e.ts_ns - e.duration_ns
                out.append(self._slice(e, start, self._args(e), start + e.duration_ns))
                continue
            if e.flags & FLAG_NO_ENTRY or not stack:
                out.append(self._instant(e))
                continue
            entry = stack.pop()
            out.append(self._slice(e, entry.ts_ns, self._args(entry, e)))
        if self.by_function:
            out = self._once(out)
        self._write(out)
        self.written += len(events)

    def _once(self, out: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """by_function: one slice per call, where two probes (a system call's
        entry and return clauses) each gave the call's whole span."""
        kept = []
        for o in out:
            if o["ph"] == "X":
                span = (o["name"], o["ts"], o["dur"])
                last = self._last_slice.get(o["tid"])
                if last is not None and last[0] == span:
                    last[1]["args"].update(o["args"])  # both clauses' values (if not yet written)
                    continue
                self._last_slice[o["tid"]] = (span, o)
            kept.append(o)
        return kept

    def _slice(
        self, e: Event, start_ns: int, args: dict[str, Any], end_ns: int | None = None
    ) -> dict[str, Any]:
        """A complete event from ``start_ns`` to the exit ``e`` (or ``end_ns``)."""
        end = e.ts_ns if end_ns is None else end_ns
        return {
            "ph": "X", "name": self._name(e), "cat": e.probe, "pid": self.pid, "tid": e.tid,
            "ts": start_ns / 1000, "dur": max(0, end - start_ns) / 1000, "args": args,
        }  # fmt: skip

    def on_aggregations(self, snapshot: AggSnapshot) -> None:
        """Counters: each aggregation's values at the snapshot's time."""
        ts = snapshot.ts_ns / 1000
        counter = {"ph": "C", "pid": self.pid, "ts": ts}
        self._write(
            [
                {**counter, "name": t.name, "cat": t.probe, "args": _series(t)}
                for t in snapshot.tables
                if t.rows
            ]
        )

    def _write(self, objs: list[dict[str, Any]]) -> None:
        if not objs or self.stream is None:
            return
        text = ",\n".join(json.dumps(o, separators=(",", ":")) for o in objs)
        self.stream.write(text if self._first else ",\n" + text)
        self._first = False
        self.stream.flush()

    def close(self, summary: RunSummary) -> None:
        if self.stream is None:
            return
        stream, self.stream = self.stream, None
        try:
            # Calls still open at the end (the run stopped inside them): instants at their entry.
            self.stream = stream
            self._write([self._instant(e) for st in self._open.values() for e in st])
            self.stream = None
            stream.write("\n]}\n")
        finally:
            self._open.clear()
            with contextlib.suppress(OSError):
                stream.close()  # the file goes back even when its last write fails
