"""Aggregation snapshots as JSON-ready objects, for the JSONL and SQLite outputs.

One ``aggregation_table`` object per table per snapshot (its overflow count is
there, so a drop is never silent even for an empty table), followed by one
``aggregation`` object per row.  Formats are documented in docs/outputs.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from instr.aggregate.model import HISTOGRAMS, AggRow, AggSnapshot, AggTable, KeyValue

TOTAL_FUNCS = ("sum", "avg", "stddev")  # rows of these carry their exact sum


NEED_VALUES = ("min", "max", "avg", "stddev")  # meaningless over no updates


def has_value(row: AggRow, func: str) -> bool:
    """False for a row no update reached whose function needs values (an unkeyed
    table exists before its first update; its min/max are then the agent's
    initial sentinels)."""
    if func in NEED_VALUES and row.count == 0:
        return False
    return not ((func == "min" and row.min is None) or (func == "max" and row.max is None))


def row_value(row: AggRow, func: str) -> int | float | None:
    """The row's value; None when it has none (see ``has_value``)."""
    return row.value(func) if has_value(row, func) else None


def key_json(value: KeyValue) -> int | str | list[str]:
    return list(value) if isinstance(value, tuple) else value


def keys_object(table: AggTable, row: AggRow) -> dict[str, Any]:
    """``{"caller": "demo!main+0x2a", "tid": 7}``; a backtrace is a list of frames."""
    return {n: key_json(v) for n, v in zip(table.key_names, row.keys, strict=True)}


def buckets_list(row: AggRow) -> list[list[int | None]]:
    """``[[lo, hi, count], ...]`` (non-empty buckets, ascending; None for an open end)."""
    return [[b.lo, b.hi, b.count] for b in row.buckets]


def _head(kind: str, snapshot: AggSnapshot, table: AggTable) -> dict[str, Any]:
    return {
        "type": kind,
        "snapshot": snapshot.seq,
        "ts_ns": snapshot.ts_ns,
        "final": snapshot.final,
        "name": table.name,
        "probe": table.probe,
        "func": table.func,
        "arg": table.arg,
    }


def table_object(snapshot: AggSnapshot, table: AggTable) -> dict[str, Any]:
    obj = _head("aggregation_table", snapshot, table)
    obj["key_names"] = list(table.key_names)
    obj["rows"] = len(table.rows)
    obj["overflow"] = table.overflow
    obj["max_keys"] = table.max_keys
    if table.lquantize is not None:
        obj["lquantize"] = list(table.lquantize)
    if table.llquantize is not None:
        obj["llquantize"] = list(table.llquantize)
    obj["tier"] = table.tier
    return obj


def row_object(snapshot: AggSnapshot, table: AggTable, row: AggRow) -> dict[str, Any]:
    obj = _head("aggregation", snapshot, table)
    obj["keys"] = keys_object(table, row)
    obj["count"] = row.count
    obj["value"] = row_value(row, table.func)
    if table.func in TOTAL_FUNCS:
        obj["total"] = row.total
    if table.func == "stddev":
        obj["sumsq"] = row.sumsq
    if table.func in HISTOGRAMS:
        obj["buckets"] = buckets_list(row)
    return obj


def snapshot_objects(snapshot: AggSnapshot) -> Iterator[dict[str, Any]]:
    """Per table: its ``aggregation_table`` object, then one ``aggregation`` object per row."""
    for table in snapshot.tables:
        yield table_object(snapshot, table)
        for row in table.rows:
            yield row_object(snapshot, table, row)
