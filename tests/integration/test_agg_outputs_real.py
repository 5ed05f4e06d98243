"""Real snapshots through the outputs: console report, JSON Lines and SQLite agree
with the decoded final snapshot (one run of tests/targets/aggs.c)."""

from __future__ import annotations

import io
import json
import sqlite3

import pytest

import instr
from instr.collectors.console import ConsoleCollector
from instr.collectors.jsonl import JsonlCollector
from instr.collectors.sqlite import SqliteCollector

pytestmark = pytest.mark.frida

N = 1000
VALUES = [i * i % 1000 - 300 for i in range(N)]  # what tests/targets/aggs.c passes

SET = """
version: 1
sets:
  v:
    probes:
      - function: "aggs!target_value"
        capture: {v: arg0:long}
        aggregate:
          n: count()
          lo: min(v)
          sd: stddev(v)
          q: quantize(v)
          byv: sum(v) by v
"""


def test_outputs_agree_with_the_final_snapshot(targets, probe_file, tmp_path):
    table = instr.load_file(probe_file(SET)).compile(["v"])
    out = io.StringIO()
    jsonl, db = tmp_path / "o.jsonl", tmp_path / "o.db"
    outputs = [ConsoleCollector(out, top=3), JsonlCollector(jsonl), SqliteCollector(db)]
    argv = [str(targets.path("aggs")), "values", str(N)]
    with instr.Session.spawn(argv, table, stdio="pipe", stream=False, collectors=outputs) as run:
        run.start()
        run.snapshot()  # before any call: an interval snapshot of untouched tables
        run.input("go\n")
        assert run.wait(60)
    summary = run.summary
    assert summary is not None and summary.errors == []
    final = summary.aggregations
    assert final is not None and final.final

    text = out.getvalue()
    assert "(interval snapshot 0) ===\nv/n = count(): 0\n\nv/lo = min(v): (no data)\n" in text
    assert f"(final) ===\nv/n = count(): {N}\n\nv/lo = min(v): {min(VALUES)}\n" in text
    by_value = {v: VALUES.count(v) * v for v in set(VALUES)}
    top3 = sorted(by_value.items(), key=lambda kv: (kv[1], kv[0]))[-3:]
    rows = [f"  {v:>3}  {s:>5}" for v, s in top3]
    assert "\n".join(["v/byv = sum(v) by v", "    v    sum", *rows]) in text

    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    aggs = [o for o in lines if o["type"] == "aggregation" and o["final"]]
    assert {o["keys"]["v"]: o["value"] for o in aggs if o["name"] == "v/byv"} == by_value
    (q,) = [o for o in aggs if o["name"] == "v/q"]
    (q_row,) = next(t for t in final.tables if t.name == "v/q").rows
    assert q["buckets"] == [[b.lo, b.hi, b.count] for b in q_row.buckets]

    con = sqlite3.connect(db)
    assert con.execute("SELECT seq, final FROM agg_snapshots").fetchall() == [(0, 0), (1, 1)]
    sd = con.execute("SELECT value, total, sumsq FROM aggregations WHERE final AND name = 'v/sd'")
    mean = sum(VALUES) / N
    value, total, sumsq = sd.fetchone()
    assert (total, int(sumsq)) == (sum(VALUES), sum(v * v for v in VALUES))
    assert value == pytest.approx((sum((v - mean) ** 2 for v in VALUES) / N) ** 0.5)
