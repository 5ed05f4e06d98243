"""An output that failed: what to call it, why, and how many events it lost.

A collector may keep ``written``: the events it has written for sure (after
its flush or commit succeeded). Then the loss is exact: every event the run
produced that the output did not write. Without it the loss is unknown.
"""

from __future__ import annotations

import sqlite3
import traceback

from instr.events import OutputFailure


def output_name(collector: object) -> str:
    """The ``-o`` argument a collector writes (its ``path``), or ``console``."""
    collector = getattr(collector, "wrapped", collector)  # instr.metrics.Gated
    path = getattr(collector, "path", None)
    if path is not None:
        return str(path)
    return "console" if type(collector).__name__ == "ConsoleCollector" else type(collector).__name__


def failure_reason(e: BaseException) -> str:
    """The words a user needs: the system's or SQLite's message, not a traceback.
    An unexpected exception (a bug) keeps its type and where it was raised."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    if isinstance(e, sqlite3.Error):
        return str(e)
    where = traceback.extract_tb(e.__traceback__)
    at = f" at {where[-1].filename}:{where[-1].lineno}" if where else ""
    return f"{type(e).__name__}: {e}{at}"


def output_failure(
    collector: object, e: BaseException, events: int, closing: bool
) -> OutputFailure:
    written = getattr(collector, "written", None)
    unwritten = max(0, events - written) if isinstance(written, int) else None
    reason = failure_reason(e)
    if closing:
        reason = f"{reason} (while closing it)"
    return OutputFailure(output_name(collector), reason, unwritten)
