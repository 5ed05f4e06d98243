"""The columnar path (Decoder.block -> SqliteCollector.on_block) writes the same rows as
the per-event path, and is the one taken when SQLite is the only output."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from instr.collectors.decode import Decoder
from instr.collectors.encode import encode_record
from instr.collectors.sqlite import SqliteCollector
from instr.dispatch import Dispatcher
from instr.events import RunContext, RunInfo
from instr.probes.ir import Capture, FunctionPoint, Probe, ProbeTable
from instr.protocol import PROTOCOL_VERSION

INFO = RunInfo(0, "local", 1, ("demo",), "test", ("t",))


def table() -> ProbeTable:
    t = ProbeTable()
    entry = (Capture("a", "arg", "i32"), Capture("b", "arg", "u64"))
    exit_ = (Capture("r", "retval", "i64"), Capture("d", "duration", "duration"))
    t.add(Probe(1, "t/f", FunctionPoint("m", "f"), entry, exit_))
    return t


def batches() -> list[bytes]:
    entries = b"".join(encode_record(1, 0, [-i, 2**64 - 1 - i], tid=7, ts=i) for i in range(100))
    exits = b"".join(encode_record(1, 1, [-3 * i, 10 + i], tid=7, ts=i) for i in range(100))
    return [entries, exits]


def run(path: Path, columnar: bool) -> list[tuple[object, ...]]:
    ctx = RunContext(table())
    sink = SqliteCollector(path)
    sink.open(ctx, INFO)
    d = Dispatcher(ctx, [sink])
    d._columnar = columnar  # the path under test
    for seq, data in enumerate(batches(), 1):
        d.post({"type": "send", "payload": {"v": PROTOCOL_VERSION, "type": "batch", "seq": seq,
                "records": 100, "drops": {}}}, data)  # fmt: skip
    summary = d.close(None)
    assert summary.events == 200 and summary.errors == []
    con = sqlite3.connect(path)
    return con.execute(
        "SELECT seq, probe_id, phase, tid, ts_ns, site, retval, duration_ns, args FROM events"
        " ORDER BY seq"
    ).fetchall()


def test_block_decodes_uniform_batches_only():
    dec = Decoder(RunContext(table()))
    entries, exits = batches()
    b = dec.block(entries, 1)
    assert b is not None and (b.probe_id, b.phase, b.count) == (1, "entry", 100)
    assert b.args[3] == (-3, 2**64 - 4) and b.heads[3] == (0, 7, 3)
    assert dec.block(entries + exits, 1) is None  # two phases: not uniform


def test_columnar_rows_equal_event_rows(tmp_path: Path):
    assert Dispatcher(RunContext(table()), [SqliteCollector(tmp_path / "x.db")])._columnar
    by_block = run(tmp_path / "block.db", columnar=True)
    by_event = run(tmp_path / "event.db", columnar=False)
    assert by_block == by_event
    assert by_block[1] == (2, 1, "entry", 7, 1, 0, None, None, '{"a":-1,"b":18446744073709551614}')
    assert by_block[100] == (101, 1, "exit", 7, 0, 0, 0, 10, "{}")


def test_indexes_are_skipped_past_the_bound_and_the_summary_says_so(tmp_path, monkeypatch):
    from instr.collectors import sqlite as store

    monkeypatch.setattr(store, "INDEX_MAX_ROWS", 150)
    ctx = RunContext(table())
    sink = SqliteCollector(tmp_path / "big.db")
    sink.open(ctx, INFO)
    d = Dispatcher(ctx, [sink])
    for seq, data in enumerate(batches(), 1):
        d.post({"type": "send", "payload": {"v": PROTOCOL_VERSION, "type": "batch", "seq": seq,
                "records": 100, "drops": {}}}, data)  # fmt: skip
    summary = d.close(None)
    assert any("indexes were not built" in e for e in summary.errors)
    names = {n for (n,) in sqlite3.connect(tmp_path / "big.db").execute(
        "SELECT name FROM sqlite_master WHERE type='index' AND name LIKE 'events_by_%'")}  # fmt: skip
    assert names == set()


def test_credit_is_granted_after_each_batch_is_written(tmp_path):
    ctx = RunContext(table())
    sink = SqliteCollector(tmp_path / "c.db")
    sink.open(ctx, INFO)
    granted: list[tuple[int, int]] = []

    def grant(seq: int) -> None:  # rows already committed when credit is granted
        con = sqlite3.connect(tmp_path / "c.db")
        granted.append((seq, con.execute("SELECT count(*) FROM events").fetchone()[0]))

    d = Dispatcher(ctx, [sink], on_batch_done=grant)
    for seq, data in enumerate(batches(), 1):
        d.post({"type": "send", "payload": {"v": PROTOCOL_VERSION, "type": "batch", "seq": seq,
                "records": 100, "drops": {}}}, data)  # fmt: skip
    d.close(None)
    assert granted == [(1, 100), (2, 200)]
