"""``instr poke``: typed writes of target memory, the counterpart of ``instr peek``.

A write is ``SPEC=VALUE``, SPEC as for peek (``[MODULE!]SYMBOL[+OFF]:TYPE`` or
``0xADDR[+OFF]:TYPE``):

- scalars take a number (``prog!counter:i64=7``, ``ratio:f64=2.5``, ``flag:bool=true``);
  arrays a comma-separated list (``table:i32[4]=1,2,3,4``);
- ``cstr`` takes the text, written with its NUL; without ``cstr[N]`` (N: the
  buffer's size) it may not be longer than the string there now;
- ``hex`` takes hex bytes (``blob:hex=deadbeef``).

Only writable data is written; code is ``instr patch``'s (verified, ledgered,
reverted), so poke refuses executable and read-only memory. Every write needs
``-w`` and prints the value before and after (read back).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from instr.errors import UsageError
from instr.mem.peek import SCALARS, PeekSpec, decode_value, parse_peek

_INT_RANGES = {
    "i8": (-(2**7), 2**7 - 1),
    "u8": (0, 2**8 - 1),
    "i16": (-(2**15), 2**15 - 1),
    "u16": (0, 2**16 - 1),
    "i32": (-(2**31), 2**31 - 1),
    "u32": (0, 2**32 - 1),
    "i64": (-(2**63), 2**63 - 1),
    "u64": (0, 2**64 - 1),
    "ptr": (0, 2**64 - 1),
}
_HEX = re.compile(r"^(?:[0-9a-fA-F]{2})+$")
EXAMPLES = "e.g. 'prog!counter:i64=7', 'table:i32[4]=1,2,3,4', 'name:cstr=bob', 'buf:hex=00ff'"


@dataclass(frozen=True)
class PokeSpec:
    text: str
    target: PeekSpec  # where and what type
    data: bytes  # the new bytes (cstr: without the NUL limit check done yet)
    sized: bool  # cstr: the buffer's size was given (cstr[N])

    def request(self) -> dict[str, Any]:
        return {**self.target.request(), "data": self.data.hex()}


def _number(spec: str, type_: str, text: str) -> int | float | bool:
    t = text.strip()
    if type_ == "bool":
        if t.lower() in ("true", "1"):
            return True
        if t.lower() in ("false", "0"):
            return False
        raise UsageError(f"{spec}: '{t}' is not a bool", hint="write true, false, 1 or 0")
    if type_ in ("f32", "f64"):
        try:
            return float(t)
        except ValueError:
            raise UsageError(f"{spec}: '{t}' is not a number") from None
    try:
        v = int(t, 0)
    except ValueError:
        raise UsageError(f"{spec}: '{t}' is not an integer", hint="e.g. 7, -1 or 0x10") from None
    low, high = _INT_RANGES[type_]
    if not low <= v <= high:
        raise UsageError(f"{spec}: {v} does not fit {type_} ({low} .. {high})")
    return v


def parse_poke(text: str) -> PokeSpec:
    where, eq, value = text.partition("=")
    if not eq:
        raise UsageError(f"{text!r} has no value: write SPEC=VALUE", hint=EXAMPLES)
    target = parse_peek(where)
    if target.type == "hex":
        v = value.strip().replace(" ", "")
        if not _HEX.match(v):
            raise UsageError(f"{where}: '{value}' is not hex bytes", hint="e.g. deadbeef")
        return PokeSpec(text, target, bytes.fromhex(v), True)
    if target.type == "cstr":
        data = value.encode() + b"\0"
        sized = "[" in where
        if sized and len(data) > target.count:
            raise UsageError(
                f"{where}: {len(data)} bytes with the NUL do not fit {target.count} bytes"
            )
        return PokeSpec(text, target, data, sized)
    items = [v for v in value.strip().strip("[]").split(",")]
    if target.count != 1 and len(items) != target.count:
        raise UsageError(f"{where}: {len(items)} values given for {target.count} elements")
    fmt = "<" + SCALARS[target.type]
    data = b"".join(struct.pack(fmt, _number(where, target.type, v)) for v in items)
    target = PeekSpec(
        where, target.module, target.symbol, target.address, target.offset, target.type, len(items)
    )
    return PokeSpec(text, target, data, True)


def check_fits(spec: PokeSpec, current: dict[str, Any]) -> None:
    """A cstr without a size may not outgrow the string there (its NUL included)."""
    if spec.target.type != "cstr" or spec.sized:
        return
    room = len(bytes.fromhex(current["data"]))
    if current.get("truncated") or len(spec.data) > room:
        raise UsageError(
            f"{spec.target.text}: {len(spec.data)} bytes with the NUL are longer than the string "
            f"there now ({room} bytes)",
            hint="give the buffer's size, e.g. name:cstr[32]=..., to write more",
        )


def render_write(spec: PokeSpec, result: dict[str, Any]) -> str:
    """``SPEC @ ADDR (mod!sym): OLD -> NEW`` with NEW read back after the write."""
    t = spec.target
    where = f"{result.get('module') or '?'}!{result['symbol']}" if result.get("symbol") else ""
    head = f"{t.text} @ {result['address']}" + (f" ({where})" if where else "")
    old = decode_value(t, bytes.fromhex(result["old"]))
    new = decode_value(t, bytes.fromhex(result["data"]))
    return f"{head}: {_show(t, old)} -> {_show(t, new)}"


def _show(t: PeekSpec, value: list[Any] | str | bytes) -> str:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, str):
        return repr(value)
    shown = [f"0x{v:x}" if t.type == "ptr" else repr(v) for v in value]
    return shown[0] if len(shown) == 1 else "[" + ", ".join(shown) + "]"


def poke_all(script: Any, specs: list[PokeSpec]) -> Iterator[str]:
    """Write each spec through a loaded agent script, in order; one line each."""
    for spec in specs:
        before = None
        if spec.target.type == "cstr":  # the whole string before, not only len(new) bytes
            before = script.exports_sync.peek([spec.target.request()])[0]
            check_fits(spec, before)
        result = script.exports_sync.poke([spec.request()])[0]
        if before is not None:
            result = {**result, "old": before["data"]}
        yield render_write(spec, result)
