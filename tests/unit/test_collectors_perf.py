"""Throughput of the host data path: decode, SQLite, JSON Lines.

Run as a script for the numbers (best of several rounds, GC enabled as in a
real run).  Rates are per CPU-second of the measuring thread
(``time.thread_time``), so other load on the machine does not count against
them; on an idle machine they match wall-clock rates::

    python tests/unit/test_collectors_perf.py

Under pytest the measurements only run with ``INSTR_BENCH=1`` (timings on a
shared 2-core VM are too noisy to gate CI on); without it one small round
checks that the benchmark itself still works.
"""

from __future__ import annotations

import gc
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from instr.collectors.base import Collector
from instr.collectors.decode import Decoder
from instr.collectors.encode import encode_record
from instr.collectors.jsonl import JsonlCollector
from instr.collectors.sqlite import SqliteCollector
from instr.dispatch import Dispatcher
from instr.events import Event, RunContext, RunInfo, RunSummary
from instr.probes.ir import Capture, FunctionPoint, Probe, ProbeTable
from instr.protocol import PROTOCOL_VERSION

BATCH = 4096
CLOCK = time.thread_time
INFO = RunInfo(0, "local", 1, ("demo",), "bench", ("bench",))


def table() -> ProbeTable:
    t = ProbeTable()
    two_ints = (Capture("size", "arg", "u64"), Capture("n", "arg", "i32"))
    exit_caps = (Capture("ret", "retval", "ptr"), Capture("latency", "duration", "duration"))
    for pid in range(1, 5):
        t.add(Probe(pid, f"bench/p{pid}", FunctionPoint("libc*", f"f{pid}"), two_ints, exit_caps))
    return t


def uniform_batch() -> bytes:
    """One probe, entry only, two integer slots (a hot ``malloc(size)``-like probe)."""
    return b"".join(encode_record(1, 0, [i, -i], tid=100, ts=i * 50) for i in range(BATCH))


def mixed_batch() -> bytes:
    """Entry/exit pairs of four probes, interleaved as several threads would produce."""
    parts = []
    for i in range(BATCH // 2):
        pid = 1 + i % 4
        parts.append(encode_record(pid, 0, [i, -i], tid=100 + i % 3, ts=i * 100))
        parts.append(encode_record(pid, 1, [0x7F0000 + i, 40], tid=100 + i % 3, ts=i * 100 + 40))
    return b"".join(parts)


def best_rate(work: Callable[[], int], rounds: int, min_time: float = 0.3) -> float:
    """Items per second of the fastest round (each round repeats ``work`` for ``min_time``)."""
    best = 0.0
    for _ in range(rounds):
        items, t0 = 0, CLOCK()
        while True:
            items += work()
            dt = CLOCK() - t0
            if dt >= min_time:
                break
        best = max(best, items / dt)
    return best


def decode_rate(data: bytes, rounds: int) -> float:
    decoder = Decoder(RunContext(table()))

    def work() -> int:
        return len(decoder.decode(data, 1))

    return best_rate(work, rounds)


def events_of(data: bytes) -> list[Event]:
    return Decoder(RunContext(table())).decode(data, 1)


def _summary() -> RunSummary:
    return RunSummary(0, 0, 0, [], None, [], 0)


def sqlite_rate(data: bytes, rounds: int, decode: bool, directory: Path) -> float:
    """Events/s into SQLite (one transaction per batch), with or without decoding."""
    ctx = RunContext(table())
    decoder = Decoder(ctx)
    events = decoder.decode(data, 1)
    best = 0.0
    for r in range(rounds):
        sink = SqliteCollector(directory / f"bench-{id(data)}-{decode}-{r}.db")
        sink.open(ctx, INFO)
        n, t0 = 0, CLOCK()
        for _ in range(25):  # ~100k events: a sustained run, not one batch
            sink.on_events(decoder.decode(data, n + 1) if decode else events)
            n += len(events)
        dt = CLOCK() - t0
        t1 = CLOCK()
        sink.close(_summary())
        close_s = CLOCK() - t1
        best = max(best, n / dt)
        if r == rounds - 1:
            print(f"    (close with index build for {n} rows: {close_s * 1000:.0f} ms)")
    return best


class Sink:
    def open(self, ctx: RunContext, info: RunInfo) -> None:
        pass

    def on_events(self, events: list[Event]) -> None:
        pass

    def close(self, summary: RunSummary) -> None:
        pass


def dispatch_rate(
    data: bytes, rounds: int, sink: Callable[[int], Collector] | None = None, batches: int = 100
) -> float:
    """Events/s through ``Dispatcher`` (post, decode, count, deliver), as in a real run.

    Measured in process CPU time (the work happens on the dispatcher's thread).
    """
    records = len(events_of(data))
    best = 0.0
    for r in range(rounds):
        ctx = RunContext(table())
        collector = sink(r) if sink is not None else Sink()
        collector.open(ctx, INFO)
        d = Dispatcher(ctx, [collector])
        t0 = time.process_time()
        for seq in range(1, batches + 1):
            d.post(
                {"type": "send", "payload": {"v": PROTOCOL_VERSION, "type": "batch", "seq": seq}},
                data,
            )
        assert d.drain(600)
        dt = time.process_time() - t0
        summary = d.close()
        assert summary.errors == [] and summary.events == batches * records
        best = max(best, batches * records / dt)
    return best


def jsonl_rate(data: bytes, rounds: int) -> float:
    ctx = RunContext(table())
    events = events_of(data)
    sink = JsonlCollector(stream=io.StringIO())
    sink.open(ctx, INFO)

    def work() -> int:
        sink.on_events(events)
        assert sink.stream is not None
        sink.stream.seek(0)
        sink.stream.truncate()
        return len(events)

    return best_rate(work, rounds)


def report(rounds: int = 7) -> dict[str, float]:
    uni, mixed = uniform_batch(), mixed_batch()
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cases: list[tuple[str, Callable[[], float]]] = [
            ("decode uniform (1 probe, 2 int slots)", lambda: decode_rate(uni, rounds)),
            ("decode mixed (4 probes, entry+exit)", lambda: decode_rate(mixed, rounds)),
            ("sqlite insert, uniform events", lambda: sqlite_rate(uni, 3, False, Path(tmp))),
            ("sqlite insert, mixed events", lambda: sqlite_rate(mixed, 3, False, Path(tmp))),
            ("decode + sqlite, uniform", lambda: sqlite_rate(uni, 3, True, Path(tmp))),
            ("jsonl write, uniform events", lambda: jsonl_rate(uni, rounds)),
            ("dispatcher, uniform (no-op output)", lambda: dispatch_rate(uni, 5)),
            ("dispatcher, mixed (no-op output)", lambda: dispatch_rate(mixed, 5)),
            (
                "dispatcher -> sqlite, uniform",
                lambda: dispatch_rate(
                    uni, 3, lambda r: SqliteCollector(Path(tmp) / f"u{r}.db"), 25
                ),
            ),
            (
                "dispatcher -> sqlite, mixed",
                lambda: dispatch_rate(
                    mixed, 3, lambda r: SqliteCollector(Path(tmp) / f"m{r}.db"), 25
                ),
            ),
        ]
        for label, run in cases:
            rates[label] = run()
            print(f"{label:45s} {rates[label]:>12,.0f} /s", flush=True)
    gc.disable()
    try:
        label = "decode uniform, GC paused (as in the dispatcher)"
        rates[label] = decode_rate(uni, rounds)
        print(f"{label:45s} {rates[label]:>12,.0f} /s")
    finally:
        gc.enable()
    return rates


@pytest.mark.skipif(not os.environ.get("INSTR_BENCH"), reason="set INSTR_BENCH=1 to measure")
def test_throughput_targets() -> None:
    rates = report(rounds=5)
    assert rates["decode uniform, GC paused (as in the dispatcher)"] >= 1_000_000
    assert rates["sqlite insert, uniform events"] >= 300_000


def test_benchmark_inputs_decode() -> None:
    assert len(events_of(uniform_batch())) == BATCH
    assert len(events_of(mixed_batch())) == BATCH
    assert decode_rate(uniform_batch(), rounds=1) > 0


if __name__ == "__main__":
    sys.exit(0 if report() else 1)
