#!/usr/bin/env python3
"""Per-call overhead of in-target aggregation on malloc, against bpftrace and Frida JS.

The target is tests/targets/bench_malloc.c: a timed loop of malloc + free
(only malloc is hooked). Each tool gets a fresh copy of the target, is armed,
then one warm-up round and ``--rounds`` timed rounds run through its stdin.
Overhead = median hooked ns/iteration - median unhooked; ``vs instr`` =
that overhead / the overhead of ``instr-callers`` (the issue's reference
probe: count and sum by caller, and a quantize of the size). The baseline is
measured before and after the tools; the lower median is used. Each row also checks the
tool's count of malloc calls against the calls the loop made (at least).

    python scripts/bench_aggs.py [--calls 1000000] [--rounds 3]

A benchmark, not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from bench_common import (  # noqa: E402
    Ctx,
    Measured,
    Proc,
    Unavailable,
    drive,
    finish_bench,
    need,
    start_bench,
    stop,
    wait_line,
)
from bench_tools import _bpftrace_ready  # noqa: E402
from helpers import REPO, BuildError, compile_c, instr_argv, instr_env  # noqa: E402

SRC = REPO / "tests" / "targets" / "bench_malloc.c"

SETS = """\
version: 1
sets:
  count:
    probes:
      - function: "libc.so*!malloc"
        aggregate:
          n: count()
  probefunc:
    probes:
      - function: "libc.so*!malloc"
        aggregate:
          n: count() by probefunc
  callers:
    probes:
      - function: "libc.so*!malloc"
        capture: {size: arg0:size_t, caller: caller}
        aggregate:
          calls: count() by caller
          bytes: sum(size) by caller
          sizes: quantize(size)
  callers-attach:
    probes:
      - function: "libc.so*!malloc"
        capture: {size: arg0:size_t, caller: caller}
        aggregate:
          calls: count() by caller
          bytes: sum(size) by caller
          sizes: quantize(size)
      - function: "libc.so*!malloc"
        emit: false
        capture: {size: arg0:size_t}
        where: "size > 1000000000"
        aggregate:
          huge: count()
  callers-js:
    probes:
      - function: "libc.so*!malloc"
        tier: js
        capture: {size: arg0:size_t, caller: caller}
        aggregate:
          calls: count() by caller
          bytes: sum(size) by caller
          sizes: quantize(size)
"""


def baseline(ctx: Ctx) -> Measured:
    with start_bench(ctx) as b:
        d = drive(b, ctx, "malloc", ctx.calls)
        finish_bench(b, ctx)
    return Measured("malloc", ctx.calls, statistics.median(d.ns), d.total_calls, None, None)


def _instr_row(
    ctx: Ctx,
    argv: Callable[[int], list[object]],
    ready: str,
    count: Callable[[list[str]], int | None],
    what: str = "",
) -> Measured:
    """One instr command on a fresh bench target: armed when stderr says ``ready``;
    ``count`` reads its malloc count from its stdout once it has stopped."""
    with start_bench(ctx) as b:
        with Proc(instr_argv(*argv(b.pid)), cwd=REPO, env=instr_env()) as ins:
            wait_line(ins, ctx, ready, stream="err")
            d = drive(b, ctx, "malloc", ctx.calls)
            lines = stop(ins, ctx)
        finish_bench(b, ctx)
    total = count(lines)
    note = f"{what}counted {total} mallocs for {d.total_calls} loop calls"
    if total is not None and total < d.total_calls:
        note += " (LOSS)"
    return Measured("malloc", ctx.calls, statistics.median(d.ns), d.total_calls, total, None, note)


def instr_set(name: str, counted: str) -> Callable[[Ctx], Measured]:
    def run(ctx: Ctx) -> Measured:
        probes = ctx.workdir / "aggs.yaml"
        probes.write_text(SETS)
        out = ctx.workdir / f"instr-{name}.jsonl"
        out.unlink(missing_ok=True)
        return _instr_row(
            ctx,
            lambda pid: ["run", "-P", probes, "-s", name, "-p", pid, "-o", out],
            "armed",
            lambda lines: _final_count(out, counted),
        )

    return run


def _printed_total(lines: list[str]) -> int | None:
    """The sum of the counts a D program printed (each row's last number)."""
    counts = [int(m[1]) for m in (re.search(r"(\d+)\s*$", ln) for ln in lines) if m]
    return sum(counts) if counts else None


def instr_dtrace(program: str) -> Callable[[Ctx], Measured]:
    """The same aggregation as a D one-liner (instr dtrace): it compiles onto the
    same tiers, so it should cost what the YAML set costs."""

    def run(ctx: Ctx) -> Measured:
        return _instr_row(
            ctx,
            lambda pid: ["dtrace", "-p", pid, "-n", program],
            "matched",  # said once armed
            _printed_total,
            f"D: {program!r}; ",
        )

    return run


def _final_count(path: Path, name: str) -> int | None:
    """The final snapshot's count for aggregation ``name`` (all rows), from the JSONL."""
    if not path.exists():
        return None
    total = None
    for line in path.read_text().splitlines():
        obj = json.loads(line)
        if obj.get("type") == "aggregation" and obj.get("final") and obj.get("name") == name:
            total = (total or 0) + int(obj.get("count", 0))
    return total


def bpftrace_count(ctx: Ctx) -> Measured:
    exe = _bpftrace_ready()
    with start_bench(ctx) as b:
        prog = 'BEGIN { printf("armed\\n"); } uprobe:libc:malloc { @c = count(); @s = sum(arg0); }'
        with Proc([exe, "-p", str(b.pid), "-e", prog]) as bt:
            wait_line(bt, ctx, "armed")
            d = drive(b, ctx, "malloc", ctx.calls)
            lines = stop(bt, ctx)
        finish_bench(b, ctx)
    maps = dict(re.findall(r"^@(\w+): (\d+)$", "\n".join(lines), re.M))
    count = int(maps["c"]) if "c" in maps else None
    note = f"counted {count} mallocs for {d.total_calls} loop calls"
    return Measured("malloc", ctx.calls, statistics.median(d.ns), d.total_calls, count, None, note)


FRIDA_JS = """
let n = 0, s = 0;
Interceptor.attach(Module.getGlobalExportByName('malloc'), {
  onEnter(args) { n++; s += args[0].toInt32(); }
});
rpc.exports = { count: () => n };
"""


def frida_js(ctx: Ctx) -> Measured:
    import frida

    with start_bench(ctx) as b:
        session = frida.attach(b.pid)
        script = session.create_script(FRIDA_JS)
        script.load()
        d = drive(b, ctx, "malloc", ctx.calls)
        count = int(script.exports_sync.count())
        session.detach()
        finish_bench(b, ctx)
    note = f"count+sum in a JS onEnter; counted {count} for {d.total_calls} loop calls"
    return Measured("malloc", ctx.calls, statistics.median(d.ns), d.total_calls, count, None, note)


TOOLS: dict[str, Callable[[Ctx], Measured]] = {
    "instr-count": instr_set("count", "count/n"),
    "instr-probefunc": instr_set("probefunc", "probefunc/n"),
    "dtrace-count": instr_dtrace("pid$target::malloc:entry { @n = count(); }"),
    "dtrace-probefunc": instr_dtrace("pid$target::malloc:entry { @[probefunc] = count(); }"),
    "instr-callers": instr_set("callers", "callers/calls"),
    "instr-callers-attach": instr_set("callers-attach", "callers-attach/calls"),
    "instr-callers-js": instr_set("callers-js", "callers-js/calls"),
    "bpftrace-count": bpftrace_count,
    "frida-js-count": frida_js,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--calls", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", metavar="NAMES", help=f"subset of: {', '.join(TOOLS)}")
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args(argv)
    names = list(TOOLS) if args.only is None else args.only.split(",")
    workdir = Path(tempfile.mkdtemp(prefix="instr-bench-aggs-"))
    bench = workdir / "bench_malloc"
    try:
        compile_c(SRC, bench, pie=True)
    except BuildError as e:
        print(f"bench_aggs: cannot build the target: {e}", file=sys.stderr)
        return 1
    ctx = Ctx(bench, workdir, args.calls, args.calls, args.rounds, args.timeout)
    print(f"# {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; malloc+free loop; "
          f"{args.calls} calls/round, {args.rounds} rounds; median ns/iteration")  # fmt: skip
    base = baseline(ctx)
    results: dict[str, Measured | str] = {}
    for name in names:
        print(f"# {name} ...", file=sys.stderr, flush=True)
        try:
            results[name] = TOOLS[name](ctx)
        except Unavailable as e:
            results[name] = f"unavailable: {e}"
        except Exception as e:  # one tool's failure must not end the benchmark
            results[name] = f"failed: {type(e).__name__}: {e}"
    again = baseline(ctx)
    unhooked = min(base.ns_per_call, again.ns_per_call)
    print(f"{'baseline (unhooked)':<22} {unhooked:9.1f} ns  "
          f"(before {base.ns_per_call:.1f}, after {again.ns_per_call:.1f})")  # fmt: skip
    ref_m = results.get("instr-callers")
    ref = ref_m.ns_per_call - unhooked if isinstance(ref_m, Measured) else None
    for name, m in results.items():
        if isinstance(m, str):
            print(f"{name:<22} {m}")
            continue
        ov = m.ns_per_call - unhooked
        ratio = f"{ov / ref:7.1f}x" if ref is not None and ref > 0 else "    n/a"
        print(f"{name:<22} {m.ns_per_call:9.1f} ns  overhead {ov:8.1f} ns  {ratio}  {m.note}")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    need("gcc")
    sys.exit(main())
