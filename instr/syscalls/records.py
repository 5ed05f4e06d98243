"""The syscall monitor's binary records (written by agents/src/syscalls/syscalls_c.ts).

Record: u16 size, u16 nr, u8 flags, u8 nmem, u16 known, u32 tid, i32 errno,
u64 ts, u64 dur, i64 ret, u64 args[6]; then per captured memory argument
u8 index, 3 pad bytes, u32 length, and the bytes padded to 8. ``known``: how
many of the args are the call's (a wrapper with fewer arguments than its
syscall, such as ``_Fork`` for ``clone``, leaves the rest 0).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

HEAD = struct.Struct("<HHBBHIiQQq6q")
MEM = struct.Struct("<BxxxI")
RF_ENTRY = 1
RF_RESUMED = 2
RF_ERROR = 4

# Memory kinds (syscalls_c.ts MK_*), by the table's argument kinds.
MK_CSTR = 1
MK_BUF_ARG = 2
MK_BUF_RET = 3
MK_SOCK_ARG = 4
MK_SOCK_PTR = 5


@dataclass
class Record:
    nr: int
    flags: int
    tid: int
    errno: int
    ts: int
    dur: int
    ret: int
    args: tuple[int, ...]
    mem: dict[int, bytes] = field(default_factory=dict)
    known: int = 6


def parse(data: bytes) -> Iterator[Record]:
    off = 0
    n = len(data)
    while off + HEAD.size <= n:
        size, nr, flags, nmem, known, tid, err, ts, dur, ret, *args = HEAD.unpack_from(data, off)
        if size == 0 or off + size > n:
            return
        rec = Record(nr, flags, tid, err, ts, dur, ret, tuple(args), known=min(known, 6))
        q = off + HEAD.size
        for _ in range(nmem):
            idx, length = MEM.unpack_from(data, q)
            rec.mem[idx] = bytes(data[q + 8 : q + 8 + length])
            q += 8 + ((length + 7) & ~7)
        yield rec
        off += size
