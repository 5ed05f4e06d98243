"""SQLite output: one database can hold many runs; the schema is in docs/outputs.md.

Speed notes (measured on the 2-core VM, see the report in docs/outputs.md):

* one transaction per batch, ``executemany`` per statement, WAL, ``synchronous=OFF``;
* rows are built per batch by ``sqlite_rows.EventRows`` (statement per
  (probe, phase) with literals, no bound ``None``, ``%``-template JSON);
* a uniform batch (one probe and phase, integer captures: the hot native
  case) is bound straight from its bytes, ``args`` written by SQLite's
  ``printf``; SQLite itself is then most of the time (scripts/bench_sqlite.py);
* the two secondary indexes are created at ``close`` when missing, so the first
  run into a database inserts without maintaining them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
from itertools import islice
from pathlib import Path
from typing import Any

from instr.aggregate.model import AggSnapshot
from instr.collectors.decode import Block
from instr.collectors.layout import Layout, LayoutCache
from instr.collectors.sqlite_aggs import AGG_SCHEMA, insert_snapshot
from instr.collectors.sqlite_rows import EventRows
from instr.collectors.values import int64, to_json
from instr.errors import UsageError
from instr.events import Event, ProbeReport, RunContext, RunInfo, RunSummary
from instr.protocol import PHASE_NAMES

# 2 added the aggregation tables (sqlite_aggs.AGG_SCHEMA); 3 added events.pid,
# runs.processes and pid in named_events (-F, docs/follow.md). Files of 1 and 2
# are upgraded in place (_upgrade): tables and columns are only added, so the
# runs they hold read as before, with pid NULL.
SCHEMA_VERSION = 3
UPGRADABLE = (0, 1, 2)
# (table, column) added since version 1, for _upgrade
ADDED_COLUMNS = (("events", "pid INTEGER"), ("runs", "processes TEXT"))
NAMED_EVENTS = """
CREATE VIEW IF NOT EXISTS named_events AS
SELECT e.run_id, e.seq, p.name AS probe, e.phase, e.pid, e.tid, e.ts_ns, s.function,
       e.args, e.retval, e.duration_ns, e.stack_id, e.args_status
FROM events e
JOIN probes p ON p.run_id = e.run_id AND p.probe_id = e.probe_id
LEFT JOIN sites s ON s.run_id = e.run_id AND s.probe_id = e.probe_id AND s.site = e.site;
"""
SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY, started_ns INTEGER NOT NULL, ended_ns INTEGER,
    device TEXT, pid INTEGER, argv TEXT, source TEXT, sets TEXT,
    ending_reason TEXT, ending_code INTEGER, ending_signal TEXT,
    ending_address INTEGER, ending_symbol TEXT,
    events INTEGER, batches INTEGER, drops INTEGER, lost_batches INTEGER, errors TEXT,
    processes TEXT
);
CREATE TABLE IF NOT EXISTS probes (
    run_id INTEGER NOT NULL, probe_id INTEGER NOT NULL, name TEXT NOT NULL, point TEXT,
    state TEXT, tier TEXT, sites INTEGER, reason TEXT, events INTEGER, drops INTEGER,
    PRIMARY KEY (run_id, probe_id)
);
CREATE TABLE IF NOT EXISTS captures (
    run_id INTEGER NOT NULL, probe_id INTEGER NOT NULL, phase TEXT NOT NULL,
    position INTEGER NOT NULL, name TEXT NOT NULL, source TEXT NOT NULL, type TEXT NOT NULL,
    stored_in TEXT NOT NULL,
    PRIMARY KEY (run_id, probe_id, phase, position)
);
CREATE TABLE IF NOT EXISTS sites (
    run_id INTEGER NOT NULL, probe_id INTEGER NOT NULL, site INTEGER NOT NULL,
    address INTEGER, module TEXT, symbol TEXT, function TEXT,
    PRIMARY KEY (run_id, probe_id, site)
);
CREATE TABLE IF NOT EXISTS events (
    run_id INTEGER NOT NULL, seq INTEGER NOT NULL, probe_id INTEGER NOT NULL,
    phase TEXT NOT NULL, tid INTEGER, ts_ns INTEGER, site INTEGER,
    retval INTEGER, duration_ns INTEGER, args TEXT, stack_id INTEGER, args_status TEXT,
    pid INTEGER
);
CREATE TABLE IF NOT EXISTS stacks (
    run_id INTEGER NOT NULL, stack_id INTEGER NOT NULL, frames TEXT NOT NULL,
    PRIMARY KEY (run_id, stack_id)
);
CREATE TABLE IF NOT EXISTS symbols (
    run_id INTEGER NOT NULL, address INTEGER NOT NULL, module TEXT, name TEXT,
    offset INTEGER, symbol TEXT,
    PRIMARY KEY (run_id, address)
);
"""
    + NAMED_EVENTS
    + AGG_SCHEMA
)
INDEXES = (
    "CREATE INDEX IF NOT EXISTS events_by_probe ON events (run_id, probe_id)",
    "CREATE INDEX IF NOT EXISTS events_by_tid ON events (run_id, tid)",
)

# Indexes are built at close (maintaining them while inserting halves the insert
# rate), which costs about 1.4 s per million rows here. Past this many rows the
# store skips them so that stopping a run stays quick; the summary says so.
INDEX_MAX_ROWS = 2_000_000

# Disk space held beside the database while a run writes (PATH-instr-reserve),
# given back at close: a disk that fills during the run still has room for
# the run's closing transaction, so the runs row is closed with honest counts.
RESERVE_BYTES = 256 << 10


class SqliteCollector:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.db: sqlite3.Connection | None = None
        self.ctx: RunContext | None = None
        self.layouts: LayoutCache | None = None
        self.run_id = 0
        self.rows: EventRows | None = None
        self._nsites = 0
        self._nsymbols = 0
        self.written = 0  # events committed (instr.collectors.failure)
        self.failed = False
        self.reserve = self.path.with_name(self.path.name + "-instr-reserve")

    # -- collector protocol -------------------------------------------------------

    def open(self, ctx: RunContext, info: RunInfo) -> None:
        self.ctx = ctx
        self.layouts = LayoutCache(ctx.table)
        try:
            db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, cached_statements=1024
            )
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (*UPGRADABLE, SCHEMA_VERSION):
                db.close()
                newer = " (written by a newer instr)" if version > SCHEMA_VERSION else ""
                raise UsageError(
                    f"{self.path}: database schema version {version}{newer},"
                    f" expected {SCHEMA_VERSION}",
                    "write this run to another file",
                )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=OFF")
            # Checkpoint every ~400 MB of WAL instead of every 4 MB, and a 64 MiB
            # page cache: about a third faster for a stream of inserts (measured).
            db.execute("PRAGMA wal_autocheckpoint=100000")
            db.execute("PRAGMA cache_size=-65536")
            db.executescript(SCHEMA)
            if version != SCHEMA_VERSION:
                _upgrade(db)
        except sqlite3.DatabaseError as e:
            raise UsageError(f"cannot use {self.path} as an instr database: {e}") from e
        self.db = db
        db.execute("BEGIN")
        cur = db.execute(
            "INSERT INTO runs (started_ns, device, pid, argv, source, sets) VALUES (?, ?, ?, ?, ?, ?)",
            (
                info.started_ns,
                info.device,
                info.pid,
                to_json(list(info.argv)) if info.argv is not None else "null",
                info.source or "",
                to_json(list(info.sets)),
            ),
        )
        self.run_id = int(cur.lastrowid or 0)
        self.rows = EventRows(self.run_id, ctx, self.layouts)
        self._write_probes(ctx)
        db.execute("COMMIT")
        self._reserve()

    def on_events(self, events: list[Event]) -> None:
        if self.db is None or self.rows is None:
            return
        self.rows.add(events)
        self._commit()
        self.written += len(events)

    def on_block(self, block: Block) -> bool:
        """A uniform batch as columns; False asks the dispatcher for events instead."""
        if self.db is None or self.rows is None:
            return True
        if not self.rows.add_block(block):
            return False
        self._commit()
        self.written += block.count
        return True

    def on_aggregations(self, snapshot: AggSnapshot) -> None:
        """One transaction per snapshot (``agg_snapshots``, ``agg_tables``, ``agg_rows``)."""
        db = self.db
        if db is None:
            return
        db.execute("BEGIN")
        try:
            insert_snapshot(db, self.run_id, snapshot)
            db.execute("COMMIT")
        except BaseException:
            self._rollback(db)
            raise

    def _commit(self) -> None:
        db, rows = self.db, self.rows
        assert db is not None and rows is not None
        db.execute("BEGIN")
        try:
            self._sync_context_on(db)
            if rows.new_stacks:
                db.executemany("INSERT INTO stacks VALUES (?, ?, ?)", rows.new_stacks)
                rows.new_stacks.clear()
            for sql, pending in rows.pending.items():
                if pending:
                    db.executemany(sql, pending)
                    pending.clear()
            for sql, block in rows.blocks:
                db.executemany(sql, block)
            rows.blocks.clear()
            db.execute("COMMIT")
        except BaseException:
            self._rollback(db)
            raise

    def _rollback(self, db: sqlite3.Connection) -> None:
        """Undo the failed transaction, keeping the error that failed it: SQLite
        has already rolled back after some (disk full), and a second ROLLBACK
        would raise "cannot rollback - no transaction is active" instead."""
        self.failed = True
        if self.rows is not None:
            self.rows.new_stacks.clear()
            self.rows.blocks.clear()
            for pending in self.rows.pending.values():
                pending.clear()
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")

    def _reserve(self) -> None:
        with contextlib.suppress(OSError):
            fd = os.open(self.reserve, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.posix_fallocate(fd, 0, RESERVE_BYTES)
            finally:
                os.close(fd)

    def _unreserve(self) -> None:
        with contextlib.suppress(OSError):
            self.reserve.unlink()

    def close(self, summary: RunSummary) -> None:
        db = self.db
        if db is None:
            return
        self.db = None
        self._unreserve()  # room for this closing transaction, even on a full disk
        try:
            db.execute("BEGIN")
            self._sync_context_on(db)
            events, probes = summary.events, summary.probes
            if self.failed:  # what this file holds, not what the run produced
                events, probes = self._counts_written(db, probes)
            ending = summary.ending
            db.execute(
                "UPDATE runs SET ended_ns=?, ending_reason=?, ending_code=?, ending_signal=?,"
                " ending_address=?, ending_symbol=?, events=?, batches=?, drops=?,"
                " lost_batches=?, errors=?, processes=? WHERE id=?",
                (
                    summary.ended_ns,
                    ending.reason if ending else None,
                    ending.code if ending else None,
                    ending.signal if ending else None,
                    int64(ending.address) if ending and ending.address is not None else None,
                    ending.symbol if ending else None,
                    events,
                    summary.batches,
                    summary.drops,
                    summary.lost_batches,
                    to_json(summary.errors),
                    _processes_json(summary),
                    self.run_id,
                ),
            )
            db.executemany(
                "UPDATE probes SET state=?, tier=?, sites=?, reason=?, events=?, drops=?"
                " WHERE run_id=? AND probe_id=?",
                [
                    (r.state, r.tier, r.sites, r.reason, r.events, r.drops, self.run_id, r.id)
                    for r in probes
                ],
            )
            db.execute("COMMIT")
            rows = summary.events
            if self.failed:
                pass  # indexes need room the disk may not have; the rows are there
            elif rows <= INDEX_MAX_ROWS:
                for sql in INDEXES:
                    db.execute(sql)
            else:
                summary.errors.append(
                    f"{self.path}: {rows} events, so indexes were not built to keep stopping "
                    f"quick; build them when needed: {'; '.join(INDEXES)}"
                )
            with contextlib.suppress(sqlite3.Error):  # on a full disk the WAL stays
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except BaseException:
            self._rollback(db)
            raise
        finally:
            db.close()

    def _counts_written(
        self, db: sqlite3.Connection, probes: list[ProbeReport]
    ) -> tuple[int, list[ProbeReport]]:
        """This run's events in the file, in all and per probe (only the total
        is counted while writing; a failed batch was rolled back whole)."""
        counts = dict(
            db.execute(
                "SELECT probe_id, count(*) FROM events WHERE run_id=? GROUP BY probe_id",
                (self.run_id,),
            ).fetchall()
        )
        self.written = sum(counts.values())
        return self.written, [dataclasses.replace(r, events=counts.get(r.id, 0)) for r in probes]

    # -- run context ----------------------------------------------------------------

    def _write_probes(self, ctx: RunContext) -> None:
        assert self.db is not None and self.layouts is not None
        rid = self.run_id
        self.db.executemany(
            "INSERT INTO probes (run_id, probe_id, name, point) VALUES (?, ?, ?, ?)",
            [(rid, p.id, p.name, str(p.point)) for p in ctx.table],
        )
        rows: list[tuple[Any, ...]] = []
        for p in ctx.table:
            for phase in PHASE_NAMES:
                lay = self.layouts.get(p.id, phase)
                assert lay is not None
                caps = p.captures("entry" if phase == "entry" else "exit")
                for pos, (cap, slot) in enumerate(zip(caps, lay.slots, strict=True)):
                    where = _stored_in(slot.role, slot.kind, slot.name, lay)
                    rows.append((rid, p.id, phase, pos, cap.name, cap.src, cap.type, where))
        self.db.executemany("INSERT INTO captures VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def _sync_context_on(self, db: sqlite3.Connection) -> None:
        """Write sites and symbols that arrived since the last batch."""
        ctx = self.ctx
        assert ctx is not None
        rid = self.run_id
        if len(ctx.sites) != self._nsites:
            new = list(islice(ctx.sites.values(), self._nsites, None))
            self._nsites += len(new)
            db.executemany(
                "INSERT OR REPLACE INTO sites VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (rid, s.probe, s.site, int64(s.address), s.module, s.symbol, s.function)
                    for s in new
                ],
            )
        if len(ctx.symbols) != self._nsymbols:
            syms = list(islice(ctx.symbols.items(), self._nsymbols, None))
            self._nsymbols += len(syms)
            db.executemany(
                "INSERT OR REPLACE INTO symbols VALUES (?, ?, ?, ?, ?, ?)",
                [(rid, int64(a), s.module, s.name, s.offset, str(s)) for a, s in syms],
            )


def _upgrade(db: sqlite3.Connection) -> None:
    """A file of an older version (or a new one) to this version, in one
    transaction: the columns added since, and ``named_events`` made again
    (a view keeps the columns it was created with)."""
    db.execute("BEGIN IMMEDIATE")  # another instr opening the file waits here
    try:
        for table, column in ADDED_COLUMNS:
            have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            if column.split()[0] not in have:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
        db.execute("DROP VIEW IF EXISTS named_events")
        db.execute(NAMED_EVENTS)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise


def _processes_json(summary: RunSummary) -> str | None:
    """-F: each process image and its ending, as in the JSON Lines summary; NULL without."""
    if not summary.processes:
        return None
    return to_json([dataclasses.asdict(p) for p in summary.processes])


def _stored_in(role: str, kind: str, name: str, lay: Layout) -> str:
    """Where a capture's value lands in ``events`` (the ``captures.stored_in`` column)."""
    if role in ("retval", "duration"):
        return "retval" if role == "retval" else "duration_ns"
    if kind == "backtrace":
        first = next(s for s in lay.slots if s.kind == "backtrace")
        return "stack_id" if first.name == name else f"args.{name} (stack id)"
    return f"args.{name}"
