"""A probe set written in D, run by `instr run` on tests/targets/oneliners.c (exact:
see the file): aggregations in the target and events, as the YAML probes would give."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import Targets, run_instr
from jsonl import read_jsonl

N = 30
SET = """\
version: 1
sets:
  d:
    dtrace: |
      pid$target::ol_add:entry /arg0 >= 10/ { @calls = count(); @big = sum(arg1); }
      pid$target::ol_alloc:entry { @[arg0] = count(); }
      pid$target::ol_neg:entry { }
  f:
    dtrace_file: names.d
"""


def test_run_a_d_set(targets: Targets, tmp_path: Path) -> None:
    (tmp_path / "sets.yaml").write_text(SET)
    (tmp_path / "names.d").write_text(
        "pid$target::ol_name:entry\n{\n  @n[copyinstr(arg0)] = count();\n}\n"
    )
    out = tmp_path / "run.jsonl"
    prog = targets.path("oneliners")
    res = run_instr(
        "run", "-q", "-P", tmp_path / "sets.yaml", "-s", "d", "-s", "f", "-o", out, "--", prog, N
    )
    assert res.returncode == 0, res.stderr
    events, summary = read_jsonl(out)
    # ol_neg(i) for i % 3 == 0: an event per call with the default captures (none)
    assert [e["probe"] for e in events] == ["d/c3"] * len(range(0, N, 3))
    aggs: dict[str, dict[str, int]] = {}
    for line in out.read_text().splitlines():
        obj = json.loads(line)
        if obj["type"] == "aggregation":
            key = ",".join(str(v) for v in obj["keys"].values())
            aggs.setdefault(obj["name"], {})[key] = obj["value"]
    assert aggs == {
        "d/calls": {"": N - 10},
        "d/big": {"": sum(2 * i for i in range(10, N))},
        "d/agg": {"16": 8, "32": 8, "64": 7, "128": 7},
        "f/n": {"alpha": 10, "beta": 10, "gamma": 10},
    }
    assert summary["drops"] == 0
