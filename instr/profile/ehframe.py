"""DWARF call frame information from a module's ``.eh_frame``, as loaded in memory.

The agent sends the loaded segment that holds ``.eh_frame_hdr`` (and, after
it, ``.eh_frame``): see ``agents/src/profile/profiler.ts`` ``unwindInfo``.
``EhFrame.row(pc)`` finds the FDE that covers ``pc`` through the header's
sorted table and runs the CIE's and FDE's instructions up to ``pc``, giving
how to find the canonical frame address (CFA) and the caller's registers.

Only what compilers emit for x86_64 is interpreted. A CFA given by a DWARF
expression (PLT stubs, signal trampolines) is reported as such, and the
unwinder stops there.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass, field

RA = 16  # DWARF's x86_64 return address column

# A rule for one register: ("off", n) saved at CFA+n; ("val", n) is CFA+n;
# ("reg", r) in register r; ("same",); ("undef",); ("expr",) not supported.
Rule = tuple[str, int] | tuple[str]


@dataclass
class Row:
    cfa_reg: int  # -1: the CFA is a DWARF expression (not supported)
    cfa_off: int
    rules: dict[int, Rule] = field(default_factory=dict)


class CfiError(ValueError):
    pass


class _Reader:
    def __init__(self, data: bytes, pos: int, base: int) -> None:
        self.data, self.pos, self.base = data, pos, base  # base: address of data[0]

    def u8(self) -> int:
        v = self.data[self.pos]
        self.pos += 1
        return v

    def fmt(self, f: str) -> int:
        v: int = struct.unpack_from(f, self.data, self.pos)[0]
        self.pos += struct.calcsize(f)
        return v

    def uleb(self) -> int:
        result = shift = 0
        while True:
            b = self.u8()
            result |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return result

    def sleb(self) -> int:
        result = shift = 0
        while True:
            b = self.u8()
            result |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                if b & 0x40:
                    result -= 1 << shift
                return result

    def cstr(self) -> bytes:
        end = self.data.index(b"\0", self.pos)
        s = self.data[self.pos : end]
        self.pos = end + 1
        return s

    def encoded(self, enc: int, datarel: int = 0) -> int:
        if enc == 0xFF:
            return 0
        at = self.base + self.pos
        form = enc & 0x0F
        if form == 0x00:
            v = self.fmt("<Q")
        elif form == 0x01:
            v = self.uleb()
        elif form == 0x09:
            v = self.sleb()
        else:
            sizes = {0x02: "<H", 0x03: "<I", 0x04: "<Q", 0x0A: "<h", 0x0B: "<i", 0x0C: "<q"}
            if form not in sizes:
                raise CfiError(f"pointer encoding 0x{enc:x}")
            v = self.fmt(sizes[form])
        app = enc & 0x70
        if app == 0x10:
            v += at
        elif app == 0x30:
            v += datarel
        elif app != 0x00:
            raise CfiError(f"pointer encoding 0x{enc:x}")
        return v & 0xFFFFFFFFFFFFFFFF


@dataclass
class _Cie:
    code_align: int
    data_align: int
    ra: int
    fde_enc: int
    has_z: bool
    instructions: bytes


class EhFrame:
    """One module's unwind tables. ``seg`` is the address of ``data[0]``, ``hdr`` of .eh_frame_hdr."""

    def __init__(self, data: bytes, seg: int, hdr: int) -> None:
        self.data, self.seg, self.hdr = data, seg, hdr
        r = _Reader(data, hdr - seg, seg)
        version, ptr_enc, count_enc, table_enc = r.u8(), r.u8(), r.u8(), r.u8()
        if version != 1:
            raise CfiError(f".eh_frame_hdr version {version}")
        r.encoded(ptr_enc, hdr)
        count = r.encoded(count_enc, hdr)
        if table_enc == 0xFF:
            raise CfiError(".eh_frame_hdr has no search table")
        self._starts: list[int] = []
        self._fdes: list[int] = []
        for _ in range(count):
            self._starts.append(r.encoded(table_enc, hdr))
            self._fdes.append(r.encoded(table_enc, hdr))
        self._cies: dict[int, _Cie] = {}
        self._rows: dict[int, Row | None] = {}

    def row(self, pc: int) -> Row | None:
        """How to unwind at ``pc``; None where no FDE covers it."""
        if pc not in self._rows:
            self._rows[pc] = self._row(pc)
        return self._rows[pc]

    def _row(self, pc: int) -> Row | None:
        i = bisect.bisect_right(self._starts, pc) - 1
        if i < 0:
            return None
        fde = self._fdes[i] - self.seg
        if not 0 <= fde < len(self.data):
            return None
        r = _Reader(self.data, fde, self.seg)
        length = r.fmt("<I")
        if length == 0xFFFFFFFF:
            length = r.fmt("<Q")
        end = r.pos + length
        cie_at = r.pos - r.fmt("<I")
        cie = self._cie(cie_at)
        begin = r.encoded(cie.fde_enc)
        size = r.encoded(cie.fde_enc & 0x0F)
        if not begin <= pc < begin + size:
            return None
        if cie.has_z:
            r.pos += r.uleb()
        body = self.data[r.pos : end]
        initial = Row(7, 8)
        _run(cie, cie.instructions, initial, None, begin, None)
        state = Row(initial.cfa_reg, initial.cfa_off, dict(initial.rules))
        _run(cie, body, state, initial, begin, pc)
        return state

    def _cie(self, at: int) -> _Cie:
        if at in self._cies:
            return self._cies[at]
        r = _Reader(self.data, at, self.seg)
        length = r.fmt("<I")
        if length == 0xFFFFFFFF:
            length = r.fmt("<Q")
        end = r.pos + length
        if r.fmt("<I") != 0:
            raise CfiError("not a CIE")
        version = r.u8()
        aug = r.cstr()
        if b"eh" in aug:
            r.fmt("<Q")
        code_align, data_align = r.uleb(), r.sleb()
        ra = r.u8() if version == 1 else r.uleb()
        fde_enc = 0
        has_z = aug.startswith(b"z")
        if has_z:
            aug_len = r.uleb()
            after = r.pos + aug_len
            for ch in aug[1:]:
                if ch == ord("R"):
                    fde_enc = r.u8()
                elif ch == ord("P"):
                    r.encoded(r.u8() & 0x7F)
                elif ch == ord("L"):
                    r.u8()
            r.pos = after
        cie = _Cie(code_align, data_align, ra, fde_enc, has_z, self.data[r.pos : end])
        self._cies[at] = cie
        return cie


def _run(cie: _Cie, code: bytes, row: Row, initial: Row | None, loc: int, pc: int | None) -> None:
    """Run CFA instructions on ``row`` until the location passes ``pc``."""
    r = _Reader(code, 0, 0)
    stack: list[Row] = []
    ca, da = cie.code_align, cie.data_align
    while r.pos < len(code):
        op = r.u8()
        hi, lo = op & 0xC0, op & 0x3F
        advance = None
        if hi == 0x40:
            advance = lo * ca
        elif hi == 0x80:
            row.rules[lo] = ("off", r.uleb() * da)
        elif hi == 0xC0:
            _restore(row, initial, lo)
        elif op == 0x00:
            pass
        elif op == 0x01:
            loc = r.fmt("<Q")
        elif op in (0x02, 0x03, 0x04):
            advance = r.fmt({0x02: "<B", 0x03: "<H", 0x04: "<I"}[op]) * ca
        elif op == 0x05:
            reg = r.uleb()
            row.rules[reg] = ("off", r.uleb() * da)
        elif op == 0x06:
            _restore(row, initial, r.uleb())
        elif op == 0x07:
            row.rules[r.uleb()] = ("undef",)
        elif op == 0x08:
            row.rules[r.uleb()] = ("same",)
        elif op == 0x09:
            reg = r.uleb()
            row.rules[reg] = ("reg", r.uleb())
        elif op == 0x0A:
            stack.append(Row(row.cfa_reg, row.cfa_off, dict(row.rules)))
        elif op == 0x0B:
            if stack:
                saved = stack.pop()
                row.cfa_reg, row.cfa_off, row.rules = saved.cfa_reg, saved.cfa_off, saved.rules
        elif op == 0x0C:
            row.cfa_reg, row.cfa_off = r.uleb(), r.uleb()
        elif op == 0x0D:
            row.cfa_reg = r.uleb()
        elif op == 0x0E:
            row.cfa_off = r.uleb()
        elif op == 0x0F:
            r.pos += r.uleb()
            row.cfa_reg = -1
        elif op in (0x10, 0x16):
            reg = r.uleb()
            r.pos += r.uleb()
            row.rules[reg] = ("expr",)
        elif op == 0x11:
            reg = r.uleb()
            row.rules[reg] = ("off", r.sleb() * da)
        elif op == 0x12:
            row.cfa_reg, row.cfa_off = r.uleb(), r.sleb() * da
        elif op == 0x13:
            row.cfa_off = r.sleb() * da
        elif op in (0x14, 0x15):
            reg = r.uleb()
            off = r.uleb() if op == 0x14 else r.sleb()
            row.rules[reg] = ("val", off * da)
        elif op == 0x2E:
            r.uleb()
        elif op == 0x2F:
            reg = r.uleb()
            row.rules[reg] = ("off", -r.uleb() * da)
        else:
            raise CfiError(f"CFA instruction 0x{op:02x}")
        if advance is not None:
            loc += advance
            if pc is not None and loc > pc:
                return


def _restore(row: Row, initial: Row | None, reg: int) -> None:
    rule = None if initial is None else initial.rules.get(reg)
    if rule is None:
        row.rules.pop(reg, None)
    else:
        row.rules[reg] = rule
