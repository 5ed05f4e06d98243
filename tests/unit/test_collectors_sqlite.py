"""SQLite collector: exact rows for a hand-built run; appending runs; bad files."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from instr.collectors.decode import Decoder
from instr.collectors.encode import Frames, Var, encode_record
from instr.collectors.sqlite import SqliteCollector
from instr.errors import UsageError
from instr.events import (
    Ending,
    Event,
    ProbeReport,
    ProcessEnding,
    RunContext,
    RunInfo,
    RunSummary,
    Site,
    Symbol,
)
from instr.probes.ir import Capture, FunctionPoint, Probe, ProbeTable
from instr.protocol import FLAG_NO_ENTRY, STATUS_TRUNCATED

INFO = RunInfo(123, "local", 77, ("demo", "-x"), "probes.yaml", ("calls", "files"))
STACK = Frames((0x40102A, 0x401000, 0x99))
TRUNCATED_ARGS = '{"path":"/etc/pas","buf":"00ff","again":1}'


def sample() -> tuple[RunContext, list[Event], RunSummary]:
    t = ProbeTable()
    t.add(
        Probe(
            1,
            "calls/alloc",
            FunctionPoint("libc*", "malloc"),
            entry=(Capture("size", "arg", "u64"), Capture("caller", "caller", "ptr")),
            exit=(Capture("p", "retval", "u64"), Capture("took", "duration", "duration")),
        )
    )
    entry = (
        Capture("path", "arg", "cstr", max=8),
        Capture("stack", "backtrace", "backtrace", depth=4),
        Capture("buf", "arg", "bytes", index=1, max=4, len_const=4),
        Capture("again", "backtrace", "backtrace", depth=4),
    )
    t.add(Probe(2, "files/open", FunctionPoint(None, "open"), entry, None))
    ctx = RunContext(t)
    ctx.add_site(Site(1, 0, 0x7F001000, "libc.so.6", "malloc"))
    ctx.add_symbols({0x40102A: Symbol("demo", "main", 0x2A), 0x401000: Symbol("demo", "main", 0)})
    data = b"".join(
        [
            encode_record(1, 0, [1024, 0x40102A], tid=10, ts=100),
            encode_record(1, 1, [-1, 55], tid=10, ts=155),
            encode_record(1, 1, [7, 0], tid=11, ts=160, flags=FLAG_NO_ENTRY),
            encode_record(
                2, 0, [Var(b"/etc/pas", STATUS_TRUNCATED), STACK, Var(b"\x00\xff"), STACK]
            ),
            encode_record(2, 0, [Var(b"/x"), Frames((1,)), Var(b""), STACK], tid=12, ts=300),
        ]
    )
    events = Decoder(ctx).decode(data, 1)
    reports = [
        ProbeReport(1, "calls/alloc", "armed", "native", 1, None, 3, 2),
        ProbeReport(2, "files/open", "pending", None, 0, "libfoo not loaded", 2, 0),
    ]
    ending = Ending("crash", None, "SIGSEGV", 0xFFFFFFFF_FFFFFFF0, "demo!boom")
    summary = RunSummary(5, 1, 2, reports, ending, ["lost 1 batch (seq 1)"], 999, 1)
    return ctx, events, summary


def write(path: Path, batches: int = 1) -> None:
    ctx, events, summary = sample()
    c = SqliteCollector(path)
    c.open(ctx, INFO)
    for _ in range(batches):
        c.on_events(events)
    c.close(summary)


def rows(db: sqlite3.Connection, sql: str) -> list[tuple[object, ...]]:
    return [tuple(r) for r in db.execute(sql)]


def test_exact_contents(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    write(path)
    db = sqlite3.connect(path)
    run = (1, 123, 999, "local", 77, '["demo","-x"]', "probes.yaml", '["calls","files"]')
    end = ("crash", None, "SIGSEGV", -16, "demo!boom", 5, 1, 2, 1, '["lost 1 batch (seq 1)"]',
           None)  # fmt: skip
    assert rows(db, "SELECT * FROM runs") == [(*run, *end)]
    assert rows(db, "SELECT * FROM probes ORDER BY probe_id") == [
        (1, 1, "calls/alloc", "libc*!malloc", "armed", "native", 1, None, 3, 2),
        (1, 2, "files/open", "*!open", "pending", None, 0, "libfoo not loaded", 2, 0),
    ]
    assert rows(db, "SELECT * FROM events ORDER BY seq") == [  # pid last: NULL, not known
        (1, 1, 1, "entry", 10, 100, 0, None, None, '{"size":1024,"caller":4198442}', None, None,
         None),
        (1, 2, 1, "exit", 10, 155, 0, -1, 55, "{}", None, None, None),  # u64 max: its i64 bits
        (1, 3, 1, "exit", 11, 160, 0, 7, None, "{}", None, None, None),  # no entry: no duration
        (1, 4, 2, "entry", 1, 0, 0, None, None, TRUNCATED_ARGS, 1, '{"path":"truncated"}', None),
        (1, 5, 2, "entry", 12, 300, 0, None, None, '{"path":"/x","buf":"","again":1}', 2, None,
         None),
    ]  # fmt: skip
    assert rows(db, "SELECT * FROM stacks ORDER BY stack_id") == [
        (
            1,
            1,
            '[{"address":4198442,"symbol":"demo!main+0x2a"},'
            '{"address":4198400,"symbol":"demo!main"},{"address":153,"symbol":null}]',
        ),
        (1, 2, '[{"address":1,"symbol":null}]'),
    ]
    assert rows(db, "SELECT * FROM sites") == [
        (1, 1, 0, 0x7F001000, "libc.so.6", "malloc", "libc.so.6!malloc")
    ]
    assert rows(db, "SELECT * FROM symbols ORDER BY address") == [
        (1, 0x401000, "demo", "main", 0, "demo!main"),
        (1, 0x40102A, "demo", "main", 42, "demo!main+0x2a"),
    ]
    assert rows(db, "SELECT probe_id, phase, position, name, stored_in FROM captures") == [
        (1, "entry", 0, "size", "args.size"),
        (1, "entry", 1, "caller", "args.caller"),
        (1, "exit", 0, "p", "retval"),
        (1, "exit", 1, "took", "duration_ns"),
        (2, "entry", 0, "path", "args.path"),
        (2, "entry", 1, "stack", "stack_id"),
        (2, "entry", 2, "buf", "args.buf"),
        (2, "entry", 3, "again", "args.again (stack id)"),
    ]


def test_documented_queries_work(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    write(path, batches=3)
    db = sqlite3.connect(path)
    assert rows(db, "SELECT count(*), sum(args->>'size') FROM named_events WHERE probe = 'calls/alloc'"
                " AND phase = 'entry'") == [(3, 3072)]  # fmt: skip
    assert rows(db, "SELECT function, count(*) FROM named_events GROUP BY function ORDER BY 1") == [
        (None, 6),
        ("libc.so.6!malloc", 9),
    ]
    callers = rows(
        db,
        "SELECT s.symbol, count(*) FROM events e JOIN symbols s"
        " ON s.run_id = e.run_id AND s.address = e.args->>'caller' GROUP BY 1",
    )
    assert callers == [("demo!main+0x2a", 3)]
    indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"events_by_probe", "events_by_tid"} <= indexes


def test_second_run_appends(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    write(path)
    write(path)
    db = sqlite3.connect(path)
    assert rows(db, "SELECT id FROM runs") == [(1,), (2,)]
    assert rows(db, "SELECT run_id, count(*) FROM events GROUP BY run_id") == [(1, 5), (2, 5)]
    assert rows(db, "SELECT run_id, count(*) FROM stacks GROUP BY run_id") == [(1, 2), (2, 2)]
    assert rows(db, "PRAGMA journal_mode") == [("wal",)]


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "text.db"
    path.write_text("hello, this is not SQLite" * 100)
    ctx, _, _ = sample()
    with pytest.raises(UsageError, match=r"cannot use .* as an instr database"):
        SqliteCollector(path).open(ctx, INFO)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    sqlite3.connect(path).execute("PRAGMA user_version = 7")
    ctx, _, _ = sample()
    with pytest.raises(
        UsageError, match=r"schema version 7 \(written by a newer instr\), expected 3"
    ):
        SqliteCollector(path).open(ctx, INFO)


def test_events_carry_their_pid_and_the_run_its_processes(tmp_path: Path) -> None:
    """-F: each event's process in events.pid (every writer: integer-only and
    generic), named_events shows it, runs.processes says how each ended."""
    ctx, events, summary = sample()
    for i, e in enumerate(events):
        e.pid = 500 + i % 2
    summary.processes = [
        ProcessEnding(500, None, "root", Ending("exit", 0)),
        ProcessEnding(501, 500, "fork", Ending("exit", 3)),
        ProcessEnding(502, 501, "exec", None),
    ]
    path = tmp_path / "pids.db"
    c = SqliteCollector(path)
    c.open(ctx, INFO)
    c.on_events(events)
    c.close(summary)
    db = sqlite3.connect(path)
    assert rows(db, "SELECT seq, pid FROM events ORDER BY seq") == [
        (1, 500), (2, 501), (3, 500), (4, 501), (5, 500)
    ]  # fmt: skip
    assert rows(db, "SELECT pid, count(*) FROM named_events GROUP BY pid") == [(500, 3), (501, 2)]
    (procs,) = db.execute("SELECT processes FROM runs").fetchone()
    assert json.loads(procs) == [
        {"pid": 500, "parent": None, "origin": "root", "ending": ended(0)},
        {"pid": 501, "parent": 500, "origin": "fork", "ending": ended(3)},
        {"pid": 502, "parent": 501, "origin": "exec", "ending": None},
    ]


def ended(code: int) -> dict[str, object]:
    return {"reason": "exit", "code": code, "signal": None, "address": None, "symbol": None}


# The version 2 schema's named_events (before events.pid), as instr wrote it.
V2_NAMED_EVENTS = """
CREATE VIEW named_events AS
SELECT e.run_id, e.seq, p.name AS probe, e.phase, e.tid, e.ts_ns, s.function,
       e.args, e.retval, e.duration_ns, e.stack_id, e.args_status
FROM events e
JOIN probes p ON p.run_id = e.run_id AND p.probe_id = e.probe_id
LEFT JOIN sites s ON s.run_id = e.run_id AND s.probe_id = e.probe_id AND s.site = e.site;
"""


def test_version_2_file_is_upgraded_in_place(tmp_path: Path) -> None:
    """A file written by the schema before pid: its runs stay (pid NULL), the
    new run has pids, named_events has the column, the version is 3."""
    path = tmp_path / "old.db"
    write(path)
    db = sqlite3.connect(path)
    db.executescript(
        "DROP VIEW named_events; ALTER TABLE events DROP COLUMN pid;"
        " ALTER TABLE runs DROP COLUMN processes;" + V2_NAMED_EVENTS + "PRAGMA user_version = 2;"
    )
    db.close()
    ctx, events, summary = sample()
    for e in events:
        e.pid = 900
    c = SqliteCollector(path)
    c.open(ctx, INFO)
    c.on_events(events)
    c.close(summary)
    db = sqlite3.connect(path)
    assert rows(db, "PRAGMA user_version") == [(3,)]
    assert rows(db, "SELECT run_id, pid, count(*) FROM named_events GROUP BY 1, 2") == [
        (1, None, 5), (2, 900, 5)
    ]  # fmt: skip
    assert rows(db, "SELECT id, processes FROM runs") == [(1, None), (2, None)]


def test_close_without_open_and_events_before_open(tmp_path: Path) -> None:
    c = SqliteCollector(tmp_path / "never.db")
    c.on_events([])
    c.close(RunSummary(0, 0, 0, [], None, [], 0))
    assert not (tmp_path / "never.db").exists()


def test_unexpected_events_take_the_generic_path(tmp_path: Path) -> None:
    ctx, events, summary = sample()
    odd = [
        Event(10, 1, "calls/alloc", "exit", 1, 5, 0, {}, None, 3),  # retval missing
        Event(11, 1, "calls/alloc", "entry", 1, 6, 0, {"size": 1}),  # caller missing
        Event(12, 1, "calls/alloc", "entry", 1, 7, 0, {"size": "big", "caller": 2}),
        Event(13, 1, "calls/alloc", "entry", 1, 8, 0, {"size": 1, "caller": 2, "x": 3}),
        Event(14, 1, "calls/alloc", "exit", 1, 9, 0, {}, 1 << 63, None),
    ]
    path = tmp_path / "odd.db"
    c = SqliteCollector(path)
    c.open(ctx, INFO)
    c.on_events([*events[:2], *odd])
    c.close(summary)
    got = rows(
        sqlite3.connect(path), "SELECT seq, retval, duration_ns, args FROM events ORDER BY seq"
    )
    assert got == [
        (1, None, None, '{"size":1024,"caller":4198442}'),
        (2, -1, 55, "{}"),
        (10, None, 3, "{}"),
        (11, None, None, '{"size":1}'),
        (12, None, None, '{"size":"big","caller":2}'),
        (13, None, None, '{"size":1,"caller":2,"x":3}'),
        (14, -(1 << 63), None, "{}"),  # 2^63 as its i64 bits,
    ]
