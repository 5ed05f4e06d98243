"""profile-N probes: their spellings and rates, and the host's counting of samples
(instr.dtrace.profiling) without a process: fake samples, a fake unwinder."""

from __future__ import annotations

import io
from dataclasses import dataclass

import pytest

from instr.dtrace.aggtext import render_table
from instr.dtrace.errors import Src
from instr.dtrace.profiling import ProfileAggs
from instr.dtrace.run import DConfig, compile_config
from instr.dtrace.runtime import Runtime


def _prog(text: str):  # type: ignore[no-untyped-def]
    prog, _ = compile_config(DConfig((Src("-n", text),), pid=4242))
    return prog


@pytest.mark.parametrize(
    ("probe", "hz"),
    [
        ("profile-99", 99),
        ("profile-997hz", 997),
        ("profile-10ms", 100),
        ("profile-1s", 1),
        ("profile-200us", 5000),
        ("profile:hz:199", 199),
        ("profile:ms:5", 200),
        ("profile:s:1", 1),
    ],
)
def test_rates(probe: str, hz: int) -> None:
    prog = _prog(f"{probe} {{ @ = count(); }}")
    (hc,) = prog.clauses
    assert hc.spec.kind == "profile" and hc.spec.hz == hz
    assert not prog.probes  # nothing is armed in the target for it
    assert prog.aggs[""].func == "count" and prog.aggs[""].ir_names == []


def test_bpftrace_one_liner() -> None:
    prog = _prog('profile:hz:99 /comm == "prog"/ { @[ustack] = count(); @c[comm] = count(); }')
    (hc,) = prog.clauses
    assert hc.spec.hz == 99 and set(prog.aggs) == {"", "c"}


@dataclass
class _Sample:
    tid: int
    ts_ns: int = 0


@dataclass
class _Walk:
    frames: tuple[int, ...]


@dataclass
class _Mod:
    name: str
    base: int


STACKS = {1: (0x1010, 0x2005), 2: (0x1020, 0x2005), 3: (0x3000,)}


def _aggs(text: str) -> tuple[ProfileAggs, Runtime]:
    prog = _prog(text)
    rt = Runtime(prog, io.StringIO(), 4242, "prog", lambda _t: None)
    aggs = ProfileAggs(rt.host_clauses("profile"), rt)
    rt.host_table = aggs.table
    return aggs, rt


def _run(aggs: ProfileAggs, tids: list[int]) -> None:
    addrs = aggs.add([_Sample(t) for t in tids], lambda s: _Walk(STACKS[s.tid]))
    symbols = {0x1010: ("prog", "hot", 0x10), 0x1020: ("prog", "hot", 0x20),
               0x2005: ("prog", "main", 0x5)}  # fmt: skip
    aggs.name_frames(addrs, symbols, lambda a: _Mod("libc.so.6", 0x3000) if a >= 0x3000 else None)


def test_stacks_functions_and_threads_are_counted_on_the_host() -> None:
    aggs, rt = _aggs(
        "profile-100 { @s[ustack()] = count(); @f[ufunc(arg1)] = count(); "
        "@m[umod(arg1)] = count(); @t[tid, execname] = count(); @n = count(); }"
    )
    _run(aggs, [1, 1, 1, 2, 3])
    s = rt.tables("s")
    assert s is not None
    assert {r.keys: r.count for r in s.rows} == {
        (("prog!hot+0x10", "prog!main+0x6"),): 3,  # a caller's frame: its return address
        (("prog!hot+0x20", "prog!main+0x6"),): 1,
        (("libc.so.6",),): 1,  # no symbol, offset 0 in its module
    }
    f, m, t, n = (rt.tables(x) for x in "fmtn")
    assert f is not None and {r.keys: r.count for r in f.rows} == {
        ("prog!hot",): 4,
        ("libc.so.6",): 1,
    }
    assert m is not None and {r.keys: r.count for r in m.rows} == {("prog",): 4, ("libc.so.6",): 1}
    assert t is not None and {r.keys: r.count for r in t.rows} == {
        (1, "prog"): 3,
        (2, "prog"): 1,
        (3, "prog"): 1,
    }
    assert n is not None and [r.count for r in n.rows] == [5]
    # DTrace's layout: frames one a line (module`symbol), then the count; ascending
    assert render_table(s).splitlines()[:3] == [
        "              libc.so.6",
        "                1",
        "              prog`hot+0x20",
    ]
    assert render_table(f).splitlines() == [
        f"  {'libc.so.6':<50}{1:>17}",
        f"  {'prog`hot':<50}{4:>17}",
    ]


def test_one_sampler_at_the_highest_rate_and_predicates() -> None:
    aggs, rt = _aggs(
        "profile-400 { @fast = count(); } profile-100 { @slow = count(); } "
        'profile-400 /tid == 2 && execname == "prog"/ { @two = count(); } '
        "profile-400 /pid != $target/ { @none = count(); }"
    )
    assert aggs.hz == 400
    _run(aggs, [1, 2, 3, 1] * 100)
    counts = {name: rt.tables(name) for name in ("fast", "slow", "two", "none")}
    assert counts["fast"] is not None and counts["fast"].rows[0].count == 400
    assert counts["slow"] is not None and counts["slow"].rows[0].count == 100  # every 4th
    assert counts["two"] is not None and counts["two"].rows[0].count == 100
    assert counts["none"] is None  # nothing counted: not printed
