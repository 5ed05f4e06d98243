"""The console collector: header, columns, timestamp order across threads, call
depth, colour, relative and wall time (exact output, no Frida)."""

from __future__ import annotations

import io
import time

import pytest
from test_collectors import INFO, sample

from instr.collectors.console import ConsoleCollector
from instr.collectors.console_lines import use_colour, wall_clock
from instr.events import Event, RunContext, RunInfo, RunSummary, Site
from instr.probes.ir import FunctionPoint, Probe, ProbeTable
from instr.protocol import FLAG_NO_ENTRY

CONSOLE = """\
TIME             TID PROBE        CALL
    0.000 ms    4242 calls/malloc → libc.so.6!malloc size=1024 caller=demo!main+0x2a
    0.012 ms    4242 calls/malloc ← libc.so.6!malloc = 0x5555a000 (12.3 µs)
    1.000 ms       1 files/open   → libc.so.6!open path="/etc/\\"pa%\\n"... flags=0 stack=[3 frames]
        #0 demo!main+0x2a
        #1 demo!main
        #2 0x99
    1.500 ms       1 files/open   ← libc.so.6!open ok=true = -2
    2.000 ms       7 calls/malloc ← libc.so.6!malloc = 0x0 (entry not seen)
    3.000 ms       1 files/open   → <site 5> path=NULL flags=64 stack=[0 frames]
--
6 events in 2 batches, 4 dropped, 1 lost batch
  probe        state   tier   sites    events   drops
  calls/malloc armed   native     1         3       4
  files/open   failed  -          0         3       0  no function matches 'x'
ending: target exited with status 0
errors (1):
  lost 1 batch (seq 2)
"""
SUMMARY = RunSummary(0, 0, 0, [], None, [], 0)


def test_console_golden() -> None:
    ctx, events, summary = sample()
    out = io.StringIO()
    c = ConsoleCollector(out, tick_s=0)
    c.open(ctx, INFO)
    c.on_events(events[:3])
    c.on_events(events[3:])
    c.close(summary)
    assert out.getvalue() == CONSOLE


def test_console_values_of_every_kind() -> None:
    ctx, _, _ = sample()
    c = ConsoleCollector(io.StringIO(), tick_s=0)
    c.open(ctx, INFO)
    e = Event(1, 2, "files/open", "entry", 1, 0, 0, {"path": None, "flags": 1, "stack": []})
    e.args_status = {"path": "unreadable"}
    assert c.format_event(e) == [
        "    0.000 ms       1 files/open   → libc.so.6!open path=<unreadable> flags=1 stack=[0 frames]"
    ]
    slow = Event(2, 1, "calls/malloc", "exit", 1, 2_500_000_000, 0, {}, 1, 2_500_000_000)
    assert c.format_event(slow)[0].endswith("= 0x1 (2.500 s)")


def test_console_summary_without_probes_or_ending() -> None:
    out = io.StringIO()
    c = ConsoleCollector(out, tick_s=0)
    c.close(RunSummary(0, 0, 0, [], None, [], 0))  # never opened: still prints the summary
    assert out.getvalue() == "--\n0 events in 0 batches, 0 dropped\n"


# -- nested calls, several threads ------------------------------------------------------


def widget_ctx() -> RunContext:
    """cli/w: entry and exit hooks (calls nest); cli/log: entry only (opens no level)."""
    t = ProbeTable()
    t.add(Probe(1, "cli/w", FunctionPoint("cxx", "ns::Widget::*"), entry=(), exit=()))
    t.add(Probe(2, "cli/log", FunctionPoint("cxx", "log"), entry=(), exit=None))
    ctx = RunContext(t)
    ctx.add_site(Site(1, 0, 0x1000, "cxx", "ns::Widget::outer(int)"))
    ctx.add_site(Site(1, 1, 0x2000, "cxx", "ns::Widget::twice(int)"))
    ctx.add_site(Site(2, 0, 0x3000, "cxx", "log"))
    return ctx


def ev(seq: int, tid: int, ms: float, phase: str, site: int, probe: int = 1) -> Event:
    name = "cli/w" if probe == 1 else "cli/log"
    return Event(seq, probe, name, phase, tid, int(ms * 1_000_000), site, {})


def console(ctx: RunContext, **kw: object) -> tuple[ConsoleCollector, io.StringIO, list[int]]:
    """A console on a StringIO, with a host clock the test moves (``now[0]``, ns)."""
    out = io.StringIO()
    now = [0]
    c = ConsoleCollector(out, tick_s=0, clock=lambda: now[0], **kw)  # type: ignore[arg-type]
    c.open(ctx, INFO)
    return c, out, now


def test_threads_print_in_timestamp_order_with_call_depth() -> None:
    """One batch as a JS-tier hook delivers it: thread 12 waited for the script
    lock, so its records come after thread 11's later ones. Printed sorted by
    time, each thread indented by its own open calls; an entry-only probe
    opens no level, an exit whose entry was not seen closes none."""
    c, out, _ = console(widget_ctx())
    batch = [
        ev(1, 11, 0.010, "entry", 0),
        ev(2, 11, 0.020, "entry", 1),
        ev(3, 11, 0.025, "entry", 0, probe=2),
        ev(4, 11, 0.030, "exit", 1),
        ev(5, 11, 0.040, "exit", 0),
        ev(6, 12, 0.000, "exit", 1),  # attached mid-call: its entry was not seen
        ev(7, 12, 0.015, "entry", 0),
        ev(8, 12, 0.035, "entry", 1),
    ]
    batch[5].flags = FLAG_NO_ENTRY
    c.on_events(batch)
    c.on_events([ev(9, 12, 0.050, "exit", 1), ev(10, 12, 0.060, "exit", 0)])
    c.close(SUMMARY)
    assert out.getvalue().split("--\n")[0] == (
        "TIME             TID PROBE   CALL\n"
        "    0.000 ms      12 cli/w   ← cxx!ns::Widget::twice(int)\n"
        "    0.010 ms      11 cli/w   → cxx!ns::Widget::outer(int)\n"
        "    0.015 ms      12 cli/w   → cxx!ns::Widget::outer(int)\n"
        "    0.020 ms      11 cli/w      | → cxx!ns::Widget::twice(int)\n"
        "    0.025 ms      11 cli/log    |    | → cxx!log\n"
        "    0.030 ms      11 cli/w      | ← cxx!ns::Widget::twice(int)\n"
        "    0.035 ms      12 cli/w      | → cxx!ns::Widget::twice(int)\n"
        "    0.040 ms      11 cli/w   ← cxx!ns::Widget::outer(int)\n"
        "    0.050 ms      12 cli/w      | ← cxx!ns::Widget::twice(int)\n"
        "    0.060 ms      12 cli/w   ← cxx!ns::Widget::outer(int)\n"
    )


def test_events_wait_for_later_batches_then_for_the_host_clock() -> None:
    """A record stamped before the end of a batch may come in the next one: an
    event is printed once one stamped 200 ms later arrived, or once it waited
    200 ms on the host; at close everything left is printed, in order."""
    c, out, now = console(widget_ctx())
    c.on_events([ev(1, 11, 0, "entry", 0), ev(2, 11, 150, "exit", 0), ev(3, 11, 300, "entry", 0)])
    assert out.getvalue().splitlines()[1:] == [
        "    0.000 ms      11 cli/w   → cxx!ns::Widget::outer(int)"
    ]
    now[0] = 50_000_000
    c.on_events([ev(4, 12, 120, "entry", 1)])  # stamped before seq 2, arrived after it
    c.tick()
    assert len(out.getvalue().splitlines()) == 2  # nothing waited 200 ms yet
    now[0] = 250_000_000
    c.tick()  # the first batch waited 200 ms: up to its latest time (300 ms)
    assert out.getvalue().splitlines()[2:] == [
        "  120.000 ms      12 cli/w   → cxx!ns::Widget::twice(int)",
        "  150.000 ms      11 cli/w   ← cxx!ns::Widget::outer(int)",
        "  300.000 ms      11 cli/w   → cxx!ns::Widget::outer(int)",
    ]
    c.on_events([ev(5, 12, 100, "exit", 1)])  # later than the window: printed, out of order
    c.close(SUMMARY)
    assert out.getvalue().splitlines()[5:7] == [
        "  100.000 ms      12 cli/w   ← cxx!ns::Widget::twice(int)",
        "--",
    ]


def test_final_aggregation_report_comes_after_the_events() -> None:
    from instr.aggregate.model import AggSnapshot

    c, out, _ = console(widget_ctx())
    c.on_events([ev(1, 11, 0, "entry", 0)])
    assert out.getvalue() == ""
    c.on_aggregations(AggSnapshot(0, 0, True, ()))
    assert out.getvalue().splitlines()[:2] == [
        "TIME             TID PROBE   CALL",
        "    0.000 ms      11 cli/w   → cxx!ns::Widget::outer(int)",
    ]


# -- colour, time of day ------------------------------------------------------------


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_on_a_terminal_unless_no_color() -> None:
    assert use_colour(Tty(), {}) is True
    assert use_colour(Tty(), {"NO_COLOR": "1"}) is False
    assert use_colour(Tty(), {"NO_COLOR": ""}) is True  # no-color.org: set and not empty
    assert use_colour(io.StringIO(), {}) is False  # a pipe or a file


def test_colour_lines() -> None:
    c, out, _ = console(widget_ctx(), colour=True)
    c.on_events([ev(1, 11, 0, "entry", 0), ev(2, 12, 0.5, "entry", 1), ev(3, 11, 1, "exit", 0)])
    c.close(SUMMARY)
    assert out.getvalue().split("--\n")[0].splitlines() == [
        "\x1b[1mTIME             TID PROBE   CALL\x1b[0m",
        "\x1b[2m    0.000 ms\x1b[0m \x1b[36m     11\x1b[0m cli/w   \x1b[36m→ cxx!ns::Widget::outer(int)\x1b[0m",
        "\x1b[2m    0.500 ms\x1b[0m \x1b[32m     12\x1b[0m cli/w   \x1b[32m→ cxx!ns::Widget::twice(int)\x1b[0m",
        "\x1b[2m    1.000 ms\x1b[0m \x1b[36m     11\x1b[0m cli/w   \x1b[36m← cxx!ns::Widget::outer(int)\x1b[0m",
    ]


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_wall_time_of_a_local_target(utc: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The target's clock is the host's CLOCK_MONOTONIC: offset by wall - monotonic."""
    monkeypatch.setattr(time, "time_ns", lambda: 1_700_000_000_000_000_000 + 5_000_000_000)
    monkeypatch.setattr(time, "monotonic_ns", lambda: 5_000_000_000)
    c, out, _ = console(widget_ctx(), wall_time=True)
    c.on_events([ev(1, 11, 1.5, "entry", 0), ev(2, 11, 2001.25, "exit", 0)])
    c.close(SUMMARY)
    assert out.getvalue().split("--\n")[0].splitlines() == [
        "TIME                TID PROBE   CALL",
        "22:13:20.001500      11 cli/w   → cxx!ns::Widget::outer(int)",
        "22:13:22.001250      11 cli/w   ← cxx!ns::Widget::outer(int)",
    ]


def test_wall_time_of_another_device_from_the_first_batch(
    utc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another device's clock is not the host's: its latest time in the first batch
    is taken as the batch's arrival (late by at most a flush interval)."""
    monkeypatch.setattr(time, "time_ns", lambda: 1_700_000_000_000_000_000)
    out = io.StringIO()
    c = ConsoleCollector(out, tick_s=0, wall_time=True)
    c.open(widget_ctx(), RunInfo(1, "host:10.0.0.2", 2, None, None, ()))
    c.on_events([ev(1, 11, 1000, "entry", 0), ev(2, 11, 1250, "exit", 0)])
    c.close(SUMMARY)
    assert out.getvalue().splitlines()[1:3] == [
        "22:13:19.750000      11 cli/w   → cxx!ns::Widget::outer(int)",
        "22:13:20.000000      11 cli/w   ← cxx!ns::Widget::outer(int)",
    ]


def test_wall_time_from_the_run_config_and_clock_text(utc: None, tmp_path) -> None:
    from instr.probes.ir import ProbeTable
    from instr.runner import RunConfig, _collectors
    from instr.target import TargetSpec

    assert wall_clock(1_700_000_000_123_456_789) == "22:13:20.123456"
    assert ConsoleCollector(io.StringIO()).wall_time is False
    for wall in (True, False):
        config = RunConfig(table=ProbeTable(), target=TargetSpec(pid=1), wall_time=wall)
        (console,) = _collectors(config)
        assert isinstance(console, ConsoleCollector) and console.wall_time is wall


class ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_reader_gone_while_the_ticker_writes_stops_the_run() -> None:
    """Held events are written by the console's own thread: a closed pipe there
    reaches the dispatcher (``watch_pipe``) as it would from ``on_events``."""
    import threading

    now = [0]
    c = ConsoleCollector(ClosedPipe(), tick_s=0, clock=lambda: now[0])
    c.open(widget_ctx(), INFO)
    closed = threading.Event()
    c.watch_pipe(closed.set)
    c.on_events([ev(1, 11, 0, "entry", 0)])  # held: nothing written yet
    now[0] = 10**9
    c.tick_s = 0.001
    ticker = threading.Thread(target=c._tick_loop)
    ticker.start()
    ticker.join(60)
    assert closed.is_set() and c.pipe_closed
    with pytest.raises(BrokenPipeError):
        c.on_events([ev(2, 11, 1, "exit", 0)])
    with pytest.raises(BrokenPipeError):
        c.close(SUMMARY)
