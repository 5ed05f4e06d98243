"""The aggregation CLI: check --explain, trace --agg, and their errors."""

from __future__ import annotations

from helpers import run_instr

SET = """
version: 1
sets:
  m:
    probes:
      - function: "libc.so*!malloc"
        capture: {size: arg0:size_t}
        aggregate:
          bytes: sum(size) by caller
      - function: "calls!target_add"
        capture: {who: arg0:cstr}
        aggregate:
          n: count() by who
      - function: "calls!target_add"
        capture: {a: arg0:i64, r: retval:i64}
        where: "a % 2 == 0"
        aggregate:
          lat: lquantize(r, 0, 100, 10) by probefunc
"""


def test_check_explain_names_each_tier_and_why(probe_file):
    path = probe_file(SET)
    res = run_instr("check", "--explain", path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        f"{path}: ok (1 set, 3 probes)",
        "m/malloc  (libc.so*!malloc)",
        "  events: none: emit: false",
        "  aggregations: fast (compiled C): Interceptor.replaceFast on the first site "
        "(malloc takes 1 integer argument(s)), native Interceptor.attach on others, when "
        "another probe hooks it, or where the function's first instructions leave no room for "
        "replaceFast's jump (known when armed: the run's probe table says so)",
        "    bytes = sum(size) by caller  [updated at entry, max 4096 keys]",
        "m/target_add  (calls!target_add)",
        "  events: none: emit: false",
        "  aggregations: js: the cstr 'who' is a key",
        "    n = count() by who  [updated at entry, max 4096 keys]",
        "m/target_add-2  (calls!target_add)",
        "  events: none: emit: false",
        "  aggregations: fast (compiled C): native Interceptor.attach (signature not known "
        "to be integer-only, so no replaceFast)",
        "    lat = lquantize(r, 0, 100, 10) by probefunc  [updated at exit, max 4096 keys]",
    ]


def test_bad_aggregations_point_at_the_spec(probe_file):
    path = probe_file(SET.replace("sum(size) by caller", "summ(size) by callr"))
    res = run_instr("check", path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.splitlines() == [
        f"{path}:8:18: error: unknown aggregating function 'summ'",
        "  hint: did you mean 'sum'?",
    ]
    path = probe_file(SET.replace("sum(size) by caller", "sum(size) by callr"))
    res = run_instr("check", path)
    assert res.stderr.splitlines() == [
        f"{path}:8:31: error: unknown capture 'callr' in aggregation 'bytes'",
        "  hint: did you mean 'caller'?",
    ]
    path = probe_file(SET.replace("sum(size) by caller", "sum(size"))
    res = run_instr("check", path)
    assert res.stderr.splitlines() == [f"{path}:8:26: error: aggregation ends early: expected ')'"]


def test_trace_agg_errors_are_short(targets):
    prog = str(targets.path("calls"))
    res = run_instr("trace", "-i", "calls!target_add", "--agg", "n=count(", "--", prog)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "bad --agg 'n=count(': aggregation ends early: expected ')'" in res.stderr
    res = run_instr("trace", "-i", "calls!target_add", "--agg", "nocount", "--", prog)
    assert "bad --agg 'nocount'" in res.stderr and "write NAME=SPEC" in res.stderr
    res = run_instr("trace", "-i", "calls!target_add", "--agg", "s=sum(size)", "--", prog)
    assert res.returncode == 2
    assert "bad --agg: unknown capture 'size' in aggregation 's'" in res.stderr
