"""Aggregations kept on the host: the `host` tier (docs/aggregations.md).

The system call points' aggregations (instr.syscalls.points) and D
aggregations whose value, keys or predicate the target cannot compute
(``@s = sum(arg0 * arg1)``, instr.dtrace.runtime) are updated here, one
value at a time, with the target tier's functions, buckets, 64-bit sums and
``max_keys`` overflow count; ``table()`` gives the same ``AggTable`` a
snapshot holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from instr.aggregate import llq
from instr.aggregate.decode import lquantize_bucket, quantize_bucket
from instr.aggregate.model import AggRow, AggTable, Bucket, KeyValue


def bucket_q(v: int) -> int:
    """quantize()'s bucket index of ``v``: 64 negative, 0, 64 positive."""
    if v == 0:
        return 64
    if v > 0:
        return 65 + v.bit_length() - 1
    return 63 - ((-v).bit_length() - 1)


def bucket_lq(v: int, lq: tuple[int, int, int]) -> int:
    """lquantize()'s bucket index of ``v``: below ``low``, one per step, from ``high`` up."""
    low, high, step = lq
    if v < low:
        return 0
    if v >= high:
        return (high - low + step - 1) // step + 1
    return (v - low) // step + 1


def wrap64(v: int) -> int:
    """``v`` as a signed 64-bit integer (C's wrap-around)."""
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >> 63 else v


@dataclass
class _Row:
    count: int = 0
    total: int = 0
    min: int | None = None
    max: int | None = None
    sumsq: int = 0
    buckets: dict[int, int] = field(default_factory=dict)


@dataclass
class HostAgg:
    """One aggregation's rows, updated on the host."""

    name: str  # the table's name ("set/agg", "@bytes")
    probe: str  # the probe it belongs to, as a snapshot's tables say
    func: str  # count, sum, min, max, avg, stddev, quantize, lquantize, llquantize
    key_names: tuple[str, ...] = ()
    arg: str | None = None
    max_keys: int = 1 << 16
    lquantize: tuple[int, int, int] | None = None
    llquantize: tuple[int, int, int, int] | None = None
    rows: dict[tuple[KeyValue, ...], _Row] = field(default_factory=dict)
    overflow: int = 0

    @classmethod
    def of(cls, probe: Any, agg: Any) -> HostAgg:
        """A probe's aggregation from the IR (``instr.probes.ir``)."""
        return cls(
            name=f"{probe.name.split('/')[0]}/{agg.name}",
            probe=probe.name,
            func=agg.func,
            key_names=tuple(k.name for k in agg.keys),
            arg=agg.arg,
            max_keys=agg.max_keys,
            lquantize=agg.lquantize,
            llquantize=agg.llquantize,
        )

    def update(self, keys: tuple[KeyValue, ...], value: int) -> None:
        row = self.rows.get(keys)
        if row is None:
            if len(self.rows) >= self.max_keys:
                self.overflow += 1
                return
            row = self.rows[keys] = _Row()
        row.count += 1
        f = self.func
        if f in ("sum", "avg", "stddev"):
            row.total = (row.total + value) if f != "sum" else wrap64(row.total + value)
            row.sumsq += value * value
        elif f == "min":
            row.min = value if row.min is None else min(row.min, value)
        elif f == "max":
            row.max = value if row.max is None else max(row.max, value)
        elif f == "quantize":
            i = bucket_q(value)
            row.buckets[i] = row.buckets.get(i, 0) + 1
        elif f == "lquantize":
            assert self.lquantize is not None
            i = bucket_lq(value, self.lquantize)
            row.buckets[i] = row.buckets.get(i, 0) + 1
        elif f == "llquantize":
            assert self.llquantize is not None
            i = llq.index(value, self.llquantize)
            row.buckets[i] = row.buckets.get(i, 0) + 1

    def table(self) -> AggTable:
        rows = []
        for keys, r in self.rows.items():
            buckets: list[Bucket] = []
            for i in sorted(r.buckets):
                b = (
                    quantize_bucket(i)
                    if self.func == "quantize"
                    else llq.bucket(i, self.llquantize)
                    if self.llquantize is not None
                    else lquantize_bucket(i, self.lquantize or (0, 1, 1))
                )
                buckets.append(Bucket(b.lo, b.hi, r.buckets[i]))
            rows.append(AggRow(keys, r.count, r.total, r.min, r.max, r.sumsq, tuple(buckets)))
        return AggTable(
            name=self.name,
            probe=self.probe,
            func=self.func,  # type: ignore[arg-type]
            arg=self.arg,
            key_names=self.key_names,
            rows=tuple(rows),
            overflow=self.overflow,
            max_keys=self.max_keys,
            lquantize=self.lquantize,
            tier="host",
            llquantize=self.llquantize,
        )
