"""The README's first command: the built-in probe sets on the bundled demo target."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from helpers import run_instr
from jsonl import read_jsonl

pytestmark = pytest.mark.frida

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    exe = tmp_path_factory.mktemp("demo") / "demo"
    subprocess.run(["gcc", "-O1", "-g", "-o", exe, REPO / "examples" / "demo.c"], check=True)
    return exe


def test_calls_set_console_output(demo):
    res = run_instr("run", "-P", REPO / "probes.yaml", "-s", "calls", "--", demo)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    computes = [ln for ln in lines if "demo!compute" in ln]
    assert len(computes) == 10  # work(5): five calls, entry and exit
    assert re.search(r"→ demo!compute a=0 b=1$", computes[0])
    assert re.search(r"← demo!compute = 7 \(\d+(\.\d+)? [µm]?s\)$", computes[1])
    assert any(re.search(r'→ demo!greet who="world"$', ln) for ln in lines)
    assert any(re.search(r"← demo!work = 75", ln) for ln in lines)
    assert "work(5) = 75" in lines and "done" in lines
    assert "armed 4 of 4 probes" in res.stderr
    assert "ending: target exited with status 0" in res.stdout  # the console summary


def test_calls_events_are_in_call_order(demo, tmp_path):
    out = tmp_path / "calls.jsonl"
    res = run_instr("run", "-q", "-P", REPO / "probes.yaml", "-s", "calls", "-o", out, "--", demo)
    assert res.returncode == 0, res.stderr
    events, _ = read_jsonl(out)
    order = [(e["function"].split("!")[1], e["phase"]) for e in events]
    assert order[:3] == [("greet", "entry"), ("greet", "exit"), ("work", "entry")]
    assert [e["ts_ns"] for e in events] == sorted(e["ts_ns"] for e in events)


@pytest.mark.parametrize("name", ["malloc", "files", "big-allocs"])
def test_other_builtin_sets_run(demo, name, tmp_path):
    out = tmp_path / f"{name}.jsonl"
    res = run_instr("run", "-q", "-P", REPO / "probes.yaml", "-s", name, "-o", out, "--", demo)
    assert res.returncode == 0, res.stderr
    events, summary = read_jsonl(out)
    assert summary["errors"] == []
    assert all(p["state"] == "armed" for p in summary["probes"]), summary["probes"]
    if name == "files":
        opened = [
            e["args"]["path"]
            for e in events
            if e["probe"] in ("files/open", "files/openat") and e["phase"] == "entry"
        ]
        assert "/etc/hostname" in opened
    if name == "malloc":
        assert any(e["args"].get("size") for e in events if e["phase"] == "entry")


def test_ctrl_c_on_a_spawned_program_flushes_and_ends(instr_bg, targets, tmp_path):
    out = tmp_path / "run.jsonl"
    tracer = instr_bg("trace", "-i", "attach!target_add", "-o", out, "--", targets.path("attach"))
    tracer.wait_armed()
    assert tracer.readline() == "ready"
    tracer.send("300")
    assert tracer.readline() == "sum=45150"
    tracer.interrupt()
    done = tracer.finish()
    assert "Traceback" not in done.err
    assert "summary" in out.read_text(), (done.returncode, done.err)
    events, summary = read_jsonl(out)
    assert len(events) == 600
    assert summary["drops"] == 0
