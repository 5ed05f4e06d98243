"""Sampling overhead: instr profile (and perf record -g) against the bare program.

One CPU-bound program (tests/targets/profile_split.c), the same binary for
every tool; ``instr profile -p`` attaches to it once it runs (and leaves it
running after its work, as the do-no-harm rules want). The program times
its own work, excluding start-up and the tool's end: the thread's CPU time
(CLOCK_THREAD_CPUTIME_ID: includes the time its signal handler takes, not
the time of the agent's thread) and the wall time (CLOCK_MONOTONIC: includes anything that takes the CPU from it,
so it is noisy on a loaded machine). Tools run in turn, round after round,
so drift in the machine's load is shared; medians are shown.

    python scripts/bench_profile.py [--work ROUNDS] [--repeat R] [--hz 99]

Overhead = time per round under the tool / time per round bare - 1.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "tests" / "targets" / "profile_split.c"
RX = re.compile(r"cpu_ns=(\d+) wall_ns=(\d+)")


def build(out: Path) -> Path:
    cmd = ["gcc", "-O1", "-g", "-I", str(SRC.parent), "-o", str(out), str(SRC)]
    subprocess.run(cmd, check=True)
    return out


def measure(argv: list[str], cwd: Path, timeout: float) -> tuple[int, int]:
    """(cpu ns, wall ns) of the program's rounds."""
    res = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    m = RX.search(res.stderr)
    if res.returncode != 0 or m is None:
        raise RuntimeError(f"{argv[0]} failed ({res.returncode}): {res.stderr[-500:]}")
    return int(m.group(1)), int(m.group(2))


def measure_attached(
    prog: list[str], tool: list[str], cwd: Path, timeout: float
) -> tuple[int, int]:
    """(cpu ns, wall ns) of the rounds of a program that runs first, with ``tool``
    (``instr profile -p PID ...``) attached once it waits for its "go" line and
    stopped (Ctrl-C) after its work, while it still runs: as a user profiles a
    running service."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    target = subprocess.Popen(
        prog, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd=cwd,
    )  # fmt: skip
    assert target.stdin is not None and target.stdout is not None
    profiler = None
    try:
        if target.stdout.readline().strip() != "ready":
            raise RuntimeError("the program did not start")
        argv = [*tool, "-p", str(target.pid)]
        profiler = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, cwd=cwd, env=env,
        )  # fmt: skip
        assert profiler.stderr is not None
        status = ""
        while "armed" not in status:
            status = profiler.stderr.readline()
            if not status:
                raise RuntimeError(f"{argv[0]} did not arm ({profiler.wait(timeout)})")
        target.stdin.write("\n")  # go
        target.stdin.flush()
        lines = [target.stdout.readline().strip() for _ in range(2)]
        if lines[1] != "done":
            raise RuntimeError(f"the program's work did not end: {lines}")
        profiler.send_signal(signal.SIGINT)
        rest = profiler.communicate(timeout=timeout)[1]
        if profiler.returncode != 0:
            raise RuntimeError(f"instr profile -p failed ({profiler.returncode}): {rest[-300:]}")
        if target.poll() is not None:
            raise RuntimeError(f"the program died under the profiler ({target.returncode})")
        _out, err = target.communicate("\n", timeout=timeout)
    finally:
        for p in (profiler, target):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    m = RX.search(err)
    if target.returncode != 0 or m is None:
        raise RuntimeError(f"the program failed ({target.returncode}): {err[-300:]}")
    return int(m.group(1)), int(m.group(2))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=int, default=300, help="rounds of work (~10 ms each here)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--hz", type=int, default=99)
    args = ap.parse_args(argv)
    perf = shutil.which("perf")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        exe = build(work / "profile_split")
        prog = [str(exe), str(args.work)]
        hz = str(args.hz)
        instr = [sys.executable, "-m", "instr", "profile", "-q", "-F", hz]
        record = [perf or "perf", "record", "-q", "-F", hz, "-g", "-e", "cpu-clock"]
        tools: dict[str, list[str] | None] = {
            "baseline": prog,
            f"instr profile -F {hz}": [*instr, "-o", str(work / "out.folded"), "--", *prog],
            # without -q: its "armed" line says when to start the work
            f"instr profile -F {hz} -p": [
                *(a for a in instr if a != "-q"),
                "-o",
                str(work / "attached.folded"),
            ],
            f"perf record -F {hz} -g": None
            if perf is None
            else [*record, "-o", str(work / "perf.data"), "--", *prog],
        }
        runs: dict[str, list[tuple[int, int]]] = {name: [] for name in tools}
        failed: dict[str, str] = {}
        for _ in range(args.repeat):
            for name, cmd in tools.items():
                if cmd is None or name in failed:
                    continue
                try:
                    if name.endswith(" -p"):
                        runs[name].append(measure_attached(prog, cmd, work, 600))
                    else:
                        runs[name].append(measure(cmd, work, 600))
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    failed[name] = str(e)
    base = runs["baseline"]
    if not base:
        print(f"baseline failed ({failed.get('baseline')})")
        return 1
    cpu0 = statistics.median(r[0] for r in base)
    wall0 = statistics.median(r[1] for r in base)
    print(f"profile_split, {args.work} rounds, median of {args.repeat} runs")
    print(f"{'tool':<26} {'cpu ms':>9} {'cpu overhead':>13} {'wall ms':>9} {'wall overhead':>14}")
    for name, cmd in tools.items():
        if cmd is None:
            print(f"{name:<26} unavailable (not installed)")
            continue
        if name in failed:
            print(f"{name:<26} failed ({failed[name]})")
            continue
        cpu = statistics.median(r[0] for r in runs[name])
        wall = statistics.median(r[1] for r in runs[name])
        print(
            f"{name:<26} {cpu / 1e6:>9.1f} {100 * (cpu / cpu0 - 1):>12.2f}%"
            f" {wall / 1e6:>9.1f} {100 * (wall / wall0 - 1):>13.2f}%"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
