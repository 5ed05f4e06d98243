"""instr profile against tests/targets/profile_split.c, whose CPU split is known by construction.

Each round of profile_split spends 3 units in hot_a, 1 in hot_b and 1 in
leaf_work under 25 frames of recurse: shares 60 / 20 / 20 %. Sampling is on
each thread's CPU time, so the busy loops of a loaded machine do not skew it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import TargetProcess, run_instr

from instr.profile.model import parse_folded, top

pytestmark = pytest.mark.frida

ROUNDS = 450  # about 4.5 s of CPU here (10 ms a round): ~900 samples at 199 Hz
UNIT = 2_000_000
DEPTH = 24  # RECURSE_DEPTH in profile_split.c: DEPTH + 1 frames of recurse
SHARES = {"hot_a": 60.0, "hot_b": 20.0, "leaf_work": 20.0}
TOLERANCE = 5.0  # points: > 3 standard deviations of a 60 % share over ~900 samples
# instr against perf: two independent estimates, each with its own sampling
# noise, and perf's period is not jittered: its rounds alias with the program's
# 10 ms rounds (measured: hot_b 13.7 % instead of 20 % in 1 of 6 perf runs;
# instr's worst of 6 was 1.2 points off). Its share of each function is
# compared with instr's within this bound; the accuracy check is TOLERANCE.
PERF_TOLERANCE = 10.0
MASK = (1 << 64) - 1
A = 6364136223846793005


def _spin(acc: int, n: int) -> int:
    """acc after n steps of acc = acc * A + 1 (mod 2^64), by squaring the affine map."""
    mul, add = A, 1
    while n:
        if n & 1:
            acc = (acc * mul + add) & MASK
        mul, add = (mul * mul) & MASK, (mul * add + add) & MASK
        n >>= 1
    return acc


def expected_sum(rounds: int, unit: int) -> int:
    per_round = _spin(1, 3 * unit) + _spin(2, unit) + _spin(3, unit) + DEPTH
    return (per_round * rounds) & MASK


def shares(stacks: Counter[tuple[str, ...]]) -> dict[str, float]:
    total = sum(stacks.values())
    return {r.name: 100.0 * r.self_samples / total for r in top(stacks) if r.name in SHARES}


def check_split(stacks: Counter[tuple[str, ...]], caller: str = "main") -> None:
    got = shares(stacks)
    for name, want in SHARES.items():
        assert abs(got.get(name, 0.0) - want) <= TOLERANCE, (name, got)
    # Every sample in leaf_work is under exactly DEPTH + 1 frames of recurse, under CALLER.
    for stack, _n in stacks.items():
        if stack[-1] == "leaf_work":
            i = stack.index(caller)
            assert stack[i + 1 :] == ("recurse",) * (DEPTH + 1) + ("leaf_work",), stack
        if stack[-1] in ("hot_a", "hot_b"):
            assert stack[-2] == caller, stack


def check_leaf_first(
    stacks: dict[tuple[str, ...], int], name: Callable[[str], str]
) -> Counter[str]:
    """``check_split`` for stacks written leaf first (``ustack()`` keys, ``count()
    by backtrace``), NAME taking a frame to its function; the samples per leaf."""
    rooted: Counter[tuple[str, ...]] = Counter()
    leaves: Counter[str] = Counter()
    for st, n in stacks.items():
        rooted[tuple(name(f) for f in reversed(st))] += n
        leaves[name(st[0])] += n
    check_split(rooted)
    return leaves


def _sig_caught(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return int(line.split()[1], 16)
    raise AssertionError("no SigCgt")


def test_spawned_split_matches_the_program_and_perf(targets, instr_bg, tmp_path: Path) -> None:
    folded, svg = tmp_path / "out.folded", tmp_path / "out.svg"
    prog = targets.path("profile_split")
    instr = instr_bg("profile", "-F", "199", "-o", folded, "-o", svg, "--", prog, ROUNDS)
    instr.wait_armed()
    assert instr.readline() == "ready"
    instr.send("")  # go
    assert instr.readline() == f"sum={expected_sum(ROUNDS, UNIT)}"
    assert instr.readline() == "done"
    instr.send("")  # the program exits
    done = instr.finish()
    assert done.returncode == 0, done.err
    stacks = parse_folded(folded.read_text())
    check_split(stacks)
    # One sample per 1/199 s of the thread's CPU time, as the program measured it
    # (its loop; the few ms before it are in the + 5).
    cpu_s = int(re.search(r"cpu_ns=(\d+)", done.err).group(1)) / 1e9  # type: ignore[union-attr]
    samples = sum(stacks.values())
    assert 0.9 * 199 * cpu_s <= samples <= 1.1 * 199 * cpu_s + 5, (samples, cpu_s)
    # The console table (main's own loop may be sampled too) and the summary
    assert re.search(r"^\s+\d+\.\d\s+100\.0\s+\d+\s+main$", done.out, re.M), done.out
    assert "100.0% unwound to the thread's first frame" in done.err, done.err
    # The SVG parses and names the hot functions with their counts
    root = ET.parse(svg).getroot()
    titles = [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}title")]
    for name in SHARES:
        n = sum(c for s, c in stacks.items() if s[-1] == name)
        assert any(t.startswith(f"{name} ({n} samples, ") for t in titles), (name, titles[:20])
    _compare_with_perf(prog, stacks, tmp_path)


def _compare_with_perf(prog: Path, ours: Counter[tuple[str, ...]], tmp_path: Path) -> None:
    perf = shutil.which("perf")
    if perf is None:
        pytest.skip("perf (Debian linux-perf) is not installed: instr's split was checked alone")
    data = tmp_path / "perf.data"
    rec = subprocess.run(
        [perf, "record", "-F", "199", "-g", "-e", "cpu-clock", "-o", data, "--", prog, str(ROUNDS)],
        input="",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if rec.returncode != 0:
        pytest.skip(f"perf record cannot run here: {rec.stderr.strip()[-300:]}")
    script = subprocess.run(
        [perf, "script", "-i", data, "-F", "ip,sym"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    leaves: Counter[tuple[str, ...]] = Counter()
    for block in script.stdout.strip().split("\n\n"):
        lines = block.strip().splitlines()
        if lines:
            leaves[(lines[0].split()[-1],)] += 1
    theirs = shares(leaves)
    mine = shares(ours)
    assert sum(leaves.values()) >= 400, leaves
    for name in SHARES:
        assert abs(theirs.get(name, 0.0) - mine[name]) <= PERF_TOLERANCE, (theirs, mine)


def test_attached_program_runs_on_correctly(targets, launch, instr_bg, tmp_path: Path) -> None:
    rounds = 300  # about 3 s of CPU: instr leaves half way through
    target: TargetProcess = launch(targets.path("profile_split", pie=False), rounds)
    folded = tmp_path / "attached.folded"
    instr = instr_bg("profile", "-p", target.pid, "-F", "199", "--duration", "1.5", "-o", folded)
    armed = instr.wait_armed()
    sig = int(re.search(r"signal (\d+)", armed).group(1))  # type: ignore[union-attr]
    assert _sig_caught(target.pid) >> (sig - 1) & 1, "the sampler's handler is installed"
    target.go()
    done = instr.finish()
    assert done.returncode == 0, done.err
    # instr has left: the program still runs, with the signal's disposition put back
    assert target.proc.poll() is None
    assert not _sig_caught(target.pid) >> (sig - 1) & 1
    assert target.readline() == f"sum={expected_sum(rounds, UNIT)}"
    assert target.readline() == "done"
    target.go()
    assert target.finish().returncode == 0
    stacks = parse_folded(folded.read_text())
    assert sum(stacks.values()) >= 100
    assert {s[-1] for s in stacks} >= set(SHARES)


def test_every_thread_is_sampled(targets, instr_bg, tmp_path: Path) -> None:
    folded = tmp_path / "threads.folded"
    rounds, threads = 150, 3  # ~4.5 s of CPU over three threads
    prog = targets.path("profile_split")
    instr = instr_bg("profile", "-F", "199", "-o", folded, "--", prog, rounds, UNIT, threads)
    instr.wait_armed()
    assert instr.readline() == "ready"
    instr.send("")
    assert instr.readline() == f"sum={expected_sum(rounds, UNIT) * threads & MASK}"
    assert instr.readline() == "done"
    instr.send("")
    done = instr.finish()
    assert done.returncode == 0, done.err
    m = re.search(r"(\d+) samples from (\d+) thread\(s\), 100\.0% unwound", done.err)
    assert m is not None, done.err
    assert int(m.group(2)) >= threads  # main may have been sampled while it started
    stacks = parse_folded(folded.read_text())
    check_split(stacks, caller="worker")


def test_ctrl_c_leaves_promptly_and_the_program_runs_on(targets, launch, instr_bg) -> None:
    rounds, threads = 400, 2  # busy for longer than the test takes
    target: TargetProcess = launch(targets.path("profile_split"), rounds, UNIT, threads)
    instr = instr_bg("profile", "-p", target.pid, "-F", "999")
    sig = int(re.search(r"signal (\d+)", instr.wait_armed()).group(1))  # type: ignore[union-attr]
    target.go()
    t0 = time.monotonic()
    instr.interrupt()
    done = instr.finish(timeout=30)
    took = time.monotonic() - t0
    assert done.returncode == 0, done.err
    assert "stopping" in done.err
    assert took < 5.0, took
    assert target.proc.poll() is None
    assert not _sig_caught(target.pid) >> (sig - 1) & 1
    target.proc.kill()


def test_cxx_names_are_demangled(tmp_path: Path) -> None:
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ is not installed: the C++ target cannot be built")
    if shutil.which("c++filt") is None:
        pytest.skip("c++filt (binutils) is not installed: names stay mangled (docs/profile.md)")
    exe = tmp_path / "profile_cxx"
    src = Path(__file__).resolve().parent.parent / "targets" / "profile_cxx.cc"
    subprocess.run([gxx, "-O1", "-g", "-o", exe, src], check=True, timeout=120)
    done = run_instr("profile", "-F", "199", "-o", tmp_path / "cxx.folded", "--", exe, "40")
    assert done.returncode == 0, done.stderr
    stacks = parse_folded((tmp_path / "cxx.folded").read_text())
    spin = "geo::Box<unsigned long>::spin(long)"
    rows = top(stacks)
    assert rows[0].name == spin, rows[:3]
    assert rows[0].self_samples >= 0.95 * sum(stacks.values()), rows[:3]  # main's loop is tiny
    assert f"  {spin}\n" in done.stdout, done.stdout


def test_off_cpu_samples_blocked_threads_in_known_shares(targets, instr_bg, tmp_path: Path) -> None:
    """profile_sleep blocks 30 ms in nap_a and 10 ms in nap_b a round: 3:1 of its
    blocked time, whatever the machine's load (the wait for a core after each
    wake-up is neither on- nor off-CPU)."""
    folded = tmp_path / "off.folded"
    rounds = 100  # 4 s blocked: ~800 samples at 199 Hz
    instr = instr_bg(
        "profile", "--off-cpu", "-F", "199", "-o", folded, "--", targets.path("profile_sleep"),
        rounds,
    )  # fmt: skip
    instr.wait_armed()
    assert instr.readline() == "ready"
    instr.send("")
    assert instr.readline() == "done"
    instr.send("")
    done = instr.finish()
    assert done.returncode == 0, done.err
    stacks = parse_folded(folded.read_text())
    blocked = {s: n for s, n in stacks.items() if s[-1] == "[off-cpu]"}
    naps = {name: sum(n for s, n in blocked.items() if name in s) for name in ("nap_a", "nap_b")}
    total = sum(naps.values())
    # 4 s at 199 Hz; the agent's timer may run late on a loaded machine, never early
    assert 0.6 * 199 * 4 <= total <= 1.1 * 199 * 4 + 5, naps
    assert abs(100.0 * naps["nap_a"] / total - 75.0) <= TOLERANCE, naps
    for stack in blocked:
        if "nap_a" in stack or "nap_b" in stack:
            assert stack[-2] == "clock_nanosleep", stack
    # --off-cpu keeps the on-CPU samples too. The naps' own CPU (entering and
    # leaving 200 sleeps, and the sampler's signal handler) is a few ms: at most a
    # few samples, each a stack in the program's code, never marked blocked.
    on_cpu = {s: n for s, n in stacks.items() if s not in blocked}
    assert sum(on_cpu.values()) <= 0.05 * total, on_cpu
    m = re.search(r"(\d+) samples \((\d+) off-CPU\) from 1 thread\(s\), 100\.0% unwound", done.err)
    assert m is not None, done.err
