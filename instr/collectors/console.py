"""Human-readable output: one line per event, then a summary block.

    0.000 ms   4242 calls/open → libc.so.6!open path="/etc/passwd" flags=0
    0.061 ms   4242 calls/open ← libc.so.6!open = 3 (56.0 µs)

Time is relative to the first event this collector saw.  Pointers and callers
are symbolised through the run context; backtraces follow on indented lines.
Formatting is deterministic (tests compare it line by line).

Aggregation snapshots (``on_aggregations``) are printed as reports
(``instr.aggregate.report``): the final one always; interval ones too, unless
the live view is on, which redraws them in place (``instr.aggregate.live``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from instr.aggregate.live import LiveView, TerminalSize, terminal_size
from instr.aggregate.model import AggSnapshot
from instr.aggregate.report import render_snapshot
from instr.collectors.layout import Layout, LayoutCache
from instr.collectors.values import BYTES_SHOWN, show_duration, show_value, site_function
from instr.events import Event, ProbeReport, RunContext, RunInfo, RunSummary
from instr.hexdump import hexdump

ARROWS = {"entry": "→", "exit": "←"}
FRAME_INDENT = " " * 8
DUMP_MAX = 256  # bytes of a long ``bytes`` capture hex-dumped under its event


class ConsoleCollector:
    """Events as lines, aggregation reports, and the summary at close.

    ``live``: redraw interval snapshots in place instead of appending them;
    ``None`` (the default) means "when ``stream`` is a terminal".  Only interval
    snapshots (``--interval``) are ever drawn live; the final report is always
    appended, and so is the last live one when the run ends without a final
    snapshot.  ``top``: cut each aggregation to its N largest rows.  ``clock``
    and ``size`` (terminal columns, lines) are for tests.
    """

    def __init__(
        self,
        stream: TextIO,
        summary: bool = True,
        *,
        live: bool | None = None,
        top: int | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
        size: TerminalSize = terminal_size,
    ) -> None:
        self.stream = stream
        self.show_summary = summary
        self.ctx: RunContext | None = None
        self.layouts: LayoutCache | None = None
        self.t0: int | None = None
        self.live = _isatty(stream) if live is None else live
        self.top = top
        self.clock = clock
        self.view = LiveView(stream, size)
        self._opened_ns: int | None = None
        self._unprinted: list[str] | None = None  # the live report not yet appended
        self.written = 0  # events flushed to the stream (instr.collectors.failure)
        self.pipe_closed = False  # the reader went away (instr ... | head): write no more

    def open(self, ctx: RunContext, info: RunInfo) -> None:
        self.ctx = ctx
        self.layouts = LayoutCache(ctx.table)
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
        if not events or self.ctx is None:
            return
        if self.t0 is None:
            self.t0 = events[0].ts_ns
        lines: list[str] = []
        for e in events:
            self._format(e, lines)
        lines.append("")
        self._write("\n".join(lines))
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
        """The line (and backtrace lines) for one event."""
        if self.t0 is None:
            self.t0 = event.ts_ns
        lines: list[str] = []
        self._format(event, lines)
        return lines

    def _format(self, e: Event, lines: list[str]) -> None:
        ctx = self.ctx
        assert ctx is not None and self.layouts is not None
        lay = self.layouts.get(e.probe_id, e.phase)
        ms = (e.ts_ns - (self.t0 or 0)) / 1e6
        fn = site_function(ctx.site(e.probe_id, e.site), e.site)
        parts = [f"{ms:9.3f} ms {e.tid:>6} {e.probe} {ARROWS.get(e.phase, '?')} {fn}"]
        stacks: list[list[int]] = []
        dumps: list[tuple[str, bytes]] = []
        status = e.args_status or {}
        kinds = lay.kinds if lay is not None else {}
        for name, value in e.args.items():
            kind = kinds.get(name, "int")
            parts.append(f"{name}={show_value(ctx, kind, value, status.get(name))}")
            if kind == "backtrace" and value:
                stacks.append(value)
            elif kind == "bytes" and value is not None and len(value) > BYTES_SHOWN:
                dumps.append((name, bytes(value)))
        if e.phase == "exit":
            parts.extend(self._exit_parts(e, lay))
        lines.append(" ".join(parts))
        for frames in stacks:
            lines.extend(f"{FRAME_INDENT}#{i} {ctx.symbolize(a)}" for i, a in enumerate(frames))
        for name, data in dumps:  # the whole buffer, hexdump -C style, offsets from 0
            lines.append(f"{FRAME_INDENT}{name}:")
            lines.extend(FRAME_INDENT + row for row in hexdump(data[:DUMP_MAX]).splitlines())
            if len(data) > DUMP_MAX:
                lines.append(f"{FRAME_INDENT}… {len(data) - DUMP_MAX} more bytes")

    def _exit_parts(self, e: Event, lay: Layout | None) -> list[str]:
        assert self.ctx is not None
        parts: list[str] = []
        if e.retval is not None:
            kind = lay.retval.kind if lay is not None and lay.retval is not None else "int"
            parts.append(f"= {show_value(self.ctx, kind, e.retval, None)}")
        if e.duration_ns is not None:
            parts.append(f"({show_duration(e.duration_ns)})")
        elif lay is not None and lay.duration is not None:
            parts.append("(entry not seen)")
        return parts

    def close(self, summary: RunSummary) -> None:
        if self.pipe_closed:
            return
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
