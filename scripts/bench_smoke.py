#!/usr/bin/env python3
"""Every benchmark script, once, with tiny sizes: a smoke test that they still run.

CI runs this (``.ci/run``) so the benchmark scripts do not rot: each must exit
0 and print no "failed" row for instr. Tools that are not installed here print
an "unavailable" row (with the reason) and are fine. A comparison tool's own
failure is printed and not fatal: raw Frida's detach from a program calling
a hooked malloc once left it hung at exit in a CI run under load (the very
leave instr makes safe, docs/leaving.md); that says nothing about the script.
No timing is compared.

    python scripts/bench_smoke.py            # all scripts, ~30 s here
    python scripts/bench_smoke.py bench_aggs # a subset
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# script -> tiny arguments (one timed round, a few hundred calls)
SCRIPTS: dict[str, list[str]] = {
    "bench.py": ["--calls", "300", "--slow-calls", "30", "--rounds", "1", "--timeout", "60"],
    "bench_aggs.py": ["--calls", "2000", "--rounds", "1", "--timeout", "60"],
    "bench_fast.py": ["--calls", "2000", "--rounds", "1", "--timeout", "60"],
    "bench_mem.py": ["--pairs", "2000", "--slow-pairs", "300", "--rounds", "1"],
    "bench_profile.py": ["--work", "5", "--repeat", "1"],
    "bench_sqlite.py": ["--events", "20000", "--rounds", "1", "--timeout", "60"],
    "bench_static.py": ["--calls", "200", "--rounds", "1", "--timeout", "60"],
}
FAILED = re.compile(r"\bfailed\b", re.IGNORECASE)


def run(script: str, args: list[str]) -> list[str]:
    """Run one script; return the problems found (empty: it passed)."""
    t0 = time.monotonic()
    try:
        res = subprocess.run(
            [sys.executable, str(HERE / script), *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return [f"{script}: did not finish within 300 s"]
    dt = time.monotonic() - t0
    out = res.stdout.splitlines()
    failed = [line.strip() for line in out if FAILED.search(line)]
    problems = [f"{script}: {line}" for line in failed if line.startswith(("instr", "baseline"))]
    for line in failed:
        if not line.startswith(("instr", "baseline")):
            print(f"{script}: (a comparison tool, not fatal) {line}", flush=True)
    if res.returncode != 0:
        tail = " | ".join(res.stderr.strip().splitlines()[-5:])
        problems.append(f"{script}: exit status {res.returncode}: {tail}")
    if not out:
        problems.append(f"{script}: printed nothing")
    unavailable = sum("unavailable" in line for line in out)
    print(f"{script}: {len(out)} lines, {unavailable} unavailable tool(s), {dt:.1f} s", flush=True)
    return problems


def main(argv: list[str]) -> int:
    names = [a if a.endswith(".py") else f"{a}.py" for a in argv] or list(SCRIPTS)
    unknown = [n for n in names if n not in SCRIPTS]
    if unknown:
        print(f"unknown script(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    problems: list[str] = []
    for name in names:
        problems += run(name, SCRIPTS[name])
    for p in problems:
        print(f"FAILED {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
