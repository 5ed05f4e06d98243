"""The limits on what a probe-set file may ask of instr (see docs/probes.md).

A probe file is read from wherever ``-P`` points, so it is untrusted input:
these bounds keep ``instr check`` and ``instr run`` fast and small on any
input, and turn what would otherwise be Python's own limits
(``RecursionError``, the 4300-digit ``ValueError``) into located diagnostics.
Real probe files stay far below every one of them.
"""

from __future__ import annotations

import re

MAX_FILE_BYTES = 1 << 20  # the whole probe-set file
MAX_DEPTH = 64  # nested YAML mappings and lists
MAX_NODES = 50_000  # keys, values, lists and mappings, every alias use expanded
MAX_ALIASES = 1000  # alias uses (*name) in one file
MAX_PREDICATE_CHARS = 4096  # one `where:` expression
MAX_PREDICATE_TERMS = 256  # names and constants in one predicate
MAX_PREDICATE_DEPTH = 64  # operators nested in one predicate (a+b+c nests 2)
INT_MIN, INT_MAX = -(2**63), 2**64 - 1  # every integer instr reads is 64-bit
MAX_INT_DIGITS = 20  # significant decimal digits; 2**64 - 1 has 20

_DECIMAL = re.compile(r"[-+]?0*([0-9]*)")


def decimal_too_long(text: str) -> bool:
    """True when the decimal integer ``text`` has more significant digits
    than any 64-bit value, so converting it is pointless (and, past 4300
    digits, refused by Python)."""
    m = _DECIMAL.fullmatch(text.strip())
    return m is not None and len(m.group(1)) > MAX_INT_DIGITS


class HugeInt(int):
    """A decimal literal with more digits than any 64-bit value, kept
    unconverted: its value is just outside the 64-bit range (so every range
    check refuses it) and it prints as ``a 5000-digit number``."""

    digits: int

    def __new__(cls, text: str) -> HugeInt:
        t = text.strip()
        self = super().__new__(cls, INT_MIN - 1 if t.startswith("-") else INT_MAX + 1)
        self.digits = len(t.lstrip("+-"))
        return self

    def __str__(self) -> str:
        return f"a {self.digits}-digit number"

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return str(self)


def decimal(text: str) -> int:
    """``int(text, 10)``, or a ``HugeInt`` when it cannot fit in 64 bits."""
    m = _DECIMAL.fullmatch(text.strip())
    if m is None:
        return int(text, 10)  # not a plain decimal: int() raises its own ValueError
    if len(m.group(1)) > MAX_INT_DIGITS:
        return HugeInt(text)
    value = int(m.group(1) or "0")  # leading zeros dropped: Python counts them too
    return -value if text.strip().startswith("-") else value


def in_int_range(value: int) -> bool:
    return INT_MIN <= value <= INT_MAX


def size_text(n: int) -> str:
    """``1 MiB`` for the limit messages."""
    if n % (1 << 20) == 0:
        return f"{n >> 20} MiB"
    if n % (1 << 10) == 0:
        return f"{n >> 10} KiB"
    return f"{n} bytes"
