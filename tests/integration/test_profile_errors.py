"""instr profile refuses bad input with a short message and a non-zero status, no traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helpers import run_instr


def fails(done: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert done.returncode == code, (done.returncode, done.stderr)
    assert text in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.splitlines()) <= 5, done.stderr


@pytest.mark.frida
def test_dead_pid() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    fails(run_instr("profile", "-p", dead.pid), 1, f"no process with pid {dead.pid}")


@pytest.mark.parametrize("hz", ["0", "5001", "-3", "abc", "1.5"])
def test_bad_frequency(hz: str) -> None:
    fails(run_instr("profile", "-F", hz, "-p", "1"), 2, "Invalid value for '-F' / '--frequency'")


def test_outputs_that_cannot_be_written(tmp_path: Path) -> None:
    (tmp_path / "dir.svg").mkdir()
    fails(run_instr("profile", "-o", tmp_path / "dir.svg", "--", "true"), 1, "is a directory")
    missing = tmp_path / "no" / "such" / "out.folded"
    fails(run_instr("profile", "-o", missing, "--", "true"), 1, "cannot write")
    fails(run_instr("profile", "-o", "/proc/out.svg", "--", "true"), 1, "cannot write")
    fails(run_instr("profile", "-o", tmp_path / "out.txt", "--", "true"), 2, "unknown output kind")
    assert not (tmp_path / "out.txt").exists()


def test_missing_program() -> None:
    fails(run_instr("profile", "--", "/nonexistent/program"), 1, "program not found")
