"""Record layouts: where each capture of a (probe, phase) sits in a binary record.

Computed once per (probe, phase) from the ``ProbeTable`` and shared by the
decoder (struct formats, slot order) and the collectors (what kind of value a
named capture holds, so that pointers print in hex and callers get symbolised).

Scalar slots are 8 raw bytes, little-endian.  Width and signedness are applied
by the struct format itself: ``i32`` is ``"i4x"`` (low 4 bytes, signed, then 4
bytes skipped), so no Python-level masking or sign extension is needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from instr.probes.ir import INT_TYPES, Capture, Probe, ProbeTable
from instr.protocol import HEADER_SIZE, PHASE_NAMES

Kind = Literal["int", "ptr", "bool", "cstr", "bytes", "caller", "backtrace", "duration"]
Role = Literal["arg", "retval", "duration"]

# struct format of one 8-byte slot holding the raw 64-bit value, per type
SCALAR_FORMATS: dict[str, str] = {
    "i8": "b7x",
    "i16": "h6x",
    "i32": "i4x",
    "i64": "q",
    "u8": "B7x",
    "u16": "H6x",
    "u32": "I4x",
    "u64": "Q",
    "ptr": "Q",
    "bool": "?7x",
}
SKIP_SLOT = "8x"
# retval types whose u64 value may not fit in a signed 64-bit integer (SQLite)
UNSIGNED64 = frozenset({"u64", "ptr"})


@dataclass(frozen=True)
class Slot:
    """One capture of one phase, in record order."""

    name: str
    role: Role  # "retval" -> Event.retval, "duration" -> Event.duration_ns, else args[name]
    kind: Kind
    type: str  # the capture's type ("i32", "cstr", "backtrace", ...)
    fmt: str  # struct format of a scalar slot; "" for variable-length slots

    @property
    def scalar(self) -> bool:
        return self.fmt != ""


@dataclass(frozen=True)
class Layout:
    probe_id: int
    probe: str
    phase: str  # "entry" | "exit"
    slots: tuple[Slot, ...]
    fixed: bool  # every slot is a scalar: the record size is constant
    size: int  # record size when fixed, else -1
    kinds: dict[str, Kind] = field(default_factory=dict)  # args[name] -> kind
    retval: Slot | None = None
    duration: Slot | None = None

    @property
    def arg_slots(self) -> tuple[Slot, ...]:
        return tuple(s for s in self.slots if s.role == "arg")

    def slot_format(self, roles: tuple[Role, ...]) -> str:
        """Struct format for the whole record: slots with these roles, others skipped."""
        parts = [f"<{HEADER_SIZE}x"]
        parts.extend(s.fmt if s.role in roles else SKIP_SLOT for s in self.slots)
        return "".join(parts)


def _kind(cap: Capture) -> Kind:
    if cap.src == "caller":
        return "caller"
    if cap.src == "backtrace":
        return "backtrace"
    if cap.src == "duration":
        return "duration"
    if cap.type in ("cstr", "bytes"):
        return "cstr" if cap.type == "cstr" else "bytes"
    if cap.type == "ptr":
        return "ptr"
    if cap.type == "bool":
        return "bool"
    return "int"


def _slot(cap: Capture, have_retval: bool, have_duration: bool) -> Slot:
    kind = _kind(cap)
    if cap.src in ("caller", "duration"):
        fmt = "Q"
    elif cap.src == "backtrace" or cap.type not in INT_TYPES:
        fmt = ""
    else:
        fmt = SCALAR_FORMATS[cap.type]
    role: Role = "arg"
    # the first integer retval / duration go to the Event fields; anything else is a named arg
    if cap.src == "retval" and fmt and not have_retval:
        role = "retval"
    elif cap.src == "duration" and not have_duration:
        role = "duration"
    return Slot(cap.name, role, kind, cap.type, fmt)


def build_layout(probe: Probe, phase: str) -> Layout:
    """The layout of ``probe``'s records for ``phase`` ("entry" or "exit")."""
    if phase not in PHASE_NAMES:
        raise ValueError(f"unknown phase {phase!r}")
    slots: list[Slot] = []
    retval: Slot | None = None
    duration: Slot | None = None
    for cap in probe.captures("entry" if phase == "entry" else "exit"):
        s = _slot(cap, retval is not None, duration is not None)
        if s.role == "retval":
            retval = s
        elif s.role == "duration":
            duration = s
        slots.append(s)
    fixed = all(s.scalar for s in slots)
    size = HEADER_SIZE + 8 * len(slots) if fixed else -1
    kinds = {s.name: s.kind for s in slots if s.role == "arg"}
    return Layout(probe.id, probe.name, phase, tuple(slots), fixed, size, kinds, retval, duration)


class LayoutCache:
    """Layouts by (probe id, phase), built on first use."""

    def __init__(self, table: ProbeTable) -> None:
        self.table = table
        self._cache: dict[tuple[int, str], Layout | None] = {}

    def get(self, probe_id: int, phase: str) -> Layout | None:
        key = (probe_id, phase)
        try:
            return self._cache[key]
        except KeyError:
            probe = self.table.probes.get(probe_id)
            lay = build_layout(probe, phase) if probe is not None and phase in PHASE_NAMES else None
            self._cache[key] = lay
            return lay
