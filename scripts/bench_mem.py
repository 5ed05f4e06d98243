"""Memory tracking overhead: instr mem vs valgrind --leak-check=full vs heaptrack.

One malloc-heavy program (tests/targets/memloop.c: malloc/free pairs from a
call chain four deep), the same binary for every tool, run in one go. The
target times its own loop (CLOCK_MONOTONIC), so start-up and the final report
are left out of "per call"; wall time, start-up included, is shown too.

    python scripts/bench_mem.py [--pairs N] [--rounds R]

Per call = (ns per pair under the tool - ns per pair native) / 2 (a pair is
one malloc and one free). Missing tools get an "unavailable" row; a tool that
is installed but fails gets a "failed" row.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "tests" / "targets" / "memloop.c"
RX = re.compile(r"ns_per_pair=([\d.]+) pairs=(\d+)")


def build(out: Path, frame_pointers: bool) -> Path:
    flags = ["-fno-omit-frame-pointer"] if frame_pointers else []
    cmd = ["gcc", "-O1", "-g", *flags, "-I", str(SRC.parent), "-o", str(out), str(SRC)]
    subprocess.run(cmd, check=True)
    return out


def measure(argv: list[str], cwd: Path, timeout: float) -> tuple[float, float]:
    """(ns per pair from the target's clock, wall seconds)."""
    t0 = time.monotonic()
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
    wall = time.monotonic() - t0
    m = RX.search(res.stdout)
    if res.returncode != 0 or m is None:
        raise RuntimeError(f"{argv[0]} failed ({res.returncode}): {res.stderr[-500:]}")
    return float(m.group(1)), wall


def tools(exe: Path, pairs: int, workdir: Path) -> dict[str, list[str] | None]:
    py = sys.executable
    hp = shutil.which("heaptrack")
    vg = shutil.which("valgrind")
    return {
        "native": [str(exe), str(pairs)],
        "instr mem": [py, "-m", "instr", "mem", "-q", "--", str(exe), str(pairs)],
        "valgrind --leak-check=full": None
        if vg is None
        else [vg, "--leak-check=full", str(exe), str(pairs)],
        "heaptrack": None
        if hp is None
        else [hp, "-o", str(workdir / "heaptrack.out"), str(exe), str(pairs)],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=1_000_000)
    ap.add_argument("--slow-pairs", type=int, default=200_000, help="pairs under valgrind")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-frame-pointers", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        exe = build(work / "memloop", not args.no_frame_pointers)
        rows: dict[str, tuple[float, float, int] | str] = {}
        for name, base in tools(exe, args.pairs, work).items():
            if base is None:
                rows[name] = "unavailable (not installed)"
                continue
            pairs = args.slow_pairs if name.startswith("valgrind") else args.pairs
            cmd = [*base[:-1], str(pairs)]
            try:
                runs = [measure(cmd, work, 600) for _ in range(args.rounds)]
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                # installed but broken: a failure, not a missing tool
                rows[name] = f"failed ({e})"
                continue
            ns = statistics.median(r[0] for r in runs)
            wall = statistics.median(r[1] for r in runs)
            rows[name] = (ns, wall, pairs)
    native = rows.get("native")
    base_ns = native[0] if isinstance(native, tuple) else 0.0
    instr = rows.get("instr mem")
    instr_call = (instr[0] - base_ns) / 2 if isinstance(instr, tuple) else None
    fp = "without" if args.no_frame_pointers else "with"
    print(f"memloop, {fp} frame pointers, median of {args.rounds} rounds")
    print(f"{'tool':<28} {'ns/pair':>10} {'overhead/call':>14} {'x instr':>8} {'wall s':>8}")
    for name, row in rows.items():
        if isinstance(row, str):
            print(f"{name:<28} {row}")
            continue
        ns, wall, pairs = row
        per_call = (ns - base_ns) / 2
        ratio = (
            "" if instr_call in (None, 0) or name == "native" else f"{per_call / instr_call:.1f}"
        )
        scaled = wall * args.pairs / pairs
        print(
            f"{name:<28} {ns:>10.1f} {per_call:>12.1f}ns {ratio:>8} {scaled:>8.2f}"
            + ("" if pairs == args.pairs else f"  (wall scaled from {pairs:,} pairs)")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
