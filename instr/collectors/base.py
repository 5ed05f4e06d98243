"""The collector protocol: what the dispatcher feeds decoded events to.

The session calls ``open`` once before the agent loads; the dispatcher's
worker thread calls ``on_events`` once per decoded batch, in batch order, and
``close`` once at the end (also after a failed start, so ``close`` must cope
with ``open`` never having been called).  An exception from ``on_events`` is
recorded in the run summary and that collector gets no further events; it
still gets ``close``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from instr.events import Event, RunContext, RunInfo, RunSummary


@runtime_checkable
class Collector(Protocol):
    def open(self, ctx: RunContext, info: RunInfo) -> None: ...

    def on_events(self, events: list[Event]) -> None: ...

    def close(self, summary: RunSummary) -> None: ...
