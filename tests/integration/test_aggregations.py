"""In-target aggregations on real targets: exact values in both tiers, the two
tiers against each other, threads, replaceFast on malloc, the key cap."""

from __future__ import annotations

import math

import pytest

import instr
from instr.aggregate.decode import lquantize_bucket, quantize_bucket
from instr.aggregate.model import AggSnapshot, AggTable

pytestmark = pytest.mark.frida

N = 1000
VALUES = [i * i % 1000 - 300 for i in range(N)]  # what tests/targets/aggs.c passes

VALUES_SET = """
version: 1
sets:
  v:
    probes:
      - function: "aggs!target_value"
        capture: {{v: arg0:long, r: retval:long}}
        tier: {tier}
        aggregate:
          n: count()
          s: sum(v)
          lo: min(v)
          hi: max(v)
          mean: avg(v)
          sd: stddev(v)
          q: quantize(v)
          lq: lquantize(v, -100, 500, 100)
          byr: count() by r
          big: sum(r) by v
        where: "v != 13"
"""


def run_set(targets, probe_file, text, sets, argv) -> tuple[AggSnapshot, instr.RunSummary]:
    table = instr.load_file(probe_file(text)).compile(sets)
    with instr.Session.spawn(argv, table, stdio="pipe", stream=False) as run:
        run.start()
        run.input("go\n")
        assert run.wait(60)
    summary = run.summary
    assert summary is not None and summary.errors == []
    assert summary.ending == instr.Ending("exit", code=0)
    snap = summary.aggregations
    assert snap is not None and snap.final
    return snap, summary


def tables(snap: AggSnapshot) -> dict[str, AggTable]:
    return {t.name: t for t in snap.tables}


def expected_quantize(values: list[int]) -> list[tuple[int | None, int | None, int]]:
    counts: dict[int, int] = {}
    for v in values:
        if v == 0:
            i = 64
        elif v > 0:
            i = 65 + v.bit_length() - 1
        else:
            i = 63 - ((-v).bit_length() - 1)
        counts[i] = counts.get(i, 0) + 1
    out = []
    for i in sorted(counts):
        b = quantize_bucket(i)
        out.append((b.lo, b.hi, counts[i]))
    return out


@pytest.mark.parametrize("tier", ["auto", "js"])
def test_every_function_exact(targets, probe_file, tier):
    snap, summary = run_set(
        targets,
        probe_file,
        VALUES_SET.format(tier=tier),
        ["v"],
        [str(targets.path("aggs")), "values", str(N)],
    )
    assert [(r.name, r.state, r.tier) for r in summary.probes] == [
        ("v/target_value", "armed", "fast" if tier == "auto" else "js")
    ]
    assert summary.events == 0  # aggregating probes emit no events by default
    vals = [v for v in VALUES if v != 13]
    t = tables(snap)
    one = {name: t[name].rows[0] for name in ("v/n", "v/s", "v/lo", "v/hi", "v/mean", "v/sd")}
    assert all(r.keys == () and r.count == len(vals) for r in one.values())
    assert one["v/s"].total == sum(vals)
    assert (one["v/lo"].min, one["v/hi"].max) == (min(vals), max(vals))
    assert one["v/mean"].value("avg") == sum(vals) / len(vals)
    sd = one["v/sd"]
    assert sd.sumsq == sum(v * v for v in vals)
    mean = sum(vals) / len(vals)
    assert math.isclose(
        sd.value("stddev"), math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))
    )
    (q,) = t["v/q"].rows
    assert [(b.lo, b.hi, b.count) for b in q.buckets] == expected_quantize(vals)
    (lq,) = t["v/lq"].rows
    lq_counts: dict[int, int] = {}
    for v in vals:
        i = 0 if v < -100 else 7 if v >= 500 else 1 + (v + 100) // 100
        lq_counts[i] = lq_counts.get(i, 0) + 1
    want = [
        (b.lo, b.hi, lq_counts[i])
        for i in sorted(lq_counts)
        for b in [lquantize_bucket(i, (-100, 500, 100))]
    ]
    assert [(b.lo, b.hi, b.count) for b in lq.buckets] == want
    by_r = {r.keys[0]: r.count for r in t["v/byr"].rows}
    want_r: dict[int, int] = {}
    for v in vals:
        want_r[2 * v] = want_r.get(2 * v, 0) + 1
    assert by_r == want_r
    big = {r.keys[0]: (r.count, r.total) for r in t["v/big"].rows}
    assert big == {v: (vals.count(v), 2 * v * vals.count(v)) for v in set(vals)}
    assert all(tb.overflow == 0 for tb in snap.tables)


def comparable(snap: AggSnapshot) -> dict[str, list[tuple[object, ...]]]:
    return {
        t.name: sorted((r.keys, r.count, r.total, r.min, r.max, r.sumsq, r.buckets) for r in t.rows)
        for t in snap.tables
    }


def test_fast_and_js_tiers_agree(targets, probe_file):
    argv = [str(targets.path("aggs")), "values", str(N)]
    fast, s1 = run_set(targets, probe_file, VALUES_SET.format(tier="native"), ["v"], argv)
    js, s2 = run_set(targets, probe_file, VALUES_SET.format(tier="js"), ["v"], argv)
    assert (s1.probes[0].tier, s2.probes[0].tier) == ("fast", "js")
    assert comparable(fast) == comparable(js)
    assert len(fast.tables) == 10


THREADS_SET = """
version: 1
sets:
  t:
    probes:
      - function: "threads!target_work"
        capture: {{t: arg0:int, k: arg1:long, r: retval:long}}
        tier: {tier}
        aggregate:
          calls: count() by tid
          ks: sum(k)
          rs: sum(r) by t
          q: quantize(k)
          pair: count() by t, tid, probefunc
"""


@pytest.mark.parametrize("tier", ["native", "js"])
def test_four_threads_exact(targets, probe_file, tier):
    k, nthreads = (20000, 4) if tier == "native" else (2000, 4)
    snap, summary = run_set(
        targets,
        probe_file,
        THREADS_SET.format(tier=tier),
        ["t"],
        [str(targets.path("threads")), str(k), str(nthreads)],
    )
    assert summary.probes[0].tier == ("fast" if tier == "native" else "js")
    t = tables(snap)
    calls = t["t/calls"].rows
    assert len(calls) == nthreads and all(r.count == k for r in calls)
    assert len({r.keys[0] for r in calls}) == nthreads
    (ks,) = t["t/ks"].rows
    assert (ks.count, ks.total) == (nthreads * k, nthreads * k * (k - 1) // 2)
    rs = {r.keys[0]: r.total for r in t["t/rs"].rows}
    assert rs == {i: i * 1_000_000 * k + k * (k - 1) // 2 for i in range(nthreads)}
    pairs = {r.keys: r.count for r in t["t/pair"].rows}
    assert sorted(key[0] for key in pairs) == list(range(nthreads))
    assert {key[1] for key in pairs} == {r.keys[0] for r in calls}
    assert {key[2] for key in pairs} == {"target_work"}
    assert set(pairs.values()) == {k}
    (q,) = t["t/q"].rows
    assert q.count == nthreads * k
    assert [(b.lo, b.hi, b.count) for b in q.buckets] == [
        (lo, hi, n * nthreads) for lo, hi, n in expected_quantize(list(range(k)))
    ]


MALLOC_SET = """
version: 1
sets:
  m:
    probes:
      - function: "libc.so*!malloc"
        capture: {size: arg0:size_t}
        aggregate:
          calls: count() by caller
          bytes: sum(size) by caller
          sizes: quantize(size)
"""


def test_malloc_by_caller(targets, probe_file):
    n = 2000
    snap, summary = run_set(
        targets, probe_file, MALLOC_SET, ["m"], [str(targets.path("aggs")), "malloc", str(n)]
    )
    assert summary.probes[0].tier == "fast"
    t = tables(snap)

    def by_function(name: str) -> dict[str, tuple[int, int]]:
        out = {}
        for r in t[name].rows:
            (caller,) = r.keys
            assert isinstance(caller, str)
            fn = caller.split("!")[-1].split("+")[0]
            if fn in ("alloc_a", "alloc_b"):
                out[fn] = (r.count, r.total)
        return out

    sizes_a = [8 * (i % 16) + 1 for i in range(0, n, 2)]
    sizes_b = [100 + i for i in range(1, n, 2)]
    assert by_function("m/calls") == {"alloc_a": (n // 2, 0), "alloc_b": (n // 2, 0)}
    assert by_function("m/bytes") == {
        "alloc_a": (n // 2, sum(sizes_a)),
        "alloc_b": (n // 2, sum(sizes_b)),
    }
    (q,) = t["m/sizes"].rows
    assert q.count >= n  # the process's own mallocs are counted too
    assert sum(b.count for b in q.buckets) == q.count


def test_key_cap_counts_overflow(targets, probe_file):
    text = """
    version: 1
    sets:
      v:
        probes:
          - function: "aggs!target_value"
            capture: {v: arg0:long}
            max_keys: 10
            aggregate:
              byv: count() by v
    """
    snap, _ = run_set(
        targets, probe_file, text, ["v"], [str(targets.path("aggs")), "values", str(N)]
    )
    (t,) = snap.tables
    first: list[int] = []
    for v in VALUES:
        if v not in first and len(first) < 10:
            first.append(v)
    assert sorted(r.keys[0] for r in t.rows) == sorted(first)  # type: ignore[type-var]
    assert {r.keys[0]: r.count for r in t.rows} == {v: VALUES.count(v) for v in first}
    assert t.overflow == sum(1 for v in VALUES if v not in first)
    assert t.max_keys == 10


ENDINGS_SET = """
version: 1
sets:
  e:
    probes:
      - function: "endings!target_tick"
        capture: {{i: arg0:long}}
        tier: {tier}
        aggregate:
          ticks: count()
          total: sum(i)
"""
ENDINGS = {
    "return": instr.Ending("exit", code=0),
    "_exit": instr.Ending("exit", code=4),
    "abort": None,
    "segv": None,
    "exec": None,
}


@pytest.mark.parametrize("tier", ["native", "js"])
@pytest.mark.parametrize("mode", list(ENDINGS))
def test_final_snapshot_on_every_ending(targets, probe_file, mode, tier):
    n = 5000
    table = instr.load_file(probe_file(ENDINGS_SET.format(tier=tier))).compile(["e"])
    argv = [str(targets.path("endings")), mode, str(n)]
    with instr.Session.spawn(argv, table, stdio="pipe", stream=False) as run:
        run.start()
        run.input("go\n")
        assert run.wait(60)
    summary = run.summary
    assert summary is not None
    if ENDINGS[mode] is not None:
        assert summary.ending == ENDINGS[mode]
    else:
        assert summary.ending is not None
        assert summary.ending.reason == ("exec" if mode == "exec" else "crash")
    snap = summary.aggregations
    assert snap is not None and snap.final
    t = tables(snap)
    assert t["e/ticks"].rows[0].count == n
    assert t["e/total"].rows[0].total == n * (n - 1) // 2


def test_snapshots_on_request_are_cumulative(targets, probe_file, launch):
    text = """
    version: 1
    sets:
      t:
        probes:
          - function: "threads!target_work"
            aggregate:
              calls: count()
    """
    table = instr.load_file(probe_file(text)).compile(["t"])
    seen: list[AggSnapshot] = []

    class Keep:
        def open(self, ctx, info):
            pass

        def on_events(self, events):
            pass

        def on_aggregations(self, snap):
            seen.append(snap)

        def close(self, summary):
            pass

    target = launch(targets.path("threads"), 3000, 2)
    with instr.Session.attach(target.pid, table, collectors=[Keep()], stream=False) as run:
        run.start()
        run.snapshot()  # before any call
        run.snapshot()
        target.go()
        assert target.finish().returncode == 0
        assert run.wait(60)
    assert [s.seq for s in seen] == [0, 1, 2]
    assert [s.final for s in seen] == [False, False, True]
    assert [s.tables[0].rows[0].count for s in seen] == [0, 0, 6000]
    assert seen[0].ts_ns <= seen[1].ts_ns <= seen[2].ts_ns


def test_string_and_backtrace_keys_in_the_js_tier(targets, probe_file):
    text = """
    version: 1
    sets:
      s:
        probes:
          - function: "calls!target_str"
            capture: {s: arg0:cstr(16)}
            where: "s.startswith('item-1')"
            aggregate:
              by_s: count() by s
              by_stack: count() by backtrace(3)
    """
    n = 300
    snap, summary = run_set(
        targets, probe_file, text, ["s"], [str(targets.path("calls")), "str", str(n)]
    )
    assert summary.probes[0].tier == "js"
    t = tables(snap)
    want = [f"item-{i}" for i in range(n) if f"item-{i}".startswith("item-1")]
    assert {r.keys[0]: r.count for r in t["s/by_s"].rows} == dict.fromkeys(want, 1)
    (stack,) = t["s/by_stack"].rows  # one call path
    assert stack.count == len(want)
    (frames,) = stack.keys
    assert isinstance(frames, tuple) and 1 <= len(frames) <= 3
    assert any("run_str" in f or "main" in f for f in frames), frames
