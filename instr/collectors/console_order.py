"""Events of several threads in timestamp order, for the console.

Batches are not in timestamp order across threads: a JavaScript-tier hook
stamps its call's time (natively, on entry) and then waits for the script
lock before it writes its record, so a thread that waited shows up after
records stamped later by others, in the same batch or in the next one
(measured: 4 threads of ``threads`` under a JS-tier probe, 6 of 12,004
events out of order, by up to 16 ms). The console holds events back for a
window and prints them sorted by ``ts_ns``:

* an event is released once an event stamped ``hold_ns`` later has arrived
  (the target's clock), or once it has waited ``hold_ns`` on the host (so the
  last events of a burst appear although nothing follows them);
* the sort is stable, so a thread's own events keep their order (its
  timestamps never decrease) and equal times keep arrival order;
* an event that arrives after later ones were printed (it waited longer than
  the window) is printed when it arrives, out of order, rather than dropped.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from operator import attrgetter

from instr.events import Event

HOLD_NS = 200_000_000  # 4 flush intervals of the agent (50 ms)
_ts = attrgetter("ts_ns")


class TimeOrder:
    """The reorder window: ``add`` each batch, ``due`` on a timer, ``drain`` at the end."""

    def __init__(self, hold_ns: int = HOLD_NS) -> None:
        self.hold_ns = hold_ns
        self.pending: list[Event] = []  # sorted by ts_ns
        self.newest = 0  # the latest ts_ns seen
        self._arrivals: deque[tuple[int, int]] = deque()  # (host ns, latest ts_ns of a batch)

    def add(self, events: list[Event], now: int) -> list[Event]:
        """Take one batch that arrived at host time ``now``; return what is due, in order."""
        if events:
            self.pending.extend(events)
            self.pending.sort(key=_ts)  # two sorted runs, mostly: timsort merges them
            top = max(map(_ts, events))
            self.newest = max(self.newest, top)
            self._arrivals.append((now, top))
        return self.due(now)

    def due(self, now: int) -> list[Event]:
        """The events whose window has passed at host time ``now``, in order."""
        cutoff = self.newest - self.hold_ns
        while self._arrivals and self._arrivals[0][0] <= now - self.hold_ns:
            cutoff = max(cutoff, self._arrivals.popleft()[1])
        n = bisect_right(self.pending, cutoff, key=_ts)
        out = self.pending[:n]
        del self.pending[:n]
        return out

    def drain(self) -> list[Event]:
        """Everything still held, in order (the run ended)."""
        out, self.pending = self.pending, []
        self._arrivals.clear()
        return out
