"""The report model: what one ``mem-report`` message from the agent holds, decoded.

The binary layout is agents/src/mem/mem.ts's (counters, stacks, per-stack heap and
mmap aggregates, oldest blocks); sizes are checked against the header.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

N_KINDS = 16
N_BUCKETS = 65
N_SCALARS = 32
N_COUNTERS = N_SCALARS + 2 * N_KINDS + 2 * N_BUCKETS
MAX_DEPTH = 32
STACK_SIZE = 32 + 8 * MAX_DEPTH
AGG_SIZE = 56
BLOCK_SIZE = 40

KINDS = (
    "malloc",
    "calloc",
    "realloc",
    "memalign",
    "operator new",
    "operator new[]",
    "mmap",
    "free(NULL)",
)
NOT_ALLOCATIONS = ("free(NULL)",)

_STACK = struct.Struct(f"<QIIQQ{MAX_DEPTH}Q")
_AGG = struct.Struct("<7Q")
_BLOCK = struct.Struct("<QQQIIII")


class ReportFormatError(ValueError):
    pass


@dataclass(frozen=True)
class Frame:
    address: int
    module: str | None = None
    symbol: str | None = None
    offset: int = 0

    def __str__(self) -> str:
        if self.module is None and self.symbol is None:
            return f"0x{self.address:x}"
        where = f"{self.module or '?'}!{self.symbol}" if self.symbol else (self.module or "?")
        return f"{where}+0x{self.offset:x}" if self.offset else where

    @property
    def function(self) -> str | None:
        return self.symbol


@dataclass
class StackStat:
    """One distinct allocation stack: totals since tracking began and what is live now."""

    id: int
    kind: str
    addresses: tuple[int, ...]
    allocs: int
    bytes: int
    live_blocks: int = 0
    live_bytes: int = 0
    leaked_blocks: int = 0
    leaked_bytes: int = 0
    indirect_bytes: int = 0
    oldest_seq: int | None = None
    oldest_tick: int = 0
    map_blocks: int = 0
    map_bytes: int = 0
    frames: tuple[Frame, ...] = ()

    def functions(self) -> list[str]:
        return [f.symbol for f in self.frames if f.symbol]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "allocs": self.allocs,
            "bytes": self.bytes,
            "live_blocks": self.live_blocks,
            "live_bytes": self.live_bytes,
            "leaked_blocks": self.leaked_blocks,
            "leaked_bytes": self.leaked_bytes,
            "indirect_bytes": self.indirect_bytes,
            "mapped_regions": self.map_blocks,
            "mapped_bytes": self.map_bytes,
            "frames": [str(f) if self.frames else f"0x{a:x}" for f, a in self._pairs()],
        }

    def _pairs(self) -> list[tuple[Frame, int]]:
        if self.frames:
            return [(f, f.address) for f in self.frames]
        return [(Frame(a), a) for a in self.addresses]


@dataclass
class SiteStat:
    address: int
    kind: str
    frame: Frame
    allocs: int = 0
    bytes: int = 0
    live_bytes: int = 0
    stacks: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "site": str(self.frame),
            "kind": self.kind,
            "allocs": self.allocs,
            "bytes": self.bytes,
            "live_bytes": self.live_bytes,
            "stacks": self.stacks,
        }


@dataclass(frozen=True)
class Block:
    address: int
    size: int
    seq: int
    stack: int
    tick: int


@dataclass
class MemReport:
    reason: str  # "exit N", "interval", "signal", "detach", "request"
    mode: str  # "spawn" | "attach"
    scanned: bool
    tick_ms: int
    counters: dict[str, int]
    kinds: dict[str, tuple[int, int]]  # kind -> (calls, bytes)
    histogram: list[tuple[int, int]]  # bucket -> (count, bytes); bucket b holds [2^(b-1), 2^b)
    stacks: list[StackStat]
    oldest: list[Block]
    build_ms: int = 0
    # Whether calls on Frida's and instr's threads are left out (the default) or counted.
    tool_excluded: bool = True
    process: str | None = None
    pid: int | None = None
    token: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    # -- convenience views ---------------------------------------------------

    @property
    def exit_code(self) -> int | None:
        parts = self.reason.split()
        if len(parts) == 2 and parts[0] == "exit":
            try:
                return int(parts[1])
            except ValueError:
                return None
        return None

    @property
    def leaks(self) -> list[StackStat]:
        """Stacks with leaked blocks, most bytes first."""
        out = [s for s in self.stacks if s.leaked_blocks]
        return sorted(out, key=lambda s: (-s.leaked_bytes, s.id))

    @property
    def leaked_bytes(self) -> int:
        return sum(s.leaked_bytes for s in self.stacks)

    @property
    def leaked_blocks(self) -> int:
        return sum(s.leaked_blocks for s in self.stacks)

    @property
    def indirect_bytes(self) -> int:
        return sum(s.indirect_bytes for s in self.stacks)

    def by_site(self) -> list[SiteStat]:
        """Allocations per call site (a stack's first frame, whatever called it), most bytes
        first; a site's frame is the symbolised one when any of its stacks was resolved."""
        sites: dict[tuple[int, str], SiteStat] = {}
        for s in self.stacks:
            if not s.addresses or not s.allocs or s.kind in NOT_ALLOCATIONS:
                continue
            key = (s.addresses[0], s.kind)
            site = sites.get(key)
            if site is None:
                site = sites[key] = SiteStat(s.addresses[0], s.kind, Frame(s.addresses[0]))
            site.allocs += s.allocs
            site.bytes += s.bytes
            site.live_bytes += s.live_bytes
            site.stacks += 1
            if s.frames:
                site.frame = s.frames[0]
        return sorted(sites.values(), key=lambda x: (-x.bytes, x.address))

    def stack(self, sid: int) -> StackStat:
        return self.stacks[sid]


_SCALARS = {
    "allocs": 0,
    "frees": 1,
    "bytes_allocated": 2,
    "bytes_freed": 3,
    "live_blocks": 4,
    "untracked": 5,
    "unknown_frees": 6,
    "live_bytes": 7,
    "peak_bytes": 8,
    "free_null": 9,
    "stack_overflow": 10,
    "guard_overflow": 11,
    "sequence": 12,
    "stacks": 13,
    "ticks": 14,
    "mmaps": 16,
    "munmaps_tracked": 17,
    "mapped_bytes_total": 18,
    "unmapped_bytes": 19,
    "mapped_regions": 20,
    "maps_untracked": 21,
    "mapped_live_bytes": 22,
    "mapped_peak_bytes": 23,
    "mmap_calls": 24,
    "munmap_calls": 25,
    "munmap_unknown": 26,
    "tool_calls": 27,  # hooked calls left out as the tool's (Frida's and instr's threads)
    "tool_decisions": 28,  # threads examined to tell the tool's apart
}
_TOOLS_EXCLUDED = 29  # 1: the tool's calls are left out; 0: --include-tool


def decode(header: dict[str, Any], data: bytes) -> MemReport:
    """One ``mem-report`` message (its JSON fields and binary payload) as a ``MemReport``."""
    n_stacks = int(header["n_stacks"])
    n_oldest = int(header["n_oldest"])
    need = N_COUNTERS * 8 + n_stacks * (STACK_SIZE + 2 * AGG_SIZE) + n_oldest * BLOCK_SIZE
    if len(data) != need:
        raise ReportFormatError(f"mem-report: {len(data)} bytes, expected {need}")
    raw = struct.unpack_from(f"<{N_COUNTERS}Q", data, 0)
    counters = {name: raw[i] for name, i in _SCALARS.items()}
    kn = raw[N_SCALARS : N_SCALARS + N_KINDS]
    kb = raw[N_SCALARS + N_KINDS : N_SCALARS + 2 * N_KINDS]
    kinds = {KINDS[i]: (kn[i], kb[i]) for i in range(len(KINDS)) if kn[i]}
    hn = raw[N_SCALARS + 2 * N_KINDS : N_SCALARS + 2 * N_KINDS + N_BUCKETS]
    hb = raw[N_SCALARS + 2 * N_KINDS + N_BUCKETS :]
    histogram = list(zip(hn, hb, strict=True))
    off = N_COUNTERS * 8
    stacks = []
    for sid in range(n_stacks):
        h = _STACK.unpack_from(data, off + sid * STACK_SIZE)
        depth, kind = h[1], h[2]
        frames = tuple(h[5 : 5 + min(depth, MAX_DEPTH)])
        kname = KINDS[kind] if kind < len(KINDS) else f"kind{kind}"
        stacks.append(StackStat(sid, kname, frames, h[3], h[4]))
    off += n_stacks * STACK_SIZE
    for which in ("heap", "maps"):
        for sid in range(n_stacks):
            a = _AGG.unpack_from(data, off + sid * AGG_SIZE)
            s = stacks[sid]
            if which == "heap":
                s.live_blocks, s.live_bytes, s.leaked_blocks, s.leaked_bytes = (
                    a[0],
                    a[1],
                    a[2],
                    a[3],
                )
                s.indirect_bytes = a[4]
                s.oldest_seq = None if a[0] == 0 else a[5]
                s.oldest_tick = a[6]
            else:
                s.map_blocks, s.map_bytes = a[0], a[1]
        off += n_stacks * AGG_SIZE
    oldest = []
    for i in range(n_oldest):
        addr, size, seq, stack, _flags, tick, _pad = _BLOCK.unpack_from(data, off + i * BLOCK_SIZE)
        oldest.append(Block(addr, size, seq, stack, tick))
    return MemReport(
        reason=str(header.get("reason", "")),
        mode=str(header.get("mode", "")),
        scanned=bool(header.get("scanned")),
        tick_ms=int(header.get("tick_ms", 100)),
        counters=counters,
        kinds=kinds,
        histogram=histogram,
        stacks=stacks,
        oldest=oldest,
        build_ms=int(header.get("build_ms", 0)),
        tool_excluded=bool(raw[_TOOLS_EXCLUDED]),
        token=int(header.get("token", 0)),
        extra={k: header[k] for k in ("roots", "root_bytes", "n_blocks", "threads") if k in header},
    )


def symbolize_frames(report: MemReport, table: dict[int, Frame], wanted: set[int]) -> None:
    """Attach resolved frames to the stacks in ``wanted``; cut a stack at the first frame
    outside any module (a frame-pointer walk through code built without frame pointers)."""
    for sid in wanted:
        s = report.stacks[sid]
        frames = []
        for i, a in enumerate(s.addresses):
            f = table.get(a, Frame(a))
            if f.module is None and i > 0:
                break
            frames.append(f)
        s.frames = tuple(frames)


def wanted_stacks(report: MemReport, top: int) -> set[int]:
    """The stacks a report shows: every leak, and the top ones by bytes, live bytes, oldest."""
    ids = {s.id for s in report.leaks}
    live = sorted(report.stacks, key=lambda s: -s.live_bytes)
    ids |= {s.id for s in live[:top] if s.live_bytes}
    heap = sorted((s for s in report.stacks if s.kind != "mmap"), key=lambda s: -s.bytes)
    ids |= {s.id for s in heap[:top] if s.allocs}
    sites = report.by_site()
    firsts = {x.address for x in [y for y in sites if y.kind != "mmap"][:top]}
    firsts |= {x.address for x in [y for y in sites if y.kind == "mmap"][:top]}
    ids |= {s.id for s in report.stacks if s.addresses and s.addresses[0] in firsts}
    maps = sorted(report.stacks, key=lambda s: -s.map_bytes)
    ids |= {s.id for s in maps[:top] if s.map_blocks}
    ids |= {b.stack for b in report.oldest}
    ids |= {s.id for s in report.stacks if s.kind in NOT_ALLOCATIONS and s.allocs}
    return ids
