"""The quick patch specs of ``instr patch``:

    --ret   'TARGET=VALUE'            force the return value (the function still runs)
    --skip  'TARGET[=VALUE]'          do not run the function; return VALUE (default 0)
    --bytes 'TARGET:EXPECTED:NEW'     write NEW (hex) if the bytes there are EXPECTED (hex)
    --nop   'TARGET[:N]'              overwrite N instructions (default 1) with NOPs
    --replace-c 'TARGET=FILE.c[:FN]'  replace the function by FN (default "replacement")
                                      from FILE.c, compiled in the target (CModule);
                                      ``extern`` symbol ``original`` calls the original

TARGET is ``MODULE!SYMBOL``, ``SYMBOL``, ``0xADDRESS`` or ``MODULE+0xOFFSET``.
"""

from __future__ import annotations

import re

from instr.errors import UsageError
from instr.patch.model import PatchKind, PatchSpec
from instr.probes.captures import parse_int
from instr.probes.quick import parse_target

_HEX = re.compile(r"^(?:[0-9a-fA-F]{2})+$")
MAX_BYTES = 4096


def _value(text: str, flag: str, spec: str) -> int:
    t = text.strip()
    negative = t.startswith("-")
    v = parse_int(t[1:] if negative else t)
    if v is None:
        raise UsageError(
            f"{flag}: invalid value '{t}' in '{spec}'", hint="an integer, e.g. 0, -1 or 0x10"
        )
    v = -v if negative else v
    if not -(2**63) <= v < 2**64:
        raise UsageError(f"{flag}: value {t} does not fit in 64 bits")
    return v


def _hex(text: str, flag: str, what: str) -> bytes:
    t = text.strip().replace(" ", "")
    if not _HEX.match(t):
        raise UsageError(
            f"{flag}: the {what} bytes '{text}' are not hex",
            hint="write pairs of hex digits, e.g. b82a000000",
        )
    data = bytes.fromhex(t)
    if len(data) > MAX_BYTES:
        raise UsageError(f"{flag}: at most {MAX_BYTES} bytes at once")
    return data


def _ret(spec: str, flag: str, source: str, default: int | None) -> PatchSpec:
    target, eq, value = spec.rpartition("=")
    if not eq:
        if default is None:
            raise UsageError(
                f"{flag}: '{spec}' has no value", hint=f"write {flag} 'MODULE!SYMBOL=VALUE'"
            )
        target, value = spec, str(default)
    kind: PatchKind = "ret" if flag == "--ret" else "skip"
    return PatchSpec(
        kind=kind, point=parse_target(target, flag), source=source, value=_value(value, flag, spec)
    )


def _bytes(spec: str, source: str) -> PatchSpec:
    parts = spec.rsplit(":", 2)
    if len(parts) != 3:
        raise UsageError(
            f"--bytes: '{spec}' is not TARGET:EXPECTED:NEW",
            hint="e.g. --bytes 'demo+0x1234:b82a000000:b801000000'",
        )
    target, expect_text, new_text = parts
    expect = _hex(expect_text, "--bytes", "expected")
    data = _hex(new_text, "--bytes", "new")
    if len(expect) != len(data):
        raise UsageError(
            f"--bytes: the expected bytes ({len(expect)}) and the new bytes ({len(data)}) differ in length"
        )
    return PatchSpec(
        kind="bytes", point=parse_target(target, "--bytes"), source=source, expect=expect, data=data
    )


def _nop(spec: str, source: str) -> PatchSpec:
    target, colon, count = spec.rpartition(":")
    n = parse_int(count) if colon else None
    if not colon or n is None:
        target, n = spec, 1
    if not 1 <= n <= 64:
        raise UsageError(f"--nop: the instruction count must be 1..64, not {n}")
    return PatchSpec(kind="nop", point=parse_target(target, "--nop"), source=source, instructions=n)


def _replace_c(spec: str, source: str) -> PatchSpec:
    target, eq, rest = spec.partition("=")
    if not eq or not rest.strip():
        raise UsageError(
            f"--replace-c: '{spec}' is not TARGET=FILE.c",
            hint="e.g. --replace-c 'clock_gettime=fixed.c'",
        )
    path, colon, fn = rest.rpartition(":") if rest.count(":") else ("", "", "")
    if not colon or "/" in fn or fn.endswith(".c"):
        path, fn = rest, "replacement"
    try:
        with open(path.strip(), encoding="utf-8") as f:
            code = f.read()
    except OSError as e:
        raise UsageError(f"--replace-c: cannot read '{path.strip()}': {e.strerror or e}") from e
    return PatchSpec(
        kind="replace_c",
        point=parse_target(target, "--replace-c"),
        source=source,
        code=code,
        fn=fn.strip(),
    )


def parse_quick(
    ret: tuple[str, ...] = (),
    skip: tuple[str, ...] = (),
    bytes_: tuple[str, ...] = (),
    nop: tuple[str, ...] = (),
    replace_c: tuple[str, ...] = (),
) -> list[PatchSpec]:
    """The ``PatchSpec``s of the quick flags, in the order: ret, skip, bytes, nop, replace-c."""
    specs = [_ret(s, "--ret", f"cli --ret {s}", None) for s in ret]
    specs += [_ret(s, "--skip", f"cli --skip {s}", 0) for s in skip]
    specs += [_bytes(s, f"cli --bytes {s}") for s in bytes_]
    specs += [_nop(s, f"cli --nop {s}") for s in nop]
    specs += [_replace_c(s, f"cli --replace-c {s}") for s in replace_c]
    return specs
