"""The columnar path (Decoder.block -> SqliteCollector.on_block) writes the same rows as
the per-event path, and is the one taken when SQLite is the only output."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from instr.collectors.decode import Decoder
from instr.collectors.encode import encode_record
from instr.collectors.sqlite import SqliteCollector
from instr.dispatch import Dispatcher
from instr.events import RunContext, RunInfo
from instr.probes.ir import Capture, FunctionPoint, Probe, ProbeTable
from instr.protocol import FLAG_NO_ENTRY, PROTOCOL_VERSION

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
    d.follow = True  # two processes (-F): the entries from one, the exits from the other
    d.add_source(0, 4242, None, "root")
    d.add_source(1, 4243, 4242, "fork")
    for source, data in enumerate(batches()):
        d.post({"type": "send", "payload": {"v": PROTOCOL_VERSION, "type": "batch", "seq": 1,
                "records": 100, "drops": {}}}, data, source)  # fmt: skip
    summary = d.close(None)
    assert summary.events == 200 and summary.errors == []
    con = sqlite3.connect(path)
    return con.execute(
        "SELECT seq, probe_id, phase, tid, ts_ns, site, retval, duration_ns, args, pid"
        " FROM events ORDER BY seq"
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
    b_max = '{"a":-1,"b":18446744073709551614}'
    assert by_block[1] == (2, 1, "entry", 7, 1, 0, None, None, b_max, 4242)
    assert by_block[100] == (101, 1, "exit", 7, 0, 0, 0, 10, "{}", 4243)
    assert {r[-1] for r in by_block[:100]} == {4242} and {r[-1] for r in by_block[100:]} == {4243}


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


def wide_table() -> ProbeTable:
    """Every scalar width and sign, 64-bit unsigned values past 2^63, a name SQL and
    printf would misread, a duration, a second retval (an arg) and a probe with no args."""
    t = ProbeTable()
    entry = (
        Capture("s8", "arg", "i8"),
        Capture("u16", "arg", "u16"),
        Capture("p%'q", "arg", "ptr", index=2),
        Capture("big", "arg", "u64", index=3),
        Capture("who", "caller", "ptr"),
        Capture("s32", "arg", "i32", index=4),
    )
    exit_ = (
        Capture("r", "retval", "ptr"),
        Capture("lat", "duration", "duration"),
        Capture("r2", "retval", "u32"),
    )
    t.add(Probe(1, "t/w", FunctionPoint("m", "w"), entry, exit_))
    t.add(Probe(2, "t/none", FunctionPoint("m", "n"), (), (Capture("r", "retval", "i16"),)))
    return t


def wide_batches() -> list[bytes]:
    top = 2**64 - 1
    entries = b"".join(
        encode_record(
            1, 0, [-i, 65535 - i, top - i, 2**63 + i, 0x7F00 + i, i - 2**31], ts=i, site=i % 3
        )
        for i in range(50)
    )
    exits = b"".join(
        encode_record(1, 1, [top - i, 1000 + i, top - i], tid=9, ts=i) for i in range(50)
    )
    orphans = b"".join(  # exits whose entry was not seen: duration_ns stays NULL
        encode_record(1, 1, [i, 0, i], tid=9, ts=i, flags=FLAG_NO_ENTRY) for i in range(20)
    )
    bare = b"".join(encode_record(2, 1, [2**64 - 5 + i], tid=3, ts=i) for i in range(5))
    none_entries = b"".join(encode_record(2, 0, [], tid=3, ts=i) for i in range(5))
    return [entries, exits, orphans, bare, none_entries]


def run_wide(path: Path, columnar: bool) -> list[tuple[object, ...]]:
    ctx = RunContext(wide_table())
    sink = SqliteCollector(path)
    sink.open(ctx, INFO)
    d = Dispatcher(ctx, [sink])
    d._columnar = columnar
    data = wide_batches()
    for seq, batch in enumerate(data, 1):
        n = len(Decoder(ctx).decode(batch, 1))
        d.post({"type": "send", "payload": {"v": PROTOCOL_VERSION, "type": "batch", "seq": seq,
                "records": n, "drops": {}}}, batch)  # fmt: skip
    summary = d.close(None)
    assert summary.events == 130 and summary.errors == []
    return (
        sqlite3.connect(path)
        .execute(
            "SELECT seq, probe_id, phase, tid, ts_ns, site, retval, duration_ns, args, stack_id,"
            " args_status, typeof(retval), typeof(duration_ns) FROM events ORDER BY seq"
        )
        .fetchall()
    )


def test_columnar_rows_equal_event_rows_for_every_scalar_kind(tmp_path: Path):
    by_block = run_wide(tmp_path / "block.db", columnar=True)
    by_event = run_wide(tmp_path / "event.db", columnar=False)
    assert by_block == by_event
    assert [r[0] for r in by_block] == list(range(1, 131))  # seq contiguous
    top = 2**64 - 1
    first = {"s8": -1, "u16": 65534, "p%'q": top - 1, "big": 2**63 + 1, "who": 0x7F01}
    assert json.loads(str(by_block[1][8])) == {**first, "s32": 1 - 2**31}
    assert by_block[50][6:8] == (-1, 1000) and json.loads(str(by_block[50][8])) == {"r2": 2**32 - 1}
    assert by_block[100][6:8] == (0, None)  # FLAG_NO_ENTRY: no duration
    assert by_block[120][6] == -5 and by_block[120][8] == "{}"  # i16 retval sign-extended
    assert by_block[125][1:3] == (2, "entry") and by_block[125][8] == "{}"
