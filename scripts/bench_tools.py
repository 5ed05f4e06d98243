"""One runner per tracer for scripts/bench.py.

Every runner drives its own copy of the bench target (tests/targets/bench.c):
it arms the tool, runs a warm-up round and ``rounds`` timed rounds through the
target's stdin, and returns the median ns/call that the target measured on
itself. A tool that cannot run here raises ``Unavailable`` with the reason.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from bench_common import (
    Ctx,
    Logged,
    Measured,
    Unavailable,
    drive,
    finish_bench,
    loss_note,
    measured,
    need,
    settle,
    start_bench,
    stop,
    wait_line,
)
from helpers import REPO, Proc, instr_argv, instr_env

# --------------------------------------------------------------------------- tools


def baseline(ctx: Ctx, kind: str) -> Measured:
    calls = ctx.calls
    with start_bench(ctx) as b:
        d = drive(b, ctx, kind, calls)
        finish_bench(b, ctx)
    return measured(kind, calls, d, None)


def frida_count(ctx: Ctx) -> Measured:
    """Reference point: Interceptor.attach with a JS onEnter keeping count+sum in the agent."""
    import frida

    js = """
    let c = 0, s = 0;
    Interceptor.attach(Process.mainModule.findSymbolByName('target_add'),
      { onEnter(args) { c++; s += args[0].toInt32(); } });
    rpc.exports = { count: () => c };
    """
    with start_bench(ctx) as b:
        session = frida.attach(b.pid)
        script = session.create_script(js)
        script.load()
        d = drive(b, ctx, "run", ctx.calls)
        count = int(script.exports_sync.count())
        session.detach()
        finish_bench(b, ctx)
    return measured("run", ctx.calls, d, count, loss_note(count, d.total_calls))


def frida_attached(ctx: Ctx) -> Measured:
    """Frida attached with an empty script, no hook, on the write() loop. Its
    threads share the program's fd table, so the kernel takes a reference on
    the file in every fd syscall (~55-75 ns here; instr syscalls by default
    gives a spawned program's thread its own table, docs/syscalls.md)."""
    import frida

    from instr.unload import AgentWatch

    with start_bench(ctx) as b:
        pre = drive(b, ctx, "wloop", ctx.calls)
        watch = AgentWatch(b.pid, local=True)
        session = frida.attach(b.pid)
        watch.attached()
        script = session.create_script("/* no hooks */")
        script.load()
        d = drive(b, ctx, "wloop", ctx.calls)
        session.detach()
        # Quitting before Frida's agent has left hung the target in Frida's
        # exit hook (instr/unload.py).
        watch.wait()
        finish_bench(b, ctx)
    return measured("wloop", ctx.calls, d, None, "Frida attached, no hook", before=pre)


def frida_trace(ctx: Ctx) -> Measured:
    """frida-trace attached by pid with its auto-generated (default) handler.

    ``-i target_add`` resolves exports only and finds nothing in the bench
    executable, so the function is named as a debug symbol with ``-s``.
    """
    exe = need("frida-trace")
    workdir = ctx.workdir / "frida-trace"
    workdir.mkdir(exist_ok=True)

    def count(lines: list[str]) -> int:
        return sum(1 for ln in lines if ln.endswith("target_add()"))

    with start_bench(ctx) as b:
        argv = [exe, "-p", str(b.pid), "-s", "target_add"]
        with Logged(argv, workdir / "out.txt", cwd=workdir) as ft:
            started = ft.wait_for("Started tracing", ctx.timeout)
            if "tracing 1 function" not in started:
                raise Unavailable(f"frida-trace: {started.strip()}")
            d = drive(b, ctx, "run", ctx.calls)
            before = ft.settle(count, d.total_calls, ctx.timeout)
            events = count(ft.stop(min(ctx.timeout, 30.0)))
            stopped_by = ft.stopped_by
        finish_bench(b, ctx)
    note = loss_note(events, d.total_calls)
    if before != events:
        note += f" ({before} before SIGINT)"
    if stopped_by not in ("", "SIGINT"):
        note += f"; ignored SIGINT, ended by {stopped_by}"
    return measured("run", ctx.calls, d, events, note)


def ltrace(ctx: Ctx) -> Measured:
    """ltrace spawning the target; -x traces the non-exported symbol, -L hides PLT calls."""
    exe = need("ltrace")
    out = ctx.workdir / "ltrace.txt"
    with start_bench(ctx, [exe, "-L", "-x", "target_add", "-o", str(out)]) as b:
        d = drive(b, ctx, "run", ctx.slow_calls)
        finish_bench(b, ctx)
    events = sum(1 for ln in out.read_text().splitlines() if ln.startswith("target_add("))
    return measured("run", ctx.slow_calls, d, events, loss_note(events, d.total_calls))


def strace(ctx: Ctx) -> Measured:
    """strace spawning the target, tracing write(); measured on the wloop round."""
    exe = need("strace")
    out = ctx.workdir / "strace.txt"
    with start_bench(ctx, [exe, "-e", "trace=write", "-o", str(out)]) as b:
        d = drive(b, ctx, "wloop", ctx.slow_calls)
        finish_bench(b, ctx)
    events = sum(1 for ln in out.read_text().splitlines() if ln.startswith('write(3, "x", 1)'))
    return measured("wloop", ctx.slow_calls, d, events, loss_note(events, d.total_calls))


def _bpftrace_ready() -> str:
    exe = need("bpftrace")
    if os.geteuid() != 0:
        raise Unavailable("bpftrace needs root")
    if not any(
        Path(p).exists()
        for p in ("/sys/kernel/tracing/uprobe_events", "/sys/kernel/debug/tracing/uprobe_events")
    ):
        raise Unavailable("tracefs not mounted (mount -t tracefs nodev /sys/kernel/tracing)")
    return exe


def bpftrace_count(ctx: Ctx) -> Measured:
    """A bpftrace uprobe keeping count and sum in BPF maps."""
    exe = _bpftrace_ready()
    prog = (
        'BEGIN { printf("armed\\n"); } '
        f"uprobe:{ctx.bench}:target_add {{ @c = count(); @s = sum(arg0); }}"
    )
    with start_bench(ctx) as b, Proc([exe, "-e", prog]) as bt:
        wait_line(bt, ctx, "armed")  # BEGIN fires once every probe is attached
        d = drive(b, ctx, "run", ctx.calls)
        lines = stop(bt, ctx)
        finish_bench(b, ctx)
    maps = dict(re.findall(r"^@(\w+): (\d+)$", "\n".join(lines), re.M))
    if "c" not in maps:
        raise RuntimeError(f"bpftrace printed no @c map: {lines[-5:]}")
    count = int(maps["c"])
    return measured("run", ctx.calls, d, count, loss_note(count, d.total_calls))


def bpftrace_printf(ctx: Ctx) -> Measured:
    """A bpftrace uprobe printing one line per call (to a file)."""
    exe = _bpftrace_ready()
    prog = (
        'BEGIN { printf("armed\\n"); } '
        f'uprobe:{ctx.bench}:target_add {{ printf("%ld %ld\\n", arg0, arg1); }}'
    )

    def count(lines: list[str]) -> int:
        return sum(1 for ln in lines if re.fullmatch(r"\d+ \d+", ln))

    with start_bench(ctx) as b, Logged([exe, "-e", prog], ctx.workdir / "bpftrace.txt") as bt:
        bt.wait_for("armed", ctx.timeout)
        d = drive(b, ctx, "run", ctx.calls)
        bt.settle(count, d.total_calls, ctx.timeout)
        events = count(bt.stop(ctx.timeout))
        finish_bench(b, ctx)
    return measured("run", ctx.calls, d, events, loss_note(events, d.total_calls))


# --------------------------------------------------------------------------- instr
# Assumes the CLI of issue 2: `instr run -P FILE -s SET -p PID -o out.db` prints a
# stderr status line containing "armed" once probes are armed, and detaches
# cleanly on SIGINT after flushing; the SQLite store has a table `events`.

INSTR_YAML = """\
version: 1
sets:
  bench:
    description: target_add in the bench target, two integer arguments, entry only
    probes:
      - function: "bench!target_add"
        capture: {a: "arg0:i64", b: "arg1:i64"}
        on: entry
"""


def instr(ctx: Ctx) -> Measured:
    probes = ctx.workdir / "bench.yaml"
    probes.write_text(INSTR_YAML)
    db = ctx.workdir / "instr-bench.db"
    db.unlink(missing_ok=True)
    with start_bench(ctx) as b:
        argv = instr_argv("run", "-P", probes, "-s", "bench", "-p", b.pid, "-o", db)
        with Proc(argv, cwd=REPO, env=instr_env()) as ins:
            wait_line(ins, ctx, "armed", stream="err")
            start = time.monotonic()
            d = drive(b, ctx, "run", ctx.calls)
            calls_done = time.monotonic()
            live, live_at = settle(lambda: count_rows(db) or 0, d.total_calls, ctx.timeout)
            stop(ins, ctx)
            exited = time.monotonic()
            code = ins.proc.returncode
        finish_bench(b, ctx)
    rows = count_rows(db)
    if rows is None:
        raise RuntimeError(f"instr (exit {code}) left no events table in {db}")
    note = loss_note(rows, d.total_calls)
    if live >= d.total_calls:  # committed while running: the sustained rate
        rate = live / (live_at - start)
        note += (
            f"; SQLite caught up {1000 * max(live_at - calls_done, 0):.0f} ms after the last call"
        )
    else:
        rate = rows / (exited - start)
        note += "; events/s incl. flush+detach"
    if code not in (0, 130, -signal.SIGINT):
        note += f"; instr exit {code}"
    return Measured("run", ctx.calls, statistics.median(d.ns), d.total_calls, rows, rate, note)


def count_rows(db: Path) -> int | None:
    if not db.exists():
        return None
    con = sqlite3.connect(db)
    try:
        return int(con.execute("SELECT count(*) FROM events").fetchone()[0])
    except sqlite3.OperationalError:
        return None
    finally:
        con.close()


# --------------------------------------------------------------------------- syscalls
# The write() loop (bench.c's wloop) counted per syscall: instr syscalls -c
# (libc wrappers replaced by counting CModule code), strace -c, and bpftrace
# counting raw_syscalls:sys_enter for the target's pid.


def _summary_calls(lines: list[str], name: str) -> int | None:
    for ln in lines:
        parts = ln.split()
        if parts and parts[-1] == name and len(parts) >= 5:
            return int(parts[3])
    return None


def instr_syscalls_c(ctx: Ctx, cc: str = "auto", shared_fds: bool = False) -> Measured:
    """instr syscalls -c spawning the target (default mode: libc wrappers; its
    C built by the host's gcc; the program's own fd table by default)."""
    out = ctx.workdir / "instr-syscalls-c.txt"
    mode = ("--cc", cc) + (("--shared-fds",) if shared_fds else ())
    argv = instr_argv("syscalls", "-c", *mode, "-e", "trace=write", "-o", out, "--")
    with start_bench(ctx, argv, env=instr_env()) as b:
        d = drive(b, ctx, "wloop", ctx.calls)
        finish_bench(b, ctx)
    writes = _summary_calls(out.read_text().splitlines(), "write")
    if writes is None:
        raise RuntimeError(f"instr wrote no write row to {out}")
    return measured("wloop", ctx.calls, d, writes, f"writes counted {writes} of {d.total_calls}+")


def instr_syscalls_attached(ctx: Ctx, complete: bool = False, own_fds: bool = False) -> Measured:
    """instr syscalls -c attached to the running target (-p): the fd table
    stays shared with Frida's threads unless --own-fds (docs/syscalls.md)."""
    with start_bench(ctx) as b:
        mode = ("--complete",) if complete else ("--own-fds",) if own_fds else ()
        pre = drive(b, ctx, "wloop", ctx.calls)
        argv = instr_argv("syscalls", "-c", *mode, "-e", "trace=write", "-p", b.pid)
        with Proc(argv, cwd=REPO, env=instr_env()) as ins:
            wait_line(ins, ctx, "counting system calls", stream="err")
            d = drive(b, ctx, "wloop", ctx.calls)
            finish_bench(b, ctx)
            ins.proc.wait(ctx.timeout)
            lines = ins.out.rest(ctx.timeout)
    writes = _summary_calls(lines, "write")
    if writes is None:
        raise RuntimeError(f"instr printed no write row: {lines[-5:]}")
    note = f"writes counted {writes} of {d.total_calls}+"
    return measured("wloop", ctx.calls, d, writes, note, before=pre)


def instr_syscalls_c_tinycc(ctx: Ctx) -> Measured:
    """instr syscalls -c with its C built by Frida's TinyCC (where the host cannot build it)."""
    return instr_syscalls_c(ctx, cc="tinycc")


def instr_syscalls_c_shared_fds(ctx: Ctx) -> Measured:
    """instr syscalls -c --shared-fds, spawning: the program's fd table stays
    shared with Frida's threads, so the kernel takes a reference on the file
    in every fd syscall (docs/syscalls.md; the default gives it its own)."""
    return instr_syscalls_c(ctx, shared_fds=True)


def instr_syscalls_attached_own_fds(ctx: Ctx) -> Measured:
    """instr syscalls -c --own-fds -p: the attached program's thread gets its
    own fd table in its first hooked call (docs/syscalls.md)."""
    return instr_syscalls_attached(ctx, own_fds=True)


def instr_syscalls_complete(ctx: Ctx) -> Measured:
    """instr syscalls -c --complete attached to the target (Stalker on every syscall)."""
    return instr_syscalls_attached(ctx, complete=True)


def instr_syscalls_complete_run(ctx: Ctx) -> Measured:
    """What complete mode costs code that makes no syscall: the target_add loop
    (a call and a return per iteration) under Stalker, attached."""
    with start_bench(ctx) as b:
        argv = instr_argv("syscalls", "-c", "--complete", "-e", "trace=write", "-p", b.pid)
        with Proc(argv, cwd=REPO, env=instr_env()) as ins:
            wait_line(ins, ctx, "counting system calls", stream="err")
            d = drive(b, ctx, "run", ctx.calls)
            finish_bench(b, ctx)
            ins.proc.wait(ctx.timeout)
    return measured("run", ctx.calls, d, None, "target_add loop under Stalker (no syscalls)")


def strace_c(ctx: Ctx) -> Measured:
    """strace -c -e trace=write spawning the target."""
    exe = need("strace")
    out = ctx.workdir / "strace-c.txt"
    with start_bench(ctx, [exe, "-c", "-e", "trace=write", "-o", str(out)]) as b:
        d = drive(b, ctx, "wloop", ctx.slow_calls)
        finish_bench(b, ctx)
    writes = _summary_calls(out.read_text().splitlines(), "write")
    return measured(
        "wloop", ctx.slow_calls, d, writes, f"writes counted {writes} of {d.total_calls}+"
    )


def bpftrace_syscalls(ctx: Ctx) -> Measured:
    """bpftrace counting raw_syscalls:sys_enter of the target's pid by syscall number."""
    exe = _bpftrace_ready()
    with start_bench(ctx) as b:
        pre = drive(b, ctx, "wloop", ctx.calls)
        prog = (
            'BEGIN { printf("armed\\n"); } '
            f"tracepoint:raw_syscalls:sys_enter /pid == {b.pid}/ {{ @c[args->id] = count(); }}"
        )
        with Proc([exe, "-e", prog]) as bt:
            wait_line(bt, ctx, "armed")
            d = drive(b, ctx, "wloop", ctx.calls)
            lines = stop(bt, ctx)
        finish_bench(b, ctx)
    m = re.search(r"^@c\[1\]: (\d+)$", "\n".join(lines), re.M)
    writes = int(m.group(1)) if m else None
    note = f"writes counted {writes} of {d.total_calls}+"
    return measured("wloop", ctx.calls, d, writes, note, before=pre)


WLOOP_TOOLS = (
    "frida-attached",
    "strace-write",
    "instr-syscalls-c",
    "instr-syscalls-c-tinycc",
    "instr-syscalls-c-shared-fds",
    "instr-syscalls-attached",
    "instr-syscalls-attached-own-fds",
    "instr-syscalls-complete",
    "strace-c",
    "bpftrace-syscalls",
)

TOOLS: dict[str, Callable[[Ctx], Measured]] = {
    "instr": instr,
    "frida-trace": frida_trace,
    "frida-js-count": frida_count,
    "bpftrace-count": bpftrace_count,
    "bpftrace-printf": bpftrace_printf,
    "ltrace": ltrace,
    "strace-write": strace,
    "frida-attached": frida_attached,
    "instr-syscalls-c": instr_syscalls_c,
    "instr-syscalls-c-tinycc": instr_syscalls_c_tinycc,
    "instr-syscalls-c-shared-fds": instr_syscalls_c_shared_fds,
    "instr-syscalls-attached": instr_syscalls_attached,
    "instr-syscalls-attached-own-fds": instr_syscalls_attached_own_fds,
    "instr-syscalls-complete": instr_syscalls_complete,
    "instr-syscalls-complete-run": instr_syscalls_complete_run,
    "strace-c": strace_c,
    "bpftrace-syscalls": bpftrace_syscalls,
}
