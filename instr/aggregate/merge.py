"""One table per aggregation across the processes of a run that follows
children (-F, docs/follow.md): every process image has its own agent and its
own tables; the host keeps each image's latest snapshot and merges them, row
by row, on equal keys (``by pid`` keeps the processes apart)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from instr.aggregate.decode import merge_rows
from instr.aggregate.model import AggRow, AggSnapshot, AggTable


def merge_snapshots(snaps: Iterable[AggSnapshot], seq: int, final: bool) -> AggSnapshot:
    """The snapshots of several processes as one: tables by name, in the order
    first seen, rows with equal keys merged (counts and sums added, min/max
    kept, histogram buckets added); overflows added."""
    tables: dict[str, AggTable] = {}
    rows: dict[str, list[AggRow]] = {}
    ts = 0
    for snap in snaps:
        ts = max(ts, snap.ts_ns)
        for t in snap.tables:
            prev = tables.get(t.name)
            if prev is None:
                tables[t.name] = t
                rows[t.name] = list(t.rows)
                continue
            tables[t.name] = dataclasses.replace(prev, overflow=prev.overflow + t.overflow)
            rows[t.name].extend(t.rows)
    merged = tuple(
        dataclasses.replace(t, rows=tuple(merge_rows(rows[name], t.func)))
        for name, t in tables.items()
    )
    return AggSnapshot(ts_ns=ts, seq=seq, final=final, tables=merged)
