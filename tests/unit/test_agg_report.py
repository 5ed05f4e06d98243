"""Aggregation reports: golden output for hand-built snapshots (no Frida).

Expected texts are written out in full; bar lengths are worked out in the
comments (40 * count / total, rounded half up).
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

from instr.aggregate.decode import quantize_bucket
from instr.aggregate.model import AGG_FUNCS, AggFunc, AggRow, AggSnapshot, AggTable, Bucket
from instr.aggregate.report import render_snapshot, render_table, title


def table(
    name: str,
    func: str,
    arg: str | None,
    keys: tuple[str, ...],
    *rows: AggRow,
    overflow: int = 0,
    max_keys: int = 1024,
    lquantize: tuple[int, int, int] | None = None,
) -> AggTable:
    assert func in AGG_FUNCS
    return AggTable(
        name=name,
        probe="calls/malloc",
        func=cast(AggFunc, func),
        arg=arg,
        key_names=keys,
        rows=rows,
        overflow=overflow,
        max_keys=max_keys,
        lquantize=lquantize,
    )


def text(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


# -- tables ---------------------------------------------------------------------------

SUM_BY_TWO_KEYS = """\
calls/bytes = sum(size) by caller, tid
  caller          tid     sum
  demo!work+0x10   12      48
  x                -3      48
  demo!main+0x2a    7  409600
"""


def test_sum_by_two_keys_sorted_ascending_ints_right_strings_left() -> None:
    t = table(
        "calls/bytes",
        "sum",
        "size",
        ("caller", "tid"),
        AggRow(("demo!main+0x2a", 7), 2, total=409600),
        AggRow(("x", -3), 1, total=48),  # ties with the next row: keys decide
        AggRow(("demo!work+0x10", 12), 3, total=48),
    )
    assert text(render_table(t)) == SUM_BY_TWO_KEYS


EVERY_FUNCTION = """\
procs/calls = count() by comm
  comm  count
  sshd      2
  bash      5

calls/smallest = min(size) by tid
  tid  min
   12   -4
    7   16

calls/largest = max(size) by tid
  tid   max
   12     1
    7  4096

calls/mean = avg(size) by tid
  tid   avg
    7  3.33
   12  4.50

calls/spread = stddev(size) by tid
  tid  stddev
   12    1.00
    7    2.00

calls/all = count(): 42

calls/total = sum(size): -5

calls/avg1 = avg(size): 0.50
"""


def test_every_function() -> None:
    tables = [
        table("procs/calls", "count", None, ("comm",), AggRow(("bash",), 5), AggRow(("sshd",), 2)),
        table(
            "calls/smallest",
            "min",
            "size",
            ("tid",),
            AggRow((7,), 3, min=16),
            AggRow((12,), 1, min=-4),
        ),
        table(
            "calls/largest",
            "max",
            "size",
            ("tid",),
            AggRow((7,), 3, max=4096),
            AggRow((12,), 1, max=1),
        ),
        # 10/3 = 3.33, 9/2 = 4.50
        table(
            "calls/mean",
            "avg",
            "size",
            ("tid",),
            AggRow((7,), 3, total=10),
            AggRow((12,), 2, total=9),
        ),
        # tid 7: 2 4 4 4 5 5 7 9 (sd 2); tid 12: 1 3 (sd 1)
        table(
            "calls/spread",
            "stddev",
            "size",
            ("tid",),
            AggRow((7,), 8, total=40, sumsq=232),
            AggRow((12,), 2, total=4, sumsq=10),
        ),
        table("calls/all", "count", None, (), AggRow((), 42)),
        table("calls/total", "sum", "size", (), AggRow((), 3, total=-5)),
        table("calls/avg1", "avg", "size", (), AggRow((), 2, total=1)),
    ]
    lines: list[str] = []
    for i, t in enumerate(tables):
        lines += [""] if i else []
        lines += render_table(t)
    assert text(lines) == EVERY_FUNCTION


BACKTRACES = """\
calls/stacks = count() by stack, tid
  tid  count
      demo!leaf+0x5
      demo!other
    7      1

      demo!leaf+0x5
      demo!main+0x2a
    7      3

      <no frames>
   12      5
"""

TWO_BACKTRACES = """\
calls/pair = sum(size) by kernel, user
  sum
    kernel:
      k!entry
    user:
      demo!leaf
      demo!main
    2
"""


def test_backtrace_keys_are_frames_above_their_row() -> None:
    t = table(
        "calls/stacks",
        "count",
        None,
        ("stack", "tid"),
        AggRow((("demo!leaf+0x5", "demo!main+0x2a"), 7), 3),
        AggRow(((), 12), 5),
        AggRow((("demo!leaf+0x5", "demo!other"), 7), 1),
    )
    assert text(render_table(t)) == BACKTRACES
    two = table(
        "calls/pair",
        "sum",
        "size",
        ("kernel", "user"),
        AggRow((("k!entry",), ("demo!leaf", "demo!main")), 1, total=2),
    )
    assert text(render_table(two)) == TWO_BACKTRACES


def test_control_characters_in_string_keys_are_escaped() -> None:
    t = table("files/paths", "count", None, ("path",), AggRow(("/tmp/a\nb\tc\x01",), 1))
    assert render_table(t)[2] == "  /tmp/a\\nb\\tc\\x01      1"


# -- histograms -----------------------------------------------------------------------

QUANTIZE = """\
calls/sizes = quantize(size) by caller, tid
  demo!x  7
           value  ------------- Distribution ------------- count
               8 |                                         0
              16 |@@@@@@@@@@@@@@@@@@@@@@@@@@@              2
              32 |                                         0
              64 |                                         0
             128 |                                         0
             256 |                                         0
             512 |                                         0
            1024 |@@@@@@@@@@@@@                            1
            2048 |                                         0

  demo!main  12
           value  ------------- Distribution ------------- count
              -8 |                                         0
              -4 |@@@@@@@@                                 1
              -2 |                                         0
              -1 |@@@@@@@@@@@@@@@@                         2
               0 |@@@@@@@@                                 1
               1 |                                         0
               2 |@@@@@@@@                                 1
               4 |                                         0
  overflow: 5 updates dropped: the table reached max_keys=2 distinct keys
"""


def test_quantize_with_negative_values_and_overflow() -> None:
    t = table(
        "calls/sizes",
        "quantize",
        "size",
        ("caller", "tid"),
        # values -5 | -1 -1 | 0 | 3: total 5, so 8 @ per value; negative buckets hold
        # magnitudes [2^j, 2^(j+1)): -5 is in [-7, -3), drawn as row -4 (-4 to -7)
        AggRow(
            ("demo!main", 12),
            5,
            buckets=(Bucket(-7, -3, 1), Bucket(-1, 0, 2), Bucket(0, 1, 1), Bucket(2, 4, 1)),
        ),
        # total 3: 2 -> 26.7 -> 27 @, 1 -> 13.3 -> 13 @
        AggRow(("demo!x", 7), 3, buckets=(Bucket(16, 32, 2), Bucket(1024, 2048, 1))),
        overflow=5,
        max_keys=2,
    )
    assert text(render_table(t)) == QUANTIZE


def test_quantize_labels_over_the_decoder_s_129_buckets_are_dtrace_s() -> None:
    low, top = quantize_bucket(0), quantize_bucket(128)  # the extreme buckets, one value each
    t = table(
        "calls/all",
        "quantize",
        "v",
        (),
        AggRow((), 2, buckets=(Bucket(low.lo, low.hi, 1), Bucket(top.lo, top.hi, 1))),
    )
    lines = render_table(t)
    labels = [int(line.split("|")[0]) for line in lines[2:]]
    powers = [1 << j for j in range(64)]
    assert labels == [-p for p in reversed(powers)] + [0] + powers  # every bucket, none added
    assert lines[2].endswith("|@@@@@@@@@@@@@@@@@@@@                     1")
    assert lines[-1].endswith("|@@@@@@@@@@@@@@@@@@@@                     1")
    assert all(line.endswith("|                                         0") for line in lines[3:-1])


LQUANTIZE_UNKEYED = """\
calls/lat = lquantize(size, 0, 100, 10)
           value  ------------- Distribution ------------- count
             < 0 |@@@@                                     1
               0 |                                         0
              10 |@@@@@@@@@@@@@                            3
              20 |                                         0
             ... |
              80 |                                         0
              90 |@@@@                                     1
          >= 100 |@@@@@@@@@@@@@@@@@@                       4
"""

LQUANTIZE_KEYED = """\
calls/small = lquantize(size, 0, 50, 10) by tid
  1
           value  ------------- Distribution ------------- count
             < 0 |                                         0
               0 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@ 2
              10 |                                         0

  2
           value  ------------- Distribution ------------- count
               0 |                                         0
              10 |@@@@@@@@@@@@@@@@@@@@                     1
              20 |                                         0
              30 |                                         0
              40 |@@@@@@@@@@@@@@@@@@@@                     1
           >= 50 |                                         0
"""


def test_lquantize_underflow_overflow_and_elided_gap() -> None:
    # total 9: 1 -> 4.4 -> 4 @, 3 -> 13.3 -> 13 @, 4 -> 17.8 -> 18 @;
    # 20..80 are seven empty buckets: more than four, so elided
    t = table(
        "calls/lat",
        "lquantize",
        "size",
        (),
        AggRow(
            (),
            9,
            buckets=(
                Bucket(None, 0, 1),
                Bucket(10, 20, 3),
                Bucket(90, 100, 1),
                Bucket(100, None, 4),
            ),
        ),
        lquantize=(0, 100, 10),
    )
    assert text(render_table(t)) == LQUANTIZE_UNKEYED
    keyed = table(
        "calls/small",
        "lquantize",
        "size",
        ("tid",),
        AggRow((2,), 2, buckets=(Bucket(10, 20, 1), Bucket(40, 50, 1))),
        AggRow((1,), 2, buckets=(Bucket(0, 10, 2),)),
        lquantize=(0, 50, 10),
    )
    assert text(render_table(keyed)) == LQUANTIZE_KEYED


QUANTIZE_BY_STACK = """\
calls/where = quantize(size) by stack
      demo!leaf
      demo!main
           value  ------------- Distribution ------------- count
               0 |                                         0
               1 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@ 3
               2 |                                         0
"""


def test_quantize_keyed_by_backtrace_only() -> None:
    t = table(
        "calls/where",
        "quantize",
        "size",
        ("stack",),
        AggRow((("demo!leaf", "demo!main"),), 3, buckets=(Bucket(1, 2, 3),)),
    )
    assert text(render_table(t)) == QUANTIZE_BY_STACK


# -- cuts, overflow, empty, snapshots -------------------------------------------------

TOP_2 = """\
calls/bytes = sum(size) by tid
  tid  sum
    4   40
    5   50
  (3 more rows with smaller values not shown: --top 2)
  overflow: 7 updates dropped: the table reached max_keys=5 distinct keys
"""

TOP_1_HISTOGRAM = """\
calls/sizes = quantize(size) by tid
  2
           value  ------------- Distribution ------------- count
               2 |                                         0
               4 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@ 2
               8 |                                         0
  (1 more key with a smaller count not shown: --top 1)
"""


def test_top_n_keeps_the_largest_and_says_what_it_cut() -> None:
    rows = [AggRow((tid,), 1, total=tid * 10) for tid in (5, 1, 4, 2, 3)]
    t = table("calls/bytes", "sum", "size", ("tid",), *rows, overflow=7, max_keys=5)
    assert text(render_table(t, top=2)) == TOP_2
    assert len(render_table(t, top=5)) == 2 + 5 + 1  # title, header, rows, overflow: no cut line
    h = table(
        "calls/sizes",
        "quantize",
        "size",
        ("tid",),
        AggRow((1,), 1, buckets=(Bucket(1024, 2048, 1),)),
        AggRow((2,), 2, buckets=(Bucket(4, 8, 2),)),
    )
    assert text(render_table(h, top=1)) == TOP_1_HISTOGRAM


def test_empty_tables() -> None:
    keyed = table("calls/bytes", "sum", "size", ("caller",))
    assert render_table(keyed) == ["calls/bytes = sum(size) by caller: (no data)"]
    full = table("calls/n", "count", None, (), overflow=3, max_keys=0)
    assert render_table(full) == [
        "calls/n = count(): (no data)",
        "  overflow: 3 updates dropped: the table reached max_keys=0 distinct keys",
    ]
    hist = table("calls/q", "quantize", "size", ("tid",))
    assert render_table(hist) == ["calls/q = quantize(size) by tid: (no data)"]


def test_rows_no_update_reached() -> None:
    # an unkeyed table exists before its first update; min/max hold the agent's sentinels
    untouched = [
        table("a/n", "count", None, (), AggRow((), 0)),
        table("a/s", "sum", "v", (), AggRow((), 0)),
        table("a/lo", "min", "v", (), AggRow((), 0, min=(1 << 63) - 1)),
        table("a/hi", "max", "v", (), AggRow((), 0, max=-(1 << 63))),
        table("a/m", "avg", "v", (), AggRow((), 0)),
        table("a/sd", "stddev", "v", (), AggRow((), 0)),
        table("a/q", "quantize", "v", (), AggRow((), 0)),
        table("a/lq", "lquantize", "v", (), AggRow((), 0), lquantize=(0, 10, 1)),
    ]
    assert [render_table(t) for t in untouched] == [
        ["a/n = count(): 0"],
        ["a/s = sum(v): 0"],
        ["a/lo = min(v): (no data)"],
        ["a/hi = max(v): (no data)"],
        ["a/m = avg(v): (no data)"],
        ["a/sd = stddev(v): (no data)"],
        ["a/q = quantize(v): (no data)"],
        ["a/lq = lquantize(v, 0, 10, 1): (no data)"],
    ]


def test_title_of_lquantize_without_parameters_and_count() -> None:
    assert title(table("a/b", "lquantize", "v", ())) == "a/b = lquantize(v)"
    assert title(table("a/b", "count", None, ("x", "y"))) == "a/b = count() by x, y"


SNAPSHOT = """\
=== aggregations at 12.5 s (interval snapshot 3) ===
calls/n = count(): 7

calls/bytes = sum(size) by caller: (no data)
"""


def test_snapshot_headers() -> None:
    tables = (
        table("calls/n", "count", None, (), AggRow((), 7)),
        table("calls/bytes", "sum", "size", ("caller",)),
    )
    snap = AggSnapshot(ts_ns=99, seq=3, final=False, tables=tables)
    assert text(render_snapshot(snap, elapsed_ns=12_549_000_000)) == SNAPSHOT
    final = AggSnapshot(ts_ns=99, seq=4, final=True, tables=())
    assert render_snapshot(final) == ["=== aggregations (final) ===", "(no aggregations)"]
    assert render_snapshot(final, elapsed_ns=1_000_000_000)[0] == (
        "=== aggregations at 1.0 s (final) ==="
    )


def test_the_documented_example_is_what_the_renderer_prints() -> None:
    tables = (
        table(
            "calls/bytes",
            "sum",
            "size",
            ("caller",),
            AggRow(("demo!main+0x2a",), 2, total=409600),
            AggRow(("demo!work+0x10",), 3, total=48),
            overflow=3,
            max_keys=2,
        ),
        table("calls/calls", "count", None, (), AggRow((), 42)),
        table(
            "calls/sizes",
            "quantize",
            "size",
            (),
            AggRow((), 4, buckets=(Bucket(16, 32, 2), Bucket(32, 64, 2))),
        ),
        table(
            "calls/where",
            "count",
            None,
            ("stack",),
            AggRow((("demo!leaf+0x5", "demo!main+0x2a"),), 3),
            AggRow((("demo!leaf+0x5", "demo!other+0x11"),), 5),
        ),
    )
    snap = AggSnapshot(ts_ns=1, seq=3, final=False, tables=tables)
    report = text(render_snapshot(snap, elapsed_ns=15_000_000_000))
    docs = (Path(__file__).parents[2] / "docs" / "outputs.md").read_text()
    assert "```\n" + report + "```\n" in docs
