"""Aggregation reports for people: DTrace ``printa``-like tables and histograms.

Pure and deterministic: a snapshot in, lines out, no I/O, no clock (golden-tested in
tests/unit/test_agg_report.py).  What a report looks like::

    === aggregations at 15.0 s (interval snapshot 3) ===
    calls/bytes = sum(size) by caller
      caller             sum
      demo!work+0x10      48
      demo!main+0x2a  409600
      overflow: 3 updates dropped: the table reached max_keys=2 distinct keys

    calls/calls = count(): 42

    calls/sizes = quantize(size)
               value  ------------- Distribution ------------- count
                   8 |                                         0
                  16 |@@@@@@@@@@@@@@@@@@@@                     2
                  32 |@@@@@@@@@@@@@@@@@@@@                     2
                  64 |                                         0

Conventions (documented in docs/outputs.md):

* Rows are sorted by value ascending, largest last, as DTrace prints them;
  ties by keys.  ``top=N`` keeps the N largest (still ascending) and says how
  many rows it left out.  Histograms sort their keys by total count.
* Key columns: ints right-aligned, strings left-aligned with control
  characters escaped, backtraces as one indented frame per line above the
  row they key (rows are then separated by an empty line, like DTrace's
  ``stack()`` keys).  The value is the last column; ``avg`` and ``stddev``
  show two decimals.
* Histograms: one block per key, a 40-character bar scaled to that key's
  total count (rounded half up), every bucket from one empty bucket before the
  first non-empty one to one after the last (DTrace's convention).  Labels
  are DTrace's: a bucket's lower bound, and for quantize's negative buckets
  the value nearest zero (row ``-4`` holds -4 to -7, as row ``4`` holds 4 to
  7); lquantize's outer buckets read ``< low`` and ``>= high``, llquantize's
  ``< factor^low`` and ``>= factor^(high+1)``.  In lquantize, a run of more than four empty buckets between
  two non-empty ones is shown as its first bucket, ``...`` and its last.
* ``AggTable.overflow > 0`` always adds a line saying how many updates were
  dropped because the table held ``max_keys`` keys.
"""

from __future__ import annotations

from collections.abc import Sequence

from instr.aggregate import llq
from instr.aggregate.export import has_value
from instr.aggregate.model import HISTOGRAMS, AggRow, AggSnapshot, AggTable, Bucket, KeyValue

BAR_WIDTH = 40
VALUE_WIDTH = 16  # histogram label column, as DTrace
INDENT = "  "
FRAME_INDENT = " " * 6
EMPTY_RUN_SHOWN = 4  # lquantize: longer interior runs of empty buckets are elided
_MIN_I64 = -(1 << 63)
_CONTROL = {c: f"\\x{c:02x}" for c in range(0x20)}
_CONTROL.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", 0x7F: "\\x7f"})

_HIDDEN = {
    False: ("row with a smaller value", "rows with smaller values"),
    True: ("key with a smaller count", "keys with smaller counts"),
}
_Span = tuple[int | None, int | None]  # a bucket's (lo, hi)
_ELIDED: _Span = (None, None)  # marker in a histogram's row list: "..."


def render_snapshot(
    snapshot: AggSnapshot, *, top: int | None = None, elapsed_ns: int | None = None
) -> list[str]:
    """The whole report of one snapshot: a header line, then each table, blank-separated."""
    lines = [snapshot_header(snapshot, elapsed_ns)]
    if not snapshot.tables:
        lines.append("(no aggregations)")
    for i, table in enumerate(snapshot.tables):
        if i:
            lines.append("")
        lines.extend(render_table(table, top=top))
    return lines


def snapshot_header(snapshot: AggSnapshot, elapsed_ns: int | None = None) -> str:
    """``=== aggregations at 5.0 s (interval snapshot 0) ===``; ``(final)`` for the last one."""
    when = f" at {elapsed_ns / 1e9:.1f} s" if elapsed_ns is not None else ""
    kind = "final" if snapshot.final else f"interval snapshot {snapshot.seq}"
    return f"=== aggregations{when} ({kind}) ==="


def title(table: AggTable) -> str:
    """``calls/bytes = sum(size) by caller, tid``."""
    if table.func == "lquantize" and table.lquantize is not None:
        low, high, step = table.lquantize
        call = f"lquantize({table.arg or ''}, {low}, {high}, {step})"
    elif table.func == "llquantize" and table.llquantize is not None:
        call = f"llquantize({', '.join(map(str, (table.arg or '', *table.llquantize)))})"
    else:
        call = f"{table.func}({table.arg or ''})"
    by = f" by {', '.join(table.key_names)}" if table.key_names else ""
    return f"{table.name} = {call}{by}"


def render_table(table: AggTable, *, top: int | None = None) -> list[str]:
    """One aggregation: title, rows (or histogram blocks), cut and overflow notes."""
    head = title(table)
    histogram = table.func in HISTOGRAMS
    shown = [r for r in table.rows if _shown(r, table.func)]
    if not shown:
        lines = [f"{head}: (no data)"]
    elif not table.key_names and not histogram and len(shown) == 1:
        lines = [f"{head}: {format_value(shown[0], table.func)}"]
    else:
        rows = sort_rows(table, shown)
        hidden = 0
        if top is not None and len(rows) > top:
            hidden = len(rows) - top
            rows = rows[hidden:]
        lines = [head]
        lines.extend(_histograms(table, rows) if histogram else _rows(table, rows))
        if hidden:
            one, many = _HIDDEN[histogram]
            what = one if hidden == 1 else many
            lines.append(f"{INDENT}({hidden} more {what} not shown: --top {top})")
    if table.overflow:
        lines.append(
            f"{INDENT}overflow: {table.overflow} updates dropped: the table reached"
            f" max_keys={table.max_keys} distinct keys"
        )
    return lines


def _shown(row: AggRow, func: str) -> bool:
    """Rows no update reached are left out, except an unkeyed count's or sum's 0."""
    if func in HISTOGRAMS:
        return any(b.count for b in row.buckets)
    return has_value(row, func)


def sort_rows(table: AggTable, rows: Sequence[AggRow] | None = None) -> list[AggRow]:
    """Ascending by value (histograms: by count), ties by keys: the order reports print."""
    rows = table.rows if rows is None else rows
    if table.func in HISTOGRAMS:
        return sorted(rows, key=lambda r: (_total(r), _keys_order(r.keys)))
    func = table.func
    return sorted(rows, key=lambda r: (r.value(func), _keys_order(r.keys)))


def format_value(row: AggRow, func: str) -> str:
    value = row.value(func)
    return f"{value:.2f}" if func in ("avg", "stddev") else str(value)


def format_key(value: KeyValue) -> str:
    """An int or a string key (control characters escaped); a backtrace as ``[N frames]``."""
    if isinstance(value, tuple):
        return f"[{len(value)} frames]"
    if isinstance(value, str):
        return value.translate(_CONTROL)
    return str(value)


# -- tables -------------------------------------------------------------------------


def _stack_columns(table: AggTable, rows: Sequence[AggRow]) -> list[int]:
    return [
        i
        for i in range(len(table.key_names))
        if any(i < len(r.keys) and isinstance(r.keys[i], tuple) for r in rows)
    ]


def _frame_lines(table: AggTable, row: AggRow, stacks: list[int]) -> list[str]:
    lines: list[str] = []
    for i in stacks:
        frames = row.keys[i]
        if len(stacks) > 1:
            lines.append(f"{INDENT}  {table.key_names[i]}:")
        if not isinstance(frames, tuple):
            lines.append(f"{FRAME_INDENT}{format_key(frames)}")
        elif not frames:
            lines.append(f"{FRAME_INDENT}<no frames>")
        else:
            lines.extend(f"{FRAME_INDENT}{format_key(f)}" for f in frames)
    return lines


def _rows(table: AggTable, rows: list[AggRow]) -> list[str]:
    stacks = _stack_columns(table, rows)
    scalars = [i for i in range(len(table.key_names)) if i not in stacks]
    # columns: (header, cells, right-aligned)
    columns: list[tuple[str, list[str], bool]] = []
    for i in scalars:
        values = [r.keys[i] for r in rows]
        cells = [format_key(v) for v in values]
        columns.append((table.key_names[i], cells, all(isinstance(v, int) for v in values)))
    columns.append((table.func, [format_value(r, table.func) for r in rows], True))
    widths = [max(len(h), *(len(c) for c in cells)) for h, cells, _ in columns]

    def line(texts: list[str]) -> str:
        parts = [
            f"{t:>{w}}" if right else f"{t:<{w}}"
            for t, w, (_, _, right) in zip(texts, widths, columns, strict=True)
        ]
        return INDENT + "  ".join(parts)

    out = [line([h for h, _, _ in columns])]
    for n, row in enumerate(rows):
        if stacks:
            if n:
                out.append("")
            out.extend(_frame_lines(table, row, stacks))
        out.append(line([cells[n] for _, cells, _ in columns]))
    return out


# -- histograms ---------------------------------------------------------------------


def _histograms(table: AggTable, rows: list[AggRow]) -> list[str]:
    stacks = _stack_columns(table, rows)
    out: list[str] = []
    for n, row in enumerate(rows):
        if n:
            out.append("")
        scalars = [format_key(k) for i, k in enumerate(row.keys) if i not in stacks]
        if scalars:
            out.append(INDENT + "  ".join(scalars))
        out.extend(_frame_lines(table, row, stacks))
        out.extend(histogram_lines(table, row))
    return out


def histogram_lines(table: AggTable, row: AggRow) -> list[str]:
    """The ``value / Distribution / count`` block of one key."""
    spans = _spans(table, row.buckets)
    labels = ["..." if s == _ELIDED else _label(table, s) for s in spans]
    width = max(VALUE_WIDTH, *(len(x) for x in labels)) if labels else VALUE_WIDTH
    dashes = "-" * ((BAR_WIDTH - len(" Distribution ")) // 2)
    lines = [f"{'value':>{width}}  {dashes} Distribution {dashes} count"]
    counts = {(b.lo, b.hi): b.count for b in row.buckets}
    total = _total(row)
    for span, label in zip(spans, labels, strict=True):
        if span == _ELIDED:
            lines.append(f"{label:>{width}} |")
            continue
        count = counts.get(span, 0)
        depth = (count * 2 * BAR_WIDTH + total) // (2 * total) if total > 0 else 0
        lines.append(f"{label:>{width}} |{'@' * depth:<{BAR_WIDTH}} {count}")
    return lines


def _total(row: AggRow) -> int:
    return sum(b.count for b in row.buckets)


def _label(table: AggTable, span: _Span) -> str:
    lo, hi = span
    if lo is None:
        return f"< {hi}"
    if hi is None and table.func in ("lquantize", "llquantize"):
        return f">= {lo}"
    if lo < 0 and hi is not None and table.func == "quantize":
        return str(hi - 1)  # the bucket's value nearest zero, as DTrace: -2 holds -2 and -3
    return str(lo)


def _spans(table: AggTable, buckets: tuple[Bucket, ...]) -> list[_Span]:
    """Every bucket to draw: one empty before, the gaps filled, one empty after."""
    nonempty = sorted(
        ((b.lo, b.hi) for b in buckets if b.count),
        key=lambda s: _MIN_I64 - 1 if s[0] is None else s[0],
    )
    if not nonempty:
        return []
    out: list[_Span] = []
    before = _previous(table, nonempty[0])
    if before is not None:
        out.append(before)
    for span in nonempty:
        if out and out[-1] != _ELIDED:
            out.extend(_gap(table, out[-1], span))
        out.append(span)
    after = _next(table, nonempty[-1])
    if after is not None:
        out.append(after)
    return out


def _gap(table: AggTable, prev: _Span, span: _Span) -> list[_Span]:
    """The empty buckets strictly between two buckets (elided when long, for lquantize)."""
    lo = span[0]
    cur = _next(table, prev)
    if lo is None or cur is None or cur[0] is None or cur[0] >= lo:
        return []
    if table.func == "lquantize" and table.lquantize is not None:
        step = table.lquantize[2]
        if step > 0 and (lo - cur[0]) // step > EMPTY_RUN_SHOWN:
            return [cur, _ELIDED, (lo - step, lo)]
    out: list[_Span] = []
    while cur is not None and cur[0] is not None and cur[0] < lo and len(out) <= llq.MAX_BUCKETS:
        out.append(cur)
        cur = _next(table, cur)
    return out


def _next(table: AggTable, span: _Span) -> _Span | None:
    hi = span[1]
    if hi is None:
        return None
    if table.llquantize is not None:
        return llq.neighbour(span, table.llquantize, after=True)
    if table.func == "lquantize" and table.lquantize is not None:
        _, high, step = table.lquantize
        return (hi, None) if hi >= high else (hi, min(hi + step, high))
    return (hi, _quantize_next(hi))


def _previous(table: AggTable, span: _Span) -> _Span | None:
    lo = span[0]
    if lo is None:
        return None
    if table.llquantize is not None:
        return llq.neighbour(span, table.llquantize, after=False)
    if table.func == "lquantize" and table.lquantize is not None:
        low, _, step = table.lquantize
        return (None, low) if lo <= low else (max(lo - step, low), lo)
    if lo <= _MIN_I64:
        return None
    if lo > 1:
        return (lo // 2, lo)
    return (lo - 1, lo) if lo >= 0 else (2 * lo - 1, lo)


def _quantize_next(x: int) -> int:
    """quantize's bucket bounds: ..., -15, -7, -3, -1, 0, 1, 2, 4, 8, ... (see ``Bucket``)."""
    if x < -1:
        return (x + 1) // 2
    return x + 1 if x < 1 else 2 * x


def _keys_order(keys: tuple[KeyValue, ...]) -> tuple[tuple[int, int, str, tuple[str, ...]], ...]:
    """A total order over mixed key values (ints, then strings, then backtraces)."""
    return tuple(
        (0, k, "", ())
        if isinstance(k, int)
        else (1, 0, k, ())
        if isinstance(k, str)
        else (2, 0, "", k)
        for k in keys
    )
