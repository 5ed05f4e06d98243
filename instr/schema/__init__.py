"""Published JSON Schemas (shipped as package data)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PROBES_SCHEMA = Path(__file__).with_name("probes.schema.json")


def probes_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of probe-set files, version 1."""
    data: dict[str, Any] = json.loads(PROBES_SCHEMA.read_text(encoding="utf-8"))
    return data
