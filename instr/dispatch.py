"""From Frida's message callback to the collectors.

``Dispatcher.post`` is the Frida ``on("message")`` callback: it only enqueues.
One worker thread takes messages in arrival order, decodes batches with the
``Decoder`` and hands each batch's events to every collector, updates the
``RunContext`` (sites, symbols) and the per-probe reports, and collects errors.
Because the queue is FIFO and the agent sends its final batch before its
``ending`` message, ``on_ending`` runs after every earlier batch reached the
collectors; that is when the session acknowledges, releasing the target.

Nothing is lost silently: a gap in batch ``seq`` numbers is counted as lost
batches, the agent's cumulative per-probe ``drops`` are kept, undecodable
records, agent errors and Frida script errors end up in ``RunSummary.errors``;
an output that fails gets nothing more and is reported there and in
``RunSummary.output_failures`` with the events it did not write.
"""

from __future__ import annotations

import dataclasses
import gc
import queue
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from operator import attrgetter
from typing import Any

from instr.aggregate.decode import AggDecoder
from instr.aggregate.model import AggSnapshot
from instr.collectors.base import Collector
from instr.collectors.decode import Block, Decoder
from instr.collectors.failure import output_failure
from instr.events import Ending, Event, ProbeReport, RunContext, RunSummary, Site, Symbol
from instr.protocol import PROTOCOL_VERSION
from instr.sources import Sources

OnEnding = Callable[[Ending, int], None]  # its agent is the current ``source``
MAX_ERRORS = 200  # beyond this, errors are only counted
_STOP = object()
_probe_id = attrgetter("probe_id")


def _addr(value: Any) -> int | None:
    """Addresses arrive as "0x…" strings (64-bit safe) or numbers."""
    if value is None:
        return None
    return int(value, 0) if isinstance(value, str) else int(value)


@contextmanager
def _gc_paused(pause: bool) -> Iterator[None]:
    """Hold Python's cyclic GC off while one batch is decoded and delivered.

    A batch allocates thousands of short-lived, GC-tracked ``Event`` objects;
    with the collector on, they trigger generation scans (and push the rest of
    the heap toward full collections) although they are freed when the batch
    is done.  Pausing for the few milliseconds of one batch roughly doubles
    decode throughput.  Collection is only deferred, never skipped: the counts
    keep growing and the next allocation after ``enable`` collects as usual.
    """
    if not pause or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _kind(message: Any) -> Any:
    if not isinstance(message, dict):
        return type(message).__name__
    payload = message.get("payload")
    if message.get("type") == "send" and isinstance(payload, dict):
        return payload.get("type")
    return message.get("type")


def _describe(exc: BaseException) -> str:
    where = traceback.extract_tb(exc.__traceback__)
    at = f" at {where[-1].filename}:{where[-1].lineno}" if where else ""
    return f"{type(exc).__name__}: {exc}{at}"


class Dispatcher:
    """Queue + worker thread between Frida and the collectors, for one run."""

    def __init__(
        self,
        ctx: RunContext,
        collectors: Sequence[Collector] = (),
        on_ending: OnEnding | None = None,
        decoder: Decoder | None = None,
        on_batch_done: Callable[[int], None] | None = None,
        pause_gc: bool = True,
    ) -> None:
        self.ctx = ctx
        self.pause_gc = pause_gc
        self.collectors = list(collectors)
        self.on_ending = on_ending
        # Flow control: called with each batch's seq once it is fully handled.
        self.on_batch_done = on_batch_done
        self.decoder = decoder if decoder is not None else Decoder(ctx)
        # Columnar delivery when every collector can take a Block (e.g. SQLite alone).
        self._columnar = bool(self.collectors) and all(
            hasattr(c, "on_block") for c in self.collectors
        )
        self.ending: Ending | None = None
        self.errors: list[str] = []
        self.events = 0
        self.batches = 0
        self.lost_batches = 0
        self.last_seq = 0
        self.drops: dict[int, int] = {}
        self.counts: Counter[int] = Counter()
        self._reports: dict[int, ProbeReport] = {}
        self._failed: dict[int, Exception] = {}  # collectors that raised, by index
        # the console's reader went away (instr ... | head): the run should stop
        self.pipe_closed = threading.Event()
        for c in self.collectors:  # the console also writes from a thread of its own
            watch = getattr(c, "watch_pipe", None)
            if watch is not None:
                watch(self.pipe_closed.set)
        self._seen_errors: set[str] = set()
        self._more_errors = 0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards _reports (set_reports runs on the caller's thread)
        self._close_lock = threading.Lock()
        self._status_seen: set[int] = set()
        self._summary: RunSummary | None = None
        self._closing = False
        self._handlers: dict[str, Callable[[dict[str, Any], bytes | None], None]] = {
            "batch": self._batch,
            "status": self._status,
            "sites": self._sites,
            "symbols": self._symbols,
            "modules": self._modules,
            "error": self._agent_error,
            "ending": self._ending,
            "aggs": self._aggs,
            "merge-aggs": lambda env, data: self._deliver_merged(final=False),  # -F
        }
        self.points: Any = None  # instr.syscalls.points.SyscallPoints, for syscall probes
        # host-side aggregation tables merged into every snapshot: .aggs, .tables()
        self.host_sources: list[Any] = []
        self._final_sent = False
        self.agg_decoder = AggDecoder(ctx.table, ctx)
        # Children followed (-F, docs/follow.md): each process image's agent is
        # a source (instr/sources.py); its snapshots are merged.
        self.source = 0  # of the message being handled (the worker's)
        self.follow = False
        self.sources = Sources(self.agg_decoder, lambda: AggDecoder(ctx.table, ctx))
        # the latest aggregation snapshot (the final one, after the run)
        self.last_snapshot: AggSnapshot | None = None
        self._worker = threading.Thread(target=self._run, name="instr-dispatch", daemon=True)
        self._worker.start()

    # -- called from other threads --------------------------------------------

    def post(self, message: dict[str, Any], data: bytes | None, source: int = 0) -> None:
        """Frida's message callback: enqueue and return (thread-safe, never blocks).
        ``source``: which process image's agent sent it (``add_source``)."""
        self._queue.put((message, data, source))

    def add_source(self, source: int, pid: int, parent: int | None, origin: str) -> None:
        """A process image whose agent posts as ``source`` (call before it loads)."""
        self.sources.add(source, pid, parent, origin)

    def source_ended(self, source: int, ending: Ending) -> None:
        """How an image ended when its agent could not say (killed, lost)."""
        self.sources.ended(source, ending)

    def set_reports(self, reports: Sequence[ProbeReport]) -> None:
        """The per-probe results of ``configure``; later ``status`` messages update them.

        A probe whose ``status`` message was already handled keeps that newer state.
        """
        with self._lock:
            for r in reports:
                if r.id not in self._status_seen:
                    self._reports[r.id] = r

    def add_syscall_points(self, points: Any) -> None:
        """Syscall probes: the monitor's ``syscalls`` messages become their events and
        host-side aggregation tables (merged into every snapshot)."""
        self.points = points
        self._handlers["syscalls"] = self._syscalls
        self.add_host_tables(points)

    def add_host_tables(self, source: Any) -> None:
        """Aggregation tables the host keeps (syscall points, the sampler's profile
        probes): merged into every snapshot."""
        self.host_sources.append(source)
        self._handlers["host-aggs"] = self._host_aggs

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until everything posted before this call was handled; False on timeout."""
        if self._closing:
            self._worker.join(timeout)
            return not self._worker.is_alive()
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def close(self, ending: Ending | None = None, stopped: Ending | None = None) -> RunSummary:
        """Handle everything still queued, close the collectors, return the summary.

        ``ending`` is used when the agent sent no ``ending`` message (killed, lost);
        ``stopped``, what the host did to end a program it started, beats an agent's
        "detach" (which would say the program keeps running).
        Idempotent: later calls return the same summary.
        """
        with self._close_lock:  # a second caller waits, then gets the same summary
            if self._summary is not None:
                return self._summary
            self._closing = True
            self._queue.put(_STOP)
            self._worker.join()
            if self.follow:
                self._deliver_merged(final=True)
            self._host_final()
            summary = self._build_summary(ending)
            if stopped is not None and (
                summary.ending is None or summary.ending.reason == "detach"
            ):
                summary.ending = stopped
            # known before any close, so every output's own record of the run says it
            for i, e in self._failed.items():
                self._add_failure(summary, self.collectors[i], e)
            for i, c in enumerate(self.collectors):
                try:
                    c.close(summary)
                except Exception as e:
                    if i not in self._failed:
                        self._add_failure(summary, c, e, closing=True)
            summary.pipe_closed = self.pipe_closed.is_set()  # set by a close too
            self._summary = summary
            return summary

    def _add_failure(
        self, summary: RunSummary, c: Collector, e: Exception, closing: bool = False
    ) -> None:
        if isinstance(e, BrokenPipeError):
            self.pipe_closed.set()  # the reader went away: not an error
            return
        failure = output_failure(c, e, summary.events, closing)
        summary.output_failures.append(failure)
        summary.errors.append(failure.describe(summary.events))

    # -- the worker -------------------------------------------------------------

    def _run(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            if item is _STOP:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            message, data, self.source = item
            try:
                self._handle(message, data)
            except Exception as e:  # a bug or a malformed message must not stop the worker
                self._error(f"internal error handling a {_kind(message)!r} message: {_describe(e)}")

    def _handle(self, message: dict[str, Any], data: bytes | None) -> None:
        if not isinstance(message, dict):
            self._error(f"unexpected Frida message: {message!r:.200}")
            return
        kind = message.get("type")
        if kind == "send":
            payload = message.get("payload")
            if not isinstance(payload, dict):
                self._error(f"unexpected message from the agent: {payload!r:.200}")
                return
            self._envelope(payload, data)
        elif kind == "error" and "description" in message:
            # Frida's own report of an uncaught exception in the script
            where = ""
            if message.get("fileName"):
                where = f" ({message['fileName']}:{message.get('lineNumber', '?')})"
            self._error(f"agent script error: {message['description']}{where}")
        elif kind == "log":
            pass  # console output of the agent goes to Frida's log handler, not here
        elif "v" in message:
            self._envelope(message, data)  # an envelope posted directly (tests, replays)
        else:
            self._error(f"unexpected Frida message type {kind!r}")

    def _envelope(self, env: dict[str, Any], data: bytes | None) -> None:
        version = env.get("v")
        if version != PROTOCOL_VERSION:
            self._error_once(
                f"agent message with protocol version {version!r}, host speaks {PROTOCOL_VERSION}"
            )
        kind = env.get("type")
        handler = self._handlers.get(kind) if isinstance(kind, str) else None
        if handler is None:
            self._error_once(f"unknown agent message type {kind!r}")
            return
        handler(env, data)

    def _sites(self, env: dict[str, Any], data: bytes | None) -> None:
        probe = int(env["probe"])
        self.ctx.add_sites(
            Site(
                probe,
                int(s["site"]),
                _addr(s.get("address")) or 0,
                s.get("module"),
                s.get("symbol"),
                s.get("offset"),
            )
            for s in env.get("sites", ())
        )

    def _symbols(self, env: dict[str, Any], data: bytes | None) -> None:
        mapping: dict[int, Symbol] = {}
        for key, value in env.get("map", {}).items():
            module, name, offset = value
            mapping[int(key, 0)] = Symbol(module, name, int(offset or 0))
        self.ctx.add_symbols(mapping)

    def _agent_error(self, env: dict[str, Any], data: bytes | None) -> None:
        probe = env.get("probe")
        who = f"probe {self._probe_name(int(probe))}" if probe is not None else "agent"
        self._error(f"{who}: {env.get('message')}")

    def _modules(self, env: dict[str, Any], data: bytes | None) -> None:
        pass  # the agent arms pending probes itself and reports them with sites/status

    def _batch(self, env: dict[str, Any], data: bytes | None) -> None:
        try:
            self._handle_batch(env, data)
        finally:
            if self.on_batch_done is not None:
                self.on_batch_done(int(env["seq"]))

    def _handle_batch(self, env: dict[str, Any], data: bytes | None) -> None:
        seq = int(env["seq"])
        source = self.source
        last = self.sources.last_seq(source)
        who = f"pid {self.sources.pid(source)}: " if self.follow else ""
        if seq > last + 1:
            missing = seq - last - 1
            self.lost_batches += missing
            first = last + 1
            span = f"{first}" if missing == 1 else f"{first}-{seq - 1}"
            self._error(f"{who}lost {missing} batch{'es' if missing > 1 else ''} (seq {span})")
        elif seq <= last:
            self._error(f"{who}batch seq {seq} arrived after seq {last}; decoded anyway")
        self.sources.saw_seq(source, seq)
        self.last_seq = self.sources.last_seq(0)
        self.batches += 1
        for key, total in (env.get("drops") or {}).items():
            probe = int(key)  # cumulative per agent: the run's are the sum over the images
            self.drops[probe] = self.drops.get(probe, 0) + self.sources.drops(source, probe, total)
        pid = self.sources.pid(source)
        with _gc_paused(self.pause_gc):
            first = self.events + 1
            block = self.decoder.block(data, first, pid) if data and self._columnar else None
            if block is not None and data is not None:
                self._deliver_block(block, env.get("records"), seq, data)
                return
            events = self.decoder.decode(data, first) if data else []
            for e in events:
                e.pid = pid
            expected = env.get("records")
            if expected is not None and int(expected) != len(events):
                self._error(f"batch {seq}: {expected} records announced, {len(events)} decoded")
            if events:
                self.events += len(events)
                self.counts.update(map(_probe_id, events))
                self._deliver(events)
            del events  # freed before the collector can run: it never has to scan them

    def _deliver_block(self, block: Block, expected: Any, seq: int, data: bytes) -> None:
        """Columns to collectors that take them; decoded events to any that decline."""
        if expected is not None and int(expected) != block.count:
            self._error(f"batch {seq}: {expected} records announced, {block.count} decoded")
        self.events += block.count
        self.counts[block.probe_id] += block.count
        declined: list[int] = []
        for i, c in enumerate(self.collectors):
            if i in self._failed:
                continue
            try:
                if not c.on_block(block):  # type: ignore[attr-defined]
                    declined.append(i)
            except Exception as e:
                self._output_failed(i, e)
        if declined:
            events = self.decoder.decode(data, block.first_seq)
            for ev in events:
                ev.pid = block.pid
            self._deliver(events, only=declined)

    def _deliver(self, events: list[Event], only: list[int] | None = None) -> None:
        for i, c in enumerate(self.collectors):
            if i in self._failed or (only is not None and i not in only):
                continue
            try:
                c.on_events(events)
            except Exception as e:
                self._output_failed(i, e)

    def _syscalls(self, env: dict[str, Any], data: bytes | None) -> None:
        events, sites = self.points.handle(env, data)
        for site in sites:
            self.ctx.add_site(site)
        for p in self.points.probes:
            self.drops[p.id] = self.points.drops
        if events:
            for i, e in enumerate(events):
                e.seq = self.events + 1 + i
            self.events += len(events)
            self.counts.update(map(_probe_id, events))
            self._deliver(events)

    def _host_aggs(self, env: dict[str, Any], data: bytes | None) -> None:
        """A snapshot of the host's tables only (no agent tables to wait for)."""
        self._deliver_snapshot(
            AggSnapshot(time.monotonic_ns(), int(env.get("seq", 0)), bool(env.get("final")), ())
        )

    def _host_final(self) -> None:
        """The final snapshot, when the agent sent none (its tables as last seen)."""
        if self._final_sent or not any(src.aggs for src in self.host_sources):
            return
        last = self.last_snapshot
        tables = tuple(t for t in last.tables if t.tier != "host") if last is not None else ()
        seq = last.seq + 1 if last is not None else 0
        self._deliver_snapshot(AggSnapshot(time.monotonic_ns(), seq, True, tables))

    def _aggs(self, env: dict[str, Any], data: bytes | None) -> None:
        snap = self.sources.decoder(self.source).decode(env, data)
        if not self.follow:
            self._deliver_snapshot(snap)
            return
        # One table across the processes: every image's latest snapshot,
        # merged. The final one goes out once, at the close; a live one when
        # the session has asked every image (its "merge-aggs").
        self.sources.keep(self.source, snap)

    def _deliver_merged(self, final: bool) -> None:
        seq = self.last_snapshot.seq + 1 if self.last_snapshot is not None else 0
        merged = self.sources.merged(seq, final)
        if merged is not None:
            self._deliver_snapshot(merged)

    def _deliver_snapshot(self, snap: AggSnapshot) -> None:
        host = tuple(t for src in self.host_sources if src.aggs for t in src.tables())
        if host:
            snap = dataclasses.replace(snap, tables=snap.tables + host)
            self._final_sent = self._final_sent or snap.final
        self.last_snapshot = snap
        for i, c in enumerate(self.collectors):
            deliver = getattr(c, "on_aggregations", None)
            if i in self._failed or deliver is None:
                continue
            try:
                deliver(snap)
            except Exception as e:
                self._output_failed(i, e)

    def _status(self, env: dict[str, Any], data: bytes | None) -> None:
        st = env.get("probe")
        if not isinstance(st, dict):  # flat form: {probe: id, state, reason, sites}
            st = {"id": st, **{k: v for k, v in env.items() if k != "probe"}}
        pid = int(st["id"])
        report = self._report(pid)
        if self.source != 0 and (st.get("state") != "armed" or report.state == "armed"):
            return  # a child's agent: only news that a probe armed there (pending in the root)
        self._status_seen.add(pid)
        report.state = str(st.get("state", report.state))
        report.tier = st.get("tier", report.tier)
        report.sites = int(st.get("sites", report.sites) or 0)
        report.reason = st.get("reason")

    def _ending(self, env: dict[str, Any], data: bytes | None) -> None:
        ending = Ending.from_message(env)
        # The run's ending is the root program's (its last image's, after an exec)
        if self.sources.ended(self.source, ending, said=True):
            self.ending = ending
        if self.on_ending is not None:
            try:
                self.on_ending(ending, int(env.get("token", 0)))
            except Exception as e:
                self._error(f"acknowledging the agent's ending failed: {_describe(e)}")

    # -- bookkeeping ------------------------------------------------------------

    def _report(self, pid: int) -> ProbeReport:
        with self._lock:
            report = self._reports.get(pid)
            if report is None:
                probe = self.ctx.table.probes.get(pid)
                name = probe.name if probe is not None else f"#{pid}"
                report = ProbeReport(pid, name, "pending", None, 0, "no status from the agent")
                self._reports[pid] = report
            return report

    def _probe_name(self, pid: int) -> str:
        probe = self.ctx.table.probes.get(pid)
        return probe.name if probe is not None else f"#{pid}"

    def _output_failed(self, i: int, e: Exception) -> None:
        """Collector ``i`` raised: it gets nothing more; the close reports it,
        with the events it did not write. A closed pipe asks the run to stop."""
        self._failed[i] = e
        if isinstance(e, BrokenPipeError):
            self.pipe_closed.set()

    def error(self, text: str) -> None:
        """An error of the run's own (not the agent's), for the summary."""
        self._error(text)

    def _error(self, text: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(text)
        else:
            self._more_errors += 1

    def _error_once(self, text: str) -> None:
        if text not in self._seen_errors:
            self._seen_errors.add(text)
            self.errors.append(text)

    def _build_summary(self, fallback: Ending | None) -> RunSummary:
        for pid in self.ctx.table.probes:
            self._report(pid)
        for pid in set(self.counts) | set(self.drops):
            self._report(pid)
        reports = sorted(self._reports.values(), key=attrgetter("id"))
        for r in reports:
            r.events = self.counts.get(r.id, 0)
            r.drops = self.drops.get(r.id, 0)
        errors = list(self.errors)
        if self._more_errors:
            errors.append(f"... and {self._more_errors} more errors")
        errors.extend(f"decoder: {text} (x{n})" for text, n in self.decoder.problems.items())
        return RunSummary(
            events=self.events,
            batches=self.batches,
            drops=sum(self.drops.values()),
            probes=reports,
            ending=self.ending if self.ending is not None else fallback,
            errors=errors,
            ended_ns=time.time_ns(),
            lost_batches=self.lost_batches,
            aggregations=self.last_snapshot,
            processes=self.sources.processes() if self.follow else [],
        )
