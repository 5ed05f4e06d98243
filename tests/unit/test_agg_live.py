"""The live view's frames, and how the console collector prints snapshots (fake streams)."""

from __future__ import annotations

import io

from instr.aggregate.live import CLEAR_BELOW, ENTER, HOME, LEAVE, LiveView, compose_frame, fit
from instr.aggregate.model import AggRow, AggSnapshot, AggTable
from instr.collectors import open_output
from instr.collectors.console import ConsoleCollector
from instr.events import Event, RunContext, RunInfo, RunSummary
from instr.probes.ir import Capture, FunctionPoint, Probe, ProbeTable

K = "\x1b[K"
INFO = RunInfo(1, "local", 2, None, "cli", ())
SUMMARY = RunSummary(1, 1, 0, [], None, [], 9)
EVENT = Event(1, 1, "calls/malloc", "entry", 10, 100, 0, {"size": 24})
EVENT_LINE = (
    "TIME             TID PROBE        CALL\n    0.000 ms      10 calls/malloc → <site 0> size=24\n"
)


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def context() -> RunContext:
    t = ProbeTable()
    caps = (Capture("size", "arg", "u64"),)
    t.add(Probe(1, "calls/malloc", FunctionPoint("libc*", "malloc"), caps, None))
    return RunContext(t)


def snap(seq: int, final: bool, n: int, *more: AggTable) -> AggSnapshot:
    count = AggTable("calls/n", "calls/malloc", "count", None, (), (AggRow((), n),), 0, 1)
    return AggSnapshot(ts_ns=seq, seq=seq, final=final, tables=(count, *more))


# -- frames ---------------------------------------------------------------------------


def test_frame_redraws_from_home_and_clears_the_rest() -> None:
    assert compose_frame(["a", "bb"], 80, 24) == HOME + "a" + K + "\nbb" + K + CLEAR_BELOW


def test_frame_fits_the_terminal() -> None:
    lines = [f"line {i}" for i in range(6)]
    assert fit(lines, 80, 6) == lines  # exactly as tall: all shown
    assert fit(lines, 20, 4) == ["line 0", "line 1", "line 2", "... 3 more lines (e…"]
    assert fit(["x" * 10], 5, 3) == ["xxxx…"]
    assert fit(lines, 0, 0) == ["…"]  # a degenerate terminal still gets one row, one column
    frame = compose_frame(lines, 80, 6)
    assert frame.count("\n") == 5  # no newline after the last row: the screen does not scroll


def test_live_view_enters_once_and_leaves_once() -> None:
    out = io.StringIO()
    view = LiveView(out, size=lambda: (20, 4))
    view.show(["one"])
    view.show(["two"])
    view.close()
    view.close()
    frame_one = HOME + "one" + K + CLEAR_BELOW
    frame_two = HOME + "two" + K + CLEAR_BELOW
    assert out.getvalue() == ENTER + frame_one + frame_two + LEAVE


# -- console collector ----------------------------------------------------------------


def test_console_appends_reports_when_not_live() -> None:
    out, clock = io.StringIO(), Clock()
    c = ConsoleCollector(out, clock=clock)
    assert c.live is False  # not a terminal
    c.open(context(), INFO)
    clock.now = 2_000_000_000
    c.on_aggregations(snap(0, False, 3))
    c.on_events([EVENT])
    clock.now = 3_500_000_000
    c.on_aggregations(snap(1, True, 5))
    c.close(SUMMARY)
    assert out.getvalue() == (
        "=== aggregations at 2.0 s (interval snapshot 0) ===\n"
        "calls/n = count(): 3\n" + EVENT_LINE + "=== aggregations at 3.5 s (final) ===\n"
        "calls/n = count(): 5\n"
        "--\n"
        "1 event in 1 batch, 0 dropped\n"
    )


def test_console_live_view_then_final_report_appended() -> None:
    out, clock = Tty(), Clock()
    c = ConsoleCollector(out, clock=clock, size=lambda: (80, 10))
    assert c.live is True  # a terminal
    c.open(context(), INFO)
    clock.now = 1_000_000_000
    c.on_aggregations(snap(0, False, 3))
    clock.now = 2_000_000_000
    c.on_aggregations(snap(1, False, 4))
    c.on_aggregations(snap(2, True, 5))
    c.close(SUMMARY)
    frame0 = HOME + "=== aggregations at 1.0 s (interval snapshot 0) ===" + K
    frame0 += "\ncalls/n = count(): 3" + K + CLEAR_BELOW
    frame1 = HOME + "=== aggregations at 2.0 s (interval snapshot 1) ===" + K
    frame1 += "\ncalls/n = count(): 4" + K + CLEAR_BELOW
    assert out.getvalue() == (
        ENTER + frame0 + frame1 + LEAVE + "=== aggregations at 2.0 s (final) ===\n"
        "calls/n = count(): 5\n"
        "--\n"
        "1 event in 1 batch, 0 dropped\n"
    )


def test_console_live_run_without_final_snapshot_keeps_the_last_report() -> None:
    out = Tty()
    c = ConsoleCollector(out, summary=False, size=lambda: (80, 10))
    c.on_aggregations(snap(0, False, 3))  # before open: no elapsed time
    c.close(SUMMARY)
    frame = HOME + "=== aggregations (interval snapshot 0) ===" + K
    frame += "\ncalls/n = count(): 3" + K + CLEAR_BELOW
    assert out.getvalue() == (
        ENTER + frame + LEAVE + "=== aggregations (interval snapshot 0) ===\ncalls/n = count(): 3\n"
    )


def test_console_live_can_be_forced_and_top_cuts() -> None:
    rows = tuple(AggRow((tid,), tid) for tid in (1, 2, 3))
    by_tid = AggTable("calls/t", "calls/malloc", "count", None, ("tid",), rows, 0, 8)
    out = Tty()
    c = ConsoleCollector(out, summary=False, live=False, top=1)
    c.on_aggregations(snap(0, False, 3, by_tid))
    assert out.getvalue() == (
        "=== aggregations (interval snapshot 0) ===\n"
        "calls/n = count(): 3\n"
        "\n"
        "calls/t = count() by tid\n"
        "  tid  count\n"
        "    3      3\n"
        "  (2 more rows with smaller values not shown: --top 1)\n"
    )
    c.close(SUMMARY)
    assert "\x1b" not in out.getvalue()


def test_open_output_passes_top_to_the_console() -> None:
    c = open_output("-", top=3)
    assert isinstance(c, ConsoleCollector) and c.top == 3


def test_configure_reports_as_the_runner_calls_it() -> None:
    tty, pipe = ConsoleCollector(Tty()), ConsoleCollector(io.StringIO())
    for c in (tty, pipe):
        c.configure_reports(top=4, live=True)  # --interval given
    assert (tty.live, pipe.live, tty.top, pipe.top) == (True, False, 4, 4)
    tty.configure_reports(top=None, live=False)  # no --interval
    assert (tty.live, tty.top) == (False, None)
