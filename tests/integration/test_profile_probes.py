"""Profile probes of probe sets (``profile: 199``) on instr profile's sampler,
against tests/targets/profile_split.c (shares 60 / 20 / 20 % by construction,
see test_profile.py), through the Python API: a ``Session`` attached to the
program, its agent running the sampler (``ProfilePoints``), in a process of
its own (profile_probes_run.py), as ``instr`` runs. The sampler counts
each thread's CPU time, so a loaded machine does not skew the split; the
program waits for a line before and after its work, so nothing here sleeps.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from helpers import Proc, instr_env
from test_profile import SHARES, TOLERANCE, UNIT, check_leaf_first, expected_sum

from instr.probes import load_text

pytestmark = pytest.mark.frida

DRIVER = Path(__file__).with_name("profile_probes_run.py")
ROUNDS = 450  # ~4.5 s of CPU: ~900 samples at 199 Hz, as test_profile.py

SETS = """\
version: 1
sets:
  cpu:
    probes:
      - profile: 199
        aggregate:
          stacks: count() by backtrace
          leaf: count() by probefunc
          mods: count() by module, pid
          threads: count() by tid
      - profile: "hz:99"
        name: half
        aggregate:
          n: count()
"""


def func(frame: str) -> str:
    """``profile_split!hot_a+0x1f`` -> ``hot_a``"""
    return frame.split("!", 1)[-1].split("+0x", 1)[0]


def test_profile_probes_count_the_split(targets, launch, tmp_path: Path) -> None:
    (tmp_path / "sets.yaml").write_text(SETS)
    table = load_text(SETS, "sets.yaml").compile(["cpu"])
    assert table.plan()["probes"] == []  # nothing for the probe agent: the sampler's
    target = launch(targets.path("profile_split"), ROUNDS)
    driver = Proc(
        [sys.executable, str(DRIVER), str(tmp_path / "sets.yaml"), "cpu", str(target.pid)],
        env=instr_env(),
    )
    armed = driver.err.expect(re.compile(r"armed"), 60)
    assert (
        armed.endswith('"cpu/profile-199", "armed", 1], ["cpu/half", "armed", 1]]')
        and "at 199 Hz" in armed
    ), armed  # one sampler, at the highest rate
    target.go()
    assert target.readline() == f"sum={expected_sum(ROUNDS, UNIT)}"
    assert target.readline() == "done"  # the work is over: every sample is taken
    ran = driver.finish(timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert target.proc.poll() is None  # attached: it keeps running
    target.go()
    done = target.finish()
    assert done.returncode == 0
    got = json.loads(ran.stdout[-1])
    tables = {t["name"]: t for t in got["tables"]}
    assert sorted(tables) == ["cpu/leaf", "cpu/mods", "cpu/n", "cpu/stacks", "cpu/threads"]
    assert {t["tier"] for t in tables.values()} == {"host"}

    stacks = {tuple(keys[0]): n for keys, n in tables["cpu/stacks"]["rows"]}
    total = sum(stacks.values())
    assert total == got["samples"] and got["drops"] == 0
    cpu_s = int(re.search(r"cpu_ns=(\d+)", "\n".join(done.stderr)).group(1)) / 1e9  # type: ignore[union-attr]
    assert 0.9 * 199 * cpu_s <= total <= 1.1 * 199 * cpu_s + 5, (total, cpu_s)
    leaves = check_leaf_first(stacks, func)

    # the same samples by leaf function: exactly the stacks' leaves
    funcs = {func(keys[0]): n for keys, n in tables["cpu/leaf"]["rows"]}
    assert {n: funcs[n] for n in SHARES} == {n: leaves[n] for n in SHARES}
    assert tables["cpu/leaf"]["key_names"] == ["probefunc"]
    mods = {tuple(keys): n for keys, n in tables["cpu/mods"]["rows"]}
    assert sum(mods.values()) == total and mods[("profile_split", target.pid)] >= sum(
        leaves[n] for n in SHARES
    )
    assert tables["cpu/threads"]["rows"] == [[[target.pid], total]]
    # the 99 Hz probe: every other sample of the 199 Hz sampler, spread evenly
    ((keys, half),) = tables["cpu/n"]["rows"]
    assert keys == [] and abs(half - total * 99 / 199) <= 1, (half, total)


def test_instr_run_arms_a_sets_profile_probe_on_a_spawned_program(
    targets, instr_bg, tmp_path
) -> None:
    """The same through the CLI: ``instr run -P`` spawns the program, the session
    starts the sampler, and the final table (JSON Lines) has the split."""
    sets = tmp_path / "sets.yaml"
    sets.write_text(
        "version: 1\nsets:\n  cpu:\n    probes:\n      - profile: 199\n"
        "        aggregate:\n          leaf: count() by probefunc\n"
    )
    out = tmp_path / "out.jsonl"
    instr = instr_bg(
        "run", "-P", sets, "-s", "cpu", "-o", out, "--", targets.path("profile_split"), ROUNDS
    )
    instr.wait_armed(timeout=60)
    assert instr.readline() == "ready"
    instr.send("")
    assert instr.readline() == f"sum={expected_sum(ROUNDS, UNIT)}"
    assert instr.readline() == "done"
    instr.send("")
    done = instr.finish(timeout=60)
    assert done.returncode == 0, done.err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    leaf = {
        func(r["keys"]["probefunc"]): r["count"]
        for r in rows
        if r["type"] == "aggregation" and r["name"] == "cpu/leaf" and r["final"]
    }
    total = sum(leaf.values())
    cpu_s = int(re.search(r"cpu_ns=(\d+)", done.err).group(1)) / 1e9  # type: ignore[union-attr]
    assert 0.9 * 199 * cpu_s <= total <= 1.1 * 199 * cpu_s + 5, (total, cpu_s)
    for name, want in SHARES.items():
        assert abs(100.0 * leaf.get(name, 0) / total - want) <= TOLERANCE, (name, leaf, total)
