"""Aggregation snapshots in the JSON Lines and SQLite outputs (hand-built, no Frida)."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import pytest

from instr.aggregate.model import AggRow, AggSnapshot, AggTable, Bucket
from instr.collectors.jsonl import JsonlCollector
from instr.collectors.sqlite import SCHEMA_VERSION, SqliteCollector
from instr.events import Event, RunContext, RunInfo, RunSummary
from instr.probes.ir import Capture, FunctionPoint, Probe, ProbeTable

INFO = RunInfo(123, "local", 77, ("demo",), "probes.yaml", ("calls",))
SUMMARY = RunSummary(1, 1, 0, [], None, [], 999)
BIG = 1 << 64  # beyond SQLite's integers
NULL4 = (None, None, None, None)
STACK = '{"stack":["demo!leaf","demo!main"]}'
LAT_BUCKETS = "[[null,0,1],[10,20,3],[100,null,4]]"


def context() -> RunContext:
    t = ProbeTable()
    caps = (Capture("size", "arg", "u64"),)
    t.add(Probe(1, "calls/malloc", FunctionPoint("libc*", "malloc"), caps, None))
    return RunContext(t)


EVENT = Event(1, 1, "calls/malloc", "entry", 10, 100, 0, {"size": 24})


def snapshot(seq: int, final: bool, main_bytes: int) -> AggSnapshot:
    by_caller = AggTable(
        "calls/bytes",
        "calls/malloc",
        "sum",
        "size",
        ("caller", "tid"),
        (
            AggRow(("demo!main+0x2a", 7), 2, total=main_bytes),
            AggRow(("demo!work", 12), 1, total=48),
        ),
        overflow=3,
        max_keys=2,
        tier="fast",
    )
    spread = AggTable(
        "calls/spread",
        "calls/malloc",
        "stddev",
        "size",
        ("stack",),
        # two values 0 and 2^41: mean 2^40, sd 2^40; sumsq beyond 64 bits
        (AggRow((("demo!leaf", "demo!main"),), 2, total=1 << 41, sumsq=1 << 82),),
        overflow=0,
        max_keys=16,
        tier="fast",
    )
    lat = AggTable(
        "calls/lat",
        "calls/malloc",
        "lquantize",
        "size",
        (),
        (AggRow((), 8, buckets=(Bucket(None, 0, 1), Bucket(10, 20, 3), Bucket(100, None, 4))),),
        overflow=0,
        max_keys=1,
        lquantize=(0, 100, 10),
        tier="js",
    )
    huge = AggTable(
        "calls/huge", "calls/malloc", "sum", "size", (), (AggRow((), 2, total=BIG),), 0, 1
    )
    empty = AggTable("calls/least", "calls/malloc", "min", "size", ("tid",), (), 0, 64)
    return AggSnapshot(
        ts_ns=1000 * (seq + 1), seq=seq, final=final, tables=(by_caller, spread, lat, huge, empty)
    )


# -- JSON Lines -------------------------------------------------------------------------


def jsonl(*snapshots: AggSnapshot) -> list[str]:
    out = io.StringIO()
    c = JsonlCollector(stream=out)
    c.open(context(), INFO)
    c.on_events([EVENT])
    for s in snapshots:
        c.on_aggregations(s)
    c.close(SUMMARY)
    return out.getvalue().splitlines()


def test_jsonl_aggregation_lines() -> None:
    lines = jsonl(snapshot(0, False, 1000))
    assert len(lines) == 1 + 1 + 5 + 5 + 1  # run, event, 5 table lines, 5 rows, summary
    head = '"snapshot":0,"ts_ns":1000,"final":false'
    assert lines[2:5] == [
        '{"type":"aggregation_table",' + head + ',"name":"calls/bytes","probe":"calls/malloc",'
        '"func":"sum","arg":"size","key_names":["caller","tid"],"rows":2,"overflow":3,'
        '"max_keys":2,"tier":"fast"}',
        '{"type":"aggregation",' + head + ',"name":"calls/bytes","probe":"calls/malloc",'
        '"func":"sum","arg":"size","keys":{"caller":"demo!main+0x2a","tid":7},"count":2,'
        '"value":1000,"total":1000}',
        '{"type":"aggregation",' + head + ',"name":"calls/bytes","probe":"calls/malloc",'
        '"func":"sum","arg":"size","keys":{"caller":"demo!work","tid":12},"count":1,'
        '"value":48,"total":48}',
    ]
    spread = json.loads(lines[6])
    assert spread["keys"] == {"stack": ["demo!leaf", "demo!main"]}
    assert (spread["value"], spread["total"], spread["sumsq"]) == (2.0**40, 1 << 41, 1 << 82)
    lat_table, lat = json.loads(lines[7]), json.loads(lines[8])
    assert (lat_table["lquantize"], lat_table["tier"], lat_table["key_names"]) == (
        [0, 100, 10],
        "js",
        [],
    )
    assert (lat["keys"], lat["count"], lat["value"]) == ({}, 8, 8)
    assert lat["buckets"] == [[None, 0, 1], [10, 20, 3], [100, None, 4]]
    assert "total" not in lat and "sumsq" not in lat
    assert json.loads(lines[10])["value"] == BIG  # exact in JSON
    least = json.loads(lines[11])
    assert (least["type"], least["name"], least["rows"]) == ("aggregation_table", "calls/least", 0)
    assert json.loads(lines[12])["type"] == "summary"


def test_jsonl_event_lines_are_unchanged_and_rows_are_queryable() -> None:
    plain = jsonl()
    lines = jsonl(snapshot(0, False, 1000), snapshot(1, True, 5000))
    assert lines[:2] == plain[:2] and lines[-1] == plain[-1]
    objs = [json.loads(x) for x in lines]
    # what `jq 'select(.type=="aggregation" and .final and .name=="calls/bytes")'` selects
    final = [
        (o["keys"]["caller"], o["value"])
        for o in objs
        if o["type"] == "aggregation" and o["final"] and o["name"] == "calls/bytes"
    ]
    assert final == [("demo!main+0x2a", 5000), ("demo!work", 48)]


def test_rows_no_update_reached_have_no_value(tmp_path: Path) -> None:
    untouched = (
        AggTable("a/lo", "p", "min", "v", (), (AggRow((), 0, min=(1 << 63) - 1),), 0, 1),
        AggTable("a/m", "p", "avg", "v", (), (AggRow((), 0),), 0, 1),
        AggTable("a/n", "p", "count", None, (), (AggRow((), 0),), 0, 1),
    )
    snap = AggSnapshot(5, 0, True, untouched)
    values = [json.loads(x)["value"] for x in jsonl(snap) if '"type":"aggregation"' in x]
    assert values == [None, None, 0]
    sqlite_run(tmp_path / "u.db", snap)
    db = sqlite3.connect(tmp_path / "u.db")
    assert rows(db, "SELECT name, value, min FROM agg_rows ORDER BY rowid") == [
        ("a/lo", None, None),
        ("a/m", None, None),
        ("a/n", 0, None),
    ]


def test_jsonl_summary_line_leaves_the_snapshot_to_the_aggregation_lines() -> None:
    out = io.StringIO()
    c = JsonlCollector(stream=out)
    c.open(context(), INFO)
    final = snapshot(0, True, 1)
    c.on_aggregations(final)
    c.close(RunSummary(0, 0, 0, [], None, [], 999, aggregations=final))
    tail = json.loads(out.getvalue().splitlines()[-1])
    assert tail["type"] == "summary" and "aggregations" not in tail


# -- SQLite ---------------------------------------------------------------------------


def sqlite_run(path: Path, *snapshots: AggSnapshot) -> None:
    c = SqliteCollector(path)
    c.open(context(), INFO)
    c.on_events([EVENT])
    for s in snapshots:
        c.on_aggregations(s)
    c.close(SUMMARY)
    c.on_aggregations(snapshots[0])  # after close: ignored


def rows(db: sqlite3.Connection, sql: str) -> list[tuple[object, ...]]:
    return [tuple(r) for r in db.execute(sql)]


def test_sqlite_exact_rows(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    sqlite_run(path, snapshot(0, False, 1000), snapshot(1, True, 5000))
    db = sqlite3.connect(path)
    assert rows(db, "PRAGMA user_version") == [(3,)] and SCHEMA_VERSION == 3
    assert rows(db, "SELECT * FROM agg_snapshots") == [(1, 1, 0, 1000, 0), (2, 1, 1, 2000, 1)]
    assert rows(db, "SELECT * FROM agg_tables WHERE snapshot_id = 2 ORDER BY rowid") == [
        (
            2,
            "calls/bytes",
            "calls/malloc",
            "sum",
            "size",
            '["caller","tid"]',
            2,
            3,
            2,
            None,
            "fast",
        ),
        (2, "calls/spread", "calls/malloc", "stddev", "size", '["stack"]', 1, 0, 16, None, "fast"),
        (2, "calls/lat", "calls/malloc", "lquantize", "size", "[]", 1, 0, 1, "[0,100,10]", "js"),
        (2, "calls/huge", "calls/malloc", "sum", "size", "[]", 1, 0, 1, None, ""),
        (2, "calls/least", "calls/malloc", "min", "size", '["tid"]', 0, 0, 64, None, ""),
    ]
    assert rows(db, "SELECT DISTINCT probe FROM agg_rows") == [("calls/malloc",)]
    cols = "name, func, keys, count, value, total, min, max, sumsq, buckets"
    assert rows(db, f"SELECT {cols} FROM agg_rows WHERE snapshot_id = 2 ORDER BY rowid") == [
        ("calls/bytes", "sum", '{"caller":"demo!main+0x2a","tid":7}', 2, 5000, 5000, *NULL4),
        ("calls/bytes", "sum", '{"caller":"demo!work","tid":12}', 1, 48, 48, *NULL4),
        ("calls/spread", "stddev", STACK, 2, 2**40, 1 << 41, None, None, str(1 << 82), None),
        ("calls/lat", "lquantize", "{}", 8, 8, None, None, None, None, LAT_BUCKETS),
        ("calls/huge", "sum", "{}", 2, float(BIG), str(BIG), *NULL4),
    ]
    assert rows(db, "SELECT count(*) FROM agg_rows WHERE snapshot_id = 1") == [(5,)]
    assert rows(db, "SELECT count(*) FROM events") == [(1,)]


def test_sqlite_documented_queries(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    sqlite_run(path, snapshot(0, False, 1000), snapshot(1, True, 5000))
    sqlite_run(path, snapshot(0, True, 7))  # a second run: the latest is what the queries pick
    db = sqlite3.connect(path)
    docs = (Path(__file__).parents[2] / "docs" / "outputs.md").read_text()
    top_callers = docs.split("-- the latest run's final bytes per caller\n")[1].split(";")[0]
    assert rows(db, top_callers) == [("demo!work", 48, 1), ("demo!main+0x2a", 7, 2)]
    series = docs.split("-- one caller's bytes over time\n")[1].split(";")[0]
    assert rows(db, series) == [(0, 1000, 1000), (1, 2000, 5000)]
    buckets = docs.split("-- a histogram's buckets\n")[1].split(";")[0]
    assert rows(db, buckets) == [(None, 0, 1), (10, 20, 3), (100, None, 4)]
    lost = docs.split("-- aggregations that lost updates\n")[1].split(";")[0]
    assert rows(db, lost) == [(2, "calls/bytes", 3, 2)]


def test_sqlite_version_1_file_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    sqlite_run(path, snapshot(0, True, 1))
    db = sqlite3.connect(path)
    db.executescript(
        "DROP VIEW aggregations; DROP TABLE agg_rows; DROP TABLE agg_tables;"
        " DROP TABLE agg_snapshots; PRAGMA user_version = 1;"
    )
    db.close()
    sqlite_run(path, snapshot(0, True, 2))
    db = sqlite3.connect(path)
    assert rows(db, "PRAGMA user_version") == [(3,)]
    assert rows(db, "SELECT id FROM runs") == [(1,), (2,)]
    assert rows(db, "SELECT run_id, seq, final FROM agg_snapshots") == [(2, 0, 1)]


def test_sqlite_failed_snapshot_rolls_back(tmp_path: Path) -> None:
    path = tmp_path / "bad.db"
    c = SqliteCollector(path)
    c.open(context(), INFO)
    bad = AggTable("a/b", "p", "sum", "v", ("k",), (AggRow((1, 2), 1, total=1),), 0, 1)
    with pytest.raises(ValueError):  # more key values than key names
        c.on_aggregations(AggSnapshot(1, 0, False, (bad,)))
    c.on_aggregations(snapshot(0, True, 9))
    c.close(SUMMARY)
    db = sqlite3.connect(path)
    assert rows(db, "SELECT seq FROM agg_snapshots") == [(0,)]
    assert rows(db, "SELECT count(*) FROM agg_tables WHERE name = 'a/b'") == [(0,)]
