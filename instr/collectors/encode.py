"""Build binary records exactly as the agent writes them (``instr/protocol.py``).

The host never sends records; this exists for tests, benchmarks and replaying
synthetic streams through the decoder and collectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from instr.protocol import HEADER, HEADER_SIZE, SLOT, STATUS_OK, VAR_HEADER, pad8

MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class Var:
    """A ``cstr``/``bytes`` slot: the bytes kept and the capture status."""

    data: bytes
    status: int = STATUS_OK


@dataclass(frozen=True)
class Frames:
    """A ``backtrace`` slot."""

    addresses: tuple[int, ...]


Slot = int | Var | Frames


def encode_slot(value: Slot) -> bytes:
    if isinstance(value, Var):
        body = value.data + b"\0" * (pad8(len(value.data)) - len(value.data))
        return VAR_HEADER.pack(len(value.data), value.status) + body
    if isinstance(value, Frames):
        frames = b"".join(SLOT.pack(a & MASK64) for a in value.addresses)
        return VAR_HEADER.pack(len(value.addresses), 0) + frames
    return SLOT.pack(value & MASK64)  # negative ints become their two's complement


def encode_record(
    probe: int,
    phase: int,
    slots: Sequence[Slot] = (),
    *,
    site: int = 0,
    tid: int = 1,
    ts: int = 0,
    flags: int = 0,
) -> bytes:
    """One record: header plus the slots in plan order."""
    body = b"".join(encode_slot(s) for s in slots)
    return HEADER.pack(HEADER_SIZE + len(body), phase, flags, probe, site, tid, ts) + body
