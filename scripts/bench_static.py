#!/usr/bin/env python3
"""Per-call cost of counting a statically linked program's system calls:
``instr syscalls --complete -c`` (seccomp user notification, the only mode
that works on static programs) against strace, on the write() loop of
tests/targets/bench.c built with ``gcc -static``.

Each tool spawns its own copy of the target; the harness drives a warm-up
round and ``--rounds`` timed rounds of 1-byte writes to /dev/null through the
target's stdin, and the target times its own loop. Overhead = median traced
ns/call - median untraced ns/call; ``vs strace`` = strace -c's overhead over
this row's (so 3x means three times cheaper than strace -c).

    python scripts/bench_static.py
    python scripts/bench_static.py --calls 50000 --rounds 5

A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from bench_common import Ctx, Measured, Unavailable, drive, measured, need  # noqa: E402
from helpers import REPO, Proc, instr_argv, instr_env  # noqa: E402


def build(out: Path) -> None:
    src = REPO / "tests" / "targets" / "bench.c"
    cmd = ["gcc", "-static", "-O1", "-I", str(src.parent), "-o", str(out), str(src)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"bench_static: cannot build a static target: {res.stderr.strip()}")


def summary_calls(lines: list[str], name: str) -> int | None:
    for ln in lines:
        parts = ln.split()
        if len(parts) >= 5 and parts[-1] == name:
            return int(parts[3])
    return None


def traced(ctx: Ctx, prefix: list[str], calls: int, table: Path | None = None) -> Measured:
    """Spawn the target under ``prefix``; the -c table comes on stdout or in ``table``."""
    with Proc([*prefix, str(ctx.bench)], env=instr_env()) as p:
        if p.readline(ctx.timeout) != "ready":
            raise Unavailable(f"the target did not start: {p.err.rest(5)[-3:]}")
        d = drive(p, ctx, "wloop", calls)
        p.send("quit")
        lines = p.finish(ctx.timeout).stdout
    if table is not None:
        lines = table.read_text().splitlines()
    writes = summary_calls(lines, "write")
    return measured("wloop", calls, d, writes, f"writes counted {writes} of {d.total_calls}+")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--calls", type=int, default=20_000, help="writes per round (default 20000)")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds per tool (default 3)")
    ap.add_argument("--timeout", type=float, default=300.0)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="instr-bench-static-"))
    try:
        bench = work / "bench_static"
        build(bench)
        ctx = Ctx(bench, work, args.calls, args.calls, args.rounds, args.timeout)
        instr = instr_argv("syscalls", "--complete", "-c", "-q")
        strace_out = work / "strace.txt"
        tools: dict[str, Callable[[], Measured]] = {
            "baseline (static, untraced)": lambda: traced(ctx, [], args.calls),
            "instr --complete -c -e trace=write": lambda: traced(
                ctx, [*instr, "-e", "trace=write", "--"], args.calls
            ),
            "instr --complete -c (every call)": lambda: traced(ctx, [*instr, "--"], args.calls),
            "strace -c -e trace=write": lambda: traced(
                ctx,
                [need("strace"), "-c", "-e", "trace=write", "-o", str(strace_out)],
                args.calls,
                strace_out,
            ),
            "strace -c (every call)": lambda: traced(
                ctx, [need("strace"), "-c", "-o", str(strace_out)], args.calls, strace_out
            ),
        }
        load = os.getloadavg()[0]
        print(
            f"# {platform.node()} {platform.machine()} {platform.release()}, {os.cpu_count()} "
            f"CPUs, load {load:.2f}; {args.calls} writes/round, {args.rounds} rounds + warm-up"
        )
        results: dict[str, Measured | str] = {}
        for name, fn in tools.items():
            print(f"# {name} ...", file=sys.stderr, flush=True)
            try:
                results[name] = fn()
            except Unavailable as e:
                results[name] = f"unavailable: {e}"
        base = results["baseline (static, untraced)"]
        ref = results["strace -c (every call)"]
        print(f"{'tool':36} {'ns/call':>10} {'overhead':>10} {'vs strace':>9}  note")
        for name, m in results.items():
            if isinstance(m, str) or not isinstance(base, Measured):
                print(f"{name:36} {m}")
                continue
            ov = m.ns_per_call - base.ns_per_call
            ratio = ""
            if isinstance(ref, Measured) and ov > 0 and name != "baseline (static, untraced)":
                ratio = f"{(ref.ns_per_call - base.ns_per_call) / ov:.1f}x"
            print(f"{name:36} {m.ns_per_call:10.0f} {ov:10.0f} {ratio:>9}  {m.note}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
