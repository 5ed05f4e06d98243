"""Attaching to every matching process (``--all -n NAME``, ``--all-matching
REGEX``, ``--watch``; docs/all.md).

Which processes match is read from this machine's /proc: a process matches
``-n NAME`` when NAME is its command name (``/proc/PID/comm``, as pgrep
reads it), its executable's file name, or the file name of its argv[0] (the
name Frida gives it, which ``-n`` alone compares); it matches ``REGEX`` when
the regular expression is found in its command line (``/proc/PID/cmdline``,
arguments joined by spaces). Kernel threads, zombies and instr's own
processes (this one, its guard, and every other instr) never match.

The run attaches to each through the one lifecycle (``instr.follow.Children``
loads an ``Agent`` per process, as for a followed child); ``Watcher`` polls
/proc for new ones under ``--watch``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from instr import target as tgt
from instr.errors import TargetError, UsageError
from instr.events import ProcessEnding
from instr.follow import Children, Image
from instr.lifecycle import armed_by
from instr.probes.ir import ProbeTable

POLL_S = 0.2  # --watch: how often /proc is read for new processes


@dataclass(frozen=True)
class AllSpec:
    """Which processes a run attaches to: every one called ``name``, or whose
    command line ``matching`` (a regular expression) is found in; ``watch``:
    also those that appear later."""

    name: str | None = None
    matching: str | None = None
    watch: bool = False
    poll_s: float = POLL_S

    def __post_init__(self) -> None:
        if (self.name is None) == (self.matching is None):
            raise UsageError("--all needs -n NAME; --all-matching REGEX takes no -n")
        if self.matching is not None:
            try:
                re.compile(self.matching)
            except re.error as e:
                raise UsageError(f"--all-matching {self.matching!r}: {e}") from None

    def target(self) -> tgt.TargetSpec:
        """The run's target until it starts (its first match then)."""
        return tgt.TargetSpec(name=self.name or self.matching)

    def describe(self) -> str:
        if self.name is not None:
            return f"named {self.name!r}"
        return f"matching {self.matching!r}"


@dataclass(frozen=True)
class Proc:
    """What /proc says of one process."""

    pid: int
    start: int  # its start time (clock ticks after boot): a pid reused is another process
    comm: str
    argv: tuple[str, ...]
    exe: str


def read_proc(pid: int) -> Proc | None:
    """A user-space process that is alive (not a kernel thread, not a
    zombie); None otherwise, or when it is gone."""
    fields = tgt.proc_stat(pid)
    if fields is None or len(fields) < 20:
        return None
    state, flags = fields[0], fields[6]
    if state in ("Z", "X") or (flags.isdigit() and int(flags) & tgt.PF_KTHREAD):
        return None
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        comm = Path(f"/proc/{pid}/comm").read_text(errors="replace").rstrip("\n")
    except OSError:
        return None
    if not raw:  # a kernel thread (or a process at its very end)
        return None
    argv = tuple(a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0"))
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        exe = ""
    start = int(fields[19]) if fields[19].isdigit() else 0
    return Proc(pid, start, comm, argv, exe)


def is_instr(proc: Proc) -> bool:
    """An instr process (its guard or worker, or a Python running ``-m instr``)."""
    args = [os.path.basename(a) for a in proc.argv[:3]]
    if args and args[0] == "instr":
        return True
    if args and args[0].startswith("python"):
        rest = list(proc.argv[1:])
        if rest[:2] == ["-m", "instr"] or (rest and os.path.basename(rest[0]) == "instr"):
            return True
    return False


def own_pids() -> set[int]:
    """This instr's processes: itself and its guard (instr.guard)."""
    from instr.guard import public_pid

    return {os.getpid(), public_pid()}


def matches(spec: AllSpec, proc: Proc) -> bool:
    if spec.name is not None:
        first = os.path.basename(proc.argv[0]) if proc.argv else ""  # Frida's name
        names = {proc.comm, os.path.basename(proc.exe), first}
        names.discard("")
        return spec.name in names
    assert spec.matching is not None
    return re.search(spec.matching, " ".join(proc.argv)) is not None


def _read(path: str) -> bytes:
    """A small /proc file, in as few system calls as Python allows (a scan
    reads one or two per process); b"" when it is gone."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return b""
    try:
        return os.read(fd, 1 << 16)
    except OSError:
        return b""
    finally:
        os.close(fd)


def _maybe(spec: AllSpec, pid: str) -> bool:
    """A cheap first look (its command line, and for a name its command
    name): only a process that passes is read in full and checked again."""
    cmdline = _read(f"/proc/{pid}/cmdline")
    if not cmdline:  # a kernel thread, a zombie, or gone
        return False
    if spec.matching is not None:
        text = cmdline.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
        return re.search(spec.matching, text) is not None
    assert spec.name is not None
    first = cmdline.split(b"\0", 1)[0].decode(errors="replace")
    if os.path.basename(first) == spec.name:
        return True
    if _read(f"/proc/{pid}/comm").rstrip(b"\n").decode(errors="replace") == spec.name:
        return True
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe")) == spec.name
    except OSError:
        return False


def scan(spec: AllSpec) -> list[Proc]:
    """Every process of this machine that matches ``spec``, by pid."""
    mine = own_pids()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in mine or not _maybe(spec, entry):
            continue
        proc = read_proc(int(entry))
        if proc is not None and not is_instr(proc) and matches(spec, proc):
            found.append(proc)
    return sorted(found, key=lambda p: p.pid)


def await_first(spec: AllSpec, timeout_s: float | None) -> list[Proc]:
    """The matching processes now; under ``watch``, waits for the first (up
    to ``timeout_s``). ``TargetError`` when there is none."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        found = scan(spec)
        if found:
            return found
        if not spec.watch:
            raise TargetError(
                f"no process {spec.describe()}",
                hint="add --watch to wait for one" if spec.name is not None else None,
            )
        if deadline is not None and time.monotonic() >= deadline:
            raise TargetError(f"no process {spec.describe()} appeared in {timeout_s:g} s")
        time.sleep(spec.poll_s)  # a bounded poll of /proc (docs/all.md)


def wait_first(spec: AllSpec, duration_s: float | None, say: Callable[[str], None]) -> float | None:
    """--watch with no match yet: say so and wait for the first (within
    ``duration_s``); returns what is left of ``duration_s`` (it counts from
    the start). Nothing to wait for without --watch."""
    if not spec.watch:
        return duration_s
    waited = time.monotonic()
    if not scan(spec):
        say(f"waiting for a process {spec.describe()}")
    await_first(spec, duration_s)
    if duration_s is None:
        return None
    return max(0.001, duration_s - (time.monotonic() - waited))


class Watcher:
    """``--watch``: reads /proc every ``spec.poll_s`` and hands each new
    matching process to ``attach`` (on this thread, one at a time, so that a
    stop waits for an attach under way). ``known(pid)`` says the run has it."""

    def __init__(
        self, spec: AllSpec, attach: Callable[[Proc], None], seen: set[tuple[int, int]]
    ) -> None:
        self.spec = spec
        self._attach = attach
        self._seen = set(seen)  # (pid, start time) already tried
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="instr-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """No more attaches; returns once an attach under way has finished."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.spec.poll_s):
            for proc in scan(self.spec):
                if self._stop.is_set():
                    return
                if (proc.pid, proc.start) in self._seen:
                    continue
                self._seen.add((proc.pid, proc.start))
                self._attach(proc)


def parent_of(pid: int) -> int | None:
    fields = tgt.proc_stat(pid)
    return int(fields[1]) if fields is not None and fields[1:2] and fields[1].isdigit() else None


def check_table(table: ProbeTable) -> None:
    """What --all cannot take: probes other than functions'."""
    if table.patch_probes() or table.syscall_probes() or table.profile_probes():
        raise UsageError("--all takes function probes only, not patch, syscall or profile")


class AllRun:
    """--all inside a Session: the first match is the session's own target
    (source 0); each other one is attached through ``Children.attach`` (the
    one lifecycle, as a followed child), at the start and, under --watch, as
    the Watcher finds it. ``say`` tells the user (the runner's status lines)."""

    def __init__(self, spec: AllSpec, say: Callable[[str], None], follow: bool = False) -> None:
        self.spec = spec
        self._say = say
        self._follow = follow  # -F: a child of a process the run has is Frida's to hold
        self.found: list[Proc] = []
        self._children: Children | None = None
        self._process: Callable[[int], ProcessEnding | None] = lambda key: None
        self._watcher: Watcher | None = None
        self._hinted = False  # said once: -F for the children of traced processes

    def find(self) -> int:
        """The processes that match now (under --watch, waits for the first);
        returns the first one's pid."""
        found = await_first(self.spec, None)
        # one another instr traces is left out here, not refused as the target
        self.found = [p for p in found if not armed_by(p.pid)]
        for proc in found:
            if proc not in self.found:
                self._say(f"pid {proc.pid} is already traced by another instr: left out")
        if not self.found:
            raise TargetError(
                f"every process {self.spec.describe()} is already traced by another instr",
                hint="stop the other instr first",
            )
        return self.found[0].pid

    def begin(self, children: Children, process: Callable[[int], ProcessEnding | None]) -> None:
        """Attach to the other matches (the first is armed by the session)."""
        self._children = children
        self._process = process
        children.on_ended = self._ended
        for proc in self.found[1:]:
            self._attach(proc)

    def watch(self) -> None:
        if self.spec.watch:
            seen = {(p.pid, p.start) for p in self.found}
            self._watcher = Watcher(self.spec, self._attach_new, seen)
            self._watcher.start()

    def where(self, pids: list[int]) -> str:
        """``pid N``, or ``3 processes (pids ...)``, and how often --watch looks."""
        said = f"pid {pids[0]}" if len(pids) == 1 else f"{len(pids)} processes"
        if len(pids) > 1:
            said += f" (pids {', '.join(map(str, pids))})"
        if self.spec.watch:
            said += f"; watching for more every {self.spec.poll_s * 1000:.0f} ms"
        return said

    @property
    def watching(self) -> bool:
        """--watch: the run goes on until it is stopped, with or without processes."""
        return self._watcher is not None

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()  # an attach under way finishes first

    def _attach(self, proc: Proc) -> bool:
        assert self._children is not None
        return self._children.attach(proc.pid, parent_of(proc.pid))

    def _attach_new(self, proc: Proc) -> None:
        if self._children is not None:
            parent = parent_of(proc.pid)
            if any(img.pid == parent for img in self._children.live(root=True)):
                if self._follow:  # -F brings it (child-added), armed from its fork
                    return
                if not self._hinted:  # docs/all.md: Frida's attach to it is slow
                    self._hinted = True
                    self._say(
                        f"pid {proc.pid} was forked by pid {parent}, which this run traces:"
                        " Frida takes seconds to attach to such a child; -F would arm it"
                        " at its fork"
                    )
        if self._attach(proc):
            self._say(f"attached to pid {proc.pid} ({' '.join(proc.argv)[:80]})")

    def _ended(self, img: Image, reason: str) -> None:
        """A process that ends while the run goes on is said at once (its
        agent's ending message was handled before Frida's detach)."""
        proc = self._process(img.key)
        if reason == "application-requested" or proc is None:  # instr's own leave
            return
        ending = proc.ending or (img.agent.ending() if img.agent is not None else None)
        said = dataclasses.replace(proc, ending=ending).describe()
        goes_on = self.watching or (
            self._children is not None and bool(self._children.live(root=True))
        )
        self._say(f"{said}; the run goes on" if goes_on else said)
