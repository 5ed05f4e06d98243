"""What the dispatcher keeps per process image when a run follows children
(-F, docs/follow.md). Each image's agent is a source (0: the root) with its
own batch numbers, cumulative drops, ending, interned strings (its own
``AggDecoder``) and aggregation tables, whose latest snapshots are merged
into one (``instr.aggregate.merge``)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from instr.aggregate.decode import AggDecoder
from instr.aggregate.merge import merge_snapshots
from instr.aggregate.model import AggSnapshot
from instr.events import Ending, ProcessEnding


class Sources:
    def __init__(self, first: AggDecoder, make_decoder: Callable[[], AggDecoder]) -> None:
        self.root_pid = 0
        self._lock = threading.Lock()  # add/ended come from Frida's and instr's threads
        self._pids: dict[int, int] = {}
        self._seqs: dict[int, int] = {}
        self._drops: dict[tuple[int, int], int] = {}
        self._decoders = {0: first}
        self._make_decoder = make_decoder
        self._latest: dict[int, AggSnapshot] = {}
        self._processes: dict[int, ProcessEnding] = {}

    def add(self, source: int, pid: int, parent: int | None, origin: str) -> None:
        with self._lock:
            self._pids[source] = pid
            if source == 0:
                self.root_pid = pid
            self._processes[source] = ProcessEnding(pid, parent, origin, None)

    def ended(self, source: int, ending: Ending, said: bool = False) -> bool:
        """Record how image ``source`` ended: ``said`` by its agent (always
        kept), else only when nothing is known yet. True when the image is the
        root program's (the run's ending)."""
        with self._lock:
            proc = self._processes.get(source)
            if proc is not None and (said or proc.ending is None):
                proc.ending = ending
            return source == 0 or self._pids.get(source) == self.root_pid

    def pid(self, source: int) -> int:
        return self._pids.get(source, 0)

    def last_seq(self, source: int) -> int:
        return self._seqs.get(source, 0)

    def saw_seq(self, source: int, seq: int) -> None:
        self._seqs[source] = max(self._seqs.get(source, 0), seq)

    def drops(self, source: int, probe: int, total: int) -> int:
        """An agent's cumulative drop count for ``probe``: how many are new."""
        had = self._drops.get((source, probe), 0)
        now = max(had, total)
        self._drops[(source, probe)] = now
        return now - had

    def decoder(self, source: int) -> AggDecoder:
        decoder = self._decoders.get(source)
        if decoder is None:  # interned strings are numbered per agent
            decoder = self._decoders[source] = self._make_decoder()
        return decoder

    def keep(self, source: int, snap: AggSnapshot) -> None:
        self._latest[source] = snap

    def merged(self, seq: int, final: bool) -> AggSnapshot | None:
        """Every image's latest snapshot as one; None before any."""
        if not self._latest:
            return None
        return merge_snapshots(self._latest.values(), seq, final)

    def process(self, source: int) -> ProcessEnding | None:
        with self._lock:
            return self._processes.get(source)

    def processes(self) -> list[ProcessEnding]:
        with self._lock:
            return list(self._processes.values())
