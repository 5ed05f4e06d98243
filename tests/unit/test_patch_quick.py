"""The quick patch specs of ``instr patch`` and its flag checks (pure parsing)."""

from __future__ import annotations

import pytest

from instr.errors import UsageError
from instr.patch.command import PatchCommand, check, parse_revert
from instr.patch.model import LedgerEntry, format_table
from instr.patch.quick import parse_quick
from instr.probes.ir import AddressPoint, FunctionPoint, OffsetPoint
from instr.target import DeviceSpec, TargetSpec


def test_ret_skip_bytes_nop_specs():
    ret, skip, skip0, data, nop, nop3 = parse_quick(
        ret=("demo!compute=-1",),
        skip=("0x401000=0x10", "demo+0x20"),
        bytes_=("demo+0x1234:b82a000000:b801000000",),
        nop=("demo!f", "demo+0x40:3"),
    )
    assert (ret.kind, ret.point, ret.value) == ("ret", FunctionPoint("demo", "compute"), -1)
    assert (skip.kind, skip.point, skip.value) == ("skip", AddressPoint(0x401000), 16)
    assert (skip0.point, skip0.value) == (OffsetPoint("demo", 0x20), 0)
    assert data.expect == bytes.fromhex("b82a000000") and data.data == bytes.fromhex("b801000000")
    assert (nop.point, nop.instructions) == (FunctionPoint("demo", "f"), 1)
    assert (nop3.point, nop3.instructions) == (OffsetPoint("demo", 0x40), 3)
    assert ret.source == "cli --ret demo!compute=-1"
    assert ret.to_plan() == {
        "kind": "ret",
        "point": {"kind": "function", "module": "demo", "symbol": "compute", "exclude": []},
        "source": "cli --ret demo!compute=-1",
        "value": "-1",
    }
    assert data.to_plan()["expect"] == "b82a000000"


def test_bare_symbol_means_any_module():
    (spec,) = parse_quick(ret=("clock_gettime=0",))
    assert spec.point == FunctionPoint(None, "clock_gettime")


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"ret": ("demo!f",)}, "--ret: 'demo!f' has no value"),
        ({"ret": ("demo!f=abc",)}, "--ret: invalid value 'abc' in 'demo!f=abc'"),
        ({"ret": ("=1",)}, "--ret: the target is empty"),
        ({"ret": ("demo!=1",)}, "has no symbol"),
        ({"ret": ("0xzz=1",)}, "--ret: invalid address '0xzz'"),
        ({"ret": ("demo!f=99999999999999999999999",)}, "does not fit in 64 bits"),
        ({"bytes_": ("demo+0x10:b8",)}, "is not TARGET:EXPECTED:NEW"),
        ({"bytes_": ("demo+0x10:b8:zz",)}, "the new bytes 'zz' are not hex"),
        (
            {"bytes_": ("demo+0x10:b82a:b8",)},
            "the expected bytes (2) and the new bytes (1) differ in length",
        ),
        ({"bytes_": ("demo+0xqq:b8:b9",)}, "invalid offset '0xqq'"),
        ({"nop": ("demo+0x10:0",)}, "the instruction count must be 1..64, not 0"),
        ({"replace_c": ("demo!f",)}, "is not TARGET=FILE.c"),
        ({"replace_c": ("demo!f=/nonexistent/x.c",)}, "cannot read '/nonexistent/x.c'"),
    ],
)
def test_bad_quick_specs(kw, message):
    with pytest.raises(UsageError) as err:
        parse_quick(**kw)
    assert message in str(err.value)
    assert err.value.exit_code == 2


def _cmd(**kw):
    base = {"target": TargetSpec(pid=1), "device": DeviceSpec()}
    return PatchCommand(**{**base, **kw})


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({}, "nothing to do"),
        ({"specs": tuple(parse_quick(ret=("f=1",)))}, "refusing without -w/--destructive"),
        (
            {"specs": tuple(parse_quick(ret=("f=1",))), "destructive": True, "list_": True},
            "separate runs",
        ),
        ({"list_": True, "persist": True}, "--persist applies to patches"),
        ({"list_": True, "target": TargetSpec(argv=("ls",))}, "need a running process"),
    ],
)
def test_bad_command_combinations(kw, message):
    with pytest.raises(UsageError) as err:
        check(_cmd(**kw))
    assert message in str(err.value)


def test_revert_ids():
    assert parse_revert("all") == "all"
    assert parse_revert("1, #3") == (1, 3)
    assert parse_revert(None) is None
    with pytest.raises(UsageError, match="'x' is not a patch id"):
        parse_revert("1,x")


def test_ledger_round_trip_and_table():
    raw = {
        "id": 2, "kind": "bytes", "pid": 7, "owner": "k", "persist": True, "hook": False,
        "where": "demo+0x10", "address": "0x1010", "original": "b82a000000",
        "patched": "b801000000", "detail": "write b801000000", "source": "cli --bytes x",
        "at": "2026-01-01T00:00:00.000Z",
    }  # fmt: skip
    e = LedgerEntry.from_agent(raw)
    assert e.address == 0x1010 and e.original == bytes.fromhex("b82a000000")
    assert e.to_json()["address"] == "0x1010"
    lines = format_table([e]).splitlines()
    assert lines[0].split() == [
        "ID", "KIND", "WHERE", "ADDRESS", "WHEN", "PERSIST", "ORIGINAL", "PATCHED", "DETAIL",
    ]  # fmt: skip
    assert lines[1].split()[:6] == [
        "2",
        "bytes",
        "demo+0x10",
        "0x1010",
        "2026-01-01T00:00:00.000Z",
        "yes",
    ]
    assert format_table([]) == "no patches"
