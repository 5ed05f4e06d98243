"""Presentation of captured values, shared by the collectors."""

from __future__ import annotations

import json
from typing import Any

from instr.collectors.layout import Kind
from instr.events import RunContext, Site

MAX_I64 = (1 << 63) - 1
_CONTROL = {c: f"\\x{c:02x}" for c in range(0x20)}
_CONTROL.update(
    {ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", ord('"'): '\\"', 0x7F: "\\x7f"}
)
BYTES_SHOWN = 32  # longer bytes captures are also hex-dumped by the console

# compact JSON, non-ASCII kept as is
to_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode


def quote(text: str) -> str:
    """A double-quoted string for people: control characters and quotes escaped."""
    return '"' + text.translate(_CONTROL) + '"'


def show_value(ctx: RunContext, kind: Kind, value: Any, status: str | None) -> str:
    """One captured value for the console."""
    if value is None:
        if status == "null":
            return "NULL"
        return f"<{status}>" if status else "?"
    more = "..." if status == "truncated" else ""
    if kind in ("ptr", "caller"):
        return ctx.symbolize(value)
    if kind == "bool":
        return "true" if value else "false"
    if kind == "cstr":
        return quote(value) + more
    if kind == "bytes":
        shown = value[:BYTES_SHOWN].hex()
        cut = "..." if len(value) > BYTES_SHOWN else more
        return f"<{shown}{cut}>({len(value)} bytes{', truncated' if more else ''})"
    if kind == "backtrace":
        return f"[{len(value)} frames]"
    return str(value)


def show_duration(ns: int) -> str:
    """``12.3 µs``, ``4.567 ms``, ``1.250 s``."""
    if ns < 1_000_000:
        return f"{ns / 1000:.1f} µs"
    if ns < 1_000_000_000:
        return f"{ns / 1_000_000:.3f} ms"
    return f"{ns / 1_000_000_000:.3f} s"


def address_json(ctx: RunContext, address: int) -> dict[str, Any]:
    """``{"address": 4198442, "symbol": "demo!main+0x2a"}``; symbol null when unknown."""
    sym = ctx.symbols.get(address)
    return {"address": address, "symbol": str(sym) if sym is not None else None}


def json_value(ctx: RunContext, kind: Kind, value: Any) -> Any:
    """One captured value as a JSON-ready object (see docs/outputs.md)."""
    if value is None:
        return None
    if kind == "bytes":
        return bytes(value).hex()
    if kind == "caller":
        return address_json(ctx, value)
    if kind == "backtrace":
        return [address_json(ctx, a) for a in value]
    return value


def site_function(site: Site | None, site_id: int) -> str:
    return site.function if site is not None else f"<site {site_id}>"


def int64(value: int) -> int:
    """An unsigned 64-bit value as SQLite can store it: its two's-complement i64."""
    return value - (1 << 64) if value > MAX_I64 else value
