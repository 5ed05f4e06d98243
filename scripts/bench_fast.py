#!/usr/bin/env python3
"""Per-call cost of the probes people write (issue 19), against frida-trace.

Each row gets a fresh copy of a target, attaches, runs a warm-up round and
``--rounds`` timed rounds through the target's stdin, and reads the median
ns/call the target measured on itself; overhead = that minus the same
process's unhooked rounds, measured just before attaching (this VM's speed
drifts between minutes by as much as a hook costs). Every instr row checks
the events it delivered against the calls made (exact).

- ``2int``: target_add(a, b) with two integer captures (tests/targets/bench.c ``run``);
- ``cstr-where``: target_name(name, i) with ``name: arg0:cstr(16)``, ``i: arg1``
  and ``where: "i % 2 == 0"`` (bench.c ``sloop``), auto tier and ``tier: js``;
- ``2int (entry stub)``: two integer captures on target_name, whose start a
  replaceFast stub can take (target_add's 5 bytes need a listener);
- ``backtrace(8)``: target_name with a frame-pointer walk, bench.c built with frame
  pointers (``bench_fp``), native and ``tier: js``, against bpftrace's ustack(8);
- ``malloc-set``: probes.yaml's ``malloc`` set (malloc size/caller/result and
  free with ``where: "ptr != 0"``) on tests/targets/bench_malloc.c (per pair);
- ``frida-trace``: its default handler on the same functions; bpftrace printing
  one line per event (its predicate in the uprobe's filter);
- ``frida empty native listener``: Gum's dispatch alone (an empty CModule
  onEnter), the floor of every native-tier probe.

    python scripts/bench_fast.py [--calls 200000] [--rounds 3] [--only NAMES]

A benchmark, not a test: it prints figures and asserts nothing about them.
Tools that are not installed get an "unavailable" row; a row whose tool broke
gets a "failed" row.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from bench_common import (  # noqa: E402
    Ctx,
    Driven,
    Logged,
    Unavailable,
    drive,
    finish_bench,
    need,
    settle,
    start_bench,
    stop,
    wait_line,
)
from bench_tools import _bpftrace_ready  # noqa: E402
from helpers import REPO, BuildError, Proc, compile_c, instr_argv, instr_env  # noqa: E402

TARGETS = REPO / "tests" / "targets"

SETS = """\
version: 1
sets:
  2int:
    probes:
      - function: "bench!target_add"
        capture: {a: "arg0:i64", b: "arg1:i64"}
  2int-stub:
    probes:
      - function: "bench!target_name"
        capture: {p: "arg0:ptr", i: "arg1:i64"}
  cstr-where:
    probes:
      - function: "bench!target_name"
        capture: {name: "arg0:cstr(16)", i: "arg1:i64"}
        where: "i % 2 == 0"
  backtrace:
    probes:
      - function: "bench_fp!target_name"
        capture: {a: "arg0:i64", bt: "backtrace(8)"}
  backtrace-js:
    probes:
      - function: "bench_fp!target_name"
        tier: js
        capture: {a: "arg0:i64", bt: "backtrace(8)"}
  cstr-where-js:
    probes:
      - function: "bench!target_name"
        tier: js
        capture: {name: "arg0:cstr(16)", i: "arg1:i64"}
        where: "i % 2 == 0"
"""


@dataclass(frozen=True)
class Row:
    cmd: str
    before: float  # ns/call unhooked, same process (wall clock)
    hooked: float  # ns/call hooked (wall clock)
    before_cpu: float  # the same, in the calling thread's CPU time
    hooked_cpu: float
    note: str


def row(cmd: str, pre: Driven, d: Driven, note: str) -> Row:
    med = statistics.median
    cpu = (med(pre.cpu_ns), med(d.cpu_ns)) if pre.cpu_ns and d.cpu_ns else (0.0, 0.0)
    return Row(cmd, med(pre.ns), med(d.ns), cpu[0], cpu[1], note)


def _evens(n: int) -> int:
    return (n + 1) // 2


def _rows(db: Path) -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(db)
    try:
        return int(con.execute("SELECT count(*) FROM events").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def _rounds(ctx: Ctx) -> list[int]:
    from bench_common import WARMUP_CALLS

    return [min(WARMUP_CALLS, ctx.calls), *([ctx.calls] * ctx.rounds)]


def instr_row(
    set_name: str, cmd: str, bench: str, per_round: Callable[[int], int]
) -> Callable[[Ctx], Row]:
    """An instr probe set on a bench target; events must equal sum(per_round(n))."""

    def run(ctx: Ctx) -> Row:
        probes = ctx.workdir / "fast.yaml"
        if set_name == "malloc":
            shutil.copy(REPO / "probes.yaml", probes)
        else:
            probes.write_text(SETS)
        db = ctx.workdir / f"instr-{set_name}.db"
        db.unlink(missing_ok=True)
        c = Ctx(
            ctx.workdir / bench, ctx.workdir, ctx.calls, ctx.slow_calls, ctx.rounds, ctx.timeout
        )
        with start_bench(c) as b:
            pre = drive(b, c, cmd, c.calls)
            argv = instr_argv("run", "-P", probes, "-s", set_name, "-p", b.pid, "-o", db)
            with Proc(argv, cwd=REPO, env=instr_env()) as ins:
                wait_line(ins, c, "armed", stream="err")
                d = drive(b, c, cmd, c.calls)
                want = sum(per_round(n) for n in _rounds(c))
                settle(lambda: _rows(db), want, c.timeout)
                stop(ins, c)
            finish_bench(b, c)
        got = _rows(db)
        if got != want:
            raise RuntimeError(f"instr stored {got} events, expected {want}")
        return row(cmd, pre, d, f"{got} events, no loss")

    return run


def frida_trace_row(cmd: str, bench: str, flags: list[str], marker: str) -> Callable[[Ctx], Row]:
    """frida-trace attached by pid, default handlers (one console line per call);
    ``marker`` is in each line of the function the loop calls once per iteration."""

    def run(ctx: Ctx) -> Row:
        exe = need("frida-trace")
        work = ctx.workdir / f"frida-trace-{cmd}"
        work.mkdir(exist_ok=True)
        c = Ctx(
            ctx.workdir / bench, ctx.workdir, ctx.calls, ctx.slow_calls, ctx.rounds, ctx.timeout
        )

        def count(lines: list[str]) -> int:
            return sum(1 for ln in lines if marker in ln)

        with start_bench(c) as b:
            pre = drive(b, c, cmd, c.calls)
            with Logged([exe, "-p", str(b.pid), *flags], work / "out.txt", cwd=work) as ft:
                ft.wait_for("Started tracing", c.timeout)
                d = drive(b, c, cmd, c.calls)
                ft.settle(count, d.total_calls, c.timeout)
                events = count(ft.stop(min(c.timeout, 30.0)))
            finish_bench(b, c)
        note = f"{events} '{marker.strip()}' lines for {d.total_calls} calls"
        return row(cmd, pre, d, note)

    return run


def bpftrace_row(cmd: str, bench: str, prog: str, marker: str) -> Callable[[Ctx], Row]:
    """bpftrace printing one line per event to a file; ``{bench}`` in ``prog`` is the
    target's path, and lines starting with ``marker`` are the calls counted."""

    def run(ctx: Ctx) -> Row:
        exe = _bpftrace_ready()
        c = Ctx(
            ctx.workdir / bench, ctx.workdir, ctx.calls, ctx.slow_calls, ctx.rounds, ctx.timeout
        )
        text = 'BEGIN { printf("armed\\n"); } ' + prog.replace("{bench}", str(c.bench))

        def count(lines: list[str]) -> int:
            return sum(1 for ln in lines if ln.startswith(marker))

        with start_bench(c) as b:
            pre = drive(b, c, cmd, c.calls)
            out = ctx.workdir / f"bpftrace-{cmd}.txt"
            with Logged([exe, "-p", str(b.pid), "-e", text], out) as bt:
                bt.wait_for("armed", c.timeout)
                d = drive(b, c, cmd, c.calls)
                bt.settle(count, d.total_calls, c.timeout)
                events = count(bt.stop(c.timeout))
            finish_bench(b, c)
        return row(cmd, pre, d, f"{events} '{marker}' lines for {d.total_calls} calls")

    return run


EMPTY_LISTENER = """
const cm = new CModule('#include <gum/guminterceptor.h>\\nvoid on_enter (GumInvocationContext * ic) { }');
Interceptor.attach(Process.mainModule.findSymbolByName('target_add'), { onEnter: cm.on_enter });
"""


def frida_empty_listener(ctx: Ctx) -> Row:
    """Reference: Gum's dispatch alone, an empty CModule onEnter (what every
    native-tier probe pays before its own work)."""
    import frida

    with start_bench(ctx) as b:
        pre = drive(b, ctx, "run", ctx.calls)
        session = frida.attach(b.pid)
        script = session.create_script(EMPTY_LISTENER)
        script.load()
        d = drive(b, ctx, "run", ctx.calls)
        session.detach()
        finish_bench(b, ctx)
    return row("run", pre, d, "Interceptor.attach, empty CModule onEnter (no record)")


TOOLS: dict[str, Callable[[Ctx], Row]] = {
    "frida empty native listener": frida_empty_listener,
    "instr 2int": instr_row("2int", "run", "bench", lambda n: n),
    # target_add is 5 bytes: too short for replaceFast, so a listener; target_name
    # starts with straight-line code: an entry stub (agents/src/ctier/fast_c.ts)
    "instr 2int (entry stub)": instr_row("2int-stub", "sloop", "bench", lambda n: n),
    "frida-trace target_add": frida_trace_row("run", "bench", ["-s", "target_add"], " target_add("),
    "bpftrace target_add printf": bpftrace_row(
        "run", "bench", 'uprobe:{bench}:target_add { printf("a %ld %ld\\n", arg0, arg1); }', "a "
    ),
    "instr cstr(16)+where": instr_row("cstr-where", "sloop", "bench", _evens),
    "instr cstr(16)+where (tier js)": instr_row("cstr-where-js", "sloop", "bench", _evens),
    "frida-trace target_name": frida_trace_row(
        "sloop", "bench", ["-s", "target_name"], " target_name("
    ),
    "bpftrace target_name printf+where": bpftrace_row(
        "sloop",
        "bench",
        "uprobe:{bench}:target_name /arg1 % 2 == 0/ "
        '{ printf("n %s %ld\\n", str(arg0, 17), arg1); }',
        "n ",
    ),
    # bench.c built with frame pointers (bench_fp): the native tier walks them
    "instr backtrace(8)": instr_row("backtrace", "sloop", "bench_fp", lambda n: n),
    "instr backtrace(8) (tier js)": instr_row("backtrace-js", "sloop", "bench_fp", lambda n: n),
    "bpftrace ustack(8) printf": bpftrace_row(
        "sloop", "bench_fp", 'uprobe:{bench}:target_name { printf("s %s\\n", ustack(8)); }', "s "
    ),
    # per malloc+free pair: malloc entry and exit records, and free's entry
    "instr malloc set": instr_row("malloc", "malloc", "bench_malloc", lambda n: 3 * n),
    "bpftrace malloc+free printf": bpftrace_row(
        "malloc",
        "bench_malloc",
        'uprobe:libc:malloc { printf("m %lu\\n", arg0); } '
        'uretprobe:libc:malloc { printf("r %lx\\n", retval); } '
        'uprobe:libc:free /arg0 != 0/ { printf("f %lx\\n", arg0); }',
        "m ",
    ),
    "frida-trace malloc+free": frida_trace_row(
        "malloc", "bench_malloc", ["-i", "libc.so*!malloc", "-i", "libc.so*!free"], " malloc("
    ),
}


def compile_fp(src: Path, out: Path) -> None:
    import subprocess

    cmd = [
        "gcc",
        "-O1",
        "-g",
        "-fno-omit-frame-pointer",
        "-I",
        str(TARGETS),
        "-o",
        str(out),
        str(src),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise BuildError(f"{' '.join(cmd)} failed:\n{res.stderr}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--calls", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--only", metavar="NAMES", help=f"comma-separated subset of: {', '.join(TOOLS)}"
    )
    ap.add_argument("--timeout", type=float, default=300.0)
    args = ap.parse_args(argv)
    names = list(TOOLS) if args.only is None else [n.strip() for n in args.only.split(",")]
    unknown = [n for n in names if n not in TOOLS]
    if unknown:
        ap.error(f"unknown row(s) {', '.join(unknown)}")
    work = Path(tempfile.mkdtemp(prefix="instr-bench-fast-"))
    try:
        try:
            compile_c(TARGETS / "bench.c", work / "bench", pie=True)
            compile_c(TARGETS / "bench_malloc.c", work / "bench_malloc", pie=True)
            # the same bench with frame pointers, for backtraces
            fp = work / "bench_fp.c"
            fp.write_text(f'#include "{TARGETS / "bench.c"}"\n')
            compile_fp(fp, work / "bench_fp")
        except BuildError as e:
            print(f"bench_fast: cannot build the targets: {e}", file=sys.stderr)
            return 1
        ctx = Ctx(work / "bench", work, args.calls, args.calls, args.rounds, args.timeout)
        load = os.getloadavg()[0]
        print(f"# {os.cpu_count()} CPUs, load {load:.2f}; {args.calls} calls/round, "
              f"{args.rounds} rounds + warm-up; median ns/call (malloc: per malloc+free pair)")  # fmt: skip
        if load > (os.cpu_count() or 1) * 0.5:
            print("# warning: the machine is busy; wall-clock figures include preemption")
        print(f"{'':<34} {'overhead/call':>13} {'CPU/call':>13}  (hooked - unhooked, same process;"
              " CPU: the calling thread's CPU time)")  # fmt: skip
        for name in names:
            print(f"# {name} ...", file=sys.stderr, flush=True)
            try:
                r = TOOLS[name](ctx)
            except Unavailable as e:
                print(f"{name:<34} unavailable: {e}", flush=True)
                continue
            except Exception as e:  # one row's failure must not end the benchmark
                print(f"{name:<34} failed: {type(e).__name__}: {e}", flush=True)
                continue
            ov = r.hooked - r.before
            cpu_ov = r.hooked_cpu - r.before_cpu
            print(f"{name:<34} {ov:10.1f} ns {cpu_ov:10.1f} ns  {r.note}", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
