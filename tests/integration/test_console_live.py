"""The console on real targets: timestamp order across threads, the header,
relative and wall time, colour on a terminal only (docs/outputs.md, Console)."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import time

from helpers import instr_argv, instr_env, run_instr

# "    1.234 ms   4242 PROBE CALL..." / "20:31:05.123456   4242 PROBE CALL..."
REL = re.compile(r"^ *(\d+\.\d{3}) ms +(\d+) (\S+) +(.*)$")
WALL = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{6}) +(\d+) (\S+) +(.*)$")
MIX = """
version: 1
sets:
  mix:
    probes:
      - function: "threads!target_work"
        capture: {t: "arg0:i32", k: "arg1:i64"}
        tier: js
      - function: "libc.so*!pthread_barrier_wait"
"""


def test_threads_print_in_timestamp_order(targets, probe_file):
    """A JS-tier hook stamps its time before it waits for the script lock, so
    four threads' records reach the host out of time order; the console
    prints them in order, each thread's own calls in its order."""
    k, t = 300, 4
    probes = probe_file(MIX)
    res = run_instr("run", "-P", probes, "-s", "mix", "--", targets.path("threads"), k, t)
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()
    head = out.index("TIME             TID PROBE                    CALL")
    rows = [REL.match(line) for line in out[head + 1 : out.index("--")]]
    assert all(rows), out
    times = [float(m.group(1)) for m in rows if m]
    assert times == sorted(times)
    work = [m.group(4) for m in rows if m and m.group(3) == "mix/target_work"]
    assert len(work) == k * t
    for i in range(t):
        mine = [w for w in work if w.startswith(f"→ threads!target_work t={i} ")]
        assert mine == [f"→ threads!target_work t={i} k={j}" for j in range(k)]
    barrier = [m for m in rows if m and m.group(3) == "mix/pthread_barrier_wait"]
    assert len(barrier) == t


def test_wall_time(targets):
    before = time.time()
    res = run_instr(
        "trace", "--wall-time", "-i", "calls!target_add", "--", targets.path("calls"), 2
    )
    after = time.time()
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()
    head = out.index("TIME                TID PROBE                CALL")
    rows = [WALL.match(line) for line in out[head + 1 : head + 5]]
    assert [m.group(7) for m in rows if m] == ["→ calls!target_add", "← calls!target_add"] * 2
    day = time.localtime(before)
    for m in rows:
        assert m is not None
        h, mi, s, us = (int(x) for x in m.group(1, 2, 3, 4))
        at = time.mktime((day.tm_year, day.tm_mon, day.tm_mday, h, mi, s, 0, 0, -1)) + us / 1e6
        assert before - 1 <= at <= after + 1  # the clock's, not instr's, precision


def run_on_terminal(*args: object, env: dict[str, str] | None = None) -> str:
    """instr ARGS with stdout on a pseudo-terminal; what it wrote there."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        instr_argv(*args),
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.PIPE,
        env=instr_env(env),
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(120) == 0, proc.stderr.read() if proc.stderr else ""
    return b"".join(chunks).decode().replace("\r\n", "\n")


def test_colour_on_a_terminal_only(targets):
    args = ("trace", "-q", "-i", "calls!target_add", "--", targets.path("calls"), 1)
    tty = run_on_terminal(*args)
    lines = tty.splitlines()
    head = lines.index("\x1b[1mTIME             TID PROBE                CALL\x1b[0m")
    entry = re.fullmatch(
        r"\x1b\[2m +\d+\.\d{3} ms\x1b\[0m \x1b\[36m +\d+\x1b\[0m cli/calls!target_add "
        r"\x1b\[36m→ calls!target_add\x1b\[0m",
        lines[head + 1],
    )
    assert entry, lines
    assert "\x1b[" not in run_on_terminal(*args, env={"NO_COLOR": "1"})
    piped = run_instr(*args)
    assert piped.returncode == 0 and "\x1b[" not in piped.stdout
