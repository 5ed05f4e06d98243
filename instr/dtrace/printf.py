"""DTrace's printf on the host: formats checked when compiling, applied to values.

Conversions: ``%d %i %u %x %X %o %c %s %p %%`` with flags ``-+ #0``, a width, a
precision and C's length modifiers (``%lld``, ``%lu``...: values are 64-bit
whatever the modifier). ``%a %A %e %f %g %S %T %Y %k`` are not supported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from instr.dtrace.errors import Loc, fail

_SPEC = re.compile(r"%(?P<at>@?)(?P<flags>[-+ #0]*)(?P<width>\d+|\*)?(?:\.(?P<prec>\d+|\*))?"
                   r"(?P<len>hh|h|ll|l|L|z|j|t|q)?(?P<conv>.?)")  # fmt: skip
INT_CONVS = "diuxXocp"


@dataclass(frozen=True)
class Conv:
    flags: str
    width: str
    prec: str
    conv: str  # one of INT_CONVS or "s"
    at: bool = False  # printa's %@: the aggregation's value


Piece = str | Conv


def parse_format(fmt: str, loc: Loc) -> list[Piece]:
    out: list[Piece] = []
    pos = 0
    while True:
        i = fmt.find("%", pos)
        if i < 0:
            if pos < len(fmt):
                out.append(fmt[pos:])
            return out
        if i > pos:
            out.append(fmt[pos:i])
        m = _SPEC.match(fmt, i)
        assert m is not None
        conv = m.group("conv")
        if conv == "%" and m.end() - i == 2:
            out.append("%")
        elif conv in INT_CONVS or conv == "s":
            if m.group("width") == "*" or m.group("prec") == "*":
                raise fail(loc, "'*' widths in printf formats are not supported")
            width, prec = m.group("width") or "", m.group("prec") or ""
            out.append(Conv(m.group("flags"), width, prec, conv, bool(m.group("at"))))
        elif conv == "":
            raise fail(loc, "printf format ends with an incomplete conversion '%'")
        else:
            raise fail(loc, f"printf conversion '%{conv}' is not supported",
                       "supported: %d %i %u %x %X %o %c %s %p %%")  # fmt: skip
        pos = m.end()


def convs(pieces: list[Piece]) -> list[Conv]:
    return [p for p in pieces if isinstance(p, Conv)]


def render(pieces: list[Piece], values: list[int | str]) -> str:
    out: list[str] = []
    it = iter(values)
    for p in pieces:
        if isinstance(p, str):
            out.append(p)
        else:
            out.append(_one(p, next(it)))
    return "".join(out)


def _one(c: Conv, v: int | str) -> str:
    if c.conv == "s":
        text = v if isinstance(v, str) else str(v)
        spec = f"{'-' if '-' in c.flags else ''}{c.width}" + (f".{c.prec}" if c.prec else "")
        return f"{text:{_align(spec)}}" if spec else text
    n = v if isinstance(v, int) else 0
    if c.conv in "uxXop" and n < 0:
        n += 1 << 64
    if c.conv == "p":
        return _pad(c, hex(n))
    if c.conv == "c":
        return _pad(c, chr(n & 0xFF))
    py = {"d": "d", "i": "d", "u": "d", "x": "x", "X": "X", "o": "o"}[c.conv]
    body = f"{abs(n):{py}}"
    if c.prec:
        body = body.rjust(int(c.prec), "0")
    prefix = ""
    if "#" in c.flags and c.conv in "xX" and n != 0:
        prefix = "0x" if c.conv == "x" else "0X"
    elif "#" in c.flags and c.conv == "o" and not body.startswith("0"):
        prefix = "0"
    sign = "-" if n < 0 else ("+" if "+" in c.flags else (" " if " " in c.flags else ""))
    text = sign + prefix + body
    width = int(c.width) if c.width else 0
    if "-" in c.flags:
        return text.ljust(width)
    if "0" in c.flags and not c.prec:
        return sign + prefix + body.rjust(width - len(sign) - len(prefix), "0")
    return text.rjust(width)


def _pad(c: Conv, text: str) -> str:
    width = int(c.width) if c.width else 0
    return text.ljust(width) if "-" in c.flags else text.rjust(width)


def _align(spec: str) -> str:
    if spec.startswith("-"):
        return "<" + spec[1:]
    return ">" + spec


def tracemem(data: bytes) -> str:
    """DTrace's tracemem() dump: a header of column offsets, then 16 bytes a line (the
    offset in hex, the bytes, the printable ones as text, others as '.')."""
    digits = "0123456789abcdef"
    lines = ["", "     " + "".join(f"  {c}" for c in digits) + "  " + digits]
    for off in range(0, len(data), 16):
        chunk = data[off : off + 16]
        hexes = "".join(f" {b:02x}" for b in chunk) + "   " * (16 - len(chunk))
        text = "".join(chr(b) if 0x20 <= b <= 0x7E else "." for b in chunk)
        lines.append(f"{off:5x}:{hexes}  {text}")
    return "\n".join(lines) + "\n"
