"""Collectors: where decoded events go (console, JSON Lines, SQLite).

``open_output`` picks one from an output argument: ``-`` is the console on
stdout, otherwise the file extension decides.  Formats are documented in
docs/outputs.md.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from instr.collectors.base import Collector
from instr.errors import UsageError

JSONL_EXTENSIONS = (".jsonl", ".ndjson")
SQLITE_EXTENSIONS = (".db", ".sqlite", ".sqlite3")
TIMELINE_EXTENSIONS = (".json",)  # Chrome trace JSON, for Perfetto UI (collectors/timeline.py)
SUPPORTED = "- (console), " + ", ".join(JSONL_EXTENSIONS + SQLITE_EXTENSIONS + TIMELINE_EXTENSIONS)


def open_output(path_or_dash: str, *, top: int | None = None) -> Collector:
    """The collector for one ``-o`` argument; ``UsageError`` for what cannot work.

    ``top`` cuts the console's aggregation reports to their N largest rows
    (files always get every row).
    """
    if path_or_dash == "-":
        from instr.collectors.console import ConsoleCollector

        return ConsoleCollector(sys.stdout, top=top)
    path = Path(path_or_dash)
    ext = path.suffix.lower()
    if ext not in JSONL_EXTENSIONS + SQLITE_EXTENSIONS + TIMELINE_EXTENSIONS:
        raise UsageError(
            f"unknown output format {ext or '(no extension)'!r} for {path_or_dash!r}",
            hint=f"supported: {SUPPORTED}",
        )
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"cannot write {path_or_dash!r}: directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"cannot write {path_or_dash!r}: permission denied")
    if ext in JSONL_EXTENSIONS:
        from instr.collectors.jsonl import JsonlCollector

        return JsonlCollector(path)
    if ext in TIMELINE_EXTENSIONS:
        from instr.collectors.timeline import TimelineCollector

        return TimelineCollector(path)
    from instr.collectors.sqlite import SqliteCollector

    return SqliteCollector(path)


__all__ = ["SUPPORTED", "Collector", "open_output"]
