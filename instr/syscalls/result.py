"""What an ``instr syscalls`` run counted: per process image, and summed into
the run's ``Result`` (counts by syscall name, the program's exit status).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from instr.events import Ending
from instr.syscalls import names as nr_names
from instr.syscalls.decode import FdTable

if TYPE_CHECKING:
    from instr.lifecycle import Agent


@dataclass
class Count:
    calls: int = 0
    errors: int = 0
    ns: int = 0

    def add(self, other: Count) -> None:
        self.calls += other.calls
        self.errors += other.errors
        self.ns += other.ns


@dataclass
class Image:
    """One process image (a pid, until it execs): its agent and what it counted."""

    pid: int
    arch: str = "x64"
    session: Any = None
    script: Any = None
    counters: dict[int, Count] = field(default_factory=dict)
    extra: dict[str, int] = field(default_factory=dict)  # calls known from endings
    exec_pending: bool = False
    ending: dict[str, Any] | None = None
    detach_reason: str | None = None
    drops: int = 0
    fds: FdTable = field(default_factory=FdTable)
    sites: int = 0
    tick_ns: float = 1.0
    agent: Agent | None = None  # instr's agent in it (instr/lifecycle.py)
    fork_stub: str | None = None  # complete mode, -F: where its forked children wait to be followed


@dataclass
class Result:
    counts: dict[str, Count]
    images: list[Image]
    exit_code: int | None  # the program's status; 128+N when signal N crashed it
    drops: int
    crash: str | None = None  # what crashed the program, to say


def summarize(images: list[Image], root_pid: int | None) -> Result:
    """Counts summed over every image by syscall name; the status and crash of
    the last image of the program instr ran (``root_pid``)."""
    counts: dict[str, Count] = {}
    drops = 0
    for img in images:
        table = nr_names(img.arch)
        for nr, c in img.counters.items():
            counts.setdefault(table.get(nr, f"syscall_{nr}"), Count()).add(c)
        for name, n in img.extra.items():
            counts.setdefault(name, Count()).calls += n
        drops += img.drops
    mine = [i for i in images if i.pid == root_pid]
    root = mine[-1] if mine else None
    if root is None or root.ending is None:
        return Result(counts, list(images), None, drops)
    ending = Ending.from_message(root.ending)
    crash = f"pid {root.pid}: {ending.describe()}" if ending.reason == "crash" else None
    return Result(counts, list(images), ending.status(), drops, crash)
