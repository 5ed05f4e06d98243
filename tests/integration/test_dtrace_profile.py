"""`instr dtrace` profile-N clauses on instr profile's sampler, against
tests/targets/profile_split.c (shares 60 / 20 / 20 % by construction, see
test_profile.py). The sampler counts each thread's CPU time, so a loaded
machine does not skew the split; the program waits for a line before and
after its work, so nothing here sleeps to synchronise.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from helpers import run_instr
from test_profile import SHARES, TOLERANCE, UNIT, _sig_caught, check_leaf_first, expected_sum

pytestmark = pytest.mark.frida

ROUNDS = 450  # ~4.5 s of CPU: ~900 samples at 199 Hz, as test_profile.py

PROGRAM = """
profile-199 { @[ustack()] = count(); }
profile-199 /pid == $target/ { @t[tid] = count(); @n = count(); }
profile:hz:199 { @f[ufunc(arg1)] = count(); }
profile-99 /execname != "nothing"/ { @half = count(); }
"""


def parse_stacks(text: str) -> Counter[tuple[str, ...]]:
    """DTrace's stack aggregation: frames one a line (indented), then the count."""
    stacks: Counter[tuple[str, ...]] = Counter()
    frames: list[str] = []
    for line in text.splitlines():
        m = re.fullmatch(r"\s+(\d+)", line)
        if m:  # a stack's count (or an unkeyed aggregation's value)
            if frames:
                stacks[tuple(frames)] += int(m.group(1))
            frames = []
        elif re.fullmatch(r" {14}\S+", line):  # one frame: a single word
            # (not "  719   917": a short tid's @t[tid] row, aligned the same)
            frames.append(line.strip())
    return stacks


def func(frame: str) -> str:
    """``module`symbol+0x1f`` -> ``symbol``"""
    return frame.split("`", 1)[-1].split("+0x", 1)[0]


def test_profile_clauses_count_the_split(targets, instr_bg, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    prog = targets.path("profile_split")
    instr = instr_bg("dtrace", "-o", out, "-n", PROGRAM, "-c", f"{prog} {ROUNDS}")
    armed = instr.wait_armed()
    assert "at 199 Hz" in armed, armed  # one sampler, at the highest rate
    assert instr.readline() == "ready"
    instr.send("")  # go
    assert instr.readline() == f"sum={expected_sum(ROUNDS, UNIT)}"
    assert instr.readline() == "done"
    instr.send("")  # the program exits
    done = instr.finish()
    assert done.returncode == 0, done.err
    text = out.read_text()

    # @[ustack()]: leaf-first stacks, sorted ascending by count as DTrace prints them
    stacks = parse_stacks(text.strip("\n").split("\n\n")[0])  # the first table: @[ustack()]
    counts = list(stacks.values())
    assert counts == sorted(counts)
    total = sum(stacks.values())
    cpu_s = int(re.search(r"cpu_ns=(\d+)", done.err).group(1)) / 1e9  # type: ignore[union-attr]
    assert 0.9 * 199 * cpu_s <= total <= 1.1 * 199 * cpu_s + 5, (total, cpu_s)
    leaves = check_leaf_first(stacks, func)

    # the other tables: every sample once per clause at 199 Hz, half of them at 99 Hz
    blocks = text.strip().split("\n\n")
    tids = [line.split() for line in blocks[1].splitlines()]
    assert len(tids) == 1 and int(tids[0][1]) == total, blocks[1]  # one thread: main
    assert int(blocks[2].strip()) == total, blocks[2]  # @n
    funcs = {m.group(1): int(m.group(2)) for m in re.finditer(r"`(\w+)\s+(\d+)$", blocks[3], re.M)}
    for name, want in SHARES.items():
        assert abs(100.0 * funcs[name] / total - want) <= TOLERANCE, (name, funcs)
        assert funcs[name] == leaves[name]  # the same samples, keyed by ufunc(arg1)
    assert abs(int(blocks[4].strip()) - total * 99 / 199) <= 1, (blocks[4], total)
    assert re.search(rf"profile: {total} samples at 199 Hz", done.err), done.err


def test_attached_threads_and_the_leave(targets, launch, instr_bg, tmp_path: Path) -> None:
    """-p: every thread is sampled, the split holds per leaf (ustack(1)), and Ctrl-C
    leaves the program running with the sampler's signal disposition put back."""
    rounds, threads = 150, 3  # ~4.5 s of CPU over three threads
    target = launch(targets.path("profile_split"), rounds, UNIT, threads)
    out = tmp_path / "out.txt"
    program = "profile-199 { @[tid] = count(); @leaf[ustack(1)] = count(); }"
    instr = instr_bg("dtrace", "-o", out, "-n", program, "-p", target.pid)
    armed = instr.wait_armed()
    sig = int(re.search(r"signal (\d+)", armed).group(1))  # type: ignore[union-attr]
    assert _sig_caught(target.pid) >> (sig - 1) & 1, "the sampler's handler is installed"
    target.go()
    assert target.readline() == f"sum={expected_sum(rounds, UNIT) * threads & (1 << 64) - 1}"
    assert target.readline() == "done"  # the work is over: every sample is taken
    instr.interrupt()
    done = instr.finish(timeout=30)
    assert done.returncode == 0, done.err
    assert target.proc.poll() is None
    assert not _sig_caught(target.pid) >> (sig - 1) & 1
    target.go()
    assert target.finish().returncode == 0
    blocks = out.read_text().strip().split("\n\n")
    per_tid = {int(t): int(n) for t, n in (line.split() for line in blocks[0].splitlines())}
    workers = sorted(per_tid.values())[-threads:]
    assert len(per_tid) >= threads, per_tid  # main may be sampled while it starts them
    total = sum(per_tid.values())
    assert min(workers) >= total / threads * 0.7, per_tid  # the same work in each
    leaves = Counter[str]()
    for st, n in parse_stacks(blocks[1]).items():
        assert len(st) == 1, st
        leaves[func(st[0])] += n
    assert sum(leaves.values()) == total
    for name, want in SHARES.items():
        assert abs(100.0 * leaves[name] / total - want) <= TOLERANCE, (name, leaves, total)


def test_list_shows_the_profile_probe(targets) -> None:
    prog = targets.path("profile_split")
    res = run_instr("dtrace", "-l", "-n", "profile-997 { @ = count(); }", "-c", f"{prog} 1")
    assert res.returncode == 0, res.stderr
    assert [" ".join(line.split()) for line in res.stdout.splitlines()] == [
        "ID PROVIDER MODULE FUNCTION NAME",
        "1 profile profile-997",
    ]
