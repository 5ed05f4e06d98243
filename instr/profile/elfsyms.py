"""Function names from a module's ELF file on the host, for addresses the agent
could not name.

The agent names addresses while the process lives (``symbolize``). Samples
that reach the host only in the last batch, at the process's exit, arrive
when the agent no longer answers calls; a short run may have only those.
When the module's file is on this machine and is the one mapped (the same
GNU build ID as the image in memory, or the same span when neither has one),
its ``.symtab`` and ``.dynsym`` name them instead: a function symbol whose
``[value, value + size)`` holds the address.

Only ELF64 little-endian files are read (x86_64 and arm64 Linux); anything
else, or a file that cannot be read, names nothing.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass, field
from pathlib import Path

PT_LOAD, PT_NOTE = 1, 4
SHT_SYMTAB, SHT_DYNSYM = 2, 11
STT_FUNC, STT_GNU_IFUNC = 2, 10
NT_GNU_BUILD_ID = 3
MAX_FILE = 1 << 30  # larger files are not read (a debug-heavy binary can be huge)


@dataclass
class FileSymbols:
    """The function symbols of one ELF file, by link-time address."""

    first_load: int  # lowest PT_LOAD vaddr, page-aligned down (the load bias's origin)
    span: int  # bytes from first_load to the end of the last PT_LOAD, page-aligned up
    build_id: str | None
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    def lookup(self, vaddr: int) -> tuple[str, int] | None:
        """(name, offset from its start) of the function holding link-time ``vaddr``."""
        i = bisect.bisect_right(self.starts, vaddr) - 1
        if i >= 0 and vaddr < self.ends[i]:
            return self.names[i], vaddr - self.starts[i]
        return None


def _page_down(v: int, page: int = 0x1000) -> int:
    return v & ~(page - 1)


def _page_up(v: int, page: int = 0x1000) -> int:
    return (v + page - 1) & ~(page - 1)


def build_id_of_notes(data: bytes) -> str | None:
    """The GNU build ID among ELF notes (``data``: the bytes of PT_NOTE segments)."""
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, kind = struct.unpack_from("<III", data, pos)
        name_at = pos + 12
        desc_at = name_at + ((namesz + 3) & ~3)
        end = desc_at + ((descsz + 3) & ~3)
        if end > len(data) or end <= pos:
            return None
        if kind == NT_GNU_BUILD_ID and data[name_at : name_at + namesz].rstrip(b"\0") == b"GNU":
            return data[desc_at : desc_at + descsz].hex()
        pos = end
    return None


def read_file_symbols(path: str) -> FileSymbols | None:
    """The function symbols of the ELF file at ``path``; None if it is not one we read."""
    try:
        p = Path(path)
        if not p.is_file() or p.stat().st_size > MAX_FILE:
            return None
        data = p.read_bytes()
    except OSError:
        return None
    try:
        return _parse(data)
    except (struct.error, IndexError, ValueError):
        return None  # truncated or odd: names nothing


def _parse(data: bytes) -> FileSymbols | None:
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None  # not ELF64 little-endian
    phoff, shoff = struct.unpack_from("<QQ", data, 0x20)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", data, 0x36)
    loads: list[tuple[int, int]] = []
    notes = b""
    for i in range(phnum):
        at = phoff + i * phentsize
        ptype = struct.unpack_from("<I", data, at)[0]
        offset, vaddr, _paddr, filesz, memsz = struct.unpack_from("<QQQQQ", data, at + 8)
        if ptype == PT_LOAD:
            loads.append((vaddr, memsz))
        elif ptype == PT_NOTE:
            notes += data[offset : offset + filesz]
    if not loads:
        return None
    first = _page_down(min(v for v, _ in loads))
    span = _page_up(max(v + m for v, m in loads)) - first
    out = FileSymbols(first, span, build_id_of_notes(notes))
    funcs: dict[int, tuple[int, str]] = {}
    for i in range(shnum):
        at = shoff + i * shentsize
        _name, stype, _flags, _addr, offset, size, link, _info, _align, entsize = (
            struct.unpack_from("<IIQQQQIIQQ", data, at)
        )
        if stype not in (SHT_SYMTAB, SHT_DYNSYM) or entsize < 24:
            continue
        str_at = shoff + link * shentsize
        str_off, str_size = struct.unpack_from("<QQ", data, str_at + 24)
        strtab = data[str_off : str_off + str_size]
        for k in range(size // entsize):
            s = offset + k * entsize
            st_name, st_info, _other, shndx, value, st_size = struct.unpack_from("<IBBHQQ", data, s)
            if (st_info & 0xF) not in (STT_FUNC, STT_GNU_IFUNC) or value == 0 or shndx == 0:
                continue
            end_name = strtab.find(b"\0", st_name)
            name = strtab[st_name : end_name if end_name >= 0 else len(strtab)].decode(
                "utf-8", "replace"
            )
            if not name:
                continue
            size_known = max(st_size, 1)
            held = funcs.get(value)
            # .symtab and .dynsym both list exported functions: keep one, the longer span
            if held is None or held[0] < size_known:
                funcs[value] = (size_known, name)
    for value in sorted(funcs):
        size_known, name = funcs[value]
        out.starts.append(value)
        out.ends.append(value + size_known)
        out.names.append(name)
    return out


class HostSymbols:
    """Names from module files on this host, checked against the image in memory."""

    def __init__(self) -> None:
        self._files: dict[str, FileSymbols | None] = {}

    def for_module(self, path: str, size: int, build_id: str | None) -> FileSymbols | None:
        """The module's file symbols when the file is the one mapped, else None."""
        if path not in self._files:
            self._files[path] = read_file_symbols(path)
        syms = self._files[path]
        if syms is None:
            return None
        if build_id is not None or syms.build_id is not None:
            return syms if build_id == syms.build_id else None
        return syms if _page_up(size) == syms.span else None

    def name(
        self, address: int, base: int, path: str, size: int, build_id: str | None
    ) -> tuple[str, int] | None:
        """(name, offset) of ``address`` in the module mapped at ``base``."""
        syms = self.for_module(path, size, build_id)
        if syms is None:
            return None
        return syms.lookup(address - base + syms.first_load)
