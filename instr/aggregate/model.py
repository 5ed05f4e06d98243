"""Aggregation snapshots as the host sees them, after decoding.

The agent keeps every aggregation in a table in the target (see
``instr/probes/agg_runtime.c``).  On request, every ``--interval`` and at the
end it sends the tables; ``instr.aggregate.decode`` turns them into an
``AggSnapshot``.  Values are cumulative since the probes were armed.

These types are what reports, collectors and API users consume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

AggFunc = Literal[
    "count", "sum", "min", "max", "avg", "stddev", "quantize", "lquantize", "llquantize"
]
AGG_FUNCS: tuple[str, ...] = (
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "stddev",
    "quantize",
    "lquantize",
    "llquantize",
)
HISTOGRAMS: tuple[str, ...] = ("quantize", "lquantize", "llquantize")

# One key value: an int (ints, tid), a str (strings, a symbolised caller, a
# function name, the process name) or a tuple of str (a symbolised backtrace,
# innermost frame first).
KeyValue = int | str | tuple[str, ...]


@dataclass(frozen=True)
class Bucket:
    """One histogram bucket: values ``lo <= v < hi``.

    ``lo is None``: everything below ``hi`` (lquantize's and llquantize's underflow);
    ``hi is None``: everything from ``lo`` up (lquantize's overflow, and
    quantize's top bucket).  quantize buckets are ..., [-7, -3), [-3, -1),
    [-1, 0), [0, 1), [1, 2), [2, 4), [4, 8), ...: a negative bucket holds
    the values whose magnitude is in [2^j, 2^(j+1)).
    """

    lo: int | None
    hi: int | None
    count: int


@dataclass(frozen=True)
class AggRow:
    keys: tuple[KeyValue, ...]  # in the order of AggTable.key_names; () when unkeyed
    count: int  # number of updates that reached this row
    total: int = 0  # sum of values (sum, avg, stddev)
    min: int | None = None  # for min
    max: int | None = None  # for max
    sumsq: int = 0  # sum of squared values (stddev)
    buckets: tuple[Bucket, ...] = ()  # histograms: non-empty buckets only, ascending

    def value(self, func: str) -> int | float:
        """The row's single value, as DTrace's printa shows it (histograms: the count)."""
        if func == "sum":
            return self.total
        if func == "min":
            return self.min if self.min is not None else 0
        if func == "max":
            return self.max if self.max is not None else 0
        if func == "avg":
            return self.total / self.count if self.count else 0.0
        if func == "stddev":
            return stddev(self.count, self.total, self.sumsq)
        return self.count


def stddev(n: int, total: int, sumsq: int) -> float:
    """Population standard deviation from exact integer moments (as DTrace)."""
    if n == 0:
        return 0.0
    var_n2 = n * sumsq - total * total  # n^2 * variance, exact
    return math.sqrt(max(var_n2, 0)) / n


@dataclass(frozen=True)
class AggTable:
    name: str  # "set/name" (quick mode: "cli/name")
    probe: str  # the probe's name, "set/probe"
    func: AggFunc
    arg: str | None  # what is aggregated: a capture name, or None for count()
    key_names: tuple[str, ...]
    rows: tuple[AggRow, ...]
    overflow: int  # updates dropped because the table held max_keys distinct keys
    max_keys: int
    lquantize: tuple[int, int, int] | None = None  # (low, high, step)
    tier: str = ""  # "fast" (compiled C) or "js"
    llquantize: tuple[int, int, int, int] | None = None  # (factor, low, high, steps)


@dataclass(frozen=True)
class AggSnapshot:
    ts_ns: int  # target clock (CLOCK_MONOTONIC ns) when the snapshot was taken
    seq: int  # 0, 1, 2, ... in the order taken
    final: bool  # the last one of the run
    tables: tuple[AggTable, ...]
