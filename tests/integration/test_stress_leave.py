"""Stress: instr never harms a process it leaves (docs/leaving.md).

A program thread inside a hooked call when instr leaves (blocked in read on
an idle pipe, in a sleep, in poll, in a futex, in accept on a loopback
socket; or busy calling malloc) must wake into valid code and go on exactly
as before, whatever the command and hook kind (``syscalls -c``: replaceFast C
hooks; ``syscalls -o``: the stream; ``trace --agg``: fast-tier aggregation,
replaceFast or listeners; ``trace``: listeners; ``mem``: the malloc family
replaced) and however instr leaves (Ctrl-C, ``--duration``, SIGKILL at a
random moment). instr's leave must be prompt, its output exact, and Frida's
agent gone from the process once the call has returned. Then: many leaves of
one long-lived program per command, and redis-server under load.

Everything is synchronised on the programs' output and on
/proc/PID/task/TID/syscall (the system call a thread is blocked in), polled
with a deadline. The random moments derive from a seed printed with every
case (``STRESS`` lines, seen with ``pytest -s``); INSTR_STRESS_SEED replays one.

.ci/run runs it at a size that fits CI (N_CYCLES cycles per command, N_KILLS
kills during an attach). The soak, by hand, runs 200 cycles per command and
50 kills: ``INSTR_STRESS=soak python -m pytest -s --timeout=3600
tests/integration/test_stress_leave.py`` (200 cycles of one command take
longer than the suite's 600 s per test; INSTR_STRESS_CYCLES and
INSTR_STRESS_KILLS set either number).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import Finished, InstrProcess, Proc, TargetProcess, Targets
from jsonl import read_jsonl

pytestmark = pytest.mark.frida
SOAK = os.environ.get("INSTR_STRESS") == "soak"

# A leave is prompt within this (it was 20-40 s when it waited for a blocked
# thread), with room for a loaded machine.
PROMPT_S = 5.0
# Frida's agent is gone from the process within this once no thread is inside.
UNLOAD_S = float(os.environ.get("INSTR_STRESS_UNLOAD_S", "5.0"))
DURATION_S = 1.0
# Frida's agent notices that its host died (SIGKILL) and reverts instr's hooks within this.
NOTICE_S = 30.0
ARMED = re.compile(r"\barmed\b|(counting|tracing) system calls|tracking \d+ allocator")
# x86-64 system call numbers of the calls the programs block in. A sleep
# interrupted by a ptrace stop (Frida reads a thread's registers that way)
# goes on in restart_syscall, with the time it had left.
NR = {"read": 0, "poll": 7, "accept": 43, "futex": 202, "clock_nanosleep": 230}
RESTART = 219
# What instr may say on stderr when it leaves (the armed line is read before).
LEAVE_NOTES = re.compile(
    r"instr: stopping"
    r"|instr: \d+ thread\(s\) of pid \d+ \(tid \d+(, tid \d+)*\) were blocked inside a hooked call"
    r" when instr left; instr's agent stays in the process until they return from it,"
    r" then unloads itself \(docs/leaving\.md\)"
    r"|instr: a thread of pid \d+ was still inside a hooked call when instr left; instr's agent"
    r" stays in the process until it returns from it, then unloads itself \(docs/leaving\.md\)"
    r"|instr: detached; the target keeps running"
)

SEED = int(os.environ.get("INSTR_STRESS_SEED", str(random.SystemRandom().randrange(10**6))))


def rng(*key: object) -> random.Random:
    """The random moments of one case: the same for the same seed and case."""
    return random.Random("/".join(map(str, (SEED, *key))))


def note(*parts: object) -> None:
    """One line of the run's record (seen with pytest -s)."""
    print("STRESS", f"seed={SEED}", *parts, flush=True)


# --------------------------------------------------------------------------- /proc


def tid_named(pid: int, comm: str) -> int:
    for tid in sorted(os.listdir(f"/proc/{pid}/task")):
        try:
            if Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip() == comm:
                return int(tid)
        except OSError:
            continue
    raise AssertionError(f"pid {pid} has no thread named {comm!r}")


def in_syscall(pid: int, tid: int) -> int | None:
    """The system call thread ``tid`` is blocked in; None when it runs or is gone."""
    try:
        first = Path(f"/proc/{pid}/task/{tid}/syscall").read_text().split()[:1]
    except OSError:
        return None
    return int(first[0]) if first and first[0].lstrip("-").isdigit() else None


def blocked_in(pid: int, tid: int, nr: int) -> bool:
    return in_syscall(pid, tid) in (nr, RESTART)


def wait_blocked_in(pid: int, tid: int, nr: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not blocked_in(pid, tid, nr):
        if time.monotonic() > deadline:
            now = in_syscall(pid, tid)
            raise AssertionError(f"tid {tid} of pid {pid} is not blocked in syscall {nr}: {now}")
        time.sleep(0.002)


def frida_maps(pid: int) -> int:
    """Lines of /proc/PID/maps that name Frida (its agent image); -1: no process."""
    try:
        return sum("frida" in line for line in Path(f"/proc/{pid}/maps").read_text().splitlines())
    except OSError:
        return -1


def unarmed(pid: int, timeout: float = NOTICE_S) -> float:
    """After instr was SIGKILLed: poll until its agent has reverted its hooks
    (its mark, /memfd:instr-armed-by-PID, is gone: agents/src/core/marker.ts);
    the seconds that took. Until then the program's threads still enter the
    hooks, and one that blocks in a hooked call meanwhile keeps the agent
    until it returns (docs/leaving.md)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if "instr-armed-by-" not in Path(f"/proc/{pid}/maps").read_text():
                return time.monotonic() - start
        except OSError:
            break
        time.sleep(0.005)
    raise AssertionError(f"instr's agent still armed in pid {pid} {timeout} s after instr died")


def ended(pid: int, timeout: float) -> bool:
    """Wait until process ``pid`` has ended (gone, or a zombie); False at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def frida_maps_settled(pid: int, timeout: float = UNLOAD_S) -> tuple[int, float]:
    """Poll until Frida is gone from ``pid`` or ``timeout`` passes: (lines left, seconds)."""
    start = time.monotonic()
    while (n := frida_maps(pid)) > 0 and time.monotonic() - start < timeout:
        time.sleep(0.005)
    return n, time.monotonic() - start


def diagnose(pid: int) -> str:
    """Each thread of ``pid``: its name, state, system call and kernel wait channel."""
    rows = [f"pid {pid}: {frida_maps(pid)} frida lines in its maps"]
    try:
        tids = sorted(os.listdir(f"/proc/{pid}/task"), key=int)
    except OSError:
        return f"pid {pid} is gone"
    for tid in tids:
        base = Path(f"/proc/{pid}/task/{tid}")
        try:
            comm = (base / "comm").read_text().strip()
            state = (base / "stat").read_text().rpartition(")")[2].split()[0]
            nr = (base / "syscall").read_text().split()[0]
            wchan = (base / "wchan").read_text()
        except OSError:
            continue
        rows.append(f"  tid {tid} {comm} state {state} syscall {nr} wchan {wchan}")
    return "\n".join(rows)


def threads(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


# --------------------------------------------------------------------------- programs


def sum_to(n: int) -> int:
    return n * (n + 1) // 2


def alloc_check(pairs: int) -> int:
    """condwait's check for K malloc/free pairs: the sum of i % 251 over i < K."""
    rounds, rest = divmod(pairs, 251)
    return rounds * sum(range(251)) + sum(range(rest))


@dataclass
class Running:
    """A program under test, and what the test has seen of it."""

    proc: TargetProcess
    port: int = 0  # acceptor's
    worker: int = 0  # condwait's worker thread
    lines: int = 0  # lines sent
    value: int = 0  # what the call in progress was asked for
    said: list[str] = field(default_factory=list)  # lines printed since armed

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, line: str) -> None:
        try:
            self.proc.send(line)
        except OSError as e:  # its stdin closed: it has ended
            raise AssertionError(f"pid {self.pid}: {e}{self.death()}") from None
        self.lines += 1

    def expect(self, answer: str, timeout: float = 30.0) -> None:
        got = self.proc.readline(timeout)
        assert got == answer, f"pid {self.pid}: {got!r} instead of {answer!r}{self.death()}"
        self.said.append(answer)

    def death(self) -> str:
        """How the program ended, when it has (its stdout closed)."""
        try:
            code = self.proc.proc.wait(5)
        except subprocess.TimeoutExpired:
            return f"; it runs on:\n{diagnose(self.pid)}"
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited {code}"
        return f"; the program {how}, stderr {self.proc.err.rest(5)}"

    def ask(self, line: str, *answers: str) -> None:
        self.send(line)
        for answer in answers:
            self.expect(answer)

    def expect_alloc(self, timeout: float = 60.0) -> int:
        line = self.proc.readline(timeout)
        m = re.fullmatch(r"allocated pairs=(\d+) check=(\d+)", line or "")
        assert m, f"pid {self.pid}: {line!r}{self.death() if line is None else ''}"
        pairs, check = int(m[1]), int(m[2])
        assert pairs > 0 and pairs % 1024 == 0 and check == alloc_check(pairs), line
        return pairs

    def pending(self) -> bool:
        """Whether the program printed a line the test has not read yet."""
        return not self.proc.out._queue.empty()


@dataclass(frozen=True)
class Call:
    """A call a program is inside when instr leaves.

    ``enter`` makes the program (re-)enter it once instr is armed, and returns
    once the thread is in it (long: for long enough to outlast --duration);
    ``release`` ends it and checks its exact answer; ``after`` is one more
    exchange, checked exactly. Whether the program is still inside when
    instr has left: it has not answered yet (``Running.pending``).
    """

    id: str
    target: str
    func: str  # the libc function the trace commands hook
    enter: Callable[[Running, bool], None]
    release: Callable[[Running], None]
    after: Callable[[Running], None]
    reads_input: bool = False  # the line that led in was read under the hooks
    exits_with_lines: bool = True  # "bye lines=L", status L % 100; else silent, 0


def _read_enter(r: Running, long: bool) -> None:
    r.ask("1 sum", "sum=1")
    wait_blocked_in(r.pid, r.pid, NR["read"])


def _sleep_enter(r: Running, long: bool) -> None:
    # 300 ms each: the leave must come before the last one ends, on a loaded
    # machine too (4, 1.2 s, was once too short for a Ctrl-C leave of 1.3 s)
    r.value = 16 if long else 10
    r.ask(str(r.value), f"sleeping {r.value}")
    wait_blocked_in(r.pid, r.pid, NR["clock_nanosleep"])


def _poll_enter(r: Running, long: bool) -> None:
    r.ask("1 sum", "sum=1")
    wait_blocked_in(r.pid, r.pid, NR["poll"])


def _futex_enter(r: Running, long: bool) -> None:
    r.ask("1", "job 1 sum=1")
    wait_blocked_in(r.pid, r.worker, NR["futex"])


def _accept_enter(r: Running, long: bool) -> None:
    r.ask("accept", "accepting")
    wait_blocked_in(r.pid, r.pid, NR["accept"])


def connect_and_ask(r: Running, n: int) -> None:
    try:
        with socket.create_connection(("127.0.0.1", r.port), timeout=30) as s:
            s.sendall(f"{n}\n".encode())
            answer = s.makefile().readline()
    except OSError as e:
        raise AssertionError(f"pid {r.pid}: {e}{r.death()}") from None
    assert answer == f"sum={sum_to(n)}\n", f"pid {r.pid}: {answer!r}{r.death()}"
    r.expect(f"accepted {n} sum={sum_to(n)}")


def _churn_enter(r: Running, long: bool) -> None:
    # Until SIGUSR1: a churn of a fixed length was over before a slow leave.
    r.ask("0 alloc", "allocating 0")


def _churn_release(r: Running) -> None:
    os.kill(r.pid, signal.SIGUSR1)
    r.expect_alloc()


def _churn_after(r: Running) -> None:
    r.ask("1 alloc", "allocating 1")
    r.expect_alloc()


CALLS = {
    c.id: c
    for c in (
        Call(
            "read",
            "sleeper",
            "read",
            _read_enter,
            lambda r: r.ask("2 sum", "sum=3"),
            lambda r: r.ask("3 sum", "sum=6"),
            exits_with_lines=False,
        ),
        Call(
            "sleep",
            "sleeper",
            "usleep",
            _sleep_enter,
            lambda r: r.expect(f"slept {r.value}"),
            lambda r: r.ask("3 sum", "sum=6"),
            exits_with_lines=False,
        ),
        Call(
            "poll",
            "poller",
            "poll",
            _poll_enter,
            lambda r: r.ask("2 sum", "sum=3"),
            lambda r: r.ask("2", "polling 2", "polled 2 rc=0"),
            reads_input=True,
        ),
        Call(
            "futex",
            "condwait",
            "pthread_cond_wait",
            _futex_enter,
            lambda r: r.ask("2", "job 2 sum=3"),
            _churn_after,
        ),
        Call(
            "accept",
            "acceptor",
            "accept",
            _accept_enter,
            lambda r: connect_and_ask(r, 5),
            lambda r: r.ask("3 sum", "sum=6"),
        ),
        Call(
            "malloc",
            "condwait",
            "malloc",
            _churn_enter,
            _churn_release,
            lambda r: r.ask("2", "job 2 sum=3"),
        ),
    )
}


def start(target: str, targets: Targets, launch: Callable[..., TargetProcess]) -> Running:
    r = Running(launch(targets.path(target)))
    if target == "acceptor":
        line = r.proc.readline()
        assert line is not None and line.startswith("port "), line
        r.port = int(line.split()[1])
    if target == "condwait":
        r.worker = tid_named(r.pid, "worker")
    return r


def finish(r: Running, exits_with_lines: bool) -> None:
    """stdin closed: the program ends normally, with its exact last words and status."""
    r.proc.close_stdin()
    try:
        r.proc.proc.wait(30)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the program did not end in 30 s:\n{diagnose(r.pid)}") from None
    end = r.proc.finish(30)
    if exits_with_lines:
        assert (end.stdout, end.returncode) == ([f"bye lines={r.lines}"], r.lines % 100), end
    else:
        assert (end.stdout, end.returncode) == ([], 0), end
    assert end.stderr == [], end


# --------------------------------------------------------------------------- instr

COMMANDS: dict[str, Callable[[str], list[object]]] = {
    "syscalls-c": lambda func: ["syscalls", "-c"],
    # strace's text (a .jsonl name would get JSON Lines: docs/syscalls.md)
    "syscalls-o": lambda func: ["syscalls", "-o", "out.txt"],
    "trace-agg": lambda func: ["trace", "-i", f"libc.so*!{func}", "--agg", "n=count()"],
    # A 1 MB ring: a full 8 MB one of malloc events (about 1M) takes ~5 s
    # to write out at the leave, which is about throughput, not leaving.
    "trace": lambda func: [
        "trace",
        "-i",
        f"libc.so*!{func}",
        "-o",
        "trace.jsonl",
        "--buffer-size",
        1 << 20,
    ],
    "mem": lambda func: ["mem"],
}
HOWS = ("SIGINT", "duration", "SIGKILL")


@dataclass
class Left:
    """How instr left: its end (None after SIGKILL) and how long the leave took."""

    how: str
    done: Finished | None
    took: float
    cwd: Path

    @property
    def held_note(self) -> bool:
        return self.done is not None and "blocked inside a hooked call" in self.done.err


def attach(
    instr_bg: Callable[..., InstrProcess],
    command: str,
    func: str,
    pid: int,
    how: str,
    cwd: Path,
    duration: float = DURATION_S,
) -> tuple[InstrProcess, float]:
    cwd.mkdir(parents=True, exist_ok=True)
    args = [*COMMANDS[command](func), "-p", pid]
    if how == "duration":
        args += ["--duration", duration]
    instr = instr_bg(*args, cwd=cwd)
    instr.err.expect(ARMED, timeout=60)
    return instr, time.monotonic()


def leave(
    instr: InstrProcess,
    pid: int,
    how: str,
    armed_at: float,
    cwd: Path,
    moment: random.Random,
    duration: float = DURATION_S,
) -> Left:
    if how == "SIGINT":
        started = time.monotonic()
        instr.proc.send_signal(signal.SIGINT)
        done = instr.finish(timeout=60)
        return Left(how, done, time.monotonic() - started, cwd)
    if how == "duration":
        assert instr.proc.poll() is None, "instr left before the program was inside the call"
        done = instr.finish(timeout=60)
        return Left(how, done, time.monotonic() - armed_at - duration, cwd)
    assert how == "SIGKILL"
    time.sleep(moment.uniform(0.0, 0.4))  # a random moment, not a wait for anything
    started = time.monotonic()
    # The worker too: a kill of the guard alone is an orderly leave (instr.guard),
    # and this is the hard case, Frida's agent reverting the hooks of a dead host.
    instr.kill_all()
    took = time.monotonic() - started
    unarmed(pid)
    return Left(how, None, took, cwd)


def syscall_table(out: list[str]) -> dict[str, tuple[int, int]]:
    """instr syscalls -c's table: {syscall: (calls, errors)}."""
    rows: dict[str, tuple[int, int]] = {}
    for line in out:
        f = line.split()
        if len(f) in (5, 6) and f[0][0].isdigit() and f[-1] != "total":
            rows[f[-1]] = (int(f[3]), int(f[4]) if len(f) == 6 else 0)
    return rows


def stream_lines(path: Path) -> list[str]:
    """instr syscalls -o's lines without pipe inodes, addresses and times."""
    text = re.sub(r"<pipe:\[\d+\]>", "<pipe>", path.read_text())
    text = re.sub(r"0x[0-9a-f]+", "0x", text)
    return [re.sub(r" <\d+\.\d+>$", "", line) for line in text.splitlines()]


def expected_stream(call: Call, r: Running, line_in: str, k: int) -> list[str]:
    """The system calls from armed to the leave; ``k``: usleeps that ended meanwhile."""
    lines = []
    if call.reads_input:
        n = len(line_in) + 1
        lines.append(f'read(0<pipe>, "{line_in}\\n", 4096) = {n}')
    for said in r.said:
        n = len(said) + 1
        lines.append(f'write(1<pipe>, "{said}\\n", {n}) = {n}')
    lines += ["clock_nanosleep(0, 0, 0x, NULL) = 0"] * k
    return lines


def expected_entries(call: Call, r: Running, k: int) -> list[tuple[int, str]]:
    """(tid, phase) of the trace events from armed to the leave."""
    if call.id == "futex":  # main waits for the job; the worker waits again; main returns
        return [(r.pid, "entry"), (r.worker, "entry"), (r.pid, "exit")]
    return [(r.pid, "entry"), (r.pid, "exit")] * k + [(r.pid, "entry")]


def check_output(command: str, call: Call, r: Running, left: Left, line_in: str) -> None:
    """instr's exact output for what the program did between armed and the leave.

    Where the program went on calling the function before the leave (usleep
    in a loop), ``k`` says how many calls ended meanwhile: read from the
    output, bounded, and then the whole output must be exactly that."""
    done = left.done
    assert done is not None
    assert done.returncode == 0, done.err
    odd = [line for line in done.stderr if not LEAVE_NOTES.fullmatch(line)]
    assert odd == [], done.err
    if command == "syscalls-c":
        table = syscall_table(done.stdout)
        k = table.get("clock_nanosleep", (0, 0))[0]
        want = Counter(line.split("(")[0] for line in expected_stream(call, r, line_in, k))
        assert table == {name: (n, 0) for name, n in want.items()}, done.out
    elif command == "syscalls-o":
        assert done.stdout == [], done.out
        got = stream_lines(left.cwd / "out.txt")
        k = sum(line.startswith("clock_nanosleep(") for line in got)
        assert got == expected_stream(call, r, line_in, k)
    elif command == "trace-agg":
        m = [re.fullmatch(r"cli/n = count\(\): (\d+)", line) for line in done.stdout]
        counts = [int(x[1]) for x in m if x]
        assert len(counts) == 1, done.out
        if call.id == "malloc":  # from armed to the leave: fewer than the pairs it makes
            k = 0
            assert counts[0] > 0, done.out
        else:
            k = counts[0] - 1 if call.id == "sleep" else 0
            want = expected_entries(call, r, k)
            assert counts[0] == sum(phase == "entry" for _, phase in want), done.out
        assert re.search(r"^\s+cli/libc\.so\*!\w+\s+armed\s+fast\s+1\s", done.out, re.M), done.out
    elif command == "trace":
        events, summary = read_jsonl(left.cwd / "trace.jsonl")
        (probe,) = summary["probes"]
        assert (probe["state"], probe["tier"], probe["drops"]) == ("armed", "native", 0), probe
        assert summary["events"] == probe["events"] == len(events), summary
        assert summary["drops"] == 0 and summary["ending"]["reason"] == "detach", summary
        assert {e["function"] for e in events} == {f"libc.so.6!{call.func}"}, events[:4]
        seen = [(e["tid"], e["phase"]) for e in events]
        if call.id == "malloc":  # the worker, in and out of malloc, in order
            k = 0
            assert seen and seen == [(r.worker, ("entry", "exit")[i % 2]) for i in range(len(seen))]
        else:
            k = sum(phase == "exit" for _, phase in seen) - (call.id == "futex")
            assert seen == expected_entries(call, r, k), seen
    elif command == "mem":
        k = 0
        calls = next(line for line in done.stdout if line.startswith("  calls "))
        heap = next(line for line in done.stdout if line.startswith("  heap "))
        if call.id != "malloc":
            assert calls.split()[1:4] == ["none;", "free", "0"], calls
            assert heap.split()[1:6] == ["0", "bytes", "in", "0", "allocations,"], heap
        else:
            # The worker's loop: one malloc site; one or two blocks live at a time.
            m = re.match(r"  calls\s+malloc ([\d,]+); free ([\d,]+)", calls)
            h = re.match(
                r"  heap\s+([\d,]+) bytes in ([\d,]+) allocations, [\d,]+ freed;"
                r" live ([\d,]+) bytes in ([\d,]+) blocks",
                heap,
            )
            site = re.search(
                r"^\s+([\d,]+) bytes\s+([\d,]+) calls  malloc from condwait!alloc_one\+",
                done.out,
                re.M,
            )
            assert m and h and site, done.out
            mallocs, frees = (int(x.replace(",", "")) for x in m.groups())
            nbytes, allocs, live_bytes, live = (int(x.replace(",", "")) for x in h.groups())
            site_bytes, site_calls = (int(x.replace(",", "")) for x in site.groups())
            assert mallocs == allocs > 0 and mallocs - frees == live, done.out
            assert live <= 2 and (live == 0) == (live_bytes == 0), done.out
            assert (site_calls, site_bytes) == (mallocs, nbytes), done.out
    # Only a sleep goes on calling the function it is inside; at most r.value times.
    assert k == 0 or (call.id == "sleep" and 0 < k < r.value), f"k={k}: {done.out}"


# --------------------------------------------------------------------------- 1+2: every command, call, leave


@dataclass
class Outcome:
    case: str
    error: str | None = None
    record: str = ""


def one_case(
    command: str,
    call: Call,
    how: str,
    targets: Targets,
    launch: Callable[..., TargetProcess],
    instr_bg: Callable[..., InstrProcess],
    cwd: Path,
) -> str:
    """Attach, arm, enter the call, leave, and check everything; returns the case's record."""
    r = start(call.target, targets, launch)
    instr, armed_at = attach(instr_bg, command, call.func, r.pid, how, cwd)
    call.enter(r, how == "duration")
    line_in = {"read": "1 sum", "poll": "1 sum"}.get(call.id, "")
    said = list(r.said)  # what it printed from armed to the leave
    left = leave(instr, r.pid, how, armed_at, cwd, rng(command, call.id, how))
    inside = not r.pending()
    maps_held, threads_held = frida_maps(r.pid), threads(r.pid)
    call.release(r)
    # (After SIGKILL, leave() waited for the agent to revert its hooks: it
    # notices its host's death in its own time.)
    maps_left, settle = frida_maps_settled(r.pid)
    record = (
        f"{command} {call.id} {how}: pid {r.pid} leave {left.took:.2f}s inside={inside}"
        f" frida-maps held={maps_held} threads={threads_held}"
        f" after-return={maps_left} ({settle:.2f}s) held-note={left.held_note}"
    )
    note(record)
    try:
        lingering = "" if maps_left == 0 else diagnose(r.pid)
        call.after(r)
        finish(r, call.exits_with_lines)
        if left.done is not None:
            assert left.took < PROMPT_S, f"leaving took {left.took:.1f} s"
            r.said = said
            check_output(command, call, r, left, line_in)
        assert inside, "the leave did not come while the program was inside the call"
        assert maps_left == 0, f"Frida still in the maps {UNLOAD_S} s after the call:\n{lingering}"
    except (AssertionError, TimeoutError) as e:
        err = "(killed)" if left.done is None else left.done.err
        raise AssertionError(f"{record}\n{e}\ninstr's stderr: {err}") from None
    return record


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_leave_while_inside_a_call(targets, launch, instr_bg, tmp_path, command, how) -> None:
    """Every call of CALLS at once, each in its own program with its own instr."""

    def run(call: Call) -> Outcome:
        case = f"{command}-{call.id}-{how}"
        try:
            record = one_case(command, call, how, targets, launch, instr_bg, tmp_path / call.id)
            return Outcome(case, record=record)
        except Exception as e:  # every case's outcome, whatever ends one
            return Outcome(case, error=f"{type(e).__name__}: {e}")

    with ThreadPoolExecutor(max_workers=len(CALLS)) as pool:
        outcomes = list(pool.map(run, CALLS.values()))
    failed = [f"{o.case}: {o.error}" for o in outcomes if o.error]
    assert not failed, "\n\n".join(failed)


# --------------------------------------------------------------------------- 3: cycles

# One long-lived program per command, and the calls it is left inside.
CYCLES = {
    "syscalls-c": ("sleeper", ("sleep", "read")),
    "syscalls-o": ("poller", ("poll",)),
    "trace-agg": ("condwait", ("futex",)),
    "trace": ("acceptor", ("accept",)),
    "mem": ("condwait", ("malloc", "futex")),
}
N_CYCLES = int(os.environ.get("INSTR_STRESS_CYCLES", "200" if SOAK else "12"))


def one_cycle(
    command: str,
    call: Call,
    how: str,
    r: Running,
    instr_bg: Callable[..., InstrProcess],
    cwd: Path,
    moment: random.Random,
) -> tuple[Left, bool, int]:
    r.said.clear()
    instr, armed_at = attach(instr_bg, command, call.func, r.pid, how, cwd, duration=0.5)
    call.enter(r, how == "duration")
    left = leave(instr, r.pid, how, armed_at, cwd, moment, duration=0.5)
    inside = not r.pending()
    call.release(r)
    maps_left, _ = frida_maps_settled(r.pid)
    call.after(r)
    return left, inside, maps_left


@pytest.mark.parametrize("command", list(CYCLES))
def test_cycles_on_one_program(targets, launch, instr_bg, tmp_path, command) -> None:
    """N_CYCLES attach/arm/leave cycles, every way of leaving in a random
    order, on one program: it answers exactly after each, and ends normally."""
    target, call_ids = CYCLES[command]
    r = start(target, targets, launch)
    order = rng(command, "cycles")
    hows = [HOWS[i % len(HOWS)] for i in range(N_CYCLES)]
    order.shuffle(hows)
    problems: list[str] = []
    slow: list[str] = []
    lingering: list[str] = []
    for i, how in enumerate(hows):
        call = CALLS[call_ids[i % len(call_ids)]]
        try:
            left, inside, maps_left = one_cycle(
                command, call, how, r, instr_bg, tmp_path / f"c{i}", order
            )
        except Exception as e:  # the program died or hung: the cycles end here
            alive = r.proc.proc.poll()
            problems.append(f"cycle {i} ({call.id}, {how}): {e}; program status {alive}")
            note(command, f"PROBLEM {problems[-1]}")  # at once: a soak's summary comes late
            break
        what = f"cycle {i} ({call.id}, {how}): leave {left.took:.2f}s frida-maps {maps_left}"
        note(command, what)
        if left.done is not None and left.done.returncode != 0:
            problems.append(f"{what}: instr exited {left.done.returncode}: {left.done.err}")
        if left.done is not None and left.took >= PROMPT_S:
            slow.append(what)
        if not inside:
            problems.append(f"{what}: the leave did not come while inside the call")
        if maps_left != 0:
            lingering.append(what)
    if not problems:
        finish(r, CALLS[call_ids[0]].exits_with_lines)
    note(command, f"{len(hows)} cycles: {len(slow)} slow, {len(lingering)} lingering")
    assert problems == [], "\n".join(problems)
    assert slow == [], f"leaves over {PROMPT_S} s:\n" + "\n".join(slow)
    assert lingering == [], "frida still in the maps after the call returned:\n" + "\n".join(
        lingering
    )


N_KILLS = int(os.environ.get("INSTR_STRESS_KILLS", "50" if SOAK else "8"))


def test_sigkill_at_any_moment_of_an_attach(targets, launch, instr_bg, tmp_path) -> None:
    """instr killed at a random moment from its start to a little after it
    has armed (while Frida injects, while the agent loads, while the hooks go
    in), each time in a new program: the program answers exactly after the
    kill, it ends normally, and Frida leaves it. The kill reaches instr's
    guard; its worker finishes what Frida was doing and leaves in order
    (instr.guard). Before the split, a kill while Frida injected could leave
    its agent idle in the program, or kill the program (a CI run: SIGSEGV)."""
    r = start("sleeper", targets, launch)
    started = time.monotonic()
    instr = instr_bg("syscalls", "-c", "-p", r.pid, cwd=tmp_path)
    instr.err.expect(ARMED, timeout=60)
    span = 1.2 * (time.monotonic() - started)  # from start to armed, and a little more
    instr.proc.send_signal(signal.SIGINT)
    assert instr.finish(timeout=60).returncode == 0
    finish(r, exits_with_lines=False)
    moment = rng("attach-kill")
    problems: list[str] = []
    left_behind: list[str] = []
    for i in range(N_KILLS):
        r = start("sleeper", targets, launch)
        instr = instr_bg("syscalls", "-c", "-p", r.pid, cwd=tmp_path)
        at = moment.uniform(0.0, span)
        time.sleep(at)  # the random moment itself, not a wait for anything
        worker = instr.worker()
        instr.kill()  # the user's instr: its guard; the worker leaves in order
        killed = time.monotonic()
        err = instr.err.rest(60)  # to its end: the worker's
        armed = any(ARMED.search(line) for line in err)
        what = f"kill {i} at {at:.2f}s of {span:.2f}s (armed={armed})"
        try:
            assert worker is None or ended(worker, 60), (
                f"the worker {worker} still runs 60 s after its guard's kill"
            )
            what += f" worker ended after {time.monotonic() - killed:.2f}s"
            # Its leave reverted the hooks before it ended.
            assert "instr-armed-by-" not in Path(f"/proc/{r.pid}/maps").read_text(), err
            what += f" unarmed after {unarmed(r.pid):.2f}s"
            r.send(f"{i + 1} sum")
            # Frida's agent, when its host dies during the injection, logs
            # "[Frida INFO] ... Unable to start agent" to the program's own
            # stdout (frida-core's agent.vala): said in the record, not
            # counted as the program's answer (docs/leaving.md).
            got = r.proc.readline(30)
            while got is not None and got.startswith("[Frida "):
                what += f" (Frida wrote to its stdout: {got!r})"
                got = r.proc.readline(30)
            assert got == f"sum={sum_to(i + 1)}", f"pid {r.pid}: {got!r}{r.death()}"

            maps_left, settle = frida_maps_settled(r.pid)
            what += f": frida-maps {maps_left} ({settle:.2f}s)"
            if maps_left != 0:
                # The worker leaves in order after its guard's SIGKILL (instr.guard):
                # an agent left behind would be the old harm's sign.
                left_behind.append(what)
                what += "; left behind: " + diagnose(r.pid).replace("\n", " |")
                raise AssertionError(f"Frida's agent stayed in the program; instr said {err}")
            note("attach-kill", what)
            r.ask("1", "sleeping 1", "slept 1")
            finish(r, exits_with_lines=False)
        except (AssertionError, TimeoutError) as e:
            problems.append(f"{what}: {e}")
    note("attach-kill", f"{N_KILLS} kills: {len(left_behind)} left Frida's agent behind")
    assert problems == [], "\n".join(problems)


# --------------------------------------------------------------------------- 4: redis-server

REDIS_TOOLS = ("redis-server", "redis-cli", "redis-benchmark")
REDIS_LEAVES = ("SIGINT", "duration", "SIGKILL") * 2
REDIS_BENCH_RUNS = 200  # the bound of the load loop


class Load:
    """redis-benchmark run again and again, on a thread, until stopped."""

    def __init__(self, port: int) -> None:
        self.argv = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-n", "2000", "-q"]
        self.runs: list[subprocess.CompletedProcess[str]] = []
        self.running = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set() and len(self.runs) < REDIS_BENCH_RUNS:
            self.running.set()
            try:
                res = subprocess.run(self.argv, capture_output=True, text=True, timeout=120)
            except subprocess.TimeoutExpired as e:
                res = subprocess.CompletedProcess(self.argv, -1, str(e.stdout), "timed out")
            self.runs.append(res)
            if res.returncode != 0:
                return

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(150)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_cli(port: int, *args: str) -> str:
    res = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert res.returncode == 0, res
    return res.stdout.strip()


@pytest.mark.skipif(
    any(shutil.which(t) is None for t in REDIS_TOOLS),
    reason="redis-server, redis-cli and redis-benchmark are not installed"
    " (Debian: apt-get install redis-server redis-tools)",
)
def test_redis_survives_leaves_under_load(instr_bg, tmp_path) -> None:
    """redis-server serving redis-benchmark, run again and again, while instr
    syscalls -c attaches and leaves, every way, several times (the issue:
    redis died at every detach). Every leave is checked; then redis must
    still hold every key it was given and shut down cleanly."""
    port = free_port()
    config = ["--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", str(tmp_path)]
    redis = Proc(["redis-server", "--port", str(port), "--bind", "127.0.0.1", *config])
    load: Load | None = None
    problems: list[str] = []
    try:
        redis.out.expect("Ready to accept connections", timeout=30)
        assert redis_cli(port, "ping") == "PONG"
        load = Load(port)
        assert load.running.wait(30)
        deadline = time.monotonic() + 120
        while not load.runs and time.monotonic() < deadline:  # one whole run first
            time.sleep(0.05)
        assert load.runs and load.runs[0].returncode == 0, load.runs
        for i, how in enumerate(REDIS_LEAVES):
            instr, armed_at = attach(instr_bg, "syscalls-c", "", redis.pid, how, tmp_path / f"r{i}")
            left = leave(instr, redis.pid, how, armed_at, tmp_path, rng("redis", i))
            loaded = load.alive()
            maps_left, settle = frida_maps_settled(redis.pid)
            what = (
                f"redis leave {i} ({how}): leave {left.took:.2f}s under-load={loaded}"
                f" benchmark-runs {len(load.runs)} frida-maps {maps_left} ({settle:.2f}s)"
            )
            note(what)
            assert redis.proc.poll() is None, f"{what}: redis-server died: {redis.proc.returncode}"
            assert redis_cli(port, "ping") == "PONG", what
            assert redis_cli(port, "set", f"stress:{i}", f"value-{i}-{SEED}") == "OK", what
            assert redis_cli(port, "get", f"stress:{i}") == f"value-{i}-{SEED}", what
            if left.done is not None and left.done.returncode != 0:
                problems.append(f"{what}: instr exited {left.done.returncode}: {left.done.err}")
            elif left.done is not None and not syscall_table(left.done.stdout).get("write"):
                problems.append(f"{what}: no write counted: {left.done.out}")
            if left.done is not None and left.took >= PROMPT_S:
                problems.append(f"{what}: the leave took over {PROMPT_S} s")
            if not loaded:
                problems.append(f"{what}: the load ended early: {load.runs[-1:]}")
            if maps_left != 0:
                problems.append(f"{what}: Frida still in its maps:\n{diagnose(redis.pid)}")
        load.stop()
        assert load.runs and all(run.returncode == 0 for run in load.runs), load.runs[-1]
        assert all("requests per second" in run.stdout for run in load.runs), load.runs[-1]
        for i in range(len(REDIS_LEAVES)):
            assert redis_cli(port, "get", f"stress:{i}") == f"value-{i}-{SEED}"
        try:
            subprocess.run(
                ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "shutdown", "nosave"],
                capture_output=True,
                timeout=30,
                check=False,
            )
            code: int | None = redis.proc.wait(30)
        except subprocess.TimeoutExpired:
            code = None
            problems.append(f"redis-server did not end after SHUTDOWN:\n{diagnose(redis.pid)}")
        assert code in (0, None), f"redis-server ended with {code}: {redis.err.rest(5)}"
        assert problems == [], "\n".join(problems)
    finally:
        if load is not None:
            load.stop()
        redis.kill()
