"""The console's event lines: columns, call depth, time, colour.

    TIME         TID PROBE          CALL
    0.000 ms   16668 cli/ns::Widget → cxx!ns::Widget::outer(int)
    0.009 ms   16668 cli/ns::Widget    | → cxx!ns::Widget::twice(int)
    0.010 ms   16668 cli/ns::Widget    | ← cxx!ns::Widget::twice(int) (1.0 µs)
    0.011 ms   16668 cli/ns::Widget ← cxx!ns::Widget::outer(int) (11.0 µs)

* TIME: milliseconds since the first event; or, with ``wall``, the time of day
  (``20:31:05.123456``, local time).
* Calls nest per thread, as frida-trace draws them: each call still open on
  the thread (an entry whose exit has not come, of a probe with both hooks)
  indents the thread's next lines by ``"   | "``.
* Colour (``style``): the header bold, times dim, each thread's TID and CALL in
  a colour of its own (frida-trace's way of telling threads apart), backtrace
  and hex-dump lines dim.  ``use_colour`` says when: a terminal, and no
  ``NO_COLOR`` in the environment (https://no-color.org: any non-empty value).
"""

from __future__ import annotations

import os
import time
from typing import TextIO

from instr.collectors.layout import Layout, LayoutCache
from instr.collectors.values import BYTES_SHOWN, show_duration, show_value, site_function
from instr.events import Event, RunContext
from instr.hexdump import hexdump
from instr.protocol import FLAG_NO_ENTRY

ARROWS = {"entry": "→", "exit": "←"}
FRAME_INDENT = " " * 8
DEPTH_INDENT = "   | "  # frida-trace's
DUMP_MAX = 256  # bytes of a long ``bytes`` capture hex-dumped under its event
TID_WIDTH = 7  # Linux thread ids go up to 4194304
REL_WIDTH = 12  # "    0.000 ms"
WALL_WIDTH = 15  # "20:31:05.123456"

BOLD, DIM, RESET = "\x1b[1m", "\x1b[2m", "\x1b[0m"
# per thread, in order of first appearance: cyan, green, yellow, magenta, blue, then bright ones
THREAD_COLOURS = tuple(f"\x1b[{n}m" for n in (36, 32, 33, 35, 34, 96, 92, 93, 95, 94))


def use_colour(stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    """Colour on a terminal, unless ``NO_COLOR`` is set (to anything but "")."""
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR", ""):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no such method, or a closed stream
        return False


def wall_clock(ns: int) -> str:
    """``20:31:05.123456``: nanoseconds since the epoch as a local time of day."""
    seconds, rest = divmod(ns, 1_000_000_000)
    return time.strftime("%H:%M:%S", time.localtime(seconds)) + f".{rest // 1000:06d}"


class EventLines:
    """Lines for events, in the order they are given (``console_order`` sorts them).

    ``wall_offset_ns``: added to an event's ``ts_ns`` (the target's monotonic
    clock) gives wall-clock nanoseconds; ``None`` shows relative milliseconds.
    """

    def __init__(
        self, ctx: RunContext, *, colour: bool = False, wall_offset_ns: int | None = None
    ) -> None:
        self.ctx = ctx
        self.layouts = LayoutCache(ctx.table)
        self.colour = colour
        self.wall_offset_ns = wall_offset_ns
        self.t0: int | None = None
        self.depth: dict[int, int] = {}  # tid -> calls open on it
        self._thread_colour: dict[int, str] = {}
        self._heads: dict[tuple[int, int, str], tuple[str, str]] = {}
        # probes whose entries are followed by exits: only they open a level
        self._nests = {
            p.id
            for p in ctx.table
            if p.entry is not None and p.exit is not None and not p.is_syscall
        }
        names = [p.name for p in ctx.table]
        self.probe_width = max(5, *map(len, names)) if names else 5

    def header(self) -> str:
        width = WALL_WIDTH if self.wall_offset_ns is not None else REL_WIDTH
        text = f"{'TIME':<{width}} {'TID':>{TID_WIDTH}} {'PROBE':<{self.probe_width}} CALL"
        return f"{BOLD}{text}{RESET}" if self.colour else text

    def when(self, ts_ns: int) -> str:
        if self.wall_offset_ns is not None:
            return wall_clock(ts_ns + self.wall_offset_ns)
        if self.t0 is None:
            self.t0 = ts_ns
        return f"{(ts_ns - self.t0) / 1e6:9.3f} ms"

    def _level(self, e: Event) -> int:
        """The event's indentation; moves the thread's depth past an entry or before an exit."""
        d = self.depth.get(e.tid, 0)
        if e.probe_id not in self._nests:
            return d
        if e.phase == "entry":
            self.depth[e.tid] = d + 1
            return d
        if e.flags & FLAG_NO_ENTRY or d == 0:
            return d
        if d == 1:
            del self.depth[e.tid]
        else:
            self.depth[e.tid] = d - 1
        return d - 1

    def _head(self, e: Event) -> tuple[str, str]:
        """The padded probe and ``→ function`` of an event's site (kept once the site is known)."""
        key = (e.probe_id, e.site, e.phase)
        known = self._heads.get(key)
        if known is None:
            site = self.ctx.site(e.probe_id, e.site)
            fn = site_function(site, e.site)
            known = (f"{e.probe:<{self.probe_width}}", f"{ARROWS.get(e.phase, '?')} {fn}")
            if site is not None:
                self._heads[key] = known
        return known

    def format(self, e: Event, lines: list[str]) -> None:
        """Append the event's line, then its backtrace and hex-dump lines."""
        ctx = self.ctx
        probe, call = self._head(e)
        level = self._level(e)
        if level:
            call = DEPTH_INDENT * level + call
        parts: list[str] = []
        stacks: list[list[int]] = []
        dumps: list[tuple[str, bytes]] = []
        if e.args:
            lay = self.layouts.get(e.probe_id, e.phase)
            status = e.args_status or {}
            kinds = lay.kinds if lay is not None else {}
            for name, value in e.args.items():
                kind = kinds.get(name, "int")
                parts.append(f"{name}={show_value(ctx, kind, value, status.get(name))}")
                if kind == "backtrace" and value:
                    stacks.append(value)
                elif kind == "bytes" and value is not None and len(value) > BYTES_SHOWN:
                    dumps.append((name, bytes(value)))
        if e.phase == "exit":
            parts.extend(self._exit_parts(e, self.layouts.get(e.probe_id, e.phase)))
        when, tid = self.when(e.ts_ns), f"{e.tid:>{TID_WIDTH}}"
        if self.colour:
            c = self._colour_of(e.tid)
            when, tid, call = f"{DIM}{when}{RESET}", f"{c}{tid}{RESET}", f"{c}{call}{RESET}"
        lines.append(
            f"{when} {tid} {probe} {call} {' '.join(parts)}"
            if parts
            else f"{when} {tid} {probe} {call}"
        )
        if not stacks and not dumps:
            return
        more: list[str] = []
        for frames in stacks:
            more.extend(f"{FRAME_INDENT}#{i} {ctx.symbolize(a)}" for i, a in enumerate(frames))
        for name, data in dumps:  # the whole buffer, hexdump -C style, offsets from 0
            more.append(f"{FRAME_INDENT}{name}:")
            more.extend(FRAME_INDENT + row for row in hexdump(data[:DUMP_MAX]).splitlines())
            if len(data) > DUMP_MAX:
                more.append(f"{FRAME_INDENT}… {len(data) - DUMP_MAX} more bytes")
        if self.colour:
            more = [f"{DIM}{line}{RESET}" for line in more]
        lines.extend(more)

    def _colour_of(self, tid: int) -> str:
        c = self._thread_colour.get(tid)
        if c is None:
            c = THREAD_COLOURS[len(self._thread_colour) % len(THREAD_COLOURS)]
            self._thread_colour[tid] = c
        return c

    def _exit_parts(self, e: Event, lay: Layout | None) -> list[str]:
        parts: list[str] = []
        if e.retval is not None:
            kind = lay.retval.kind if lay is not None and lay.retval is not None else "int"
            parts.append(f"= {show_value(self.ctx, kind, e.retval, None)}")
        if e.duration_ns is not None:
            parts.append(f"({show_duration(e.duration_ns)})")
        elif lay is not None and lay.duration is not None:
            parts.append("(entry not seen)")
        return parts
