"""Attach to a running process by pid and by name, trace, detach: the process keeps
running, its output stays correct, and the hooked code is restored byte for byte."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from jsonl import phases, read_jsonl

pytestmark = pytest.mark.frida

ADD_SET = """
version: 1
sets:
  add:
    probes:
      - function: "attach!target_add"
        capture: {a: "arg0:i64", b: "arg1:i64", r: "retval:i64"}
"""


def code_bytes(pid: int, exe: Path, symbol: str, size: int = 16) -> bytes:
    """The first bytes of ``symbol`` in the live process ``pid``."""
    nm = subprocess.run(["nm", str(exe)], capture_output=True, text=True, check=True).stdout
    value = next(
        int(line.split()[0], 16) for line in nm.splitlines() if line.endswith(f" {symbol}")
    )
    base = 0
    real = str(exe.resolve())
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        if fields[-1] == real and int(fields[2], 16) == 0:
            base = int(fields[0].split("-")[0], 16)
            break
    e_type = int.from_bytes(exe.read_bytes()[16:18], "little")  # ET_EXEC 2, ET_DYN 3 (PIE)
    addr = value + (base if e_type == 3 else 0)
    with open(f"/proc/{pid}/mem", "rb") as mem:
        mem.seek(addr)
        return mem.read(size)


@pytest.mark.parametrize("by", ["pid", "name"])
def test_attach_trace_detach(targets, pie, by, launch, instr_bg, probe_file, tmp_path: Path):
    exe = targets.path("attach", pie=pie)
    target = launch(exe)
    target.send("1000")
    assert target.readline() == "sum=500500"
    original = code_bytes(target.pid, exe, "target_add")

    out = tmp_path / "run.jsonl"
    who = ("-p", target.pid) if by == "pid" else ("-n", "attach")
    tracer = instr_bg("run", "-P", probe_file(ADD_SET), "-s", "add", "-o", out, *who)
    tracer.wait_armed()
    assert code_bytes(target.pid, exe, "target_add") != original  # hooked

    target.send("1000")
    assert target.readline() == "sum=500500"
    tracer.interrupt()
    done = tracer.finish()
    status = target.proc.poll()  # said how it ended, the once it did not survive (CI)
    assert status is None, f"the target ended after the detach: {status}; {target.err.rest(2)}"
    assert done.returncode == 0, done.err
    assert "detached; the target keeps running" in done.err
    assert "Traceback" not in done.err

    events, summary = read_jsonl(out)
    assert phases(events) == {("add/target_add", "entry"): 1000, ("add/target_add", "exit"): 1000}
    assert [e["args"]["a"] for e in events if e["phase"] == "entry"] == list(range(1000))
    assert [e["retval"] for e in events if e["phase"] == "exit"] == list(range(1, 1001))
    assert summary["ending"]["reason"] == "detach"

    # After detach: same code bytes, same answers, still running.
    assert code_bytes(target.pid, exe, "target_add") == original
    target.send("2000")
    assert target.readline() == "sum=2001000"
    target.send("x")
    assert target.readline() == "error"
    finished = target.finish()
    assert finished.returncode == 0
