"""Decoder: exact values from hand-built records (instr.protocol layout)."""

from __future__ import annotations

import struct

import pytest

from instr.collectors.decode import Decoder
from instr.collectors.encode import Frames, Var, encode_record
from instr.collectors.layout import build_layout
from instr.events import Event, RunContext
from instr.probes.ir import INT_TYPES, Capture, FunctionPoint, Probe, ProbeTable
from instr.protocol import (
    FLAG_NO_ENTRY,
    HEADER,
    PHASE_ENTRY,
    PHASE_EXIT,
    STATUS_NULL,
    STATUS_TRUNCATED,
    STATUS_UNREADABLE,
)

GARBAGE = 0xDEADBEEF_00000000  # upper bits a register may hold above a narrow value


def point(sym: str) -> FunctionPoint:
    return FunctionPoint("libc.so.6", sym)


def make_table() -> ProbeTable:
    t = ProbeTable()
    ints = tuple(Capture(ty, "arg", ty, index=i) for i, ty in enumerate(INT_TYPES))
    t.add(Probe(1, "t/ints", point("ints"), entry=ints, exit=None))
    t.add(
        Probe(
            2,
            "t/call",
            point("read"),
            entry=(Capture("fd", "arg", "i32"), Capture("n", "arg", "u64", index=2)),
            exit=(Capture("ret", "retval", "i64"), Capture("took", "duration", "duration")),
        )
    )
    t.add(
        Probe(
            3,
            "t/var",
            point("open"),
            entry=(
                Capture("path", "arg", "cstr", max=16),
                Capture("caller", "caller", "ptr"),
                Capture("stack", "backtrace", "backtrace", depth=8),
            ),
            exit=(
                Capture("buf", "arg", "bytes", index=1, max=8, len_const=8),
                Capture("ret", "retval", "i32"),
            ),
        )
    )
    return t


@pytest.fixture
def decoder() -> Decoder:
    return Decoder(RunContext(make_table()))


def one(decoder: Decoder, record: bytes, seq: int = 1) -> Event:
    events = decoder.decode(record, seq)
    assert len(events) == 1, decoder.problems
    return events[0]


@pytest.mark.parametrize(
    ("ty", "raw", "value"),
    [
        ("i8", GARBAGE | 0x80, -128),
        ("i8", GARBAGE | 0x7F, 127),
        ("u8", GARBAGE | 0xFF, 255),
        ("i16", GARBAGE | 0x8000, -32768),
        ("u16", GARBAGE | 0xFFFF, 65535),
        ("i32", GARBAGE | 0xFFFFFFFF, -1),
        ("i32", 0x7FFFFFFF, 2147483647),
        ("u32", GARBAGE | 0xFFFFFFFF, 4294967295),
        ("i64", 0xFFFFFFFF_FFFFFFFF, -1),
        ("i64", 0x80000000_00000000, -(1 << 63)),
        ("u64", 0xFFFFFFFF_FFFFFFFF, (1 << 64) - 1),
        ("ptr", 0x00007FFF_12345678, 0x7FFF12345678),
        ("bool", GARBAGE | 0x01, True),
        ("bool", GARBAGE, False),  # only the low byte of a C bool is defined
    ],
)
def test_scalar_width_and_sign(decoder: Decoder, ty: str, raw: int, value: int) -> None:
    slots = [raw if t == ty else 0 for t in INT_TYPES]
    e = one(decoder, encode_record(1, PHASE_ENTRY, slots))
    assert e.args[ty] == value
    assert type(e.args[ty]) is (bool if ty == "bool" else int)


def test_header_fields_and_seq(decoder: Decoder) -> None:
    rec = encode_record(2, PHASE_ENTRY, [3, 4096], site=5, tid=4242, ts=123456789)
    e = one(decoder, rec, seq=77)
    assert e == Event(77, 2, "t/call", "entry", 4242, 123456789, 5, {"fd": 3, "n": 4096})


def test_exit_retval_and_duration(decoder: Decoder) -> None:
    rec = encode_record(2, PHASE_EXIT, [0xFFFFFFFF_FFFFFFFE, 1500], tid=9, ts=10)
    e = one(decoder, rec)
    assert (e.phase, e.args, e.retval, e.duration_ns) == ("exit", {}, -2, 1500)


def test_no_entry_flag_gives_no_duration(decoder: Decoder) -> None:
    rec = encode_record(2, PHASE_EXIT, [7, 0], flags=FLAG_NO_ENTRY)
    e = one(decoder, rec)
    assert (e.retval, e.duration_ns, e.flags) == (7, None, FLAG_NO_ENTRY)


def test_no_entry_in_mixed_batch(decoder: Decoder) -> None:
    data = encode_record(2, PHASE_EXIT, [1, 10]) + encode_record(
        2, PHASE_EXIT, [2, 0], flags=FLAG_NO_ENTRY
    )
    a, b = decoder.decode(data, 1)
    assert (a.duration_ns, b.duration_ns) == (10, None)


def test_cstr_statuses(decoder: Decoder) -> None:
    def path(var: Var) -> Event:
        return one(decoder, encode_record(3, PHASE_ENTRY, [var, 0x401000, Frames(())]))

    ok = path(Var(b"/etc/passwd"))
    assert ok.args["path"] == "/etc/passwd" and ok.args_status is None
    cut = path(Var(b"/very/long/path/", STATUS_TRUNCATED))
    assert cut.args["path"] == "/very/long/path/"
    assert cut.args_status == {"path": "truncated"}
    null = path(Var(b"", STATUS_NULL))
    assert null.args["path"] is None and null.args_status == {"path": "null"}
    bad = path(Var(b"", STATUS_UNREADABLE))
    assert bad.args["path"] is None and bad.args_status == {"path": "unreadable"}
    part = path(Var(b"/et", STATUS_UNREADABLE))  # faulted after 3 bytes
    assert part.args["path"] == "/et" and part.args_status == {"path": "unreadable"}
    odd = path(Var(b"", 9))
    assert odd.args["path"] is None and odd.args_status == {"path": "status 9"}


def test_cstr_invalid_utf8_is_backslash_escaped(decoder: Decoder) -> None:
    e = one(decoder, encode_record(3, PHASE_ENTRY, [Var(b"caf\xc3\xa9 \xff"), 0, Frames(())]))
    assert e.args["path"] == "café \\xff"


def test_caller_and_backtrace(decoder: Decoder) -> None:
    frames = (0x401020, 0x7F0000001234, 0xFFFFFFFF_FFFF0000)
    e = one(decoder, encode_record(3, PHASE_ENTRY, [Var(b"x"), 0x40102A, Frames(frames)]))
    assert e.args == {"path": "x", "caller": 0x40102A, "stack": list(frames)}


def test_bytes_and_retval_in_variable_record(decoder: Decoder) -> None:
    e = one(decoder, encode_record(3, PHASE_EXIT, [Var(b"\x00\x01\x02"), GARBAGE | 0xFFFFFFF7]))
    assert e.args == {"buf": b"\x00\x01\x02"} and e.retval == -9 and e.args_status is None
    cut = one(decoder, encode_record(3, PHASE_EXIT, [Var(b"12345678", STATUS_TRUNCATED), 8]))
    assert cut.args["buf"] == b"12345678" and cut.args_status == {"buf": "truncated"}


def test_mixed_batch_order_and_seq(decoder: Decoder) -> None:
    data = b"".join(
        [
            encode_record(2, PHASE_ENTRY, [1, 10], tid=1, ts=100),
            encode_record(3, PHASE_ENTRY, [Var(b"/a"), 5, Frames((1, 2))], tid=2, ts=110),
            encode_record(2, PHASE_EXIT, [10, 30], tid=1, ts=130),
            encode_record(3, PHASE_EXIT, [Var(b"zz"), 0], tid=2, ts=140),
        ]
    )
    events = decoder.decode(data, 10)
    assert [(e.seq, e.probe, e.phase, e.ts_ns) for e in events] == [
        (10, "t/call", "entry", 100),
        (11, "t/var", "entry", 110),
        (12, "t/call", "exit", 130),
        (13, "t/var", "exit", 140),
    ]


def test_uniform_batch_equals_record_by_record(decoder: Decoder) -> None:
    records = [
        encode_record(2, PHASE_EXIT, [-i, i * 7], tid=i, ts=i, site=i % 3) for i in range(50)
    ]
    together = decoder.decode(b"".join(records), 1)
    apart = [one(Decoder(RunContext(make_table())), r, i + 1) for i, r in enumerate(records)]
    assert together == apart
    assert together[3].retval == -3 and together[3].duration_ns == 21


def test_uniform_batch_with_no_entry_on_all(decoder: Decoder) -> None:
    data = encode_record(2, PHASE_EXIT, [5, 0], flags=FLAG_NO_ENTRY) * 3
    assert [e.duration_ns for e in decoder.decode(data, 1)] == [None, None, None]


def test_unknown_probe_is_skipped_and_counted(decoder: Decoder) -> None:
    data = encode_record(99, PHASE_ENTRY, [1]) + encode_record(2, PHASE_ENTRY, [1, 2])
    assert [e.probe for e in decoder.decode(data, 1)] == ["t/call"]
    assert decoder.problems == {"records of unknown probe id 99 phase 0 skipped": 1}


def test_unknown_phase_is_skipped(decoder: Decoder) -> None:
    data = encode_record(2, 7, [1, 2]) + encode_record(2, PHASE_ENTRY, [1, 2])
    assert len(decoder.decode(data, 1)) == 1
    assert decoder.problems == {"records of unknown probe id 2 phase 7 skipped": 1}


def test_size_mismatch_is_skipped(decoder: Decoder) -> None:
    data = encode_record(2, PHASE_ENTRY, [1, 2, 3]) + encode_record(2, PHASE_ENTRY, [4, 5])
    assert [e.args for e in decoder.decode(data, 1)] == [{"fd": 4, "n": 5}]
    assert decoder.problems == {"t/call entry records of 48 bytes, expected 40; skipped": 1}


def test_truncated_batch_keeps_earlier_records(decoder: Decoder) -> None:
    data = encode_record(2, PHASE_ENTRY, [1, 2]) * 2
    assert len(decoder.decode(data[:-8], 1)) == 1
    assert sum(decoder.problems.values()) == 1


def test_zero_size_record_ends_batch(decoder: Decoder) -> None:
    bad = HEADER.pack(0, PHASE_ENTRY, 0, 2, 0, 1, 0)
    data = encode_record(3, PHASE_EXIT, [Var(b"x"), 1]) + bad + encode_record(2, 0, [1, 2])
    assert len(decoder.decode(data, 1)) == 1
    assert decoder.problems == {"malformed record (bad size); rest of batch dropped": 1}


def test_var_record_shorter_than_captures(decoder: Decoder) -> None:
    rec = bytearray(encode_record(3, PHASE_EXIT, [Var(b"abc"), 1]))
    struct.pack_into("<I", rec, 24, 4000)  # claims 4000 bytes of data
    assert decoder.decode(bytes(rec), 1) == []
    assert decoder.problems == {"t/var exit record shorter than its captures; skipped": 1}


def test_empty_batch(decoder: Decoder) -> None:
    assert decoder.decode(b"", 1) == []


def test_memoryview_and_bytearray_input(decoder: Decoder) -> None:
    data = encode_record(2, PHASE_ENTRY, [1, 2]) * 2
    assert decoder.decode(bytearray(data), 1) == decoder.decode(memoryview(data), 1)


def test_phase_without_captures_decodes_header_only(decoder: Decoder) -> None:
    e = one(decoder, encode_record(1, PHASE_EXIT, [], tid=3))
    assert (e.probe, e.phase, e.args, e.retval) == ("t/ints", "exit", {}, None)


def test_layout_formats() -> None:
    t = make_table()
    lay = build_layout(t.probes[2], "exit")
    assert lay.fixed and lay.size == 40
    assert lay.retval is not None and lay.retval.name == "ret"
    assert lay.duration is not None and lay.duration.name == "took"
    assert lay.slot_format(("retval",)) == "<24xq8x"
    var = build_layout(t.probes[3], "entry")
    assert not var.fixed and var.size == -1
    assert var.kinds == {"path": "cstr", "caller": "caller", "stack": "backtrace"}
