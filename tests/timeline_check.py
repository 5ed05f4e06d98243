"""A structural check of a Trace Event Format file (Chrome JSON), the rules
Perfetto's JSON importer and chrome://tracing apply, written out so a reader
can audit them (Perfetto's trace processor needs a binary it downloads: not
here). ``check_trace(text)`` returns the events; every violation is an
AssertionError that names the event.

The rules (Trace Event Format, "JSON Object Format"):
- strict JSON (no NaN or Infinity), an object with a ``traceEvents`` list;
  ``displayTimeUnit``, if present, is "ms" or "ns";
- every event has a string ``ph`` of the phases used here: ``X`` (complete:
  ``ts`` and ``dur`` >= 0), ``i``/``I`` (instant, scope ``s`` g, p or t), ``C``
  (counter: ``args`` of numbers), ``M`` (metadata: process_name, thread_name...
  with ``args.name`` a string); ``B``/``E`` pairs are not used by instr;
- ``name`` a string; ``pid`` an int; ``tid`` an int where the phase is
  thread-scoped (X, thread instants); ``ts`` a finite number >= 0 but on M;
  ``args``, if present, an object; ``cat``, if present, a string;
- complete slices on one thread nest: each slice lies inside the slice open
  around it or starts after it ends (Perfetto drops a slice that overlaps
  its parent's end, and the UI would show a different run).
"""

from __future__ import annotations

import json
import math
from typing import Any

PHASES = {"X", "i", "I", "C", "M"}
METADATA = {
    "process_name",
    "thread_name",
    "process_sort_index",
    "thread_sort_index",
    "process_labels",
}


def _strict(token: str) -> Any:
    raise AssertionError(f"not strict JSON: {token}")


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def check_event(e: Any) -> None:
    assert isinstance(e, dict), e
    ph = e.get("ph")
    assert ph in PHASES, ("unknown or missing ph", e)
    assert isinstance(e.get("name"), str) and e["name"], ("name", e)
    assert isinstance(e.get("pid"), int) and not isinstance(e["pid"], bool), ("pid", e)
    assert "args" not in e or isinstance(e["args"], dict), ("args", e)
    assert "cat" not in e or isinstance(e["cat"], str), ("cat", e)
    if ph == "M":
        assert e["name"] in METADATA, ("metadata name", e)
        if e["name"].endswith("_name"):
            assert isinstance(e.get("args", {}).get("name"), str), ("metadata args.name", e)
        return
    assert _num(e.get("ts")) and e["ts"] >= 0, ("ts", e)
    if ph == "X":
        assert _num(e.get("dur")) and e["dur"] >= 0, ("dur", e)
        assert isinstance(e.get("tid"), int), ("tid", e)
    elif ph in ("i", "I"):
        assert e.get("s", "t") in ("g", "p", "t"), ("instant scope", e)
        if e.get("s", "t") == "t":
            assert isinstance(e.get("tid"), int), ("tid", e)
    else:  # C
        args = e.get("args")
        assert isinstance(args, dict) and args, ("counter args", e)
        assert all(_num(v) for v in args.values()), ("counter values", e)


def check_nesting(events: list[dict[str, Any]]) -> None:
    """Complete slices of each thread form a tree: no partial overlaps."""
    by_thread: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for e in events:
        if e["ph"] == "X":
            by_thread.setdefault((e["pid"], e["tid"]), []).append(e)
    for slices in by_thread.values():
        slices.sort(key=lambda e: (e["ts"], -e["dur"]))
        open_ends: list[tuple[float, dict[str, Any]]] = []
        for s in slices:
            while open_ends and s["ts"] >= open_ends[-1][0]:
                open_ends.pop()
            end = s["ts"] + s["dur"]
            if open_ends:
                parent_end, parent = open_ends[-1]
                assert end <= parent_end, ("slice overlaps its parent's end", parent, s)
            open_ends.append((end, s))


def check_trace(text: str) -> list[dict[str, Any]]:
    doc = json.loads(text, parse_constant=_strict)
    assert isinstance(doc, dict), "the JSON Object Format: an object"
    assert isinstance(doc.get("traceEvents"), list), "traceEvents: a list"
    assert doc.get("displayTimeUnit", "ms") in ("ms", "ns"), doc.get("displayTimeUnit")
    events: list[dict[str, Any]] = doc["traceEvents"]
    for e in events:
        check_event(e)
    check_nesting(events)
    return events
