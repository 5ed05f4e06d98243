"""`instr trace -i 'MODULE+0xOFFSET'` and `-i 0xADDRESS`, as `instr patch`
takes them: a site by offset, for stripped code or a point inside a module."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from helpers import run_instr


def symbol_offset(path, name: str) -> int:
    if shutil.which("nm") is None:
        pytest.skip("nm (binutils) is not installed")
    out = subprocess.run(["nm", str(path)], capture_output=True, text=True, check=True).stdout
    (value,) = [line.split()[0] for line in out.splitlines() if line.endswith(f" {name}")]
    return int(value, 16)


def test_trace_by_module_offset(targets):
    prog = targets.path("calls")  # PIE: nm gives the offset from the module's base
    site = f"calls+{symbol_offset(prog, 'target_add'):#x}"
    res = run_instr("trace", "-q", "-i", site, "--", prog, 3)
    assert res.returncode == 0, res.stderr
    lines = [line.split(maxsplit=3)[3] for line in res.stdout.splitlines() if " ms " in line]
    assert lines == [f"cli/{site} → calls!target_add", f"cli/{site} ← calls!target_add"] * 3
    res = run_instr("trace", "-q", "-i", site, "--agg", "n=count()", "--", prog, 5)
    assert res.returncode == 0, res.stderr
    assert "cli/n = count(): 5" in res.stdout.splitlines()


def test_bad_sites_are_usage_errors():
    res = run_instr("trace", "-i", "calls+0xZZ", "--", "/bin/true")
    assert (res.returncode, res.stderr) == (
        2,
        "instr: error: -i: invalid offset '0xZZ' in 'calls+0xZZ'\n  hint: write MODULE+0x1234\n",
    )


def test_stripped_site_is_named_by_its_offset(targets, tmp_path):
    """Without a symbol a site is MODULE+OFFSET from the module's base, as written."""
    if shutil.which("strip") is None:
        pytest.skip("strip (binutils) is not installed")
    offset = symbol_offset(targets.path("calls"), "target_add")
    prog = tmp_path / "calls"
    shutil.copy(targets.path("calls"), prog)
    subprocess.run(["strip", str(prog)], check=True)
    site = f"calls+{offset:#x}"
    out = tmp_path / "run.jsonl"
    res = run_instr("trace", "-q", "-i", site, "-o", out, "--", prog, 1)
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    got = [(r["phase"], r["function"]) for r in rows if r["type"] == "event"]
    assert got == [("entry", site), ("exit", site)]
