"""The collector protocol: what the dispatcher feeds decoded events to.

The session calls ``open`` once before the agent loads; the dispatcher's
worker thread calls ``on_events`` once per decoded batch, in batch order, and
``close`` once at the end (also after a failed start, so ``close`` must cope
with ``open`` never having been called).  An exception from ``on_events`` is
recorded in the run summary and that collector gets no further events; it
still gets ``close``.

Optional: ``on_aggregations(self, snapshot: AggSnapshot) -> None`` receives
each aggregation snapshot (``instr.aggregate.model``): every ``--interval``
and a final one (``snapshot.final``) before ``close``.  The dispatcher calls
it when a collector has it (``getattr``; ``AggregationConsumer`` below is the
same check for ``isinstance``).  The collectors here rely on it coming from
the thread that calls ``on_events``, never concurrently with it (the console
shares one stream, SQLite one connection).  Values are cumulative since the probes were armed, so a
consumer that wants the latest state keeps only the last snapshot.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from instr.aggregate.model import AggSnapshot
from instr.events import Event, RunContext, RunInfo, RunSummary


@runtime_checkable
class Collector(Protocol):
    def open(self, ctx: RunContext, info: RunInfo) -> None: ...

    def on_events(self, events: list[Event]) -> None: ...

    def close(self, summary: RunSummary) -> None: ...


@runtime_checkable
class AggregationConsumer(Protocol):
    """A collector that also takes aggregation snapshots (optional; see above)."""

    def on_aggregations(self, snapshot: AggSnapshot) -> None: ...
