"""llquantize: the host's buckets against DTrace's kernel algorithm, its checks, its
spec syntax in probe sets, and its drawing (labels and every bucket in between)."""

from __future__ import annotations

import pytest

from instr.aggregate import llq
from instr.aggregate.model import AggRow, AggTable, Bucket
from instr.aggregate.report import histogram_lines, title
from instr.errors import ProbeSetError
from instr.probes import load_text
from instr.probes.aggspec import AggSpecError, parse_agg


def dtrace_llq_bucket(factor: int, low: int, high: int, nsteps: int, value: int) -> int:
    """DTrace's dtrace_aggregate_llquantize_bucket(), step for step (64-bit values)."""
    this = 1
    for _ in range(low):
        this *= factor
    if value < this:
        return 0
    last = this
    this *= factor
    base = 1
    for _ in range(low, high + 1):
        nbuckets = min(this, nsteps)
        if value < this:
            return base + (value - last) // (this // nbuckets)
        base += nbuckets - nbuckets // factor
        last = this
        this *= factor
    return base


PARAMS = [
    (10, 0, 2, 10),
    (10, 0, 6, 20),
    (2, 0, 8, 4),
    (4, 1, 2, 16),
    (10, 2, 4, 100),
    (3, 1, 3, 9),
]


@pytest.mark.parametrize("p", PARAMS, ids=[",".join(map(str, p)) for p in PARAMS])
def test_buckets_are_dtraces(p: tuple[int, int, int, int]) -> None:
    assert llq.check(p) is None
    factor, low, high, steps = p
    top = factor ** (high + 1)
    values = {-5, -1, 0, 1, top - 1, top, top + 1, 2 * top, (1 << 63) - 1}
    values |= {v + d for v in llq.edges(p) for d in (-1, 0, 1)}
    for v in sorted(values):
        i = llq.index(v, p)
        assert i == dtrace_llq_bucket(factor, low, high, steps, v), v
        b = llq.bucket(i, p)
        assert (b.lo is None or b.lo <= v) and (b.hi is None or v < b.hi)
    assert llq.count(p) == dtrace_llq_bucket(factor, low, high, steps, top) + 1


def test_edges_of_the_classic_example() -> None:
    # llquantize(x, 10, 0, 2, 10): < 1, 1..9, 10..90 by 10, 100..900 by 100, >= 1000
    want = [*range(1, 10), *range(10, 100, 10), *range(100, 1000, 100), 1000]
    assert list(llq.edges((10, 0, 2, 10))) == want
    # more steps than a magnitude holds: 1 wide until factor^(m+1) exceeds them
    assert list(llq.edges((10, 0, 2, 20))) == [
        *range(1, 10), *range(10, 100, 5), *range(100, 1000, 50), 1000,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "arg", "message"),
    [
        ((1, 0, 2, 10), 1, "factor must be 2 or more"),
        ((10, 2, 2, 10), 3, "high magnitude (2) must be greater than its low magnitude (2)"),
        ((10, 0, 2, 5), 4, "steps (5) must be a multiple of its factor (10)"),
        ((10, 0, 2, 15), 4, "steps (15) must be a multiple of its factor (10)"),
        ((4, 0, 2, 24), 4, "steps (24) must divide a power of its factor (4)"),
        ((10, 0, 19, 10), 3, "10 to the power 20 does not fit in 64 bits"),
        ((2, 0, 40, 4096), 4, "more than 4096"),
        ((10, 0, 70000, 10), 3, "high magnitude must be 0 to 65535"),
    ],
)
def test_checks(args: tuple[int, int, int, int], arg: int, message: str) -> None:
    bad = llq.check(args)
    assert bad is not None and bad[0] == arg and message in bad[1]


def test_spec_syntax_and_errors() -> None:
    spec = parse_agg("llquantize(arg0, 10, 0, 6, 20) by tid")
    assert spec.llquantize == (10, 0, 6, 20) and spec.lquantize is None
    with pytest.raises(AggSpecError) as e:
        parse_agg("llquantize(arg0, 10, 0, 6, 15)")
    assert e.value.offset == len("llquantize(arg0, 10, 0, 6, ") and "multiple" in e.value.message
    with pytest.raises(AggSpecError) as e:
        parse_agg("llquantize(arg0, 10, 0, 6)")
    assert "needs (value, factor, low, high, steps)" in e.value.message


def test_probe_set_error_points_at_the_argument() -> None:
    text = 'version: 1\nsets:\n  s:\n    probes:\n      - function: "x!f"\n' + (
        "        aggregate: {h: 'llquantize(arg0, 1, 0, 6, 20)'}\n"
    )
    with pytest.raises(ProbeSetError) as e:
        load_text(text, "p.yaml").compile(["s"])
    (d,) = e.value.diagnostics
    assert (d.line, "factor must be 2 or more" in d.message) == (6, True)
    assert d.col == text.splitlines()[5].index("1, 0, 6") + 1


def test_plan_and_table_layout() -> None:
    text = 'version: 1\nsets:\n  s:\n    probes:\n      - function: "x!f"\n' + (
        "        aggregate: {h: 'llquantize(arg0, 10, 0, 2, 10)'}\n"
    )
    table = load_text(text).compile(["s"])
    ((probe, agg),) = list(table.aggregations())
    assert agg.value_words() == 1 + 29  # < 1, 27 steps, >= 1000
    plan = probe.agg_plan(agg)
    assert (plan["func"], plan["llq"], plan["lq"]) == ("llquantize", [10, 0, 2, 10], None)


def test_drawing() -> None:
    p = (10, 0, 2, 10)
    counts = {0: 1, 3: 2, 12: 1, 40: 3, 5000: 1}
    rows = {}
    for v, n in counts.items():
        b = llq.bucket(llq.index(v, p), p)
        rows[(b.lo, b.hi)] = rows.get((b.lo, b.hi), 0) + n
    buckets = tuple(Bucket(lo, hi, n) for (lo, hi), n in rows.items())
    t = AggTable("d/h", "d/p", "llquantize", "arg0", (), (AggRow((), 8, buckets=buckets),), 0,
                 64, llquantize=p)  # fmt: skip
    assert title(t) == "d/h = llquantize(arg0, 10, 0, 2, 10)"
    labels = [line.split("|")[0].strip() for line in histogram_lines(t, t.rows[0])[1:]]
    assert labels == [
        "< 1", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "20", "30", "40", "50", "60",
        "70", "80", "90", "100", "200", "300", "400", "500", "600", "700", "800", "900",
        ">= 1000",
    ]  # fmt: skip
    lines = histogram_lines(t, t.rows[0])
    assert lines[1] == f"{'< 1':>16} |{'@' * 5:<40} 1"
    assert lines[-1] == f"{'>= 1000':>16} |{'@' * 5:<40} 1"
