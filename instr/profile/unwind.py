"""Raw samples from the agent, and their unwinding on the host.

A sample (agents/src/profile/profile_c.ts, SLOT) is the interrupted thread's
registers and a copy of its stack from ``rsp`` upwards (at most the
sampler's ``stack_bytes``, less where the stack's mapping ends first). The
unwinder walks it with each module's ``.eh_frame`` (``instr.profile.ehframe``):
the CFA from the row for the frame's pc, the return address and the caller's
saved registers read from the copy. Code without CFI falls back to one step
by frame pointer when ``rbp`` points into the copy. A walk stops where the
return address is undefined (``_start``, a thread's start: the stack is
*complete*), or where it would read outside the copy (*truncated*).
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from instr.profile.ehframe import RA, CfiError, EhFrame

SLOT_HEADER = 168
_HEAD = struct.Struct("<QQQ17QQ")
# uc_mcontext.gregs order -> DWARF x86_64 register numbers
_GREGS_DWARF = (8, 9, 10, 11, 12, 13, 14, 15, 5, 4, 6, 3, 1, 0, 2, 7, 16)
RSP, RBP = 7, 6
MIN_CODE = 0x1000


@dataclass(frozen=True)
class Sample:
    tid: int
    ts_ns: int
    regs: dict[int, int]  # DWARF register number -> value (16 is rip)
    stack: bytes  # memory from regs[RSP] upwards


def decode_samples(data: bytes, count: int, off_cpu: bool = False) -> Iterator[Sample]:
    """The ``count`` samples of one ``profile`` message's data. Off-CPU samples
    (agents/src/profile/offcpu.ts) know only rsp and rip."""
    pos = 0
    for _ in range(count):
        if pos + SLOT_HEADER > len(data):
            raise ValueError(f"truncated sample batch at byte {pos} of {len(data)}")
        f = _HEAD.unpack_from(data, pos)
        tid, ts, gregs, length = f[1], f[2], f[3:20], f[20]
        start = pos + SLOT_HEADER
        pos = start + length
        regs = dict(zip(_GREGS_DWARF, gregs, strict=True))
        if off_cpu:
            regs = {RSP: regs[RSP], 16: regs[16]}
        yield Sample(tid & 0xFFFFFFFF, ts, regs, bytes(data[start:pos]))


@dataclass(frozen=True)
class ModuleSpan:
    name: str
    path: str
    base: int
    size: int
    build_id: str | None = None  # of the image in memory (the agent's modules)


@dataclass(frozen=True)
class Walk:
    frames: tuple[int, ...]  # innermost first: the pc, then each return address - 1
    complete: bool  # reached the outermost frame


class Unwinder:
    """Unwinds samples of one process. ``modules()`` lists its modules;
    ``unwind_info(address)`` is the agent's ``profileUnwindInfo`` (None: none)."""

    def __init__(
        self,
        modules: Callable[[], list[ModuleSpan]],
        unwind_info: Callable[[int], bytes | None],
        max_depth: int = 256,
    ) -> None:
        self._list_modules = modules
        self._unwind_info = unwind_info
        self.max_depth = max_depth
        self._mods: list[ModuleSpan] = []
        self._bases: list[int] = []
        self._cfi: dict[int, EhFrame | None] = {}
        self._refreshed_for: set[int] = set()
        self.errors: list[str] = []
        self.refresh()

    def refresh(self) -> None:
        mods = sorted(self._list_modules(), key=lambda m: m.base)
        if mods:  # none: the agent is gone; keep what was known
            self._mods = mods
            self._bases = [m.base for m in mods]

    def module_at(self, pc: int) -> ModuleSpan | None:
        m = self._find(pc)
        if m is None and (pc >> 20) not in self._refreshed_for:
            self._refreshed_for.add(pc >> 20)  # a library loaded since: list once per MiB
            self.refresh()
            m = self._find(pc)
        return m

    def _find(self, pc: int) -> ModuleSpan | None:
        i = bisect.bisect_right(self._bases, pc) - 1
        if i >= 0 and pc < self._mods[i].base + self._mods[i].size:
            return self._mods[i]
        return None

    def _eh(self, pc: int) -> EhFrame | None:
        m = self.module_at(pc)
        if m is None:
            return None
        if m.base not in self._cfi:
            eh = None
            blob = self._unwind_info(m.base)
            if blob is not None and len(blob) > 32:
                _bias, seg, hdr = struct.unpack_from("<QQQ", blob, 0)
                try:
                    eh = EhFrame(bytes(blob[32:]), seg, hdr)
                except (CfiError, ValueError, IndexError, struct.error) as e:
                    self.errors.append(f"{m.name}: unreadable .eh_frame_hdr: {e}")
            self._cfi[m.base] = eh
        return self._cfi[m.base]

    def walk(self, s: Sample) -> Walk:
        regs = dict(s.regs)
        sp0 = regs[RSP]
        stack = s.stack

        def read(addr: int) -> int | None:
            off = addr - sp0
            if 0 <= off <= len(stack) - 8:
                v: int = struct.unpack_from("<Q", stack, off)[0]
                return v
            return None

        frames: list[int] = []
        pc = regs[16]
        lookup = pc
        while len(frames) < self.max_depth:
            frames.append(lookup)
            eh = self._eh(lookup)
            try:
                row = eh.row(lookup) if eh is not None else None
            except (CfiError, ValueError, IndexError, struct.error):
                row = None
            sp = regs[RSP]
            if row is None or row.cfa_reg < 0 or row.cfa_reg not in regs:
                # No CFI: one frame-pointer step, while rbp stays in the copy.
                fp = regs.get(RBP)
                if fp is None or fp <= sp:
                    return Walk(tuple(frames), False)
                saved_fp, ret = read(fp), read(fp + 8)
                if saved_fp is None or ret is None or ret < MIN_CODE:
                    return Walk(tuple(frames), False)
                regs = {RSP: fp + 16, RBP: saved_fp}
            else:
                cfa = regs[row.cfa_reg] + row.cfa_off
                ra_rule = row.rules.get(RA, ("undef",))
                if ra_rule[0] == "undef":
                    return Walk(tuple(frames), True)
                if ra_rule[0] != "off" or cfa <= sp:
                    return Walk(tuple(frames), False)
                new: dict[int, int] = {}
                for reg, rule in row.rules.items():
                    if rule[0] == "off":
                        v = read(cfa + rule[1])  # type: ignore[misc]
                        if v is not None:
                            new[reg] = v
                    elif rule[0] == "val":
                        new[reg] = cfa + rule[1]  # type: ignore[misc]
                    elif rule[0] == "same" and reg in regs:
                        new[reg] = regs[reg]
                    elif rule[0] == "reg" and rule[1] in regs:  # type: ignore[misc]
                        new[reg] = regs[rule[1]]  # type: ignore[misc]
                # callee-saved registers with no rule keep their value
                for reg in (3, 6, 12, 13, 14, 15):
                    if reg not in row.rules and reg in regs:
                        new[reg] = regs[reg]
                if RA not in new:
                    return Walk(tuple(frames), False)
                ret = new.pop(RA)
                new[RSP] = cfa
                regs = new
                if ret == 0:
                    return Walk(tuple(frames), True)
            pc = ret
            lookup = pc - 1
        return Walk(tuple(frames), False)
