"""A target on another Frida device (-H HOST:PORT), without a frida-server
binary: a Frida PortalService on loopback stands in for one. A local session
joins the target to the portal's cluster port; instr reaches it through the
portal's control port, as it would reach frida-server on another machine.

What differs from the local device: nothing is built on the host (the host
cannot know it can run the target's code: TinyCC builds the C, and the run
says why), and nothing is read from this machine's /proc."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from typing import Any

import frida
import pytest
from helpers import Targets
from jsonl import read_jsonl
from test_attach import ADD_SET

pytestmark = pytest.mark.frida


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answer(target: Any) -> str | None:
    """The target's next line, past the GLib debug lines that Frida's portal
    client (in the target, on Frida's threads) prints to its stdout."""
    while (line := target.readline()) is not None and line.startswith("[GLib"):
        pass
    return line


@pytest.fixture
def portal() -> Iterator[tuple[str, str]]:
    """(cluster address, control address) of a PortalService on loopback."""
    cluster, control = free_port(), free_port()
    service = frida.PortalService(
        frida.EndpointParameters(address="127.0.0.1", port=cluster),
        frida.EndpointParameters(address="127.0.0.1", port=control),
    )
    service.start()
    try:
        yield f"127.0.0.1:{cluster}", f"127.0.0.1:{control}"
    finally:
        service.stop()


def test_syscalls_on_a_remote_device(
    targets: Targets, launch: Any, instr_bg: Any, portal: tuple[str, str]
) -> None:
    cluster, control = portal
    target = launch(targets.path("attach"))
    joined = frida.attach(target.pid)
    try:
        joined.join_portal(cluster)
        tracer = instr_bg("syscalls", "-c", "-e", "trace=write", "-H", control, "-p", target.pid)
        armed = tracer.err.expect(re.compile(r"counting system calls"), 60)
        assert f"counting system calls in pid {target.pid}" in armed
        assert "C built by TinyCC" in armed
        assert tracer.err.expect(re.compile(r"TinyCC because"), 10) == (
            "instr: TinyCC because the target is not on the local device (-H)"
        )
        for n in (10, 20, 30):  # one write per answer
            target.send(str(n))
            assert answer(target) == f"sum={n * (n + 1) // 2}"
        tracer.interrupt()
        done = tracer.finish()
    finally:
        joined.detach()
    assert done.returncode == 0, done.err
    rows = [line.split() for line in done.stdout if line.rstrip().endswith(" write")]
    assert len(rows) == 1 and rows[0][3] == "3", done.stdout
    assert "Traceback" not in done.err


def test_probe_set_on_a_remote_device(
    targets: Targets,
    launch: Any,
    instr_bg: Any,
    probe_file: Any,
    tmp_path: Any,
    portal: tuple[str, str],
) -> None:
    """instr run through the same stand-in: the probes are armed and every call is seen."""
    cluster, control = portal
    target = launch(targets.path("attach"))
    joined = frida.attach(target.pid)
    out = tmp_path / "run.jsonl"
    try:
        joined.join_portal(cluster)
        tracer = instr_bg(
            "run",
            "-P",
            probe_file(ADD_SET),
            "-s",
            "add",
            "-o",
            out,
            "-H",
            control,
            "-p",
            target.pid,
        )
        tracer.wait_armed(60)
        target.send("50")
        assert answer(target) == "sum=1275"
        tracer.interrupt()
        done = tracer.finish()
    finally:
        joined.detach()
    assert done.returncode == 0, done.err
    events, summary = read_jsonl(out)
    assert [e["args"]["a"] for e in events if e["phase"] == "entry"] == list(range(50))
    assert summary["ending"]["reason"] == "detach"
