"""Capture specs: ``"arg0:u64"``, ``"arg1:cstr(64)@exit"``, ``"retval:i32"``,
``"backtrace(8)"`` ... -> ``ir.Capture`` plus the phase it is taken at.

Grammar (whitespace around the whole spec is ignored)::

    spec   := source [":" type] ["@" ("entry" | "exit")]
    source := "arg" N | "retval" | "caller" | "backtrace" ["(" DEPTH ")"] | "duration"
    type   := INT | ALIAS | "cstr" ["(" MAX ")"] | "bytes" "(" (LEN | "arg" N) ["," MAX] ")"

Both the YAML front end and the quick CLI flags use this module; errors carry
the character offset in the spec so the YAML front end can point at it.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from typing import Literal

from instr.probes.diag import did_you_mean, one_of
from instr.probes.ir import INT_TYPES, Capture, Phase
from instr.probes.limits import decimal
from instr.protocol import HEADER_SIZE, pad8

MAX_ARG_INDEX = 31
CSTR_DEFAULT = 256
VAR_MAX = 4096  # cstr and bytes: most bytes kept
BACKTRACE_DEFAULT = 16
BACKTRACE_MAX = 64
DEFAULT_INT_TYPE = "i64"  # argN and retval written without a type
MAX_RECORD = 0xFFFF  # the record header's size field is a u16

# C spellings accepted for the canonical types (LP64: long is 64 bits).
ALIASES: dict[str, str] = {
    "char": "i8",
    "uchar": "u8",
    "short": "i16",
    "ushort": "u16",
    "int": "i32",
    "uint": "u32",
    "unsigned": "u32",
    "long": "i64",
    "ulong": "u64",
    "int8_t": "i8",
    "int16_t": "i16",
    "int32_t": "i32",
    "int64_t": "i64",
    "uint8_t": "u8",
    "uint16_t": "u16",
    "uint32_t": "u32",
    "uint64_t": "u64",
    "size_t": "u64",
    "ssize_t": "i64",
    "off_t": "i64",
    "pid_t": "i32",
    "uintptr_t": "ptr",
    "pointer": "ptr",
    "void*": "ptr",
    "char*": "cstr",
    "string": "cstr",
}
NOT_YET: tuple[str, ...] = ("fd", "sockaddr", "errno", "utf16")
SOURCES: tuple[str, ...] = ("arg0", "retval", "caller", "backtrace", "duration")
TYPE_NAMES: tuple[str, ...] = (*INT_TYPES, "cstr", "bytes", *ALIASES)
RESERVED_NAMES: tuple[str, ...] = ("tid", "len", "True", "False", "None")

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TYPE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*\*?)\s*(?:\((.*)\))?$")
_ARG = re.compile(r"^arg([0-9]+)$")
_DEC = re.compile(r"^[0-9]+$")
_HEX = re.compile(r"^0[xX][0-9a-fA-F]+$")
_BACKTRACE = re.compile(r"^backtrace\s*(?:\((.*)\))?$")


class SpecError(Exception):
    """A capture spec that does not parse; ``offset`` is into the spec string."""

    def __init__(self, offset: int, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.offset = offset
        self.message = message
        self.hint = hint


@dataclass(frozen=True)
class ParsedCapture:
    capture: Capture
    phase: Phase


def check_name(name: str) -> tuple[str, str | None] | None:
    """Why ``name`` cannot name a capture (message, hint), or None when it can."""
    if not _NAME.match(name):
        return (
            f"invalid capture name '{name}'",
            "capture names are identifiers: letters, digits and '_', not starting with a digit",
        )
    if keyword.iskeyword(name) or name in RESERVED_NAMES:
        return f"'{name}' is reserved and cannot name a capture", None
    return None


def parse_int(text: str) -> int | None:
    """A decimal or ``0x`` hexadecimal integer, or None."""
    t = text.strip()
    if _DEC.match(t):
        return decimal(t)  # never converts more digits than 64 bits hold
    if _HEX.match(t):
        return int(t, 16)
    return None


def _int(text: str, offset: int, what: str, low: int, high: int) -> int:
    offset += len(text) - len(text.lstrip())
    t = text.strip()
    value = parse_int(t)
    if value is None:
        raise SpecError(offset, f"{what} must be an integer, not '{t}'")
    if not low <= value <= high:
        raise SpecError(offset, f"{what} must be between {low} and {high}, not {value}")
    return value


def parse_capture(name: str, spec: str) -> ParsedCapture:
    """Parse one capture spec; raises ``SpecError``."""
    base = len(spec) - len(spec.lstrip())
    body = spec.strip()
    if not body:
        raise SpecError(0, f"empty capture spec for '{name}'", "e.g. 'arg0:u64' or 'retval'")
    phase: Phase | None = None
    phase_off = base
    if "@" in body:
        at = body.rindex("@")
        phase_off = base + at
        word = body[at + 1 :].strip()
        if word not in ("entry", "exit"):
            raise SpecError(
                base + at + 1,
                f"unknown phase '{word}' in capture '{name}'",
                did_you_mean(word, ("entry", "exit")) or "use '@entry' or '@exit'",
            )
        phase = "entry" if word == "entry" else "exit"
        body = body[:at].rstrip()
    src_text, colon, type_text = body.partition(":")
    src_text = src_text.rstrip()
    type_off = base + len(body) - len(type_text.lstrip())
    type_text = type_text.strip()
    if colon and not type_text:
        raise SpecError(type_off, f"missing type after ':' in capture '{name}'")

    m = _ARG.match(src_text)
    if m:
        index = _int(m.group(1), base + 3, "argument index", 0, MAX_ARG_INDEX)
        cap = _typed(name, "arg", index, type_text, type_off)
        return ParsedCapture(cap, phase or "entry")
    if src_text == "retval":
        cap = _typed(name, "retval", 0, type_text, type_off)
        if cap.type not in INT_TYPES:
            raise SpecError(
                type_off,
                f"'retval' cannot be captured as '{cap.type}' in version 1",
                "use an integer, pointer or bool type",
            )
        return ParsedCapture(cap, _fixed(phase, "retval", "exit", phase_off))
    fixed = _fixed_source(name, src_text, base)
    if colon:
        raise SpecError(type_off, f"'{fixed.src}' takes no type")
    return ParsedCapture(fixed, _fixed(phase, fixed.src, _phase_of(fixed.src), phase_off))


def _phase_of(src: str) -> Phase:
    return "exit" if src in ("retval", "duration") else "entry"


def _fixed(phase: Phase | None, src: str, only: Phase, base: int) -> Phase:
    if phase is not None and phase != only:
        raise SpecError(base, f"'{src}' can only be captured at {only}")
    return only


def _fixed_source(name: str, src_text: str, base: int) -> Capture:
    if src_text == "caller":
        return Capture(name, "caller", "ptr")
    if src_text == "duration":
        return Capture(name, "duration", "duration")
    m = _BACKTRACE.match(src_text)
    if m:
        depth = BACKTRACE_DEFAULT
        if m.group(1) is not None:
            off = base + src_text.index("(") + 1
            depth = _int(m.group(1), off, "backtrace depth", 1, BACKTRACE_MAX)
        return Capture(name, "backtrace", "backtrace", depth=depth)
    word = re.split(r"[^A-Za-z0-9_]", src_text, maxsplit=1)[0]
    if word in SOURCES[1:] or _ARG.match(word):
        rest = src_text[len(word) :].strip()
        raise SpecError(base + src_text.index(rest), f"unexpected '{rest}' after '{word}'")
    if word.startswith("arg"):
        hint: str | None = "arguments are arg0, arg1, ..."
    else:
        hint = did_you_mean(word, SOURCES[1:]) or f"use {one_of(('argN', *SOURCES[1:]))}"
    raise SpecError(base, f"unknown capture source '{word}'", hint)


def _typed(
    name: str, src: Literal["arg", "retval"], index: int, type_text: str, off: int
) -> Capture:
    if not type_text:
        return Capture(name, src, DEFAULT_INT_TYPE, index=index)
    m = _TYPE.match(type_text)
    word = m.group(1) if m else re.split(r"[^A-Za-z0-9_*]", type_text, maxsplit=1)[0]
    canonical = ALIASES.get(word, word)
    if canonical in NOT_YET:
        raise SpecError(off, f"capture type '{word}' is not supported yet in version 1")
    known = canonical in (*INT_TYPES, "cstr", "bytes")
    if m is None and known and word:
        rest = type_text[len(word) :].strip()
        raise SpecError(off + type_text.index(rest), f"unexpected '{rest}' after type '{word}'")
    if m is None or not known:
        raise SpecError(off, f"unknown capture type '{word}'", did_you_mean(word, TYPE_NAMES))
    args = m.group(2)
    args_off = off + type_text.index("(") + 1 if args is not None else off
    if canonical in INT_TYPES:
        if args is not None:
            raise SpecError(args_off, f"type '{word}' takes no arguments")
        return Capture(name, src, canonical, index=index)
    if canonical == "cstr":
        size = CSTR_DEFAULT
        if args is not None:
            size = _int(args, args_off, "cstr length", 1, VAR_MAX)
        return Capture(name, src, "cstr", index=index, max=size)
    if args is None or not args.strip():
        raise SpecError(
            off, "'bytes' needs a length", "write bytes(16), bytes(arg2) or bytes(arg2, 64)"
        )
    length, _, limit = args.partition(",")
    am = _ARG.match(length.strip())
    if am:
        len_arg = _int(am.group(1), args_off, "length argument index", 0, MAX_ARG_INDEX)
        size = VAR_MAX
        if limit:
            size = _int(limit, args_off + len(length) + 1, "bytes limit", 1, VAR_MAX)
        return Capture(name, src, "bytes", index=index, max=size, len_arg=len_arg)
    if limit:
        raise SpecError(args_off + len(length), "a limit is only allowed with bytes(argN, MAX)")
    size = _int(length, args_off, "bytes length", 1, VAR_MAX)
    return Capture(name, src, "bytes", index=index, max=size, len_const=size)


def slot_size(cap: Capture) -> int:
    """Worst-case bytes one capture takes in a record (see ``instr.protocol``)."""
    if cap.type in ("cstr", "bytes"):
        return 8 + pad8(cap.max)
    if cap.src == "backtrace":
        return 8 + 8 * cap.depth
    return 8


def record_size(caps: tuple[Capture, ...]) -> int:
    """Worst-case size of a record carrying ``caps``."""
    return HEADER_SIZE + sum(slot_size(c) for c in caps)
