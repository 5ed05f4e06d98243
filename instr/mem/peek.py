"""``instr peek``: typed reads of target memory at a symbol or an address.

A spec is ``[MODULE!]SYMBOL[+OFF]:TYPE`` or ``0xADDR[+OFF]:TYPE``; TYPE is one of
i8 u8 i16 u16 i32 u32 i64 u64 f32 f64 ptr bool, optionally ``[N]`` for an array;
``cstr`` (``cstr[N]``: at most N bytes); or ``hex[N]`` / ``bytes[N]`` for a hex dump.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Any

from instr.errors import UsageError
from instr.hexdump import hexdump

SCALARS = {
    "i8": "b",
    "u8": "B",
    "i16": "h",
    "u16": "H",
    "i32": "i",
    "u32": "I",
    "i64": "q",
    "u64": "Q",
    "f32": "f",
    "f64": "d",
    "ptr": "Q",
    "bool": "?",
}
ALIASES = {
    "int": "i32",
    "uint": "u32",
    "long": "i64",
    "ulong": "u64",
    "char": "i8",
    "size_t": "u64",
}
CSTR_DEFAULT = 4096

_SPEC = re.compile(
    r"""^(?:(?P<addr>0x[0-9a-fA-F]+)|(?:(?P<module>[^!:]+)!)?(?P<symbol>[A-Za-z_.$][\w.$@]*))
        (?:\+(?P<off>0x[0-9a-fA-F]+|\d+))?
        :(?P<type>[a-z_0-9]+)(?:\[(?P<count>0x[0-9a-fA-F]+|\d+)\])?$""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class PeekSpec:
    text: str
    module: str | None
    symbol: str | None
    address: int | None
    offset: int
    type: str  # a SCALARS key, "cstr" or "hex"
    count: int  # elements (scalars), most bytes (cstr), bytes (hex)

    @property
    def size(self) -> int:
        if self.type in SCALARS:
            return struct.calcsize("<" + SCALARS[self.type]) * self.count
        return self.count

    def request(self) -> dict[str, Any]:
        return {
            "module": self.module,
            "symbol": self.symbol,
            "address": None if self.address is None else hex(self.address),
            "offset": self.offset,
            "size": self.size,
            "cstring": self.type == "cstr",
        }


def parse_peek(text: str) -> PeekSpec:
    m = _SPEC.match(text.strip())
    if m is None:
        raise UsageError(
            f"cannot read {text!r}",
            hint="write MODULE!SYMBOL:TYPE, SYMBOL:TYPE or 0xADDR:TYPE, e.g. 'prog!counter:i64', "
            "'name:cstr', '0x7f00001000:hex[64]'",
        )
    t = ALIASES.get(m["type"], m["type"])
    if t == "bytes":
        t = "hex"
    if t not in SCALARS and t not in ("cstr", "hex"):
        known = ", ".join([*SCALARS, "cstr", "hex"])
        raise UsageError(f"unknown type {m['type']!r} in {text!r}", hint=f"types: {known}")
    count_s = m["count"]
    if count_s is not None:
        count = int(count_s, 0)
    else:
        count = CSTR_DEFAULT if t == "cstr" else 64 if t == "hex" else 1
    if count <= 0 or count > 1 << 24:
        raise UsageError(f"bad count {count_s} in {text!r}: give 1 .. {1 << 24}")
    return PeekSpec(
        text=text,
        module=m["module"],
        symbol=m["symbol"],
        address=None if m["addr"] is None else int(m["addr"], 16),
        offset=0 if m["off"] is None else int(m["off"], 0),
        type=t,
        count=count,
    )


def decode_value(spec: PeekSpec, data: bytes) -> list[Any] | str | bytes:
    if spec.type == "cstr":
        return data.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")
    if spec.type == "hex":
        return data
    fmt = SCALARS[spec.type]
    size = struct.calcsize("<" + fmt)
    values = [struct.unpack_from("<" + fmt, data, i * size)[0] for i in range(len(data) // size)]
    return values


def render(spec: PeekSpec, result: dict[str, Any]) -> str:
    data = bytes.fromhex(result["data"])
    where = f"{result.get('module') or '?'}!{result['symbol']}" if result.get("symbol") else ""
    head = f"{spec.text} @ {result['address']}" + (f" ({where})" if where else "")
    value = decode_value(spec, data)
    if isinstance(value, bytes):
        return head + "\n" + hexdump(value, int(result["address"], 16))
    if isinstance(value, str):
        more = " …(no NUL within the limit)" if result.get("truncated") else ""
        return f"{head} = {value!r}{more}"
    shown = [f"0x{v:x}" if spec.type == "ptr" else repr(v) for v in value]
    return f"{head} = {shown[0] if len(shown) == 1 else '[' + ', '.join(shown) + ']'}"
