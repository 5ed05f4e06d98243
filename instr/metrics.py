"""``--metrics HOST:PORT``: the run's aggregations over HTTP, for Prometheus.

Two parts, documented in docs/metrics.md:

* ``MetricsSink`` is one more collector: it keeps the latest aggregation
  snapshot and renders it (``instr.aggregate.prometheus``) when asked.  A
  scrape gets fresh values: when the run takes no ``--interval`` snapshots,
  each scrape asks the session for one and waits for it (at most
  ``FRESH_WAIT_S``; then the last one is served, its age in
  ``instr_snapshot_age_seconds``).  Those snapshots are the scrape's own: the
  other outputs (console, JSONL, SQLite) never see them (``Gated``).  With
  ``--interval`` a scrape serves the latest interval snapshot, so that every
  output shows the same values.
* ``MetricsServer`` binds when it is made (a port in use is an ``InstrError``
  before the target is touched) and serves ``GET /metrics`` from a thread of
  the standard library's ``ThreadingHTTPServer``.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from instr.aggregate.model import AggSnapshot, AggTable
from instr.aggregate.prometheus import CONTENT_TYPE, RunFigures, exposition
from instr.errors import InstrError
from instr.events import Event, RunContext, RunInfo, RunSummary

FRESH_WAIT_S = 2.0  # how long a scrape waits for the snapshot it asked for
DEFAULT_HOST = "127.0.0.1"


def parse_address(value: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``PORT`` (host 127.0.0.1); ``[::1]:PORT`` for IPv6.
    Port 0 takes a free port (the status line says which). ValueError says what is wrong."""
    text = value.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{value!r}: write an IPv6 address in brackets, [::1]:9100")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{value!r}: give HOST:PORT, :PORT or PORT, PORT 0 to 65535")
    if any(c.isspace() or c in "/@?#" for c in host):
        raise ValueError(f"{value!r}: {host!r} is not a host name or address")
    return host or DEFAULT_HOST, int(port_text)


def _command(info: RunInfo) -> str:
    if info.argv:
        return os.path.basename(info.argv[0])
    try:
        with open(f"/proc/{info.pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


class MetricsSink:
    """A collector that keeps the latest snapshot and renders it for a scrape.

    ``view`` turns a snapshot into the tables to show (``instr dtrace``: its
    D aggregations, merged); ``bind`` gives it the session's means to ask for
    a snapshot and to read its event and drop counts."""

    def __init__(
        self,
        fresh: bool,
        view: Callable[[AggSnapshot], Sequence[AggTable]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fresh = fresh
        self.view = view
        self.clock = clock
        self._cond = threading.Condition()
        self._scrape = threading.Lock()  # one request for a snapshot at a time
        self._tables: Sequence[AggTable] = ()
        self._seq: int | None = None
        self._received = 0.0
        self._count = 0  # snapshots received
        self._owed = 0  # snapshots asked for by scrapes and not yet received
        self._private: AggSnapshot | None = None
        self._final = False
        self._request: Callable[[], None] | None = None
        self._counters: Callable[[], tuple[int, int]] = lambda: (0, 0)
        self._alive: Callable[[], bool] = lambda: True
        self.on_close: Callable[[], None] | None = None
        self.pid: int | None = None
        self.command = ""

    def bind(
        self,
        request: Callable[[], None] | None,
        counters: Callable[[], tuple[int, int]],
        alive: Callable[[], bool] = lambda: True,
    ) -> None:
        """``request`` asks for a snapshot (it reaches ``on_aggregations``), unless
        ``alive()`` says the target has ended; ``counters``: events and drops so far."""
        self._request = request
        self._counters = counters
        self._alive = alive

    def stop_asking(self) -> None:
        """The run is closing: scrapes serve what is here (the final snapshot comes by itself)."""
        with self._cond:
            self._request = None
            self._cond.notify_all()

    # -- the collector protocol (the dispatcher's worker) ----------------------

    def open(self, ctx: RunContext, info: RunInfo) -> None:
        self.pid = info.pid or None
        self.command = _command(info)

    def on_events(self, events: list[Event]) -> None:
        pass

    def on_block(self, block: Any) -> None:  # keeps the dispatcher's columnar path
        pass

    def on_aggregations(self, snapshot: AggSnapshot) -> None:
        tables = tuple(self.view(snapshot)) if self.view is not None else snapshot.tables
        with self._cond:
            private = self._owed > 0 and not snapshot.final
            if private:
                self._owed -= 1
            self._private = snapshot if private else None
            if self._final:  # a scrape's, answered after the end: the final values stay
                return
            self._final = snapshot.final
            self._tables, self._seq = tables, snapshot.seq
            self._received = self.clock()
            self._count += 1
            self._cond.notify_all()

    def close(self, summary: RunSummary) -> None:
        self.stop_asking()
        if self.on_close is not None:
            self.on_close()

    def hides(self, snapshot: AggSnapshot) -> bool:
        """Whether ``snapshot`` is one a scrape asked for (other outputs skip it)."""
        return snapshot is self._private

    # -- the HTTP server's threads ---------------------------------------------

    def _refresh(self) -> None:
        with self._scrape:
            with self._cond:
                request, before = self._request, self._count
            if request is None or not self._alive():
                return
            with self._cond:
                self._owed += 1
            try:
                request()
            except Exception:  # the session is going away: serve the last snapshot
                with self._cond:
                    self._owed -= 1
                return
            with self._cond:
                self._cond.wait_for(
                    lambda: self._count != before or self._request is None, FRESH_WAIT_S
                )

    def render(self) -> str:
        if self.fresh:
            self._refresh()
        events, drops = self._counters()
        with self._cond:
            age = self.clock() - self._received if self._seq is not None else None
            run = RunFigures(self.pid, self.command, events, drops, self._seq, age)
            tables = self._tables
        return exposition(tables, run)


class Gated:
    """A collector that skips the snapshots a scrape asked for; the rest passes through."""

    def __init__(self, inner: Any, sink: MetricsSink) -> None:
        self.wrapped = inner  # what a failure names (instr.collectors.failure)
        self._sink = sink

    def open(self, ctx: RunContext, info: RunInfo) -> None:
        self.wrapped.open(ctx, info)

    def on_events(self, events: list[Event]) -> None:
        self.wrapped.on_events(events)

    def close(self, summary: RunSummary) -> None:
        self.wrapped.close(summary)

    def on_aggregations(self, snapshot: AggSnapshot) -> None:
        deliver = getattr(self.wrapped, "on_aggregations", None)
        if deliver is not None and not self._sink.hides(snapshot):
            deliver(snapshot)

    def __getattr__(self, name: str) -> Any:  # on_block, watch_pipe, ...
        return getattr(self.wrapped, name)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    sink: MetricsSink


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path != "/metrics":
            self._reply(404, "text/plain; charset=utf-8", "instr serves /metrics\n")
            return
        self._reply(200, CONTENT_TYPE, self.server.sink.render())

    def _reply(self, code: int, kind: str, text: str) -> None:
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the run's own output only


class MetricsServer:
    """``GET /metrics`` on HOST:PORT, bound at once; ``start`` serves, ``stop`` ends it."""

    def __init__(self, address: tuple[str, int], sink: MetricsSink) -> None:
        host, port = address
        cls = _Server6 if ":" in host else _Server
        try:
            self.httpd = cls((host, port), _Handler)
        except (OSError, OverflowError) as e:
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise InstrError(f"cannot serve metrics on {where}: {reason}") from None
        self.httpd.sink = sink
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        text = host.decode() if isinstance(host, bytes) else host
        shown = f"[{text}]" if ":" in text else text
        return f"http://{shown}:{port}/metrics"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="instr-metrics", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
            self._thread = None
        self.httpd.server_close()


class Endpoint:
    """The sink and its server for one run: bound and serving from ``open_endpoint``
    until the sink's ``close`` (the run's end, also after a failed start)."""

    def __init__(self, sink: MetricsSink, server: MetricsServer) -> None:
        self.sink = sink
        self.server = server
        sink.on_close = server.stop

    def collectors(self, others: Sequence[Any]) -> list[Any]:
        """The sink first (it marks a scrape's snapshots before the others see them)."""
        return [self.sink, *(Gated(c, self.sink) for c in others)]

    def bind(self, session: Any) -> None:
        """``session``: an armed ``instr.session.Session``. A run without aggregation
        tables a snapshot would carry (events only; profile probes' counts, which
        come at the end) is not asked: the scrape would wait for nothing."""
        asks = any(p.aggregations for p in session.table if not p.is_profile)
        request = session.snapshot if asks else None
        self.sink.bind(request, lambda: session.progress, lambda: not session.ended)

    def closing(self) -> None:
        self.sink.stop_asking()


def open_endpoint(
    address: tuple[str, int],
    fresh: bool,
    say: Callable[[str], None],
    view: Callable[[AggSnapshot], Sequence[AggTable]] | None = None,
) -> Endpoint:
    """Bind ``address`` (an ``InstrError`` if it cannot be), serve, and say where."""
    sink = MetricsSink(fresh, view)
    server = MetricsServer(address, sink)
    server.start()
    say(f"metrics on {server.url}")
    return Endpoint(sink, server)
