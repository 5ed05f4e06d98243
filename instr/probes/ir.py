"""The probe IR: what every front end (YAML, quick CLI flags) compiles to.

``AgentPlan`` is the JSON sent to the agent (ids and layouts only, no names).
``ProbeTable`` stays on the host: it maps ids back to names, capture names and
types, and source locations, and is what the decoder and collectors use.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

IntType = Literal["i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "ptr", "bool"]
INT_TYPES: tuple[str, ...] = ("i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "ptr", "bool")
VAR_TYPES: tuple[str, ...] = ("cstr", "bytes")
Phase = Literal["entry", "exit"]
Tier = Literal["auto", "native", "js"]


@dataclass(frozen=True)
class SourceLoc:
    file: str
    line: int  # 1-based
    col: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Capture:
    """One named value captured at one phase.

    ``src`` is ``arg``, ``retval``, ``caller``, ``backtrace`` or ``duration``.
    ``type`` is an int type, ``cstr`` or ``bytes`` for ``arg``/``retval``;
    ``ptr`` for ``caller``; ``backtrace`` and ``duration`` for those sources.
    """

    name: str
    src: Literal["arg", "retval", "caller", "backtrace", "duration"]
    type: str
    index: int = 0  # argument index, for src == "arg"
    max: int = 0  # cstr/bytes: max bytes kept
    len_const: int | None = None  # bytes: fixed length
    len_arg: int | None = None  # bytes: length taken from this argument
    depth: int = 0  # backtrace depth

    def to_plan(self) -> dict[str, Any]:
        d: dict[str, Any] = {"src": self.src}
        if self.src in ("arg", "retval"):
            d["type"] = self.type
        if self.src == "arg":
            d["index"] = self.index
        if self.type == "cstr":
            d["max"] = self.max
        if self.type == "bytes":
            d["max"] = self.max
            d["len"] = (
                {"const": self.len_const} if self.len_const is not None else {"arg": self.len_arg}
            )
        if self.src == "backtrace":
            d["depth"] = self.depth
        return d


@dataclass(frozen=True)
class FunctionPoint:
    module: str | None  # glob; None means any module
    symbol: str  # glob
    exclude: tuple[tuple[str | None, str], ...] = ()

    def to_plan(self) -> dict[str, Any]:
        return {
            "kind": "function",
            "module": self.module,
            "symbol": self.symbol,
            "exclude": [{"module": m, "symbol": s} for m, s in self.exclude],
        }

    def __str__(self) -> str:
        return f"{self.module or '*'}!{self.symbol}"


@dataclass(frozen=True)
class AddressPoint:
    address: int

    def to_plan(self) -> dict[str, Any]:
        return {"kind": "address", "address": hex(self.address)}

    def __str__(self) -> str:
        return hex(self.address)


@dataclass(frozen=True)
class OffsetPoint:
    module: str
    offset: int

    def to_plan(self) -> dict[str, Any]:
        return {"kind": "offset", "module": self.module, "offset": self.offset}

    def __str__(self) -> str:
        return f"{self.module}+{self.offset:#x}"


Point = FunctionPoint | AddressPoint | OffsetPoint


@dataclass(frozen=True)
class Predicate:
    source: str  # the expression as written
    phase: Phase  # evaluated at entry (uses entry captures only) or exit
    expr: dict[str, Any]  # the Expr tree, as in agents/src/protocol.ts


@dataclass(frozen=True)
class Probe:
    id: int
    name: str  # "set/probe-name"
    point: Point
    entry: tuple[Capture, ...] | None  # None: no entry hook
    exit: tuple[Capture, ...] | None  # None: no exit hook
    where: Predicate | None = None
    actions: tuple[dict[str, Any], ...] = ({"kind": "emit"},)
    tier: Tier = "auto"
    max_sites: int = 5000
    loc: SourceLoc | None = None

    def captures(self, phase: Phase) -> tuple[Capture, ...]:
        caps = self.entry if phase == "entry" else self.exit
        return caps or ()

    def to_plan(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "point": self.point.to_plan(),
            "entry": None if self.entry is None else [c.to_plan() for c in self.entry],
            "exit": None if self.exit is None else [c.to_plan() for c in self.exit],
            "where": None
            if self.where is None
            else {"phase": self.where.phase, "expr": self.where.expr},
            "actions": list(self.actions),
            "tier": self.tier,
            "max_sites": self.max_sites,
        }


@dataclass(frozen=True)
class PlanOptions:
    flush_interval_ms: int = 50
    buffer_bytes: int = 8 << 20
    on_full: Literal["block", "drop"] = "block"

    def to_plan(self) -> dict[str, Any]:
        return {
            "flush_interval_ms": self.flush_interval_ms,
            "buffer_bytes": self.buffer_bytes,
            "on_full": self.on_full,
        }


@dataclass
class ProbeTable:
    """Host-only view of a compiled probe set: id -> probe."""

    probes: dict[int, Probe] = field(default_factory=dict)
    options: PlanOptions = field(default_factory=PlanOptions)

    def add(self, probe: Probe) -> None:
        self.probes[probe.id] = probe

    def __iter__(self) -> Iterator[Probe]:
        return iter(self.probes.values())

    def __len__(self) -> int:
        return len(self.probes)

    def plan(self) -> dict[str, Any]:
        from instr.protocol import PROTOCOL_VERSION

        return {
            "protocol": PROTOCOL_VERSION,
            "options": self.options.to_plan(),
            "probes": [p.to_plan() for p in self.probes.values()],
        }
