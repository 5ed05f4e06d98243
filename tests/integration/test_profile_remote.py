"""instr profile on another Frida device (-H), through a PortalService on
loopback (see test_remote.py): the unwind tables and symbols come from the
target's memory through the agent, nothing from this machine's files."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import frida
import pytest
from helpers import Targets
from test_profile import SHARES, UNIT, expected_sum
from test_remote import answer, portal  # noqa: F401 (a fixture)

from instr.profile.model import parse_folded

pytestmark = pytest.mark.frida


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system) process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_profile_on_a_remote_device(
    targets: Targets,
    launch: Any,
    instr_bg: Any,
    portal: tuple[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    cluster, control = portal
    rounds = 300  # ~3 s of CPU: instr leaves after 1.5 s of it, half way through
    target = launch(targets.path("profile_split"), rounds)
    folded = tmp_path / "remote.folded"
    joined = frida.attach(target.pid)
    try:
        joined.join_portal(cluster)
        instr = instr_bg(
            "profile", "-H", control, "-p", target.pid, "-F", "199", "-o", folded,
        )  # fmt: skip
        instr.wait_armed(60)
        start = cpu_seconds(target.pid)
        target.go()
        # Samples come per second of the program's CPU, not of the clock: stop
        # after 1.5 s of it, however busy the machine is (a CI run under load
        # gave the program a sixth of a core, and 1.5 s of wall time too few).
        deadline = time.monotonic() + 120
        while cpu_seconds(target.pid) - start < 1.5:
            assert time.monotonic() < deadline, "the program got no CPU for 120 s"
            time.sleep(0.01)
        instr.proc.send_signal(signal.SIGINT)
        done = instr.finish()
    finally:
        joined.detach()
    assert done.returncode == 0, done.err
    m = re.search(r"(\d+) samples from 1 thread\(s\), 100\.0% unwound", done.err)
    assert m is not None and int(m.group(1)) >= 100, done.err
    stacks = parse_folded(folded.read_text())
    assert {s[-1] for s in stacks} >= set(SHARES)
    assert all(s[:2] == ("_start", "__libc_start_main") for s in stacks), list(stacks)[:3]
    assert answer(target) == f"sum={expected_sum(rounds, UNIT)}"
