"""The compiler end to end: YAML -> ProbeTable -> plan JSON; set selection; quick mode."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from instr.errors import ProbeSetError, UsageError
from instr.probes import check_file, compile_quick, compile_sets, load_file, load_text
from instr.probes.ir import AddressPoint, FunctionPoint, OffsetPoint, PlanOptions, SourceLoc
from instr.protocol import PROTOCOL_VERSION

REPO = Path(__file__).resolve().parents[2]

EXAMPLE = """
version: 1
sets:
  calls:
    description: demo calls
    probes:
      - function: "demo!compute"
        capture:
          a: arg0:int
          result: retval:int
          took: duration
        where: "a > 2 and took > 1000"
      - function: "demo!greet"
        capture: {who: arg0:cstr(64)}
        on: [entry, exit]
        tier: js
      - name: at-offset
        offset: "demo+0x1234"
  mem:
    probes:
      - function: "*!malloc"
        exclude: ["libc.so*!__*", "x"]
        capture: {size: arg0:size_t, caller: caller, stack: backtrace(4)}
        where: "size >= 4096"
        max_sites: 10
      - address: 0x401000
        on: exit
      - function: "libc.so*!malloc"
"""


def load(text: str = EXAMPLE):  # type: ignore[no-untyped-def]
    return load_text(textwrap.dedent(text).lstrip("\n"), "ex.yaml")


def test_plan_of_the_example() -> None:
    table = compile_sets(load(), ["calls", "mem"], PlanOptions(flush_interval_ms=20))
    plan = table.plan()
    assert json.loads(json.dumps(plan)) == plan  # JSON-clean
    assert plan == {
        "protocol": PROTOCOL_VERSION,
        "fast_c": None,
        "options": {"flush_interval_ms": 20, "buffer_bytes": 8 << 20, "on_full": "block"},
        "probes": [
            {
                "id": 1,
                "emit": True,
                "aggs": [],
                "agg_tier": None,
                "point": {"kind": "function", "module": "demo", "symbol": "compute", "exclude": []},
                "entry": [{"src": "arg", "type": "i32", "index": 0}],
                "exit": [{"src": "retval", "type": "i32"}, {"src": "duration"}],
                "where": {
                    "phase": "exit",
                    "expr": {
                        "op": "and",
                        "args": [
                            {
                                "op": ">",
                                "left": {"op": "cap", "phase": "entry", "index": 0},
                                "right": {"op": "const", "value": 2},
                            },
                            {
                                "op": ">",
                                "left": {"op": "cap", "phase": "exit", "index": 1},
                                "right": {"op": "const", "value": 1000},
                            },
                        ],
                    },
                    # at exit: a (entry, i32, from the held entry record) > 2 and took > 1000
                    "native": {
                        "code": [
                            [2, 0, 0x103, "0"],
                            [1, 0, 0, "2"],
                            [14, 0, 0, "0"],
                            [2, 1, 0, "0"],
                            [1, 0, 0, "1000"],
                            [14, 1, 0, "0"],
                            [41, 0, 0, "0"],
                        ],
                        "strings": [],
                    },
                },
                "actions": [{"kind": "emit"}],
                "tier": "auto",
                "max_sites": 5000,
            },
            {
                "id": 2,
                "emit": True,
                "aggs": [],
                "agg_tier": None,
                "point": {"kind": "function", "module": "demo", "symbol": "greet", "exclude": []},
                "entry": [{"src": "arg", "type": "cstr", "index": 0, "max": 64}],
                "exit": [],
                "where": None,
                "actions": [{"kind": "emit"}],
                "tier": "js",
                "max_sites": 5000,
            },
            {
                "id": 3,
                "emit": True,
                "aggs": [],
                "agg_tier": None,
                "point": {"kind": "offset", "module": "demo", "offset": 0x1234},
                "entry": [],
                "exit": None,
                "where": None,
                "actions": [{"kind": "emit"}],
                "tier": "auto",
                "max_sites": 5000,
            },
            {
                "id": 4,
                "emit": True,
                "aggs": [],
                "agg_tier": None,
                "point": {
                    "kind": "function",
                    "module": None,
                    "symbol": "malloc",
                    "exclude": [
                        {"module": "libc.so*", "symbol": "__*"},
                        {"module": None, "symbol": "x"},
                    ],
                },
                "entry": [
                    {"src": "arg", "type": "u64", "index": 0},
                    {"src": "caller"},
                    {"src": "backtrace", "depth": 4},
                ],
                "exit": None,
                "where": {
                    "phase": "entry",
                    "expr": {
                        "op": ">=",
                        "left": {"op": "cap", "phase": "entry", "index": 0},
                        "right": {"op": "const", "value": 4096},
                    },
                    # push size (u64, no conversion), push 4096, >= (left unsigned)
                    "native": {"code": [[2, 0, 0, "0"], [1, 0, 0, "4096"], [15, 1, 0, "0"]], "strings": []},
                },
                "actions": [{"kind": "emit"}],
                "tier": "auto",
                "max_sites": 10,
            },
            {
                "id": 5,
                "emit": True,
                "aggs": [],
                "agg_tier": None,
                "point": {"kind": "address", "address": "0x401000"},
                "entry": None,
                "exit": [],
                "where": None,
                "actions": [{"kind": "emit"}],
                "tier": "auto",
                "max_sites": 5000,
            },
            {
                "id": 6,
                "emit": True,
                "aggs": [],
                "agg_tier": None,
                "point": {"kind": "function", "module": "libc.so*", "symbol": "malloc", "exclude": []},
                "entry": [],
                "exit": None,
                "where": None,
                "actions": [{"kind": "emit"}],
                "tier": "auto",
                "max_sites": 5000,
            },
        ],
    }  # fmt: skip


def test_host_side_table() -> None:
    table = compile_sets(load(), ["mem", "calls"])
    assert [(p.id, p.name) for p in table] == [
        (1, "mem/malloc"),
        (2, "mem/0x401000"),
        (3, "mem/malloc-2"),
        (4, "calls/compute"),
        (5, "calls/greet"),
        (6, "calls/at-offset"),
    ]
    first = table.probes[1]
    assert first.loc == SourceLoc("ex.yaml", 20, 9)
    assert [c.name for c in first.captures("entry")] == ["size", "caller", "stack"]
    assert isinstance(first.point, FunctionPoint)
    assert isinstance(table.probes[2].point, AddressPoint)
    assert isinstance(table.probes[6].point, OffsetPoint)
    assert table.probes[4].where is not None
    assert table.probes[4].where.source == "a > 2 and took > 1000"
    assert table.options == PlanOptions()


def test_sets_info() -> None:
    psf = load()
    assert list(psf.sets) == ["calls", "mem"]
    assert psf.sets["calls"].description == "demo calls"
    assert psf.sets["mem"].description is None
    assert psf.sets["calls"].loc == SourceLoc("ex.yaml", 3, 3)
    assert all(p.id == 0 for s in psf.sets.values() for p in s.probes)
    assert len(psf.compile(["calls", "calls"])) == 3  # duplicates selected once


def test_set_selection_errors() -> None:
    psf = load()
    with pytest.raises(UsageError) as info:
        compile_sets(psf, ["call"])
    assert str(info.value) == (
        "unknown probe set 'call' in ex.yaml\n"
        "  hint: did you mean 'calls'? available sets: calls, mem"
    )
    assert info.value.exit_code == 2
    with pytest.raises(UsageError) as info:
        compile_sets(psf, ["x", "y", "mem"])
    assert str(info.value) == (
        "unknown probe sets 'x', 'y' in ex.yaml\n  hint: available sets: calls, mem"
    )
    with pytest.raises(UsageError, match=r"no probe set selected from ex\.yaml"):
        compile_sets(psf, [])


def test_default_phases() -> None:
    psf = load(
        """
        version: 1
        sets:
          s:
            probes:
              - {function: a}
              - {function: b, capture: {n: arg0@exit}}
              - {function: c, capture: {r: retval}, on: exit}
              - {function: d, on: [exit, entry]}
        """
    )
    hooks = [(p.entry is not None, p.exit is not None) for p in psf.sets["s"].probes]
    assert hooks == [(True, False), (True, True), (False, True), (True, True)]


def test_load_file_and_check_file(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(EXAMPLE))
    assert load_file(path).path == str(path)
    assert check_file(path) == f"{path}: ok (2 sets, 6 probes)"
    path.write_text("version: 1\nsets:\n  s:\n    probes:\n      - function: f\n        tier: x\n")
    with pytest.raises(ProbeSetError) as info:
        check_file(path)
    assert str(info.value) == (
        f"{path}:6:15: error: unknown tier 'x'\n  hint: use 'auto', 'native' or 'js'"
    )
    with pytest.raises(UsageError, match=r"cannot read probe-set file '.*missing.yaml'"):
        load_file(tmp_path / "missing.yaml")
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(UsageError, match="is not UTF-8 text"):
        load_file(path)


def test_repo_probes_yaml_compiles() -> None:
    psf = load_file(REPO / "probes.yaml")
    assert {"calls", "malloc", "files"} <= set(psf.sets)
    assert any(p.where is not None for s in psf.sets.values() for p in s.probes)
    table = compile_sets(psf, list(psf.sets))
    assert [p.id for p in table] == list(range(1, len(table) + 1))
    names = [p.name for p in table]
    assert len(names) == len(set(names))
    json.dumps(table.plan())


# ---------------------------------------------------------------- quick mode


def test_quick_mode() -> None:
    table = compile_quick(["malloc", "libc.so*!free", "malloc"], ["*!__*"])
    assert table.plan()["probes"] == [
        {
            "id": 1,
            "emit": True,
            "aggs": [],
            "agg_tier": None,
            "point": {
                "kind": "function",
                "module": None,
                "symbol": "malloc",
                "exclude": [{"module": None, "symbol": "__*"}],
            },
            "entry": [],
            "exit": [],
            "where": None,
            "actions": [{"kind": "emit"}],
            "tier": "auto",
            "max_sites": 5000,
        },
        {
            "id": 2,
            "emit": True,
            "aggs": [],
            "agg_tier": None,
            "point": {
                "kind": "function",
                "module": "libc.so*",
                "symbol": "free",
                "exclude": [{"module": None, "symbol": "__*"}],
            },
            "entry": [],
            "exit": [],
            "where": None,
            "actions": [{"kind": "emit"}],
            "tier": "auto",
            "max_sites": 5000,
        },
    ]
    assert [p.name for p in table] == ["cli/malloc", "cli/libc.so*!free"]


def test_quick_mode_captures() -> None:
    table = compile_quick(
        ["malloc", "libc.so*!open"],
        [],
        PlanOptions(on_full="drop"),
        captures=["malloc:size=arg0:u64", "open: path=arg0:cstr, fd=retval:int"],
    )
    malloc, open_ = table.probes[1], table.probes[2]
    assert [c.to_plan() for c in malloc.captures("entry")] == [
        {"src": "arg", "type": "u64", "index": 0}
    ]
    assert malloc.exit == ()
    assert [c.name for c in open_.captures("entry")] == ["path"]
    assert [c.name for c in open_.captures("exit")] == ["fd"]
    assert table.options.on_full == "drop"


@pytest.mark.parametrize(
    ("includes", "excludes", "captures", "message"),
    [
        ([], [], [], "nothing to trace\n  hint: give at least one -i MODULE!SYMBOL or -i SYMBOL"),
        (["libc!"], [], [], "bad -i pattern: 'libc!' has no symbol; write MODULE!SYMBOL or SYMBOL"),
        (["f"], ["a!b!c"], [], "bad -x pattern: 'a!b!c' has more than one '!'; write MODULE!SYMBOL"),
        (["malloc"], [], ["mallco:x=arg0"], "-a 'mallco:x=arg0' names 'mallco', which is not an -i include\n  hint: did you mean 'malloc'?"),
        (["malloc"], [], ["malloc"], "bad -a 'malloc'\n  hint: write FUNCTION:NAME=SPEC, e.g. malloc:size=arg0:u64"),
        (["malloc"], [], ["malloc:size"], "bad -a 'malloc:size': 'size' has no '='\n  hint: write NAME=SPEC"),
        (["malloc"], [], ["malloc:size=arg0:u63"], "bad -a 'malloc:size=arg0:u63': unknown capture type 'u63'\n  hint: did you mean 'u64'?"),
        (["malloc"], [], ["malloc:tid=arg0"], "bad -a 'malloc:tid=arg0': 'tid' is reserved and cannot name a capture"),
        (["malloc"], [], ["malloc:a=arg0,a=arg1"], "bad -a 'malloc:a=arg0,a=arg1': capture 'a' is given twice"),
    ],
)  # fmt: skip
def test_quick_mode_errors(
    includes: list[str], excludes: list[str], captures: list[str], message: str
) -> None:
    with pytest.raises(UsageError) as info:
        compile_quick(includes, excludes, captures=captures)
    assert str(info.value) == message
