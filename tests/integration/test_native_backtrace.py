"""Backtraces in the native tier: a frame-pointer walk in C where the hooked
function's module keeps frame pointers, the same walk in the JS tier (so both
give the same frames), and Frida's unwinder in JS where the module keeps none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import run_instr
from jsonl import read_jsonl

pytestmark = pytest.mark.frida

N = 200

SET = """
version: 1
sets:
  s:
    probes:
      - function: "{fn}"
        capture: {{i: "arg0:i64", bt: "backtrace({depth})"}}
        tier: {tier}
"""


def frames(events: list[dict[str, Any]]) -> list[tuple[int, list[str]]]:
    """(i, the frames' symbols): addresses move with ASLR between runs."""
    return [(e["args"]["i"], [f["symbol"] for f in e["args"]["bt"]]) for e in events]


def run(targets, probe_file, tmp_path: Path, tier: str, depth: int) -> list[dict[str, Any]]:
    out = tmp_path / f"{tier}-{depth}.jsonl"
    probes = probe_file(SET.format(fn="frames!target_bt", depth=depth, tier=tier))
    res = run_instr("run", "-q", "-P", probes, "-s", "s", "-o", out,
                    "--", targets.path("frames"), "frames", N)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert f"frames calls={N} sum={N * (N - 1) // 2}" in res.stdout
    events, summary = read_jsonl(out)
    assert summary["probes"][0]["tier"] == tier
    assert summary["drops"] == 0
    # natively, the probe is alone on a function whose start is straight-line:
    # a replaceFast entry stub passes the return address and rbp to the walk
    assert ("replaceFast" in (summary["probes"][0]["reason"] or "")) == (tier == "native")
    return events


@pytest.mark.parametrize("depth", [4, 8])
def test_both_tiers_walk_the_same_frames(targets, probe_file, tmp_path: Path, depth: int):
    native = frames(run(targets, probe_file, tmp_path, "native", depth))
    js = frames(run(targets, probe_file, tmp_path, "js", depth))
    assert native == js
    assert [i for i, _ in native] == list(range(N))
    for _, syms in native:
        # the chain, innermost first, each a return address inside its caller
        names = [s.split("+")[0] for s in syms[:4]]
        assert names == ["frames!chain_c", "frames!chain_b", "frames!chain_a", "frames!main"]
        assert 4 <= len(syms) <= depth
    assert len({tuple(s) for _, s in native}) == 1  # one call path


def test_auto_tier_walks_frame_pointers_in_c(targets, probe_file, tmp_path: Path):
    out = tmp_path / "auto.jsonl"
    probes = probe_file(SET.format(fn="frames!target_bt", depth=4, tier="auto"))
    res = run_instr("run", "-q", "-P", probes, "-s", "s", "-o", out,
                    "--", targets.path("frames"), "frames", 10)  # fmt: skip
    assert res.returncode == 0, res.stderr
    _, summary = read_jsonl(out)
    assert summary["probes"][0]["tier"] == "native"


def test_without_frame_pointers_frida_unwinds_in_js(targets, probe_file, tmp_path: Path):
    # tests/targets are built -O1 without frame pointers, but for frames and leaks
    out = tmp_path / "auto.jsonl"
    probes = probe_file(SET.format(fn="strings!target_sp", depth=4, tier="auto"))
    res = run_instr("run", "-q", "-P", probes, "-s", "s", "-o", out,
                    "--", targets.path("strings"), "cases")  # fmt: skip
    assert res.returncode == 0, res.stderr
    events, summary = read_jsonl(out)
    assert summary["probes"][0]["tier"] == "js"
    assert len(events) == 19
    assert all(e["args"]["bt"][0]["symbol"].startswith("strings!run_cases+") for e in events)

    probes = probe_file(SET.format(fn="strings!target_sp", depth=4, tier="native"))
    res = run_instr("run", "-q", "-P", probes, "-s", "s", "-o", out,
                    "--", targets.path("strings"), "cases")  # fmt: skip
    assert res.returncode != 0
    assert "keeps no frame pointers" in res.stderr
