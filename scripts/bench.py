#!/usr/bin/env python3
"""Per-call overhead of tracers on one hot function, measured inside the target.

The target is tests/targets/bench.c. It times its own loop of ``target_add``
calls (or of 1-byte ``write()``s to /dev/null, for strace) with
CLOCK_MONOTONIC and reports ns/call. Each tool gets a fresh copy of the target,
is armed, and then the harness drives one warm-up round and ``--rounds`` timed
rounds through the target's stdin. Overhead = median hooked ns/call - median
unhooked ns/call of the same loop (for the write() loop and tools that attach
to the running target, the unhooked rounds are the same process's, just
before the tool attached: this VM's speed drifts between minutes by as much
as a hook costs); ``vs instr`` = that overhead / instr's
(so 20x means 20 times instr's cost). ``events/s``: for instr, rows in its
SQLite store over the time from the first call until the store held them all
(polled while instr runs; if it never catches up, until instr has exited,
flush and detach included), and the note says whether rows == calls (zero
loss); for the other tools, events they delivered over the wall time of the
rounds (the rate the hooked target produced them), with the same loss note.

    python scripts/bench.py                          # every tool found here
    python scripts/bench.py --only instr,frida-trace --calls 200000 --rounds 5

This is a benchmark, not a test: it asserts nothing and exits 0 unless the
harness itself breaks. Tools that are missing or cannot run here get an
"unavailable: <reason>" row.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from bench_tools import TOOLS, WLOOP_TOOLS, Ctx, Measured, Unavailable, baseline  # noqa: E402
from helpers import REPO, BuildError, compile_c  # noqa: E402

BENCH_SRC = REPO / "tests" / "targets" / "bench.c"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--calls", type=int, default=100_000, help="calls per round (default 100000)")
    ap.add_argument(
        "--slow-calls",
        type=int,
        default=5_000,
        help="calls per round for ltrace and strace, ~0.1-0.2 ms/call (default 5000)",
    )
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds per tool (default 3)")
    ap.add_argument(
        "--only",
        metavar="NAMES",
        help=f"comma-separated subset of: {', '.join(TOOLS)} (the baseline always runs)",
    )
    ap.add_argument("--timeout", type=float, default=300.0, help="bound on any one wait (s)")
    ap.add_argument("--no-pie", action="store_true", help="build the target as non-PIE")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = ap.parse_args(argv)
    names = list(TOOLS) if args.only is None else [n.strip() for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in TOOLS]
    if unknown:
        ap.error(f"unknown tool(s) {', '.join(unknown)}; choose from {', '.join(TOOLS)}")
    if min(args.calls, args.slow_calls, args.rounds) < 1:
        ap.error("--calls, --slow-calls and --rounds must be at least 1")
    args.names = names
    return args


def run_tool(name: str, ctx: Ctx) -> Measured | str:
    try:
        return TOOLS[name](ctx)
    except Unavailable as e:
        return f"unavailable: {e}"
    except Exception as e:  # one tool's failure must not end the whole benchmark
        return f"failed: {type(e).__name__}: {e}"


def fmt_ns(ns: float | None) -> str:
    if ns is None:
        return "-"
    return f"{ns / 1000:.2f} µs" if abs(ns) >= 1000 else f"{ns:.1f} ns"


def overhead(m: Measured, base: dict[str, Measured | str]) -> float | None:
    """Hooked minus unhooked ns/call: for tools that attach, against the same
    process just before they attached; else against the baseline run."""
    if m.before_ns is not None:
        return m.ns_per_call - m.before_ns
    b = base.get(m.kind)
    return m.ns_per_call - b.ns_per_call if isinstance(b, Measured) else None


def table(results: dict[str, Measured | str], base: dict[str, Measured | str]) -> list[list[str]]:
    ref = results.get("instr")
    ref_ov = overhead(ref, base) if isinstance(ref, Measured) else None
    rows = [["tool", "calls/round", "hooked/call", "overhead/call", "vs instr", "events/s", "note"]]
    for kind, m in base.items():
        label = "baseline (target_add)" if kind == "run" else "baseline (write)"
        if isinstance(m, str):
            rows.append([label, "", "", "", "", "", m])
        else:
            rows.append([label, str(m.calls), fmt_ns(m.ns_per_call), "0", "", "", "unhooked"])
    for name, m in results.items():
        if isinstance(m, str):
            rows.append([name, "", "", "", "", "", m])
            continue
        ov = overhead(m, base)
        ratio = f"{ov / ref_ov:.1f}x" if ov is not None and ref_ov and ref_ov > 0 else "n/a"
        rate = f"{m.events_per_s:,.0f}" if m.events_per_s is not None else "-"
        note = ("write() loop; " if m.kind == "wloop" else "") + m.note
        rows.append([name, str(m.calls), fmt_ns(m.ns_per_call), fmt_ns(ov), ratio, rate, note])
    return rows


def print_syscall_ratios(
    results: dict[str, Measured | str], base: dict[str, Measured | str]
) -> None:
    """Overheads on the write() loop relative to instr syscalls -c (same run)."""
    ref = results.get("instr-syscalls-c")
    ref_ov = overhead(ref, base) if isinstance(ref, Measured) else None
    if ref_ov is None:
        return
    print(
        f"# write() loop: instr syscalls -c overhead {fmt_ns(ref_ov)}/call"
        " (attached tools: against the same process just before attaching)"
    )
    floor = results.get("frida-attached")
    if isinstance(floor, Measured):
        # Not a floor for a spawned program: by default its thread gets its
        # own fd table, which takes most of this away (docs/syscalls.md).
        f = overhead(floor, base)
        print(f"#   Frida attached, no hook, fd table shared with its threads: {fmt_ns(f)}/call")
    for name in (
        "instr-syscalls-c-shared-fds",
        "instr-syscalls-attached",
        "instr-syscalls-attached-own-fds",
        "instr-syscalls-c-tinycc",
        "instr-syscalls-complete",
        "strace-c",
        "strace-write",
        "bpftrace-syscalls",
    ):
        m = results.get(name)
        ov = overhead(m, base) if isinstance(m, Measured) else None
        if ov is not None and ref_ov > 0:
            print(f"#   {name}: {fmt_ns(ov)}/call, {ov / ref_ov:.1f}x instr's")


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for j, r in enumerate(rows):
        cells = [
            c.rjust(w) if i in (1, 2, 3, 4, 5) else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=False))
        ]
        print("  ".join([*cells, r[-1]]).rstrip())
        if j == 0:
            print("  ".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="instr-bench-"))
    bench = workdir / "bench"
    try:
        warnings = compile_c(BENCH_SRC, bench, pie=not args.no_pie)
    except BuildError as e:
        print(f"bench: cannot build the target: {e}", file=sys.stderr)
        return 1
    if warnings:
        print(warnings, file=sys.stderr)
    ctx = Ctx(bench, workdir, args.calls, args.slow_calls, args.rounds, args.timeout)
    load = os.getloadavg()[0]
    print(
        f"# {platform.node()} {platform.machine()} {platform.release()}, {os.cpu_count()} CPUs,"
        f" load {load:.2f}; target {bench} ({'non-PIE' if args.no_pie else 'PIE'});"
        f" {args.rounds} rounds + warm-up; median ns/call",
        flush=True,
    )
    if load > (os.cpu_count() or 1) * 0.5:
        print("# warning: the machine is busy; per-call figures will be inflated", flush=True)

    base: dict[str, Measured | str] = {}
    kinds = ["run"] + (["wloop"] if any(n in WLOOP_TOOLS for n in args.names) else [])
    for kind in kinds:
        try:
            base[kind] = baseline(ctx, kind)
        except Exception as e:  # reported in the table like any tool failure
            base[kind] = f"failed: {type(e).__name__}: {e}"
    results: dict[str, Measured | str] = {}
    for name in args.names:
        print(f"# {name} ...", file=sys.stderr, flush=True)
        results[name] = run_tool(name, ctx)
    print_table(table(results, base))
    print_syscall_ratios(results, base)
    if args.keep:
        print(f"# scratch kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
