"""Exact counts and values: a function called N times yields exactly N entry and N exit
events with the right arguments, in JSON Lines and in SQLite, PIE and non-PIE, both tiers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_instr
from jsonl import db, phases, read_jsonl

pytestmark = pytest.mark.frida

N = 100_000

ADD_SET = """
version: 1
sets:
  add:
    probes:
      - name: add
        function: "calls!target_add"
        capture: {{a: "arg0:i64", b: "arg1:i64", r: "retval:i64", d: duration}}
        tier: {tier}
"""


@pytest.mark.parametrize("tier", ["native", "js"])
def test_100k_calls_exact_in_jsonl_and_sqlite(targets, pie, tier, probe_file, tmp_path: Path):
    probes = probe_file(ADD_SET.format(tier=tier))
    out_jsonl, out_db = tmp_path / "run.jsonl", tmp_path / "run.db"
    prog = targets.path("calls", pie=pie)
    res = run_instr("run", "-q", "-P", probes, "-s", "add", "-o", out_jsonl, "-o", out_db,
                    "--", prog, "add", N)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert f"add calls={N} sum={3 * N * (N - 1) // 2}" in res.stdout

    events, summary = read_jsonl(out_jsonl)
    assert phases(events) == {("add/add", "entry"): N, ("add/add", "exit"): N}
    entries = [e for e in events if e["phase"] == "entry"]
    exits = [e for e in events if e["phase"] == "exit"]
    assert [e["args"] for e in entries] == [{"a": i, "b": 2 * i} for i in range(N)]
    assert [e["retval"] for e in exits] == [3 * i for i in range(N)]
    assert all(e["duration_ns"] >= 0 for e in exits)
    assert [e["seq"] for e in events] == list(range(1, 2 * N + 1))
    assert summary["drops"] == 0 and summary["lost_batches"] == 0
    assert summary["probes"][0]["tier"] == tier
    assert summary["ending"]["reason"] == "exit" and summary["ending"]["code"] == 0

    con = db(out_db)
    rows = dict(con.execute("SELECT phase, count(*) FROM events GROUP BY phase").fetchall())
    assert rows == {"entry": N, "exit": N}
    (ret_sum,) = con.execute("SELECT sum(retval) FROM events WHERE phase='exit'").fetchone()
    assert ret_sum == 3 * N * (N - 1) // 2
    args = [json.loads(a) for (a,) in con.execute(
        "SELECT args FROM named_events WHERE phase='entry' ORDER BY seq LIMIT 3")]  # fmt: skip
    assert args == [{"a": 0, "b": 0}, {"a": 1, "b": 2}, {"a": 2, "b": 4}]
    (ending,) = con.execute("SELECT ending_reason FROM runs").fetchone()
    assert ending == "exit"


MIX_SET = """
version: 1
sets:
  mix:
    probes:
      - function: "calls!target_mix"
        capture: {{a: "arg0:i8", b: "arg1:u16", c: "arg2:i32", d: "arg3:u64", r: "retval:i32"}}
        tier: {tier}
"""


@pytest.mark.parametrize("tier", ["native", "js"])
def test_integer_widths_and_signs(targets, tier, probe_file, tmp_path: Path):
    n = 1000
    out = tmp_path / "run.jsonl"
    res = run_instr("run", "-q", "-P", probe_file(MIX_SET.format(tier=tier)), "-s", "mix",
                    "-o", out, "--", targets.path("calls"), "mix", n)  # fmt: skip
    assert res.returncode == 0, res.stderr
    events, _ = read_jsonl(out)
    entries = [e["args"] for e in events if e["phase"] == "entry"]
    rets = [e["retval"] for e in events if e["phase"] == "exit"]
    expect = []
    for i in range(n):
        a = -128 + i % 256
        b = 65535 - i % 65536
        expect.append({"a": a, "b": b, "c": -(2**31) + i, "d": 2**64 - 1 - i})
    assert entries == expect
    assert rets == [x["a"] + x["b"] for x in expect]


STR_SET = """
version: 1
sets:
  s:
    probes:
      - function: "calls!target_str"
        capture: {s: "arg0:cstr(16)"}
        on: [entry]
  b:
    probes:
      - function: "calls!target_buf"
        capture: {data: "arg0:bytes(arg1, 64)", n: "arg1:u64"}
        on: [entry]
"""


def test_strings_bytes_null_and_truncation(targets, probe_file, tmp_path: Path):
    probes = probe_file(STR_SET)
    prog = targets.path("calls")

    out = tmp_path / "str.jsonl"
    res = run_instr("run", "-q", "-P", probes, "-s", "s", "-o", out, "--", prog, "str", 200)
    assert res.returncode == 0, res.stderr
    events, _ = read_jsonl(out)
    assert [e["args"]["s"] for e in events] == [f"item-{i}" for i in range(200)]

    out = tmp_path / "long.jsonl"
    res = run_instr("run", "-q", "-P", probes, "-s", "s", "-o", out, "--", prog, "longstr", 40)
    events, _ = read_jsonl(out)
    assert len(events) == 1
    assert events[0]["args"]["s"] == "abcdefghijklmnop"
    assert events[0]["args_status"] == {"s": "truncated"}

    out = tmp_path / "null.jsonl"
    res = run_instr("run", "-q", "-P", probes, "-s", "s", "-o", out, "--", prog, "nullstr")
    events, _ = read_jsonl(out)
    assert len(events) == 1 and events[0]["args"]["s"] is None

    out = tmp_path / "buf.jsonl"
    res = run_instr("run", "-q", "-P", probes, "-s", "b", "-o", out, "--", prog, "buf", 100)
    assert res.returncode == 0, res.stderr
    events, _ = read_jsonl(out)
    assert len(events) == 100
    for i, e in enumerate(events):
        n = i % 17
        assert e["args"]["n"] == n
        assert bytes.fromhex(e["args"]["data"]) == bytes((i + j) & 0xFF for j in range(n))


@pytest.mark.parametrize("tier", ["native", "js"])
@pytest.mark.parametrize("phases_", ["entry+exit", "entry"])
def test_sqlite_alone_takes_the_columnar_path_exactly(targets, tier, phases_, probe_file, tmp_path):
    """With SQLite as the only output, uniform batches go to it as columns: same rows."""
    text = ADD_SET.format(tier=tier)
    if phases_ == "entry":
        text = text.replace(', r: "retval:i64", d: duration', "") + "        on: [entry]\n"
    out = tmp_path / "run.db"
    res = run_instr("run", "-q", "-P", probe_file(text), "-s", "add", "-o", out,
                    "--", targets.path("calls"), "add", N)  # fmt: skip
    assert res.returncode == 0, res.stderr
    con = db(out)
    rows = dict(con.execute("SELECT phase, count(*) FROM events GROUP BY phase").fetchall())
    assert rows == ({"entry": N, "exit": N} if phases_ == "entry+exit" else {"entry": N})
    seqs = [s for (s,) in con.execute("SELECT seq FROM events ORDER BY seq")]
    assert seqs == list(range(1, len(seqs) + 1))
    a_sum, b_sum = con.execute(
        "SELECT sum(json_extract(args, '$.a')), sum(json_extract(args, '$.b'))"
        " FROM events WHERE phase='entry'"
    ).fetchone()
    assert (a_sum, b_sum) == (N * (N - 1) // 2, N * (N - 1))
    if phases_ == "entry+exit":
        ret_sum, durs = con.execute(
            "SELECT sum(retval), count(duration_ns) FROM events WHERE phase='exit'"
        ).fetchone()
        assert (ret_sum, durs) == (3 * N * (N - 1) // 2, N)
    (events,) = con.execute("SELECT events FROM runs").fetchone()
    assert events == len(seqs)


def test_a_million_two_integer_events_reach_sqlite_exactly(targets, probe_file, tmp_path):
    """The hot case of issue 19 at full size: 1M entry events of a two-integer native
    probe into SQLite alone (the columnar path), every one present, in order, with the
    values the target passed, and counts that agree with the target's own."""
    n = 1_000_000
    text = ADD_SET.format(tier="native").replace(', r: "retval:i64", d: duration', "")
    out = tmp_path / "million.db"
    res = run_instr("run", "-q", "-P", probe_file(text + "        on: [entry]\n"), "-s", "add",
                    "-o", out, "--", targets.path("calls"), "add", n)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert f"add calls={n} sum={3 * n * (n - 1) // 2}" in res.stdout
    con = db(out)
    got = con.execute(
        "SELECT count(*), count(DISTINCT seq), min(seq), max(seq),"
        " sum(json_extract(args, '$.a')), sum(json_extract(args, '$.b')),"
        " count(DISTINCT probe_id), count(DISTINCT phase) FROM events"
    ).fetchone()
    assert got == (n, n, 1, n, n * (n - 1) // 2, n * (n - 1), 1, 1)
    # in call order: seq and the captured argument rise together
    (disorder,) = con.execute(
        "SELECT count(*) FROM events WHERE json_extract(args, '$.a') != seq - 1"
    ).fetchone()
    assert disorder == 0
    run = con.execute("SELECT events, drops, lost_batches, ending_reason FROM runs").fetchone()
    assert run == (n, 0, 0, "exit")
    (probe_events,) = con.execute("SELECT events FROM probes").fetchone()
    assert probe_events == n
