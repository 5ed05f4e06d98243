"""Aggregation snapshots -> SQLite rows (for ``sqlite.py``; schema in docs/outputs.md).

Every snapshot (interval and final) gets a row in ``agg_snapshots``; each of
its tables a row in ``agg_tables`` (with its overflow count), each table row a
row in ``agg_rows``.  Integers that SQLite cannot hold (beyond signed 64 bits,
e.g. a ``sumsq``) are stored as their exact decimal text; ``sumsq`` always is.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from instr.aggregate.export import TOTAL_FUNCS, buckets_list, keys_object, row_value
from instr.aggregate.model import HISTOGRAMS, AggSnapshot
from instr.collectors.values import MAX_I64, to_json

AGG_SCHEMA = """
CREATE TABLE IF NOT EXISTS agg_snapshots (
    id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, seq INTEGER NOT NULL,
    ts_ns INTEGER NOT NULL, final INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS agg_tables (
    snapshot_id INTEGER NOT NULL, name TEXT NOT NULL, probe TEXT NOT NULL, func TEXT NOT NULL,
    arg TEXT, key_names TEXT NOT NULL, nrows INTEGER NOT NULL, overflow INTEGER NOT NULL,
    max_keys INTEGER NOT NULL, lquantize TEXT, tier TEXT,
    PRIMARY KEY (snapshot_id, name)
);
CREATE TABLE IF NOT EXISTS agg_rows (
    snapshot_id INTEGER NOT NULL, name TEXT NOT NULL, probe TEXT NOT NULL, func TEXT NOT NULL,
    keys TEXT NOT NULL, count INTEGER NOT NULL, value NUMERIC,
    total, min, max, -- no type: an integer, or its decimal text beyond 64 bits, as inserted
    sumsq TEXT, buckets TEXT
);
CREATE INDEX IF NOT EXISTS agg_rows_by_snapshot ON agg_rows (snapshot_id, name);
CREATE INDEX IF NOT EXISTS agg_snapshots_by_run ON agg_snapshots (run_id, seq);
CREATE VIEW IF NOT EXISTS aggregations AS
SELECT s.run_id, s.seq, s.ts_ns, s.final, r.name, r.probe, r.func, r.keys, r.count,
       r.value, r.total, r.min, r.max, r.sumsq, r.buckets
FROM agg_rows r JOIN agg_snapshots s ON s.id = r.snapshot_id;
"""
_MIN_I64 = -MAX_I64 - 1


def _int(value: int | None) -> int | str | None:
    """An integer as SQLite can store it: as is within 64 bits, else its decimal text."""
    if value is None or _MIN_I64 <= value <= MAX_I64:
        return value
    return str(value)


def _value(value: int | float | None) -> int | float | None:
    """``value`` is for sorting and plotting: beyond 64 bits it becomes a REAL."""
    if isinstance(value, int) and not _MIN_I64 <= value <= MAX_I64:
        return float(value)
    return value


def insert_snapshot(db: sqlite3.Connection, run_id: int, snapshot: AggSnapshot) -> int:
    """Insert one snapshot (inside the caller's transaction); returns its ``agg_snapshots.id``."""
    cur = db.execute(
        "INSERT INTO agg_snapshots (run_id, seq, ts_ns, final) VALUES (?, ?, ?, ?)",
        (run_id, snapshot.seq, snapshot.ts_ns, int(snapshot.final)),
    )
    sid = int(cur.lastrowid or 0)
    tables: list[tuple[Any, ...]] = []
    rows: list[tuple[Any, ...]] = []
    for t in snapshot.tables:
        # the histogram's parameters: lquantize's [low, high, step], llquantize's
        # [factor, low, high, steps] (func tells which)
        params = t.lquantize if t.lquantize is not None else t.llquantize
        lq = to_json(list(params)) if params is not None else None
        keys = to_json(list(t.key_names))
        tables.append(
            (
                sid,
                t.name,
                t.probe,
                t.func,
                t.arg,
                keys,
                len(t.rows),
                t.overflow,
                t.max_keys,
                lq,
                t.tier,
            )
        )
        with_total = t.func in TOTAL_FUNCS
        histogram = t.func in HISTOGRAMS
        for r in t.rows:
            rows.append(
                (
                    sid,
                    t.name,
                    t.probe,
                    t.func,
                    to_json(keys_object(t, r)),
                    _int(r.count),
                    _value(row_value(r, t.func)),
                    _int(r.total) if with_total else None,
                    _int(r.min) if r.count else None,
                    _int(r.max) if r.count else None,
                    str(r.sumsq) if t.func == "stddev" else None,
                    to_json(buckets_list(r)) if histogram else None,
                )
            )
    db.executemany("INSERT INTO agg_tables VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", tables)
    db.executemany("INSERT INTO agg_rows VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return sid
