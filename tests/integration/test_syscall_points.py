"""Syscall points in probe sets, and the built-in file and network sets of
probes.yaml, on deterministic targets (sys_files.c, sys_net.c, sys_dns.c):
exact events and aggregation rows."""

from __future__ import annotations

import re
from pathlib import Path

from helpers import REPO, Targets

from instr.aggregate.model import AggSnapshot, AggTable
from instr.events import Event
from instr.probes import load_file, load_text
from instr.probes.ir import ProbeTable
from instr.session import Session

SETS = load_file(REPO / "probes.yaml")


def run(argv: list[str], table: ProbeTable) -> tuple[list[Event], AggSnapshot | None]:
    with Session.spawn(argv, table, stdio="pipe") as s:
        events = list(s.events())
    assert s.summary is not None and s.summary.errors == []
    assert s.summary.ending is not None and s.summary.ending.code == 0
    return events, s.aggregations


def table(snap: AggSnapshot | None, name: str) -> dict[tuple[object, ...], int | float]:
    assert snap is not None and snap.final
    t: AggTable = next(t for t in snap.tables if t.name == name)
    return {r.keys: r.value(t.func) for r in t.rows}


def test_captures_where_and_aggregations(targets: Targets, tmp_path: Path) -> None:
    psf = load_text(
        """
version: 1
sets:
  t:
    probes:
      - syscall: [openat, "%desc"]
        name: failed
        capture: {path: filename, fd: fd, err: "errno:str", rc: retval}
        where: 'err != ""'
      - syscall: [write, read, close]
        name: io
        aggregate:
          calls: count() by syscall
          bytes: sum(retval) by syscall, file
        capture: {file: "fd:path"}
        where: 'file.endswith("a.txt")'
""",
        "t.yaml",
    )
    events, snap = run([str(targets.path("sys_files")), str(tmp_path)], psf.compile(["t"]))
    got = [(e.probe, e.args, e.retval) for e in events]
    assert got == [
        ("t/failed", {"path": "/nonexistent/instr", "fd": None, "err": "ENOENT"}, -1),
        ("t/failed", {"path": None, "fd": -1, "err": "EBADF"}, -1),
    ]
    assert all(e.duration_ns is None and e.phase == "exit" for e in events)
    assert table(snap, "t/calls") == {("write",): 5, ("read",): 2, ("close",): 2}
    a = str(tmp_path / "files" / "a.txt")
    assert table(snap, "t/bytes") == {("write", a): 30, ("read", a): 30, ("close", a): 0}


def test_syscall_list_is_the_dtrace_example(targets: Targets, tmp_path: Path) -> None:
    events, _ = run([str(targets.path("sys_files")), str(tmp_path)], SETS.compile(["syscall-list"]))
    names = [e.args["name"] for e in events]
    assert names[0] == "getppid"  # main's first call; instr arms at the entry point
    assert names.count("write") == 6 and names.count("close") == 6 and names.count("openat") == 3
    assert names[-3:] == ["close", "close", "close"]


def test_syscall_counts(targets: Targets, tmp_path: Path) -> None:
    _, snap = run([str(targets.path("sys_files")), str(tmp_path)], SETS.compile(["syscall-counts"]))
    calls = table(snap, "syscall-counts/calls")
    assert calls[("close",)] == 6 and calls[("openat",)] == 3 and calls[("write",)] == 6
    errors = table(snap, "syscall-counts/errors")
    assert errors == {  # failed calls only (it listed successful calls, err "", before)
        ("access", "ENOENT"): 1,
        ("openat", "ENOENT"): 1,
        ("close", "EBADF"): 1,
    }


def test_file_bytes_and_files_opened(targets: Targets, tmp_path: Path) -> None:
    events, snap = run(
        [str(targets.path("sys_files")), str(tmp_path)],
        SETS.compile(["file-bytes", "files-opened"]),
    )
    a = str(tmp_path / "files" / "a.txt")
    rows = table(snap, "file-bytes/bytes")
    assert rows[("write", a)] == 30 and rows[("read", a)] == 30
    assert [(e.args["path"], e.args["flags"], e.args["err"]) for e in events] == [
        (a, "O_WRONLY|O_CREAT|O_TRUNC", ""),
        (a, "O_RDONLY", ""),
        ("/nonexistent/instr", "O_RDONLY", "ENOENT"),
    ]
    assert events[0].retval == events[1].retval and events[0].retval >= 3
    assert events[2].retval == -1


def test_net_bytes_and_connections(targets: Targets) -> None:
    events, snap = run(
        [str(targets.path("sys_net"))], SETS.compile(["net-bytes", "net-connections"])
    )
    rows = table(snap, "net-bytes/bytes")
    assert len(rows) == 2
    (first, peer), (second, peer2) = sorted(rows)
    assert (first, second) == ("recvfrom", "sendto") and peer == peer2
    assert re.fullmatch(r"127\.0\.0\.1:\d+", str(peer)) and set(rows.values()) == {4}
    got = [(e.probe, e.site, e.args.get("addr"), e.args.get("err")) for e in events]
    assert [g[2] for g in got] == ["127.0.0.1:0", peer, None, ""]
    assert [g[3] for g in got] == ["", "", "", "EBADF"]
    assert events[2].probe == "net-connections/accept" and events[2].args["peer"] == ""


def test_dns_lookups(targets: Targets) -> None:
    events, _ = run([str(targets.path("sys_dns"))], SETS.compile(["dns-lookups"]))
    entries = [(e.args["node"], e.args["service"]) for e in events if e.phase == "entry"]
    results = [e.retval for e in events if e.phase == "exit"]
    assert entries == [("127.0.0.1", "8080"), ("not-an-address", "80")]
    assert results == [0, -2]  # EAI_NONAME
