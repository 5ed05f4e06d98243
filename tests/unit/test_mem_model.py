"""instr.mem without a target: report decoding, rendering, peek specs, hex dumps."""

from __future__ import annotations

import re
import struct

import pytest

from instr.errors import UsageError
from instr.hexdump import hexdump
from instr.mem.model import (
    AGG_SIZE,
    MAX_DEPTH,
    N_BUCKETS,
    N_COUNTERS,
    N_KINDS,
    N_SCALARS,
    Frame,
    MemReport,
    ReportFormatError,
    decode,
    symbolize_frames,
)
from instr.mem.peek import decode_value, parse_peek, render
from instr.mem.poke import check_fits, parse_poke
from instr.mem.render import quantize, render_text, to_json


def _payload(
    stacks: list[tuple[int, int, int, int, list[int]]],
    aggs: list[list[int]],
    scalars: dict[int, int] | None = None,
) -> bytes:
    counters = [0] * N_COUNTERS
    for i, v in (scalars or {}).items():
        counters[i] = v
    counters[0], counters[2], counters[4], counters[7], counters[8] = 5, 300, 2, 150, 200
    counters[N_SCALARS + 0] = 4  # malloc calls
    counters[N_SCALARS + N_KINDS + 0] = 250
    counters[N_SCALARS + 1] = 1  # calloc
    hist = N_SCALARS + 2 * N_KINDS
    counters[hist + 5] = 3  # 16..31 bytes
    counters[hist + 7] = 2  # 64..127
    counters[hist + N_BUCKETS + 5] = 60
    out = struct.pack(f"<{N_COUNTERS}Q", *counters)
    for kind, n, nbytes, depth, frames in stacks:
        fr = frames + [0] * (MAX_DEPTH - len(frames))
        out += struct.pack(f"<QIIQQ{MAX_DEPTH}Q", 0, depth, kind, n, nbytes, *fr)
    for a in aggs:  # heap aggregates, then mmap aggregates (all zero)
        out += struct.pack("<7Q", *a)
    out += b"\0" * (AGG_SIZE * len(aggs))
    return out


def _report(mode: str = "spawn", scalars: dict[int, int] | None = None) -> MemReport:
    stacks = [(0, 0, 0, 0, []), (0, 3, 150, 2, [0x1000, 0x2000]), (1, 2, 150, 1, [0x3000])]
    aggs = [[0, 0, 0, 0, 0, 0, 0], [2, 100, 2, 100, 40, 7, 3], [1, 50, 0, 0, 0, 9, 4]]
    header = {"n_stacks": 3, "n_oldest": 0, "reason": "exit 3", "mode": mode, "scanned": True}
    return decode(header, _payload(stacks, aggs, scalars))


def test_decode_report() -> None:
    r = _report()
    assert r.exit_code == 3 and r.scanned
    assert r.counters["allocs"] == 5 and r.counters["peak_bytes"] == 200
    assert r.kinds == {"malloc": (4, 250), "calloc": (1, 0)}
    s = r.stacks[1]
    assert (s.kind, s.allocs, s.bytes, s.addresses) == ("malloc", 3, 150, (0x1000, 0x2000))
    assert (s.live_blocks, s.live_bytes, s.leaked_blocks, s.leaked_bytes) == (2, 100, 2, 100)
    assert r.leaked_bytes == 100 and r.indirect_bytes == 40 and [x.id for x in r.leaks] == [1]
    assert r.stacks[2].kind == "calloc" and r.stacks[2].leaked_blocks == 0


def test_decode_rejects_a_short_payload() -> None:
    with pytest.raises(ReportFormatError, match="expected"):
        decode({"n_stacks": 2, "n_oldest": 0}, b"\0" * 16)


def test_symbolize_cuts_at_a_frame_outside_modules() -> None:
    r = _report()
    table = {0x1000: Frame(0x1000, "prog", "leaky", 0x10)}  # 0x2000: no module
    symbolize_frames(r, table, {1})
    assert [str(f) for f in r.stacks[1].frames] == ["prog!leaky+0x10"]


def test_render_text_and_json() -> None:
    r = _report()
    symbolize_frames(r, {0x1000: Frame(0x1000, "prog", "leaky", 0)}, {1, 2})
    r.process = "prog"
    text = render_text(r)
    assert "at exit, status 3" in text
    assert "by process prog: 300 bytes allocated" in text
    assert "LEAKED 100 bytes in 2 blocks (60 direct, 40 indirect) from 1 stacks" in text
    assert "      prog!leaky" in text
    assert "               150 bytes          3 calls  malloc from prog!leaky" in text
    j = to_json(r)
    assert j["leaks"] == {"bytes": 100, "blocks": 2, "indirect_bytes": 40, "stacks": [1]}
    assert j["by_process"] == {"prog": 300}
    assert [h["bucket_min"] for h in j["histogram"]] == [16, 64]
    assert [(x["site"], x["allocs"]) for x in j["sites"]] == [("prog!leaky", 3), ("0x3000", 2)]


def test_report_says_what_its_figures_cover() -> None:
    """Scalar 27: calls left out as the tool's; 29: whether they are left out."""
    r = _report("attach", {27: 1234, 29: 1})
    assert r.tool_excluded and r.counters["tool_calls"] == 1234
    line = render_text(r).splitlines()[1]
    assert line == (
        "  covers     every call since instr attached, all figures read at one instant; "
        "1,234 calls on instr's and Frida's threads left out (--include-tool counts them)"
    )
    assert to_json(r)["tool_excluded"] is True and to_json(r)["counters"]["tool_calls"] == 1234
    r = _report("spawn", {29: 0})
    assert not r.tool_excluded
    assert render_text(r).splitlines()[1] == (
        "  covers     every call since the program started, all figures read at one instant; "
        "calls on instr's and Frida's threads included (--include-tool)"
    )


def test_quantize_is_dtrace_shaped() -> None:
    buckets = [(0, 0)] * N_BUCKETS
    buckets[3] = (10, 0)  # 4..7
    buckets[5] = (30, 0)  # 16..31
    lines = quantize(buckets, "sizes")
    assert lines[1] == "             value  ------------- Distribution ------------- count"
    assert lines[2] == "                 2 |" + " " * 40 + " 0"
    assert lines[3] == "                 4 |" + "@" * 10 + " " * 30 + " 10"
    assert lines[5] == "                16 |" + "@" * 30 + " " * 10 + " 30"
    assert lines[-1].split() == ["32", "|", "0"]


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("prog!counter:i64", ("prog", "counter", None, 0, "i64", 1, 8)),
        ("counter:u8[4]", (None, "counter", None, 0, "u8", 4, 4)),
        ("name+0x10:cstr", (None, "name", None, 16, "cstr", 4096, 4096)),
        ("0x7f001000+8:hex[32]", (None, None, 0x7F001000, 8, "hex", 32, 32)),
        ("libc.so.6!environ:ptr", ("libc.so.6", "environ", None, 0, "ptr", 1, 8)),
        ("x:int", (None, "x", None, 0, "i32", 1, 4)),
        ("b:bytes[3]", (None, "b", None, 0, "hex", 3, 3)),
    ],
)
def test_parse_peek(text: str, fields: tuple[object, ...]) -> None:
    s = parse_peek(text)
    assert (s.module, s.symbol, s.address, s.offset, s.type, s.count, s.size) == fields


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("counter", "cannot read 'counter'"),
        ("counter:i65", "unknown type 'i65'"),
        ("counter:i32[0]", "bad count 0"),
        ("0xzz:i8", "cannot read"),
    ],
)
def test_parse_peek_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("[", r"\[")):
        parse_peek(text)


def test_peek_values() -> None:
    assert decode_value(parse_peek("a:i16[2]"), struct.pack("<hh", -2, 7)) == [-2, 7]
    assert decode_value(parse_peek("a:f64"), struct.pack("<d", 2.5)) == [2.5]
    assert decode_value(parse_peek("a:cstr"), b"hi\0junk") == "hi"
    spec = parse_peek("a:ptr")
    result = {"address": "0x10", "module": "m", "symbol": "a", "data": "ff00000000000000"}
    assert render(spec, result) == "a:ptr @ 0x10 (m!a) = 0xff"


def test_hexdump() -> None:
    data = bytes(range(0x41, 0x41 + 20))
    assert hexdump(data, 0x1000).splitlines() == [
        "0000000000001000  41 42 43 44 45 46 47 48  49 4a 4b 4c 4d 4e 4f 50  |ABCDEFGHIJKLMNOP|",
        "0000000000001010  51 52 53 54" + " " * 39 + "|QRST|",
    ]


def test_console_hexdumps_a_long_bytes_capture() -> None:
    """A ``bytes`` capture longer than the inline preview is dumped under its event."""
    import io

    from instr.collectors.console import ConsoleCollector
    from instr.events import Event, RunContext, RunInfo, Site
    from instr.probes.ir import Capture, FunctionPoint, Probe, ProbeTable

    t = ProbeTable()
    buf = Capture("buf", "arg", "bytes", index=1, max=64)
    t.add(Probe(1, "io/write", FunctionPoint("libc*", "write"), entry=(buf,), exit=None))
    ctx = RunContext(t)
    ctx.add_site(Site(1, 0, 0x7F001000, "libc.so.6", "write"))
    c = ConsoleCollector(io.StringIO())
    c.open(ctx, RunInfo(1, "local", 2, None, None, ()))
    data = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n" + bytes(range(10))
    lines = c.format_event(Event(1, 1, "io/write", "entry", 9, 0, 0, {"buf": data}))
    assert lines[0].endswith(f"buf=<{data[:32].hex()}...>(43 bytes)")
    assert lines[1:] == [
        "        buf:",
        "        0000000000000000  47 45 54 20 2f 20 48 54  54 50 2f 31 2e 31 0d 0a  |GET / HTTP/1.1..|",
        "        0000000000000010  48 6f 73 74 3a 20 65 78  61 6d 70 6c 65 0d 0a 0d  |Host: example...|",
        "        0000000000000020  0a 00 01 02 03 04 05 06  07 08 09" + " " * 17 + "|...........|",
    ]
    short = c.format_event(Event(2, 1, "io/write", "entry", 9, 0, 0, {"buf": b"hi"}))
    assert len(short) == 1


@pytest.mark.parametrize(
    ("text", "data", "count"),
    [
        ("prog!n:i64=-7", struct.pack("<q", -7), 1),
        ("n:u8=0xff", b"\xff", 1),
        ("t:i32[3]=1,2,3", struct.pack("<3i", 1, 2, 3), 3),
        ("t:i16=[1, 2]", struct.pack("<2h", 1, 2), 2),
        ("r:f32=0.5", struct.pack("<f", 0.5), 1),
        ("b:bool=true", b"\x01", 1),
        ("s:cstr=a=b", b"a=b\0", 4096),
        ("0x1000+8:hex=00ff", b"\x00\xff", 64),
    ],
)
def test_parse_poke(text: str, data: bytes, count: int) -> None:
    spec = parse_poke(text)
    assert spec.data == data
    assert spec.target.count == count
    assert spec.request()["data"] == data.hex()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("n:i64", "has no value: write SPEC=VALUE"),
        ("n:u8=256", "256 does not fit u8 (0 .. 255)"),
        ("n:i32=x", "'x' is not an integer"),
        ("n:bool=yes", "'yes' is not a bool"),
        ("t:i32[4]=1,2", "2 values given for 4 elements"),
        ("s:cstr[3]=abc", "4 bytes with the NUL do not fit 3 bytes"),
        ("b:hex=abc", "is not hex bytes"),
    ],
)
def test_parse_poke_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        parse_poke(text)


def test_unsized_cstr_may_not_outgrow_the_string_there() -> None:
    spec = parse_poke("s:cstr=hello")
    check_fits(spec, {"data": b"hello\0".hex(), "truncated": False})
    with pytest.raises(UsageError, match=r"6 bytes with the NUL are longer .* \(3 bytes\)"):
        check_fits(spec, {"data": b"hi\0".hex(), "truncated": False})
    check_fits(parse_poke("s:cstr[16]=hello"), {"data": b"hi\0".hex(), "truncated": False})
