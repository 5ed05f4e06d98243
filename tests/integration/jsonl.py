"""Reading instr's outputs back in tests."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The event lines and the summary line of a JSON Lines output."""
    events: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    for line in path.read_text().splitlines():
        obj = json.loads(line)
        if obj["type"] == "event":
            events.append(obj)
        elif obj["type"] == "summary":
            summary = obj
    assert summary, f"{path} has no summary line"
    return events, summary


def phases(events: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    return Counter((e["probe"], e["phase"]) for e in events)


def db(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path)
