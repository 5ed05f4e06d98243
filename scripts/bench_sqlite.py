#!/usr/bin/env python3
"""Where the time goes between a hot two-integer probe and its rows in SQLite (issue 19).

Stages, each measured on its own, then the whole path:

- ``host decode``: ``Decoder.block`` + ``Block.numbered`` + one ``iter_unpack``
  into row tuples, on batches encoded exactly as the agent writes them;
- ``sqlite floor``: SQLite alone, rows generated in SQL (``INSERT ... SELECT``
  over a recursive CTE, no Python per row): what the table costs;
- ``executemany, pre-built rows``: Python's ``sqlite3`` binding rows that
  already exist (its per-row cost on top of the floor);
- ``SqliteCollector.on_block``: instr's store as the dispatcher drives it
  (decode + insert + one transaction per batch), WAL (instr's mode) and,
  for comparison only, ``journal_mode=OFF``;
- ``agent -> host, null output``: ``instr run -p`` on tests/targets/bench.c
  (``run N``: target_add(i, i), probe ``a: arg0:i64, b: arg1:i64``) with the
  SQLite output replaced by one that only counts: the agent's batching, the
  transport and the dispatcher, without decode or SQLite;
- ``end to end``: the same with ``-o x.db``.

End-to-end rows time from the target's ``run N`` to its exit: the target's
exit waits for the host's acknowledgement, which comes after every earlier
batch was committed, so by then every event is in the file. ``close`` is the
time instr takes after that (indexes, WAL checkpoint). Every run checks the
file exactly: N rows, seq 1..N contiguous, sum of ``a`` equal to the target's
own sum. CPU columns are the processes' own CPU time (the target's includes
the agent's thread).

    python scripts/bench_sqlite.py [--events 1000000] [--rounds 3] [--timeout 300]

A benchmark, not a test: it prints figures and asserts nothing about them
(a run that lost or changed events prints a "failed" row).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE), str(HERE.parent / "tests")]

from bench_common import NS_RX, Ctx, Unavailable, start_bench, wait_line  # noqa: E402
from helpers import REPO, BuildError, Proc, compile_c, instr_argv, instr_env  # noqa: E402

from instr.collectors.decode import Decoder  # noqa: E402
from instr.collectors.encode import encode_record  # noqa: E402
from instr.collectors.sqlite import SqliteCollector  # noqa: E402
from instr.events import RunContext, RunInfo, RunSummary  # noqa: E402
from instr.probes.ir import Capture, FunctionPoint, Probe, ProbeTable  # noqa: E402

SETS = """\
version: 1
sets:
  2int:
    probes:
      - function: "bench!target_add"
        capture: {a: "arg0:i64", b: "arg1:i64"}
"""
BATCH = 16384  # records per synthetic batch (the agent's batches are its ring's content)
INFO = RunInfo(0, "local", 1, ("bench",), "bench", ("2int",))

# ``instr`` with its SQLite output swapped for a counter (argv[1]: "count" or "decode")
NULL_OUTPUT = """\
import sys
from pathlib import Path
import instr.collectors.sqlite as store

class Null:
    decode = sys.argv.pop(1) == "decode"
    def __init__(self, path): self.path, self.n = Path(path), 0
    def open(self, ctx, info): pass
    def on_events(self, events): self.n += len(events)
    def on_block(self, block):
        if self.decode:
            list(__import__("struct").Struct("<QIIQqq").iter_unpack(block.numbered()))
        self.n += block.count
        return True
    def close(self, summary): self.path.with_suffix(".count").write_text(str(self.n))

store.SqliteCollector = Null
sys.argv[0] = "instr"
from instr.cli import main
main()
"""


@dataclass(frozen=True)
class Rate:
    events: int
    wall: float
    cpu: float

    def text(self) -> str:
        cpu = f"{self.events / self.cpu / 1e6:6.2f} M/CPU-s" if self.cpu > 0 else ""
        return f"{self.events / self.wall / 1e6:6.2f} M events/s  {cpu}"


def table() -> ProbeTable:
    t = ProbeTable()
    caps = (Capture("a", "arg", "i64"), Capture("b", "arg", "i64", index=1))
    t.add(Probe(1, "bench/target_add", FunctionPoint("bench", "target_add"), caps, ()))
    return t


def batch(first: int) -> bytes:
    return b"".join(
        encode_record(1, 0, [i, i], tid=4242, ts=10**12 + 40 * i)
        for i in range(first, first + BATCH)
    )


def measure(work: Callable[[], int], rounds: int) -> Rate:
    """The best of ``rounds`` (fastest wall time), each ``work()`` returning its item count."""
    best: Rate | None = None
    for _ in range(rounds):
        w0, c0 = time.perf_counter(), time.thread_time()
        n = work()
        r = Rate(n, time.perf_counter() - w0, time.thread_time() - c0)
        if best is None or r.events / r.wall > best.events / best.wall:
            best = r
    assert best is not None
    return best


def stage_decode(events: int, rounds: int) -> Rate:
    dec = Decoder(RunContext(table()))
    data = batch(0)
    import struct

    row = struct.Struct("<QIIQqq")

    def work() -> int:
        n = 0
        while n < events:
            b = dec.block(data, n + 1)
            assert b is not None
            n += len(list(row.iter_unpack(b.numbered())))
        return n

    return measure(work, rounds)


def fresh(path: Path) -> Path:
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        p.unlink(missing_ok=True)
    return path


def stage_floor(work_dir: Path, events: int, rounds: int) -> Rate:
    def work() -> int:
        db = sqlite3.connect(fresh(work_dir / "floor.db"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")
        db.executescript(_schema())
        db.execute("BEGIN")
        db.execute(
            "INSERT INTO events (run_id, probe_id, phase, seq, site, tid, ts_ns, args)"
            " WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?)"
            " SELECT 1, 1, 'entry', i, 0, 4242, 1000000000000 + 40 * i,"
            """ printf('{"a":%d,"b":%d}', i, i) FROM c""",
            (events,),
        )
        db.execute("COMMIT")
        db.close()
        return events

    return measure(work, rounds)


def stage_executemany(work_dir: Path, events: int, rounds: int) -> Rate:
    rows = [(i, 0, 4242, 10**12 + 40 * i, f'{{"a":{i},"b":{i}}}') for i in range(BATCH)]

    def work() -> int:
        db = sqlite3.connect(fresh(work_dir / "many.db"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")
        db.executescript(_schema())
        n = 0
        while n < events:
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO events (run_id, probe_id, phase, seq, site, tid, ts_ns, args)"
                " VALUES (1, 1, 'entry', ?, ?, ?, ?, ?)",
                rows,
            )
            db.execute("COMMIT")
            n += len(rows)
        db.close()
        return n

    return measure(work, rounds)


def _schema() -> str:
    from instr.collectors.sqlite import SCHEMA

    return SCHEMA


def stage_collector(work_dir: Path, events: int, rounds: int, journal: str) -> str:
    """Insert rate (decode + rows + one transaction per batch); ``close`` timed apart."""
    ctx = RunContext(table())
    dec = Decoder(ctx)
    data = batch(0)
    best: Rate | None = None
    closes: list[float] = []
    for _ in range(rounds):
        sink = SqliteCollector(fresh(work_dir / "store.db"))
        sink.open(ctx, INFO)
        assert sink.db is not None
        if journal != "WAL":
            sink.db.execute(f"PRAGMA journal_mode={journal}")
        n = 0
        w0, c0 = time.perf_counter(), time.thread_time()
        while n < events:
            b = dec.block(data, n + 1)
            assert b is not None and sink.on_block(b)
            n += b.count
        r = Rate(n, time.perf_counter() - w0, time.thread_time() - c0)
        t0 = time.perf_counter()
        sink.close(RunSummary(n, n // BATCH, 0, [], None, [], time.time_ns()))
        closes.append(time.perf_counter() - t0)
        if best is None or r.wall < best.wall:
            best = r
    assert best is not None
    return f"{best.text()}  (close, indexes included: {min(closes):.2f}s)"


# -- the real path ----------------------------------------------------------------


@dataclass(frozen=True)
class E2E:
    events: int
    loop: float  # target: run N answered
    stored: float  # target exited: every event committed
    close: float  # instr's exit after that
    target_cpu: float
    instr_cpu: float


def _reap(proc: Proc, timeout: float) -> float:
    """Wait for ``proc``; its CPU seconds (user + system)."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.proc.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{proc.argv[0]} did not exit within {timeout:.0f}s")
        time.sleep(0.005)


def run_e2e(ctx: Ctx, db: Path, null: str | None) -> E2E:
    """``run N`` under instr (``null``: the counting output, "count" or "decode")."""
    sets = ctx.workdir / "sqlite.yaml"
    sets.write_text(SETS)
    fresh(db)
    db.with_suffix(".count").unlink(missing_ok=True)
    n = ctx.calls
    with start_bench(ctx) as b:
        args = ("run", "-P", sets, "-s", "2int", "-p", b.pid, "-o", db)
        argv = instr_argv(*args)
        if null is not None:
            argv = [sys.executable, "-c", NULL_OUTPUT, null, *map(str, args)]
        with Proc(argv, cwd=REPO, env=instr_env()) as ins:
            wait_line(ins, ctx, "armed", stream="err")
            t0 = time.monotonic()
            b.send(f"run {n}")
            m = NS_RX.fullmatch(b.readline(ctx.timeout) or "")
            t1 = time.monotonic()
            if m is None or int(m[4]) != n * (n - 1):
                raise RuntimeError(f"bench answered {m and m[0]!r} to 'run {n}'")
            b.send("quit")
            target_cpu = _reap(b, ctx.timeout)
            t2 = time.monotonic()
            instr_cpu = _reap(ins, ctx.timeout)
            t3 = time.monotonic()
            if ins.proc.returncode != 0:
                raise RuntimeError(f"instr exited {ins.proc.returncode}: {ins.err.rest(5)[-3:]}")
    check(db, n, null)
    return E2E(n, t1 - t0, t2 - t0, t3 - t2, target_cpu, instr_cpu)


def check(db: Path, n: int, null: str | None) -> None:
    """Exact: N events, seq 1..N, and the values the target passed (sum of a = N(N-1)/2)."""
    if null is not None:
        got = int(db.with_suffix(".count").read_text())
        if got != n:
            raise RuntimeError(f"the host received {got} events, expected {n}")
        return
    con = sqlite3.connect(db)
    try:
        count, lo, hi, distinct, total = con.execute(
            "SELECT count(*), min(seq), max(seq), count(DISTINCT seq),"
            " sum(json_extract(args, '$.a')) FROM events"
        ).fetchone()
        ended = con.execute("SELECT events, drops, lost_batches FROM runs").fetchone()
    finally:
        con.close()
    if (count, lo, hi, distinct, total) != (n, 1, n, n, n * (n - 1) // 2):
        raise RuntimeError(
            f"stored {count} rows, seq {lo}..{hi} ({distinct} distinct), sum {total}"
        )
    if ended != (n, 0, 0):
        raise RuntimeError(f"runs row says events, drops, lost batches = {ended}")


def e2e_rows(ctx: Ctx) -> list[tuple[str, Callable[[], str]]]:
    def row(null: str | None) -> Callable[[], str]:
        def run() -> str:
            runs = [run_e2e(ctx, ctx.workdir / "e2e.db", null) for _ in range(ctx.rounds)]
            r = min(runs, key=lambda e: e.stored)
            med = statistics.median(e.stored for e in runs)
            return (
                f"{r.events / r.stored / 1e6:6.2f} M events/s  (best of {len(runs)}; median "
                f"{r.events / med / 1e6:.2f})  loop {r.loop:.2f}s, stored {r.stored:.2f}s, "
                f"close {r.close:.2f}s, CPU target {r.target_cpu:.2f}s instr {r.instr_cpu:.2f}s; "
                f"{r.events} events, none lost"
            )

        return run

    return [
        ("instr agent -> host, null output", row("count")),
        ("instr agent -> host + decode", row("decode")),
        ("instr end to end -o x.db", row(None)),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=300.0)
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="instr-bench-sqlite-"))
    try:
        try:
            compile_c(REPO / "tests" / "targets" / "bench.c", work / "bench", pie=True)
        except BuildError as e:
            print(f"bench_sqlite: cannot build the target: {e}", file=sys.stderr)
            return 1
        ctx = Ctx(work / "bench", work, args.events, args.events, args.rounds, args.timeout)
        n, k = args.events, args.rounds
        load = os.getloadavg()[0]
        print(f"# {os.cpu_count()} CPUs, load {load:.2f}; {n} two-integer events per measurement")
        if load > (os.cpu_count() or 1) * 0.5:
            print("# warning: the machine is busy; wall-clock figures include preemption")
        rows: list[tuple[str, Callable[[], str]]] = [
            ("host decode (block, numbered, iter_unpack)", lambda: stage_decode(n, k).text()),
            ("sqlite floor (rows made in SQL)", lambda: stage_floor(work, n, k).text()),
            ("executemany, pre-built rows", lambda: stage_executemany(work, n, k).text()),
            (
                "instr SqliteCollector.on_block (WAL)",
                lambda: stage_collector(work, n, k, "WAL"),
            ),
            (
                "SqliteCollector.on_block, journal OFF",
                lambda: stage_collector(work, n, k, "OFF"),
            ),
            *e2e_rows(ctx),
        ]
        for name, run in rows:
            print(f"# {name} ...", file=sys.stderr, flush=True)
            try:
                text = run()
            except Unavailable as e:
                print(f"{name:<44} unavailable: {e}", flush=True)
                continue
            except Exception as e:  # one row's failure must not end the benchmark
                print(f"{name:<44} failed: {type(e).__name__}: {e}", flush=True)
                continue
            print(f"{name:<44} {text}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
