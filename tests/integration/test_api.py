"""The Python API a script or notebook uses: a session context manager that spawns or
attaches, loads a probe set, yields decoded events and closes cleanly."""

from __future__ import annotations

import pytest

import instr

pytestmark = pytest.mark.frida

SET = """
version: 1
sets:
  add:
    probes:
      - function: "calls!target_add"
        capture: {a: "arg0:i64", b: "arg1:i64", r: "retval:i64", took: duration}
"""


def test_spawn_and_iterate_events(targets, probe_file):
    table = instr.load_file(probe_file(SET)).compile(["add"])
    n = 500
    with instr.Session.spawn([str(targets.path("calls")), "add", str(n)], table,
                             stdio="pipe") as run:  # fmt: skip
        run.start()
        run.input("go\n")
        events = list(run.events())
    entries = [e for e in events if e.phase == "entry"]
    exits = [e for e in events if e.phase == "exit"]
    assert [e.args for e in entries] == [{"a": i, "b": 2 * i} for i in range(n)]
    assert [e.retval for e in exits] == [3 * i for i in range(n)]
    assert all(e.duration_ns is not None and e.duration_ns >= 0 for e in exits)
    assert {e.probe for e in events} == {"add/target_add"}
    assert run.summary is not None
    assert run.summary.events == 2 * n and run.summary.drops == 0
    assert run.summary.ending == instr.Ending("exit", code=0)


def test_attach_then_leave_early(targets, launch, probe_file):
    table = instr.load_file(probe_file(SET)).compile(["add"])
    target = launch(targets.path("calls"), "add", 100)
    seen = []
    with instr.Session.attach(target.pid, table) as run:
        run.start()
        target.go()
        for event in run.events():
            seen.append(event)
            if len(seen) == 10:
                break
    assert [e.args["a"] for e in seen if e.phase == "entry"] == [0, 1, 2, 3, 4]
    assert run.summary is not None
    done = target.finish()
    assert done.returncode == 0
    assert "add calls=100 sum=14850" in done.out


def test_quick_mode_table(targets):
    table = instr.compile_quick(["calls!target_a*"], [])
    with instr.Session.spawn([str(targets.path("calls")), "add", "3"], table,
                             stdio="pipe") as run:  # fmt: skip
        run.start()
        run.input("go\n")
        events = list(run.events())
    assert [(e.phase, run.ctx.site(e.probe_id, e.site).function) for e in events] == [
        (ph, "calls!target_add") for _ in range(3) for ph in ("entry", "exit")
    ]


def test_a_session_whose_agent_stops_answering_does_not_hang_close(
    targets, probe_file, monkeypatch: pytest.MonkeyPatch
):
    """Leaving waits for the agent (dispose, detach); an agent deadlocked inside
    Frida would make that wait for ever. Here leaving is held on purpose: after
    the grace time the target the session spawned is killed, and the summary
    says why."""
    import os
    import select
    import threading

    release = threading.Event()
    real_leave = instr.Session._leave

    def leave(self: instr.Session) -> None:
        release.wait(60)
        real_leave(self)

    monkeypatch.setattr(instr.Session, "_leave", leave)
    table = instr.load_file(probe_file(SET)).compile(["add"])
    # stdin is a pipe nobody writes to: the target waits for "go" until killed
    run = instr.Session.spawn([str(targets.path("calls")), "add", "10"], table, stdio="pipe")
    run.stop_grace_s = 1.0
    try:
        run.start()
        pid = run.pid
        assert pid is not None
        pidfd = os.pidfd_open(pid)
        summary = run.close()
    finally:
        release.set()
    try:
        ready, _, _ = select.select([pidfd], [], [], 10)
    finally:
        os.close(pidfd)
    assert ready, "the target was not killed"
    assert summary.errors == [
        f"instr's agent in pid {pid} stopped answering while instr was leaving"
        " (a deadlock inside Frida, see docs/syscalls.md); instr killed it"
    ]
