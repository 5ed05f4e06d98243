"""What a patch is (``PatchSpec``, sent to the agent) and what the in-target
ledger keeps about it (``LedgerEntry``). The agent half is
``agents/src/patch/patch_types.ts``; change both together."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from instr.errors import InstrError, UsageError
from instr.probes.ir import (
    JS_TYPES,
    PATCH_KINDS,
    Capture,
    PatchKind,
    PatchParams,
    Point,
    Predicate,
)

__all__ = ["JS_TYPES", "KINDS", "PatchKind"]

KINDS: tuple[str, ...] = PATCH_KINDS


class PatchError(InstrError):
    """A patch could not be applied or reverted (the target is left as it was)."""


def require_destructive(destructive: bool, what: str) -> None:
    """Patching needs ``-w/--destructive``, as DTrace's ``-w``."""
    if not destructive:
        raise UsageError(
            f"{what} changes the target's code; refusing without -w/--destructive",
            hint="add -w (--destructive) to allow patching",
        )


@dataclass(frozen=True, kw_only=True)
class PatchSpec(PatchParams):
    """One patch request: a kind, a point, and the kind's parameters (``PatchParams``)."""

    kind: PatchKind
    point: Point
    source: str  # for the ledger: "cli --ret 'x=0'" or "file:line:col set/probe"
    where: Predicate | None = None  # ret, skip, args
    entry: tuple[Capture, ...] = ()  # captures the predicate reads
    exit: tuple[Capture, ...] = ()

    def to_plan(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kind": self.kind,
            "point": self.point.to_plan(),
            "source": self.source,
        }
        if self.value is not None:
            d["value"] = str(self.value)
        if self.where is not None:
            d["where"] = {
                "phase": self.where.phase,
                "expr": self.where.expr,
                "text": self.where.source,
            }
            d["entry"] = [c.to_plan() for c in self.entry]
            d["exit"] = [c.to_plan() for c in self.exit]
        if self.code is not None:
            d["code"] = self.code
        if self.fn is not None:
            d["fn"] = self.fn
        if self.kind == "replace_js":
            d["returns"] = self.returns or "void"
            d["params"] = list(self.params)
        if self.args:
            d["args"] = [
                {"index": i, "value": {"int": str(v)} if isinstance(v, int) else {"str": v}}
                for i, v in self.args
            ]
        if self.expect is not None:
            d["expect"] = self.expect.hex()
        if self.data is not None:
            d["bytes"] = self.data.hex()
        if self.instructions is not None:
            d["instructions"] = self.instructions
        return d


@dataclass(frozen=True)
class LedgerEntry:
    """One patch as the in-target ledger records it."""

    id: int
    kind: str
    pid: int
    where: str
    address: int
    original: bytes
    patched: bytes
    detail: str
    source: str
    at: str  # ISO 8601 UTC
    persist: bool
    owner: str = field(default="", compare=False)

    @classmethod
    def from_agent(cls, d: dict[str, Any]) -> LedgerEntry:
        return cls(
            id=int(d["id"]),
            kind=str(d["kind"]),
            pid=int(d["pid"]),
            where=str(d["where"]),
            address=int(str(d["address"]), 16),
            original=bytes.fromhex(str(d["original"])),
            patched=bytes.fromhex(str(d["patched"])),
            detail=str(d["detail"]),
            source=str(d["source"]),
            at=str(d["at"]),
            persist=bool(d["persist"]),
            owner=str(d.get("owner", "")),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "pid": self.pid,
            "where": self.where,
            "address": hex(self.address),
            "original": self.original.hex(),
            "patched": self.patched.hex(),
            "detail": self.detail,
            "source": self.source,
            "at": self.at,
            "persist": self.persist,
        }

    def describe(self) -> str:
        return (
            f"patch #{self.id} {self.kind} {self.where} at {self.address:#x}: {self.detail} "
            f"(bytes {self.original.hex()} -> {self.patched.hex()})"
        )


@dataclass(frozen=True)
class RevertResult:
    id: int
    where: str
    ok: bool
    verified: bool | None  # None: the bytes could not be compared
    detail: str

    @classmethod
    def from_agent(cls, d: dict[str, Any]) -> RevertResult:
        v = d.get("verified")
        return cls(
            id=int(d["id"]),
            where=str(d.get("where", "")),
            ok=bool(d["ok"]),
            verified=None if v is None else bool(v),
            detail=str(d["detail"]),
        )

    @property
    def good(self) -> bool:
        return self.ok and self.verified is not False

    def describe(self) -> str:
        what = f"patch #{self.id}" + (f" {self.where}" if self.where else "")
        return f"{'reverted' if self.ok else 'could not revert'} {what}: {self.detail}"


def format_table(entries: Iterable[LedgerEntry]) -> str:
    """The ledger as a table, one patch per line (``instr patch --list``)."""
    rows = [("ID", "KIND", "WHERE", "ADDRESS", "WHEN", "PERSIST", "ORIGINAL", "PATCHED", "DETAIL")]
    for e in entries:
        rows.append(
            (
                str(e.id),
                e.kind,
                e.where,
                f"{e.address:#x}",
                e.at,
                "yes" if e.persist else "no",
                e.original.hex(),
                e.patched.hex(),
                e.detail,
            )
        )
    if len(rows) == 1:
        return "no patches"
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in rows
    )
