"""Shared plumbing for scripts/bench.py: the bench target's protocol, rounds, tool processes."""

from __future__ import annotations

import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers import Proc

NS_RX = re.compile(r"ns_per_call=([\d.]+) calls=(\d+) elapsed_ns=(\d+) sum=(\d+)(?: cpu_ns=(\d+))?")
WARMUP_CALLS = 1000


class Unavailable(Exception):
    """The tool cannot be measured here; the message says why."""


@dataclass(frozen=True)
class Ctx:
    bench: Path  # the compiled bench target
    workdir: Path  # scratch directory for tool output
    calls: int  # calls per round for fast tools
    slow_calls: int  # calls per round for ltrace and strace
    rounds: int
    timeout: float  # bound on any single wait


@dataclass(frozen=True)
class Measured:
    kind: str  # "run" (target_add) or "wloop" (write): which baseline applies
    calls: int  # calls per timed round
    ns_per_call: float  # median over rounds, hooked, from the target's own clock
    hooked_calls: int  # all calls made while hooked, warm-up included
    events: int | None  # events the tool delivered (None: not countable)
    events_per_s: float | None
    note: str = ""
    # Median unhooked ns/call in the same target process, measured just before
    # the tool attached (None: the tool starts the target). The VM's speed
    # drifts by ~100 ns a write between minutes; this pair does not.
    before_ns: float | None = None


@dataclass(frozen=True)
class Driven:
    ns: list[float]  # ns/call of each timed round
    cpu_ns: list[float]  # CPU ns/call of the calling thread in each timed round (or [])
    total_calls: int  # warm-up included
    wall_s: float  # wall time of all rounds, warm-up included


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise Unavailable(f"{tool} not found on PATH")
    return path


def tool_name(argv: Sequence[str]) -> str:
    """``frida-trace`` for /path/frida-trace, ``instr`` for python -m instr."""
    if len(argv) > 2 and argv[1] == "-m":
        return argv[2]
    return Path(argv[0]).name


def start_bench(ctx: Ctx, prefix: Sequence[str] = (), env: dict[str, str] | None = None) -> Proc:
    """Start the bench target (under ``prefix``, e.g. a tracer) and wait for 'ready'."""
    proc = Proc([*prefix, str(ctx.bench)], env=env)
    line = proc.readline(ctx.timeout)
    if line != "ready":
        err = proc.err.rest(5) if line is None else []
        proc.kill()
        raise Unavailable(f"bench did not start under {' '.join(prefix) or 'nothing'}: {err[-3:]}")
    return proc


def expected_sum(cmd: str, n: int) -> int:
    """The ``sum=`` a bench target answers to ``cmd n`` when every call did its work.

    run (bench.c): sum of target_add(i, i) = n(n-1); wloop (bench.c): bytes
    written = n; sloop (bench.c): sum of i = n(n-1)/2; malloc (bench_malloc.c): bytes asked, sizes (i & 127) + 1.
    """
    if cmd == "run":
        return n * (n - 1)
    if cmd == "wloop":
        return n
    if cmd == "sloop":
        return n * (n - 1) // 2
    if cmd == "malloc":
        full, rest = divmod(n, 128)
        return full * (128 * 129 // 2) + rest * (rest + 1) // 2
    raise ValueError(f"no expected sum for the bench command {cmd!r}")


def drive(proc: Proc, ctx: Ctx, cmd: str, calls: int) -> Driven:
    """A warm-up round, then ``ctx.rounds`` timed rounds of ``cmd calls``."""
    ns: list[float] = []
    cpu: list[float] = []
    total = 0
    start = time.monotonic()
    for i in range(ctx.rounds + 1):
        n = min(WARMUP_CALLS, calls) if i == 0 else calls
        proc.send(f"{cmd} {n}")
        line = proc.readline(ctx.timeout)
        m = NS_RX.fullmatch(line or "")
        if m is None:
            raise RuntimeError(f"bench answered {line!r} to '{cmd} {n}'")
        # A hook that breaks the calls would look fast: writes failing with
        # EBADF are (measured, with an early fd-table bug).
        if int(m[4]) != expected_sum(cmd, n):
            raise RuntimeError(f"bench's '{cmd} {n}' went wrong under the tool: {line!r}")
        total += n
        if i > 0:
            ns.append(float(m[1]))
            if m[5] is not None:
                cpu.append(int(m[5]) / n)
    return Driven(ns, cpu, total, time.monotonic() - start)


def finish_bench(proc: Proc, ctx: Ctx) -> None:
    proc.send("quit")
    proc.finish(ctx.timeout)


def stop(proc: Proc, ctx: Ctx, sig: int = signal.SIGINT) -> list[str]:
    """Signal a tool, wait for it, return the rest of its stdout."""
    if proc.proc.poll() is None:
        proc.proc.send_signal(sig)
    try:
        proc.proc.wait(ctx.timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise RuntimeError(
            f"{tool_name(proc.argv)} did not exit within {ctx.timeout:.0f}s"
        ) from None
    return proc.out.rest(ctx.timeout)


def wait_line(proc: Proc, ctx: Ctx, pattern: str, stream: str = "out") -> str:
    """Read ``proc``'s stdout (or stderr) until a line contains ``pattern``."""
    reader = proc.out if stream == "out" else proc.err
    deadline = time.monotonic() + ctx.timeout
    while True:
        try:
            line = reader.readline(deadline - time.monotonic())
        except TimeoutError:
            raise Unavailable(
                f"no {pattern!r} from {tool_name(proc.argv)} within {ctx.timeout:.0f}s"
            ) from None
        if line is None:
            err = proc.err.rest(5) if stream == "out" else reader.seen
            raise Unavailable(f"{tool_name(proc.argv)} exited: {' | '.join(err[-3:])}")
        if pattern in line:
            return line


class Logged:
    """A tool whose stdout+stderr go to a file, keeping this harness out of the event path.

    Waiting on the file polls it (this is a benchmark, not a test).
    """

    POLL_S = 0.05

    def __init__(self, argv: Sequence[str], out: Path, cwd: Path | None = None) -> None:
        self.argv = list(argv)
        self.out = out
        self.stopped_by = ""
        self._file = out.open("w")
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._file,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )

    def lines(self) -> list[str]:
        return self.out.read_text(errors="replace").splitlines()

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            exited = self.proc.poll() is not None
            for line in self.lines():
                if text in line:
                    return line
            if exited:
                tail = " | ".join(self.lines()[-3:])
                raise Unavailable(f"{tool_name(self.argv)} exited ({self.proc.returncode}): {tail}")
            time.sleep(self.POLL_S)
        raise Unavailable(f"no {text!r} from {tool_name(self.argv)} within {timeout:.0f}s")

    def settle(self, count: Callable[[list[str]], int], expected: int, timeout: float) -> int:
        """Wait until ``count(lines) >= expected`` or the count stops growing for a second."""
        return settle(lambda: count(self.lines()), expected, timeout)[0]

    def stop(self, timeout: float) -> list[str]:
        """SIGINT (as Ctrl-C), escalating to SIGTERM then SIGKILL; see ``self.stopped_by``."""
        for sig, wait_s in (
            (signal.SIGINT, timeout),
            (signal.SIGTERM, 10.0),
            (signal.SIGKILL, 10.0),
        ):
            if self.proc.poll() is not None:
                break
            self.proc.send_signal(sig)
            self.stopped_by = signal.Signals(sig).name
            try:
                self.proc.wait(wait_s)
            except subprocess.TimeoutExpired:
                continue
        self._file.close()
        return self.lines()

    def __enter__(self) -> Logged:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._file.close()


def settle(count: Callable[[], int], expected: int, timeout: float) -> tuple[int, float]:
    """Poll ``count()`` until it reaches ``expected`` or stops growing for a second.

    Returns the last count and the monotonic time it was first seen.
    """
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = count()
        now = time.monotonic()
        if n != last:
            last, since = n, now
        if n >= expected or now - since > 1.0:
            break
        time.sleep(Logged.POLL_S)
    return last, since


def measured(
    kind: str,
    calls: int,
    d: Driven,
    events: int | None,
    note: str = "",
    before: Driven | None = None,
) -> Measured:
    rate = events / d.wall_s if events is not None and d.wall_s > 0 else None
    pre = statistics.median(before.ns) if before is not None else None
    return Measured(kind, calls, statistics.median(d.ns), d.total_calls, events, rate, note, pre)


def loss_note(events: int, expected: int) -> str:
    return "no loss" if events == expected else f"got {events} of {expected} events"
