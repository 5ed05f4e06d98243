"""Profile probes of probe sets (``profile: 99``): the sampler's samples, counted
into the probes' aggregations on the host.

One sampler (``AgentSampler``, ``agents/src/profile/``) runs on the session's
agent, at the highest rate the probes ask for; a probe at a lower rate takes
its share of the samples (every k-th, spread evenly), so a thread's CPU second
still gives it about N. A worker thread takes the sampler's batches, unwinds
each sample once (``instr.profile.unwind``) and names new frames while the
agent answers. The tables are ``AggTable``s like the agent's (tier ``host``),
so the console, JSON Lines and SQLite outputs show them as any aggregation.

On a ``Session`` (the public calls only)::

    points = ProfilePoints(table.profile_probes(), lambda: session.rpc)
    session.tap("profile", points.post)      # before start
    session.start(resume=False)
    reports = points.arm(session.pid)        # starts the sampler and the worker
    session.resume(); session.wait()
    points.finish()                          # before the session leaves
    tables = points.tables()
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from instr.aggregate.model import AggRow, AggTable
from instr.errors import AgentError
from instr.events import ProbeReport
from instr.probes.ir import Aggregation, Probe, ProfilePoint
from instr.profile.framenames import FrameNames
from instr.profile.session import AgentSampler, Batch, SamplerOptions

_KEYS_OF_FRAMES = ("backtrace", "probefunc", "module")


@dataclass
class _Share:
    probe: Probe
    hz: int
    acc: int = 0  # fires when acc reaches the sampler's rate


class ProfilePoints(FrameNames):
    """The profile probes of one run: their sampler, counts and tables."""

    def __init__(self, probes: list[Probe], rpc: Callable[[], Any], execname: str = "") -> None:
        super().__init__()
        self.shares = [_Share(p, _hz(p)) for p in probes]
        self.hz = max((s.hz for s in self.shares), default=0)
        self.sampler = AgentSampler(rpc)
        self.pid = 0
        self.execname = execname
        self.samples = 0
        self.drops = 0
        self.counts: dict[int, Counter[tuple[Any, ...]]] = {
            a.id: Counter() for p in probes for a in p.aggregations
        }
        self.overflow: dict[int, int] = {a.id: 0 for p in probes for a in p.aggregations}
        self.lock = threading.Lock()
        self._walks = any(
            k.src in _KEYS_OF_FRAMES for p in probes for a in p.aggregations for k in a.keys
        )
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._alive = True  # the agent still answers (names frames)
        self._finished = False

    @property
    def aggs(self) -> list[Aggregation]:
        """The probes' aggregations (a host table source, as syscall points are)."""
        return [a for s in self.shares for a in s.probe.aggregations]

    def post(self, message: dict[str, Any], data: bytes | None) -> None:
        """The session's tap for the agent's "profile" messages (Frida's thread)."""
        self.sampler.post(message, data)

    def arm(self, pid: int) -> list[ProbeReport]:
        """Start the sampler and the worker; one report per probe."""
        self.pid = pid
        if not self.execname:
            try:
                with open(f"/proc/{pid}/comm") as f:
                    self.execname = f.read().strip()
            except OSError:
                self.execname = "?"
        try:
            started = self.sampler.start(SamplerOptions(hz=self.hz))
        except AgentError as e:
            return [self._report(s.probe, "failed", 0, str(e)) for s in self.shares]
        self._worker = threading.Thread(target=self._run, name="instr-profile", daemon=True)
        self._worker.start()
        threads = int(started.get("threads", 0))
        return [self._report(s.probe, "armed", threads, None) for s in self.shares]

    @staticmethod
    def _report(probe: Probe, state: str, sites: int, reason: str | None) -> ProbeReport:
        return ProbeReport(probe.id, probe.name, state, "profile", sites, reason)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.pump(0.05) == "ended":
                return

    def pump(self, wait: float) -> str | None:
        """Count the batches that came within ``wait`` s; "ended" once the session is gone."""
        unwinder = self.sampler.unwinder
        got = self.sampler.next_batch(wait)
        while isinstance(got, Batch) and unwinder is not None:
            self.drops = max(self.drops, got.drops)
            new = {a for a in self.add(got.samples, unwinder.walk) if a not in self.names}
            if new:
                alive = self._alive and not got.final
                symbols = self.sampler.symbolize(new, ask_agent=alive)
                with self.lock:
                    self.name_frames(new, symbols, unwinder.module_at)
            if got.final:
                self._alive = False
            if self._stop.is_set() and threading.current_thread() is self._worker:
                return None  # finish() counts the rest, on its own thread
            got = self.sampler.next_batch(0)
        return got if isinstance(got, str) else None

    def add(self, samples: list[Any], walk: Callable[[Any], Any]) -> set[int]:
        """Count a batch; returns the addresses its keys hold (to name them)."""
        addrs: set[int] = set()
        for s in samples:
            frames: tuple[int, ...] = ()
            walked = False
            self.samples += 1
            for share in self.shares:
                share.acc += share.hz
                if share.acc < self.hz:
                    continue
                share.acc -= self.hz
                if self._walks and not walked:
                    frames, walked = tuple(walk(s).frames), True
                for agg in share.probe.aggregations:
                    key = tuple(self._key_of(k.src, k.depth, s, frames, addrs) for k in agg.keys)
                    with self.lock:
                        counts = self.counts[agg.id]
                        if key not in counts and len(counts) >= agg.max_keys:
                            self.overflow[agg.id] += 1
                        else:
                            counts[key] += 1
        return addrs

    def _key_of(
        self, src: str, depth: int, s: Any, frames: tuple[int, ...], addrs: set[int]
    ) -> Any:
        if src == "backtrace":
            stack = frames[:depth]
            addrs.update(stack)
            return stack
        if src in ("probefunc", "module"):
            pc = frames[0] if frames else 0
            addrs.add(pc)
            return ("func" if src == "probefunc" else "mod", pc)
        if src == "tid":
            return s.tid
        if src == "pid":
            return self.pid
        return self.execname

    def finish(self, ended: bool = False) -> None:
        """Stop the sampler (the agent sends what its ring holds first), count the
        rest and stop the worker. ``ended``: the session is gone already. Once."""
        if self._finished:
            return
        self._finished = True
        self._stop.set()  # first: no call of the worker's may overlap the stop
        if self._worker is not None:
            self._worker.join()  # at most the batch it holds: it stops after that one
        if not ended:
            self.sampler.stop()
        self.pump(0.2 if not ended else 0.0)

    def tables(self) -> list[AggTable]:
        with self.lock:
            return [self._table(s.probe, a) for s in self.shares for a in s.probe.aggregations]

    def _table(self, probe: Probe, agg: Aggregation) -> AggTable:
        rows: dict[tuple[Any, ...], int] = {}
        for keys, n in self.counts[agg.id].items():
            shown = tuple(self.key(k) for k in keys)
            rows[shown] = rows.get(shown, 0) + n
        set_name = probe.name.split("/", 1)[0]
        return AggTable(
            name=f"{set_name}/{agg.name}",
            probe=probe.name,
            func="count",
            arg=None,
            key_names=tuple(k.name for k in agg.keys),
            rows=tuple(AggRow(k, n, n) for k, n in rows.items()),
            overflow=self.overflow[agg.id],
            max_keys=agg.max_keys,
            tier="host",
        )

    def summary(self) -> str:
        return f"profile: {self.samples} samples at {self.hz} Hz; {self.drops} dropped (ring full)"


def _hz(probe: Probe) -> int:
    assert isinstance(probe.point, ProfilePoint)
    return probe.point.hz
