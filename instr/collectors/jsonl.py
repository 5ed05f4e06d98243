"""JSON Lines output: a ``run`` line, one ``event`` line per event, a ``summary`` line.

Aggregation snapshots add an ``aggregation_table`` line per table and an
``aggregation`` line per row (``instr.aggregate.export``).

The format is documented in docs/outputs.md.  Events whose values are all
plain integers (the common, hot case) are written through a per-(probe, phase)
``%``-template instead of ``json.dumps``; both paths produce the same text.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from operator import itemgetter
from pathlib import Path
from typing import Any, TextIO

from instr.aggregate.export import snapshot_objects
from instr.aggregate.model import AggSnapshot
from instr.collectors.layout import Layout, LayoutCache
from instr.collectors.values import json_value, site_function, to_json
from instr.events import Event, RunContext, RunInfo, RunSummary

_TEMPLATE_KINDS = frozenset({"int", "ptr"})
_Line = Callable[[Event], str]


def _pct(text: str) -> str:
    return text.replace("%", "%%")


def names_getter(names: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """``args -> (args[n0], args[n1], ...)`` at C speed; KeyError when one is missing."""
    if not names:
        return lambda args: ()
    if len(names) == 1:
        name = names[0]
        return lambda args: (args[name],)
    get: Callable[[dict[str, Any]], tuple[Any, ...]] = itemgetter(*names)
    return get


class JsonlCollector:
    def __init__(self, path: str | Path | None = None, stream: TextIO | None = None) -> None:
        if (path is None) == (stream is None):
            raise ValueError("give either a path or a stream")
        self.path = Path(path) if path is not None else None
        self.stream = stream
        self.ctx: RunContext | None = None
        self.layouts: LayoutCache | None = None
        self._lines: dict[tuple[int, str], _Line] = {}
        self._functions: dict[tuple[int, int], str] = {}
        self.written = 0  # events flushed to the file (instr.collectors.failure)
        self.failed = False

    def open(self, ctx: RunContext, info: RunInfo) -> None:
        self.ctx = ctx
        self.layouts = LayoutCache(ctx.table)
        if self.stream is None:
            assert self.path is not None
            self.stream = self.path.open("w", encoding="utf-8", buffering=1 << 20)
        run: dict[str, Any] = {"type": "run", **dataclasses.asdict(info)}
        self.stream.write(to_json(run) + "\n")

    def on_events(self, events: list[Event]) -> None:
        if self.stream is None:
            return
        lines = self._lines
        out: list[str] = []
        for e in events:
            line = lines.get((e.probe_id, e.phase))
            if line is None:
                line = lines[(e.probe_id, e.phase)] = self._line_for(e.probe_id, e.phase)
            out.append(line(e))
        try:  # flushed per batch, so that a failure knows what was written
            self.stream.write("".join(out))
            self.stream.flush()
        except OSError:
            self.failed = True
            raise
        self.written += len(events)

    def on_aggregations(self, snapshot: AggSnapshot) -> None:
        if self.stream is None:
            return
        self.stream.write("".join(to_json(obj) + "\n" for obj in snapshot_objects(snapshot)))

    def close(self, summary: RunSummary) -> None:
        if self.stream is None:
            return
        if self.failed:  # the file cannot take the summary line; give its descriptor back
            stream, self.stream = self.stream, None
            if self.path is not None:
                with contextlib.suppress(OSError):
                    stream.close()  # closes the file even when the last flush fails
            return
        # the final aggregations are already written as aggregation lines
        plain = dataclasses.replace(summary, aggregations=None)
        data: dict[str, Any] = {"type": "summary", **dataclasses.asdict(plain)}
        data.pop("aggregations", None)
        self.stream.write(to_json(data) + "\n")
        self.stream.flush()
        if self.path is not None:
            self.stream.close()
            self.stream = None

    # -- formatting -------------------------------------------------------------

    def function_json(self, probe_id: int, site: int) -> str:
        key = (probe_id, site)
        text = self._functions.get(key)
        if text is None:
            assert self.ctx is not None
            s = self.ctx.site(probe_id, site)
            text = to_json(site_function(s, site))
            if s is not None:  # unknown sites may become known later: do not cache them
                self._functions[key] = text
        return text

    def _line_for(self, probe_id: int, phase: str) -> _Line:
        assert self.layouts is not None
        lay = self.layouts.get(probe_id, phase)
        if lay is None or not lay.fixed:
            return self.generic_line
        if any(s.kind not in _TEMPLATE_KINDS for s in lay.arg_slots):
            return self.generic_line
        if lay.retval is not None and lay.retval.kind not in _TEMPLATE_KINDS:
            return self.generic_line
        return self._template_line(lay)

    def _template_line(self, lay: Layout) -> _Line:
        names = tuple(s.name for s in lay.arg_slots)
        args = ",".join(f"{_pct(to_json(n))}:%d" for n in names)
        head = (
            '{"type":"event","seq":%d,"probe":'
            + _pct(to_json(lay.probe))
            + ',"phase":'
            + _pct(to_json(lay.phase))
            + '%s,"tid":%d,"ts_ns":%d,"function":%s,"args":{'
            + args
            + "}"
        )
        getter = names_getter(names)
        function_json = self.function_json
        generic = self.generic_line
        exit_tail = ""
        if lay.phase == "exit":
            exit_tail += ',"retval":%d' if lay.retval is not None else ""
            exit_tail += ',"duration_ns":%s' if lay.duration is not None else ""
        template = head + exit_tail + "}\n"
        want_ret = lay.phase == "exit" and lay.retval is not None
        want_dur = lay.phase == "exit" and lay.duration is not None

        def line(e: Event) -> str:
            pid = f',"pid":{e.pid}' if e.pid else ""  # 0: not known (a replay)
            values = (
                e.seq,
                pid,
                e.tid,
                e.ts_ns,
                function_json(e.probe_id, e.site),
                *getter(e.args),
            )
            if want_ret:
                values += (e.retval,)
            if want_dur:
                values += ("null" if e.duration_ns is None else e.duration_ns,)
            try:
                return template % values
            except TypeError:  # a value that is not an int: take the general path
                return generic(e)

        def safe_line(e: Event) -> str:
            if e.args_status is not None or len(e.args) != len(names):
                return generic(e)
            try:
                return line(e)
            except KeyError:
                return generic(e)

        return safe_line

    def event_object(self, e: Event) -> dict[str, Any]:
        """The JSON object of one event (the general path)."""
        assert self.layouts is not None and self.ctx is not None
        lay = self.layouts.get(e.probe_id, e.phase)
        kinds = lay.kinds if lay is not None else {}
        obj: dict[str, Any] = {
            "type": "event",
            "seq": e.seq,
            "probe": e.probe,
            "phase": e.phase,
            **({"pid": e.pid} if e.pid else {}),
            "tid": e.tid,
            "ts_ns": e.ts_ns,
            "function": site_function(self.ctx.site(e.probe_id, e.site), e.site),
            "args": {k: json_value(self.ctx, kinds.get(k, "int"), v) for k, v in e.args.items()},
        }
        if e.phase == "exit":
            if e.retval is not None or (lay is not None and lay.retval is not None):
                obj["retval"] = e.retval
            if e.duration_ns is not None or (lay is not None and lay.duration is not None):
                obj["duration_ns"] = e.duration_ns
        if e.args_status:
            obj["args_status"] = e.args_status
        return obj

    def generic_line(self, e: Event) -> str:
        return to_json(self.event_object(e)) + "\n"
