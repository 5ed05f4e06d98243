"""Decoded events and the run context that collectors see.

The decoder (``instr.collectors.decode``) turns binary batches into ``Event``
objects using the ``ProbeTable``; collectors receive them together with a
``RunContext`` that knows site names and symbols.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from instr.demangle import demangle
from instr.probes.ir import ProbeTable


@dataclass(slots=True)
class Event:
    seq: int  # host-assigned, 1-based, in arrival order
    probe_id: int
    probe: str  # probe name, "set/probe"
    phase: str  # "entry" | "exit"
    tid: int
    ts_ns: int
    site: int
    args: dict[str, Any]  # named captures other than retval and duration
    retval: int | None = None
    duration_ns: int | None = None
    flags: int = 0
    # capture name -> "truncated" | "null" | "unreadable", only for cstr/bytes captures
    # that are not complete (None when every capture is complete); see docs/outputs.md
    args_status: dict[str, str] | None = None
    pid: int = 0  # the process that made the call (set by the dispatcher; 0: not known)


@dataclass(frozen=True)
class Site:
    probe: int
    site: int
    address: int
    module: str | None
    symbol: str | None
    offset: int | None = None  # address - the module's base, when the agent knows the module

    @property
    def function(self) -> str:
        """``demo!main``; without a symbol ``demo+0x1209`` (from the module's base),
        or the bare address when the module is not known."""
        if self.symbol is None:
            if self.module and self.offset is not None:
                return f"{self.module}+{self.offset:#x}"
            return hex(self.address)
        return f"{self.module}!{self.symbol}" if self.module else self.symbol


@dataclass(frozen=True)
class Symbol:
    module: str | None
    name: str | None
    offset: int

    def __str__(self) -> str:
        if self.name:
            base = f"{self.module}!{self.name}" if self.module else self.name
            return f"{base}+{self.offset:#x}" if self.offset else base
        if self.module:
            return f"{self.module}+{self.offset:#x}"
        return hex(self.offset)


@dataclass
class RunContext:
    """Shared, thread-safe lookup state for one run."""

    table: ProbeTable
    sites: dict[tuple[int, int], Site] = field(default_factory=dict)
    symbols: dict[int, Symbol] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_site(self, site: Site) -> None:
        self.add_sites((site,))

    def add_sites(self, sites: Iterable[Site]) -> None:
        """Hooked sites; C++ symbols are kept demangled (``instr.demangle``), one
        ``c++filt`` for all of them."""
        sites = list(sites)
        pretty = demangle(s.symbol for s in sites if s.symbol)
        if pretty:
            sites = [
                dataclasses.replace(s, symbol=pretty[s.symbol]) if s.symbol in pretty else s
                for s in sites
            ]
        with self._lock:
            for site in sites:
                self.sites[(site.probe, site.site)] = site

    def site(self, probe: int, site: int) -> Site | None:
        return self.sites.get((probe, site))

    def add_symbols(self, mapping: dict[int, Symbol]) -> None:
        """Symbols of addresses; C++ names are kept demangled (``instr.demangle``)."""
        pretty = demangle(s.name for s in mapping.values() if s.name)
        if pretty:
            mapping = {
                a: Symbol(s.module, pretty[s.name], s.offset) if s.name in pretty else s
                for a, s in mapping.items()
            }
        with self._lock:
            self.symbols.update(mapping)

    def symbolize(self, address: int) -> str:
        sym = self.symbols.get(address)
        return str(sym) if sym is not None else hex(address)


@dataclass(frozen=True)
class RunInfo:
    """What a run is: written once at the start by every collector that stores runs."""

    started_ns: int  # wall clock, time.time_ns()
    device: str
    pid: int
    argv: tuple[str, ...] | None  # spawned program and args; None when attached
    source: str | None  # probe-set file, or "cli" for quick mode
    sets: tuple[str, ...]


def _demangled(where: str | None) -> str | None:
    """``cxx!_ZN2ns1fEv+0x5`` (the agent's text of an address) with the name demangled."""
    if where is None or "!_Z" not in where:
        return where
    module, _, rest = where.partition("!")
    name, plus, offset = rest.rpartition("+0x")
    if not plus:
        name, offset = rest, ""
    pretty = demangle((name,)).get(name, name)
    return f"{module}!{pretty}{plus}{offset}"


# Signal numbers by name (Linux), for exit statuses of 128+N.
SIGNALS = {
    "SIGHUP": 1, "SIGINT": 2, "SIGQUIT": 3, "SIGILL": 4, "SIGTRAP": 5, "SIGABRT": 6,
    "SIGBUS": 7, "SIGFPE": 8, "SIGKILL": 9, "SIGSEGV": 11, "SIGPIPE": 13, "SIGTERM": 15,
    "SIGSYS": 31,
}  # fmt: skip


@dataclass(frozen=True)
class Ending:
    """Why the target's session ended."""

    reason: str  # "exit" | "exec" | "crash" | "detach" | "stopped" | "killed" | "lost"
    code: int | None = None  # exit status ("exit"), or the signal's number ("killed")
    signal: str | None = None  # e.g. "SIGSEGV", for reason == "crash"
    address: int | None = None  # faulting address, for a crash
    symbol: str | None = None  # where it crashed, symbolised

    @classmethod
    def from_message(cls, env: dict[str, Any]) -> Ending:
        """The agent's ``ending`` message (addresses come as "0x…" strings)."""
        code, address = env.get("code"), env.get("address")
        return cls(
            reason=str(env.get("reason", "exit")),
            code=int(code) if code is not None else None,
            signal=env.get("signal"),
            address=(int(address, 0) if isinstance(address, str) else int(address))
            if address is not None
            else None,
            symbol=_demangled(env.get("symbol")),
        )

    @classmethod
    def from_wait_status(cls, status: int) -> Ending | None:
        """An ended process's wait status (waitpid(2)): its exit, or the
        signal that killed it."""
        if os.WIFEXITED(status):
            return cls(reason="exit", code=os.WEXITSTATUS(status))
        if os.WIFSIGNALED(status):
            n = os.WTERMSIG(status)
            try:
                name = signal.Signals(n).name
            except ValueError:
                name = f"signal {n}"
            return cls(reason="killed", signal=name, code=n)
        return None

    def status(self) -> int | None:
        """strace's convention: the exit status, 128+N when signal N crashed
        or killed the target (SIGABRT's when a crash's signal is unknown);
        None otherwise."""
        if self.reason == "exit" and self.code is not None:
            return self.code & 0xFF
        if self.reason == "crash":
            return 128 + SIGNALS.get(self.signal or "", 6)
        if self.reason == "killed" and self.code is not None:
            return 128 + self.code
        return None

    def describe(self) -> str:
        if self.reason == "exit":
            return (
                f"target exited with status {self.code}"
                if self.code is not None
                else "target exited"
            )
        if self.reason == "crash":
            where = f" at {self.symbol}" if self.symbol else ""
            addr = f" (address {self.address:#x})" if self.address is not None else ""
            return f"target crashed: {self.signal or 'fatal signal'}{where}{addr}"
        if self.reason == "exec":
            return "target called exec; probes do not survive it"
        if self.reason == "detach":
            return "detached; the target keeps running"
        if self.reason == "stopped":  # instr ended the program it started (--duration, Ctrl-C)
            return f"instr stopped the program it started ({self.signal or 'killed'})"
        if self.reason == "killed":
            return f"target was killed by {self.signal}" if self.signal else "target was killed"
        return f"session lost ({self.signal or self.reason})"


@dataclass
class ProbeReport:
    id: int
    name: str
    state: str  # "armed" | "pending" | "failed"
    tier: str | None
    sites: int
    reason: str | None
    events: int = 0
    drops: int = 0


@dataclass
class OutputFailure:
    """An output that failed during the run: its events from then on (or
    since its last confirmed write) are lost."""

    output: str  # the -o argument (a path), or "console"
    reason: str  # e.g. "No space left on device", "database or disk is full"
    unwritten: int | None  # events the run produced that it did not write; None: unknown

    def describe(self, events: int) -> str:
        lost = (
            "an unknown number of events"
            if self.unwritten is None
            else f"{self.unwritten} of {events} events were"
        )
        return f"output {self.output} failed: {self.reason}; {lost} not written"


@dataclass
class ProcessEnding:
    """One process image of a run that follows children (-F): the root, a
    forked child, or the new image of an exec; and how it ended."""

    pid: int
    # the pid that forked or spawned it (an exec's: its own pid); None for the root
    parent: int | None
    # "root" | "fork" | "exec" | "spawn" (posix_spawn: seen first at its exec)
    # | "attach" (--all: a running process; parent: its parent then)
    origin: str
    ending: Ending | None  # None: still running when instr left it

    def describe(self) -> str:
        what = {
            "root": "the program",
            "fork": f"forked by {self.parent}",
            "exec": "after exec",
            "spawn": f"spawned by {self.parent}",
            "attach": "attached",  # --all (docs/all.md)
        }
        said = self.ending.describe() if self.ending is not None else "still running"
        if self.ending is not None and self.ending.reason == "exec":
            said = "called exec (its new image is followed)"
        said = said.removeprefix("target ")
        return f"pid {self.pid} ({what.get(self.origin, self.origin)}): {said}"


@dataclass
class RunSummary:
    events: int
    batches: int
    drops: int
    probes: list[ProbeReport]
    ending: Ending | None
    errors: list[str]
    ended_ns: int
    lost_batches: int = 0  # batches the agent numbered but the host never received
    aggregations: Any = None  # the last AggSnapshot (instr.aggregate), None without aggregations
    output_failures: list[OutputFailure] = field(default_factory=list)
    pipe_closed: bool = False  # the console's reader went away (instr ... | head): stopped early
    # -F: every process image the run followed, in the order they appeared (docs/follow.md)
    processes: list[ProcessEnding] = field(default_factory=list)
