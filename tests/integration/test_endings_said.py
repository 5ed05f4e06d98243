"""The ending of a program instr started is said as it happened: stopped by
--duration (or Ctrl-C), instr kills it, and says so, not "the target keeps
running"."""

from __future__ import annotations

import json
import subprocess

from helpers import instr_argv, instr_env


def test_duration_on_a_spawned_program(targets, tmp_path):
    out = tmp_path / "run.jsonl"
    argv = ["trace", "-i", "sleeper!target_add", "--duration", "1", "-o", out]
    instr = subprocess.Popen(
        instr_argv(*argv, "--", targets.path("sleeper")),
        stdin=subprocess.PIPE,  # held open: the program waits for a line until it is stopped
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=instr_env(),
    )
    try:
        instr.wait(120)  # stdin stays open (communicate would close it: EOF ends sleeper)
    finally:
        if instr.poll() is None:
            instr.kill()
    assert instr.stdout is not None and instr.stderr is not None and instr.stdin is not None
    stdout, stderr = instr.stdout.read(), instr.stderr.read()
    instr.stdin.close()
    assert instr.returncode == 0, stderr
    assert stdout == "ready\n"
    assert stderr.splitlines()[-1] == "instr: instr stopped the program it started (SIGKILL)"
    summary = json.loads(out.read_text().splitlines()[-1])
    assert summary["ending"] == {
        "reason": "stopped",
        "code": None,
        "signal": "SIGKILL",
        "address": None,
        "symbol": None,
    }
