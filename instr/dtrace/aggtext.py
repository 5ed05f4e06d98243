"""Aggregation tables as DTrace prints them (pure: tables in, text out).

Rows sorted by value, ties by key; string keys left-aligned in 50 columns,
integer keys and values right-aligned (``%16d`` after a space); a stack key one
frame a line above its value; histograms as instr's reports draw them, which
is DTrace's drawing. One D aggregation updated by several probes is several
IR tables: ``merge`` adds their rows; ``minus`` takes away a ``clear()``'s rows.
"""

from __future__ import annotations

from typing import Any

from instr.aggregate.model import HISTOGRAMS, AggRow, AggTable, Bucket
from instr.aggregate.report import histogram_lines
from instr.dtrace import ast as A
from instr.dtrace.printf import Conv, parse_format, render

Value = int | str


def render_table(t: AggTable, fmt: A.Str | None = None, factor: int = 1) -> str:
    """The rows of one table: DTrace's default layout, or printa's format."""
    out: list[str] = []
    for r in sorted_rows(t):
        if fmt is not None:
            out.append(_printa_line(fmt, r, t, factor))
            continue
        keys = "".join(
            _key(frame_text(k) if n == "caller" and isinstance(k, str) else k)
            for k, n in zip(r.keys, t.key_names, strict=False)
            if not isinstance(k, tuple)
        )
        for k in r.keys:
            if isinstance(k, tuple):  # a stack: one frame a line, as DTrace
                out.append("".join(f"{'':14}{frame_text(f)}\n" for f in k))
        if t.func in HISTOGRAMS:
            if keys:
                out.append(keys + "\n")
            out.extend(line + "\n" for line in histogram_lines(t, r))
            out.append("\n")
        else:
            out.append(f"{keys}{_value(r, t.func) // factor:>17}\n")
    return "".join(out)


def _key(k: Any) -> str:
    if isinstance(k, str):
        return f"  {k:<50}"
    if isinstance(k, int):
        return f" {k:>16}"
    return f"  {k!s:<50}"


def frame_text(frame: str) -> str:
    """instr's ``module!symbol+0x10`` in DTrace's spelling, ``module`symbol+0x10``."""
    return frame.replace("!", "`", 1)


def _value(r: AggRow, func: str) -> int:
    if func == "avg":
        return int(r.total / r.count) if r.count else 0
    if func == "stddev":
        return int(r.value("stddev"))
    if func in HISTOGRAMS:
        return r.count
    v = r.value(func)
    return int(v)


def sorted_rows(t: AggTable) -> list[AggRow]:
    def order(r: AggRow) -> tuple[Any, ...]:
        keys = tuple((0, k, "") if isinstance(k, int) else (1, 0, str(k)) for k in r.keys)
        return (_value(r, t.func), keys)

    return sorted(t.rows, key=order)


def merge(a: AggRow | None, b: AggRow) -> AggRow:
    if a is None:
        return b
    buckets: dict[tuple[int | None, int | None], int] = {}
    for bk in (*a.buckets, *b.buckets):
        buckets[(bk.lo, bk.hi)] = buckets.get((bk.lo, bk.hi), 0) + bk.count
    mins = [x for x in (a.min, b.min) if x is not None]
    maxs = [x for x in (a.max, b.max) if x is not None]
    return AggRow(a.keys, a.count + b.count, a.total + b.total, min(mins) if mins else None,
                  max(maxs) if maxs else None, a.sumsq + b.sumsq,
                  tuple(Bucket(lo, hi, c) for (lo, hi), c in sorted(
                      buckets.items(), key=lambda kv: (kv[0][0] is not None, kv[0][0] or 0))))  # fmt: skip


def minus(a: AggRow, b: AggRow) -> AggRow:
    """``a`` since ``b`` (clear()): counts and sums subtract; min/max cannot, and stay."""
    base = {(x.lo, x.hi): x.count for x in b.buckets}
    buckets = tuple(Bucket(x.lo, x.hi, x.count - base.get((x.lo, x.hi), 0)) for x in a.buckets)
    return AggRow(a.keys, a.count - b.count, a.total - b.total, a.min, a.max,
                  a.sumsq - b.sumsq, tuple(x for x in buckets if x.count))  # fmt: skip


def _printa_line(fmt: A.Str, r: AggRow, t: AggTable, factor: int = 1) -> str:
    """printa's format: ``%@d`` (or any ``%@`` conversion) is the value, the others the
    keys in order; without ``%@`` the value comes after the keys (as DTrace)."""
    pieces = parse_format(fmt.value, fmt.loc)
    keys = iter(k if isinstance(k, int | str) else str(k) for k in r.keys)
    vals: list[Value] = []
    for p in pieces:
        if isinstance(p, Conv):
            vals.append(_value(r, t.func) // factor if p.at else next(keys, 0))
    return render(pieces, vals)
