"""Human-readable output: a header, one line per event, then a summary block.

    TIME             TID PROBE        CALL
        0.000 ms    4242 calls/malloc → libc.so.6!malloc size=1024 caller=demo!main+0x2a
        0.061 ms    4242 calls/malloc ← libc.so.6!malloc = 0x5555a000 (56.0 µs)

Lines are built by ``console_lines`` (columns, call depth, time, colour) in
timestamp order across threads (``console_order``: events are held back for
a short window and sorted).  Pointers and callers are symbolised through the
run context; backtraces follow on indented lines.  Formatting is deterministic
(tests compare it line by line).

Aggregation snapshots (``on_aggregations``) are printed as reports
(``instr.aggregate.report``): the final one always; interval ones too, unless
the live view is on, which redraws them in place (``instr.aggregate.live``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TextIO

from instr.aggregate.live import LiveView, TerminalSize, terminal_size
from instr.aggregate.model import AggSnapshot
from instr.aggregate.report import render_snapshot
from instr.collectors.console_lines import EventLines, use_colour
from instr.collectors.console_order import HOLD_NS, TimeOrder
from instr.events import Event, ProbeReport, RunContext, RunInfo, RunSummary

LOCAL_DEVICES = ("local", "id:local")  # the target's CLOCK_MONOTONIC is the host's


class ConsoleCollector:
    """Events as lines, aggregation reports, and the summary at close.

    ``live``: redraw interval snapshots in place instead of appending them;
    ``None`` (the default) means "when ``stream`` is a terminal".  Only interval
    snapshots (``--interval``) are ever drawn live; the final report is always
    appended, and so is the last live one when the run ends without a final
    snapshot.  ``top``: cut each aggregation to its N largest rows.
    ``colour``: ``None`` means "on a terminal without ``NO_COLOR``".
    ``wall_time``: the time of day instead of milliseconds since the first
    event (``--wall-time``: ``instr.runner.RunConfig.wall_time``).  ``hold_ns``: how long
    events wait to be put in timestamp order (``console_order``); a thread
    prints what waited that long every ``hold_ns / 4`` (``tick_s`` = 0: only
    when batches come, for tests, which call ``tick``).  ``clock`` (monotonic
    ns) and ``size`` (terminal columns, lines) are for tests.
    """

    def __init__(
        self,
        stream: TextIO,
        summary: bool = True,
        *,
        live: bool | None = None,
        top: int | None = None,
        colour: bool | None = None,
        wall_time: bool = False,
        hold_ns: int = HOLD_NS,
        tick_s: float | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
        size: TerminalSize = terminal_size,
    ) -> None:
        self.stream = stream
        self.show_summary = summary
        self.ctx: RunContext | None = None
        self.lines: EventLines | None = None
        self.live = _isatty(stream) if live is None else live
        self.top = top
        self.colour = use_colour(stream) if colour is None else colour
        self.wall_time = wall_time
        self.order = TimeOrder(hold_ns)
        self.tick_s = hold_ns / 4e9 if tick_s is None else tick_s
        self.clock = clock
        self.view = LiveView(stream, size)
        self._opened_ns: int | None = None
        self._unprinted: list[str] | None = None  # the live report not yet appended
        self._headed = False
        self._lock = threading.RLock()  # the stream, the order and the lines: worker and ticker
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()
        self.written = 0  # events flushed to the stream (instr.collectors.failure)
        self.pipe_closed = False  # the reader went away (instr ... | head): write no more
        self._on_closed_pipe: Callable[[], None] | None = None

    def watch_pipe(self, on_closed: Callable[[], None]) -> None:
        """``on_closed`` is called when the reader goes away while the ticker
        writes (the dispatcher then stops the run, as when ``on_events`` raises)."""
        self._on_closed_pipe = on_closed

    def open(self, ctx: RunContext, info: RunInfo) -> None:
        self.ctx = ctx
        local = info.device in LOCAL_DEVICES
        offset = time.time_ns() - time.monotonic_ns() if local else None
        self.lines = EventLines(
            ctx, colour=self.colour, wall_offset_ns=offset if self.wall_time else None
        )
        self._opened_ns = self.clock()

    def configure_reports(self, *, top: int | None = None, live: bool = False) -> None:
        """What the runner knows: ``top`` (``--top``), and ``live``: interval reports are
        wanted (``--interval``); they are drawn live only when the stream is a terminal."""
        self.top = top
        self.live = live and _isatty(self.stream)

    def on_aggregations(self, snapshot: AggSnapshot) -> None:
        """Report one snapshot; elapsed time is counted from ``open``."""
        elapsed = self.clock() - self._opened_ns if self._opened_ns is not None else None
        lines = render_snapshot(snapshot, top=self.top, elapsed_ns=elapsed)
        with self._lock:
            if snapshot.final:
                self._print(self.order.drain())  # the events before the final report
            if self.live and not snapshot.final:
                self.view.show(lines)
                self._unprinted = lines
                return
            self._leave_live(print_last=False)
            self._write("\n".join(lines) + "\n")

    def _leave_live(self, print_last: bool) -> None:
        self.view.close()
        if print_last and self._unprinted is not None:
            self.stream.write("\n".join(self._unprinted) + "\n")
        self._unprinted = None

    def on_events(self, events: list[Event]) -> None:
        if not events or self.lines is None:
            return
        with self._lock:
            if self.pipe_closed:
                raise BrokenPipeError(32, "Broken pipe")
            lines = self.lines
            if self.wall_time and lines.wall_offset_ns is None:
                # another device's clock: its offset from the first batch's arrival
                lines.wall_offset_ns = time.time_ns() - max(e.ts_ns for e in events)
            self._print(self.order.add(events, self.clock()))
            if self._ticker is None and self.tick_s > 0:
                self._ticker = threading.Thread(
                    target=self._tick_loop, name="instr-console", daemon=True
                )
                self._ticker.start()

    def tick(self) -> None:
        """Print the events that waited long enough (the ticker thread calls this)."""
        with self._lock:
            if not self.pipe_closed and self.order.pending:
                self._print(self.order.due(self.clock()))

    def _tick_loop(self) -> None:
        while not self._stop.wait(self.tick_s):
            try:
                self.tick()
            except BrokenPipeError:
                if self._on_closed_pipe is not None:
                    self._on_closed_pipe()
                return
            except (OSError, ValueError):
                return  # a failed or closed stream: on_events and close say it

    def _print(self, events: list[Event]) -> None:
        if not events or self.lines is None:
            return
        text: list[str] = []
        if not self._headed:
            text.append(self.lines.header())
            self._headed = True
        for e in events:
            self.lines.format(e, text)
        text.append("")
        self._write("\n".join(text))
        self.written += len(events)

    def _write(self, text: str) -> None:
        if self.pipe_closed:
            raise BrokenPipeError(32, "Broken pipe")
        try:
            self.stream.write(text)
            self.stream.flush()
        except BrokenPipeError:
            self.pipe_closed = True
            raise

    def format_event(self, event: Event) -> list[str]:
        """The line (and backtrace lines) for one event, as it comes (no header, no ordering)."""
        assert self.lines is not None
        lines: list[str] = []
        self.lines.format(event, lines)
        return lines

    def close(self, summary: RunSummary) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        with self._lock:
            if self.pipe_closed:
                raise BrokenPipeError(32, "Broken pipe")
            self._print(self.order.drain())
            self._leave_live(print_last=True)
            self._write("\n".join(summary_lines(summary)) + "\n" if self.show_summary else "")


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no such method, or a closed stream
        return False


def _count(n: int, word: str, plural: str = "s") -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}{plural}"


def _probe_row(r: ProbeReport, width: int) -> str:
    row = f"  {r.name:<{width}} {r.state:<7} {r.tier or '-':<6} {r.sites:>5} {r.events:>9} {r.drops:>7}"
    return f"{row}  {r.reason}" if r.reason else row


def summary_lines(summary: RunSummary) -> list[str]:
    """The end-of-run block: totals, one row per probe, the ending, the errors."""
    lines = ["--"]
    lost = f", {_count(summary.lost_batches, 'lost batch', 'es')}" if summary.lost_batches else ""
    counts = f"{_count(summary.events, 'event')} in {_count(summary.batches, 'batch', 'es')}"
    lines.append(f"{counts}, {summary.drops} dropped{lost}")
    if summary.probes:
        width = max(5, *(len(r.name) for r in summary.probes))
        header = (
            f"  {'probe':<{width}} {'state':<7} {'tier':<6} {'sites':>5} {'events':>9} {'drops':>7}"
        )
        lines.append(header)
        lines.extend(_probe_row(r, width) for r in summary.probes)
    if summary.ending is not None:
        lines.append(f"ending: {summary.ending.describe()}")
    if summary.errors:
        lines.append(f"errors ({len(summary.errors)}):")
        lines.extend(f"  {text}" for text in summary.errors)
    return lines
