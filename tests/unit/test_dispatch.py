"""Dispatcher: ordering, loss accounting, errors, summary (no Frida: messages by hand)."""

from __future__ import annotations

import inspect
import threading
from typing import Any

import pytest

from instr.collectors.encode import encode_record
from instr.dispatch import Dispatcher
from instr.events import (
    Ending,
    Event,
    OutputFailure,
    ProbeReport,
    RunContext,
    RunInfo,
    RunSummary,
    Site,
    Symbol,
)
from instr.probes.ir import Capture, FunctionPoint, Probe, ProbeTable
from instr.protocol import PROTOCOL_VERSION

WAIT = 10.0  # seconds; only reached when something is broken


def make_table() -> ProbeTable:
    t = ProbeTable()
    caps = (Capture("n", "arg", "u64"),)
    t.add(Probe(1, "s/one", FunctionPoint("libc*", "malloc"), caps, None))
    t.add(Probe(2, "s/two", FunctionPoint("libc*", "free"), caps, None))
    return t


class Recorder:
    """A collector that remembers everything; optionally blocks or raises."""

    def __init__(self, fail_on: int | None = None, gate: threading.Event | None = None) -> None:
        self.batches: list[list[Event]] = []
        self.closed: list[RunSummary] = []
        self.fail_on = fail_on
        self.gate = gate

    def open(self, ctx: RunContext, info: RunInfo) -> None:
        pass

    def on_events(self, events: list[Event]) -> None:
        if self.gate is not None:
            assert self.gate.wait(WAIT)
        if self.fail_on is not None and len(self.batches) + 1 == self.fail_on:
            self.batches.append([])
            raise RuntimeError("disk full")
        self.batches.append(events)

    def close(self, summary: RunSummary) -> None:
        self.closed.append(summary)

    @property
    def events(self) -> list[Event]:
        return [e for b in self.batches for e in b]


def send(payload: dict[str, Any]) -> dict[str, Any]:
    """What Frida hands the message callback for ``send(payload)``."""
    return {"type": "send", "payload": {"v": PROTOCOL_VERSION, **payload}}


def batch(seq: int, *values: tuple[int, int], drops: dict[str, int] | None = None) -> tuple:
    data = b"".join(encode_record(pid, 0, [n]) for pid, n in values)
    msg = send({"type": "batch", "seq": seq, "records": len(values), "drops": drops or {}})
    return msg, data


@pytest.fixture
def ctx() -> RunContext:
    return RunContext(make_table())


def test_batches_reach_collectors_in_order_with_host_seq(ctx: RunContext) -> None:
    rec = Recorder()
    d = Dispatcher(ctx, [rec])
    d.post(*batch(1, (1, 10), (2, 20)))
    d.post(*batch(2, (1, 30)))
    summary = d.close()
    assert [(e.seq, e.probe, e.args["n"]) for e in rec.events] == [
        (1, "s/one", 10),
        (2, "s/two", 20),
        (3, "s/one", 30),
    ]
    assert (summary.events, summary.batches, summary.lost_batches) == (3, 2, 0)
    assert {r.name: r.events for r in summary.probes} == {"s/one": 2, "s/two": 1}
    assert rec.closed == [summary] and summary.errors == []


def test_seq_gap_is_counted_as_lost_batches(ctx: RunContext) -> None:
    d = Dispatcher(ctx)
    for seq in (1, 2, 5, 6, 8):
        d.post(*batch(seq, (1, seq)))
    summary = d.close()
    assert summary.lost_batches == 3
    assert summary.errors == ["lost 2 batches (seq 3-4)", "lost 1 batch (seq 7)"]


def test_out_of_order_batch_is_reported(ctx: RunContext) -> None:
    d = Dispatcher(ctx)
    d.post(*batch(2, (1, 1)))
    d.post(*batch(1, (1, 1)))
    summary = d.close()
    assert summary.lost_batches == 1  # seq 1 was missing when seq 2 arrived
    assert "batch seq 1 arrived after seq 2; decoded anyway" in summary.errors
    assert summary.events == 2


def test_drops_are_cumulative_per_probe(ctx: RunContext) -> None:
    d = Dispatcher(ctx)
    d.post(*batch(1, (1, 1), drops={"1": 5}))
    d.post(*batch(2, (1, 1), drops={"1": 12, "2": 3}))
    d.post(*batch(3, (1, 1), drops={"1": 12, "2": 3}))
    summary = d.close()
    assert summary.drops == 15
    assert {r.name: r.drops for r in summary.probes} == {"s/one": 12, "s/two": 3}


def test_ending_callback_runs_after_earlier_batches_are_delivered(ctx: RunContext) -> None:
    gate = threading.Event()
    rec = Recorder(gate=gate)
    seen: list[tuple[Ending, int, int]] = []
    d = Dispatcher(ctx, [rec], on_ending=lambda e, tok: seen.append((e, tok, len(rec.events))))
    d.post(*batch(1, (1, 1)))
    d.post(*batch(2, (1, 2), (1, 3)))
    ending = {"type": "ending", "reason": "exit", "code": 3, "signal": None}
    d.post(send({**ending, "address": None, "symbol": None, "token": 41}), None)
    assert not d.drain(0.05)  # the worker is held inside the collector
    assert seen == []
    gate.set()
    assert d.drain(WAIT)
    assert seen == [(Ending("exit", code=3), 41, 3)]
    summary = d.close(Ending("detach"))
    assert summary.ending == Ending("exit", code=3)  # the agent's word beats the fallback


def test_a_stopped_program_is_not_said_to_keep_running(ctx: RunContext) -> None:
    stopped = Ending("stopped", signal="SIGKILL")
    d = Dispatcher(ctx)
    d.post(send({"type": "ending", "reason": "detach", "code": None, "token": 1}), None)
    assert d.close(Ending("detach"), stopped).ending == stopped
    assert stopped.describe() == "instr stopped the program it started (SIGKILL)"
    assert stopped.status() is None  # instr's own exit status stays 0
    exited = Dispatcher(ctx)  # an ending that happened before the stop is kept
    exited.post(send({"type": "ending", "reason": "exit", "code": 3, "token": 1}), None)
    assert exited.close(None, stopped).ending == Ending("exit", code=3)


def test_crash_ending_parses_address(ctx: RunContext) -> None:
    d = Dispatcher(ctx)
    msg = {"type": "ending", "reason": "crash", "code": None, "signal": "SIGSEGV"}
    d.post(send({**msg, "address": "0x10", "symbol": "demo!boom+0x4", "token": 1}), None)
    summary = d.close()
    assert summary.ending == Ending("crash", None, "SIGSEGV", 0x10, "demo!boom+0x4")


def test_fallback_ending_when_agent_sent_none(ctx: RunContext) -> None:
    assert Dispatcher(ctx).close(Ending("killed")).ending == Ending("killed")


def test_collector_exception_is_surfaced_and_others_continue(ctx: RunContext) -> None:
    bad, good = Recorder(fail_on=2), Recorder()
    d = Dispatcher(ctx, [bad, good])
    for seq in (1, 2, 3):
        d.post(*batch(seq, (1, seq)))
    summary = d.close()
    assert len(good.events) == 3
    assert len(bad.batches) == 2  # nothing after the failure
    assert bad.closed == [summary]
    lines, first = inspect.getsourcelines(Recorder.on_events)
    raised = first + next(i for i, line in enumerate(lines) if "raise RuntimeError" in line)
    # a bug, not an OS or SQLite error: its type and where it was raised
    reason = f"RuntimeError: disk full at {__file__}:{raised}"
    (err,) = summary.errors
    assert err == f"output Recorder failed: {reason}; an unknown number of events not written"
    assert summary.output_failures == [OutputFailure("Recorder", reason, None)]
    assert not summary.pipe_closed


class Counting(Recorder):
    """Keeps ``written`` as the real collectors do; fails with an OSError."""

    def __init__(self, fail_on: int, error: OSError) -> None:
        super().__init__(fail_on=fail_on)
        self.written = 0
        self.path = "out.jsonl"
        self.error = error

    def on_events(self, events: list[Event]) -> None:
        if len(self.batches) + 1 == self.fail_on:
            self.batches.append([])
            raise self.error
        self.batches.append(events)
        self.written += len(events)


def test_output_failure_counts_what_was_not_written(ctx: RunContext) -> None:
    full = Counting(2, OSError(28, "No space left on device"))
    d = Dispatcher(ctx, [full])
    for seq in (1, 2, 3):
        d.post(*batch(seq, (1, seq), (1, seq)))
    summary = d.close()
    assert summary.events == 6
    assert summary.output_failures == [OutputFailure("out.jsonl", "No space left on device", 4)]
    assert summary.errors == [
        "output out.jsonl failed: No space left on device; 4 of 6 events were not written"
    ]
    assert full.closed == [summary]  # its close sees its own failure already recorded


def test_closed_pipe_stops_quietly(ctx: RunContext) -> None:
    pipe = Counting(2, BrokenPipeError(32, "Broken pipe"))
    d = Dispatcher(ctx, [pipe])
    d.post(*batch(1, (1, 1)))
    assert d.drain(WAIT) and not d.pipe_closed.is_set()
    d.post(*batch(2, (1, 2)))
    assert d.drain(WAIT) and d.pipe_closed.is_set()  # the run is asked to stop
    summary = d.close()
    assert summary.pipe_closed
    assert summary.errors == [] and summary.output_failures == []


def test_failure_while_closing(ctx: RunContext) -> None:
    class FailsAtClose(Recorder):
        written = 0
        path = "x.db"

        def close(self, summary: RunSummary) -> None:
            raise OSError(5, "Input/output error")

    d = Dispatcher(ctx, [FailsAtClose()])
    summary = d.close()
    assert summary.errors == [
        "output x.db failed: Input/output error (while closing it); 0 of 0 events were not written"
    ]


def test_ending_callback_exception_is_recorded(ctx: RunContext) -> None:
    def boom(ending: Ending, token: int) -> None:
        raise OSError("script destroyed")

    d = Dispatcher(ctx, on_ending=boom)
    d.post(send({"type": "ending", "reason": "exit", "code": 0, "token": 1}), None)
    (err,) = d.close().errors
    assert err.startswith("acknowledging the agent's ending failed: OSError: script destroyed")


def test_agent_and_script_errors(ctx: RunContext) -> None:
    d = Dispatcher(ctx)
    d.post(send({"type": "error", "probe": 2, "message": "access violation", "stack": "x"}), None)
    d.post(send({"type": "error", "probe": None, "message": "oops", "stack": None}), None)
    frida_error = {"type": "error", "description": "ReferenceError: x is not defined"}
    d.post({**frida_error, "stack": "...", "fileName": "/agent.js", "lineNumber": 7}, None)
    assert d.close().errors == [
        "probe s/two: access violation",
        "agent: oops",
        "agent script error: ReferenceError: x is not defined (/agent.js:7)",
    ]


def test_sites_symbols_and_status(ctx: RunContext) -> None:
    d = Dispatcher(ctx)
    d.set_reports([ProbeReport(1, "s/one", "armed", "native", 1, None)])
    sites = [{"site": 0, "address": "0x7f0010", "module": "libc.so.6", "symbol": "free"}]
    d.post(send({"type": "sites", "probe": 2, "sites": sites}), None)
    d.post(send({"type": "symbols", "map": {"0x401000": ["demo", "main", 42]}}), None)
    status = {"id": 2, "state": "armed", "tier": "js", "sites": 1, "reason": None}
    d.post(send({"type": "status", "probe": status}), None)
    d.post(send({"type": "modules", "loaded": []}), None)
    summary = d.close()
    assert ctx.site(2, 0) == Site(2, 0, 0x7F0010, "libc.so.6", "free")
    assert ctx.symbols == {0x401000: Symbol("demo", "main", 42)}
    assert ctx.symbolize(0x401000) == "demo!main+0x2a"
    assert [(r.name, r.state, r.tier, r.sites) for r in summary.probes] == [
        ("s/one", "armed", "native", 1),
        ("s/two", "armed", "js", 1),
    ]
    assert summary.errors == []


def test_status_before_set_reports_is_kept(ctx: RunContext) -> None:
    d = Dispatcher(ctx)
    status = {"id": 1, "state": "armed", "tier": "js", "sites": 2, "reason": None}
    d.post(send({"type": "status", "probe": status}), None)
    assert d.drain(WAIT)
    d.set_reports([ProbeReport(1, "s/one", "pending", None, 0, "libfoo not loaded")])
    (one, two) = d.close().probes
    assert (one.state, one.sites) == ("armed", 2)
    assert (two.state, two.reason) == ("pending", "no status from the agent")


def test_decoder_problems_and_record_count_mismatch(ctx: RunContext) -> None:
    d = Dispatcher(ctx)
    data = encode_record(9, 0, [1]) + encode_record(1, 0, [1])
    d.post(send({"type": "batch", "seq": 1, "records": 2, "drops": {}}), data)
    summary = d.close()
    assert summary.errors == [
        "batch 1: 2 records announced, 1 decoded",
        "decoder: records of unknown probe id 9 phase 0 skipped (x1)",
    ]
    assert [r.name for r in summary.probes] == ["s/one", "s/two"]


def test_malformed_messages_do_not_stop_the_worker(ctx: RunContext) -> None:
    rec = Recorder()
    d = Dispatcher(ctx, [rec])
    d.post(send({"type": "sites", "sites": []}), None)  # no probe field
    d.post(send({"type": "mystery"}), None)
    d.post(send({"type": "mystery"}), None)
    d.post({"type": "send", "payload": "text"}, None)
    d.post({"type": "weird"}, None)
    d.post("not a dict", None)  # type: ignore[arg-type]
    d.post(*batch(1, (1, 1)))
    summary = d.close()
    assert len(rec.events) == 1
    assert summary.errors[0].startswith("internal error handling a 'sites' message: KeyError")
    assert summary.errors[1:] == [
        "unknown agent message type 'mystery'",
        "unexpected message from the agent: 'text'",
        "unexpected Frida message type 'weird'",
        "unexpected Frida message: 'not a dict'",
    ]


def test_protocol_version_mismatch_reported_once(ctx: RunContext) -> None:
    d = Dispatcher(ctx)
    for seq in (1, 2):
        msg, data = batch(seq, (1, 1))
        msg["payload"]["v"] = 99
        d.post(msg, data)
    summary = d.close()
    assert summary.errors == [
        f"agent message with protocol version 99, host speaks {PROTOCOL_VERSION}"
    ]
    assert summary.events == 2


def test_envelope_posted_directly(ctx: RunContext) -> None:
    d = Dispatcher(ctx)
    msg, data = batch(1, (2, 5))
    d.post(msg["payload"], data)
    assert d.close().events == 1


def test_close_is_idempotent_and_thread_safe(ctx: RunContext) -> None:
    rec = Recorder()
    d = Dispatcher(ctx, [rec])
    d.post(*batch(1, (1, 1)))
    results: list[RunSummary] = []
    threads = [threading.Thread(target=lambda: results.append(d.close())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert len(results) == 4 and all(r is results[0] for r in results)
    assert len(rec.closed) == 1
    assert d.drain(WAIT)  # after close: returns at once


def test_collector_close_exception_is_recorded(ctx: RunContext) -> None:
    class BadClose(Recorder):
        def close(self, summary: RunSummary) -> None:
            raise ValueError("cannot flush")

    good = Recorder()
    summary = Dispatcher(ctx, [BadClose(), good]).close()
    assert good.closed == [summary]
    assert summary.errors[0].startswith("output BadClose failed: ValueError: cannot flush at ")
    assert summary.errors[0].endswith(
        " (while closing it); an unknown number of events not written"
    )


def test_error_flood_is_capped(ctx: RunContext) -> None:
    d = Dispatcher(ctx)
    for i in range(250):
        d.post(send({"type": "error", "probe": None, "message": f"e{i}"}), None)
    errors = d.close().errors
    assert len(errors) == 201 and errors[-1] == "... and 50 more errors"
