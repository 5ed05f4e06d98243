"""`pid$target:MOD:FUNC:OFFSET`: probes at an instruction inside a function, on
tests/targets/dwrite.c. The instruction offsets are read from the built target with
objdump (the compiler decides them), so the test holds for any code generation."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import Targets, run_instr

pytestmark = pytest.mark.skipif(shutil.which("objdump") is None, reason="needs objdump")
N = 3


def instructions(prog: Path, func: str) -> list[tuple[int, int]]:
    """(offset, length) of each instruction of ``func``, from objdump."""
    text = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", str(prog)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    body = text.split(f"<{func}>:\n", 1)[1].split("\n\n", 1)[0]
    addrs = [int(m.group(1), 16) for m in re.finditer(r"^\s*([0-9a-f]+):", body, re.M)]
    ends = [*addrs[1:], None]
    return [
        (a - addrs[0], (e - a) if e is not None else 1) for a, e in zip(addrs, ends, strict=True)
    ]


def dtrace(targets: Targets, tmp_path: Path, program: str) -> tuple[int, str, str]:
    out = tmp_path / "d.out"
    prog = targets.path("dwrite")
    res = run_instr("dtrace", "-q", "-o", out, "-n", program, "-c", f"{prog} {N}")
    assert "Traceback" not in res.stderr
    return res.returncode, out.read_text() if out.exists() else "", res.stderr


def test_a_probe_at_the_second_instruction(targets: Targets, tmp_path: Path) -> None:
    (off, _) = instructions(targets.path("dwrite"), "dw_value")[1]
    code, out, err = dtrace(
        targets, tmp_path,
        f"pid$target::dw_value:{off:x} {{ @[probefunc] = count(); }} "
        f'pid$target::dw_sig:{0:x} {{ printf("%s:%s ", probefunc, probename); }}',
    )  # fmt: skip
    assert code == 0, err
    assert out == "dw_sig:0 " * N + "\n" + f"  {'dw_value':<50}{N:>17}\n"


def test_inside_an_instruction_or_past_the_end_is_refused(targets: Targets, tmp_path: Path) -> None:
    insns = instructions(targets.path("dwrite"), "dw_value")
    start, length = next((o, n) for o, n in insns if n >= 2)
    program = f"pid$target::dw_value:{start + 1:x} {{ @ = count(); }}"
    code, _, err = dtrace(targets, tmp_path, program)
    nxt = start + length
    assert code == 2
    assert err.splitlines()[0] == (
        f"-n:1:1: error: offset {start + 1:#x} is inside an instruction of dw_value: "
        f"instructions start at {start:#x} and {nxt:#x}"
    )
    code, _, err = dtrace(targets, tmp_path, "pid$target::dw_value:1000 { @ = count(); }")
    assert code == 2
    assert err.splitlines()[0].startswith(
        "-n:1:1: error: offset 0x1000 is past the end of dw_value ("
    )
