"""The D front end without a target: parsing, probe descriptions, what runs where,
printf, and the DTrace-style printing of merged aggregation tables."""

from __future__ import annotations

import io

import pytest

from instr.aggregate.model import AggRow, AggSnapshot, AggTable
from instr.dtrace import ast as A
from instr.dtrace.compiler import DProgram, compile_program
from instr.dtrace.errors import Src
from instr.dtrace.parser import parse
from instr.dtrace.printf import parse_format, render
from instr.dtrace.probes import parse_probe
from instr.dtrace.runtime import Runtime
from instr.events import Event

MACROS = {"target": "42", "pid": "42"}


def compile_text(text: str) -> DProgram:
    return compile_program(parse(Src("-n", text)), MACROS, "prog")


def probe(text: str) -> tuple[object, ...]:
    loc = parse(Src("-n", f"{text} {{}}")).clauses[0].loc
    s = parse_probe(loc, text, MACROS, "prog")
    return (s.kind, s.module, s.func, s.name, s.period_ns)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("pid$target::malloc:entry", ("pid", None, "malloc", "entry", 0)),
        ("pid42:libc.so.6:mall*:return", ("pid", "libc.so.6", "mall*", "return", 0)),
        ("pid$target:a.out:main:entry", ("pid", "prog", "main", "entry", 0)),
        ("uprobe:/lib/x86_64-linux-gnu/libc.so.6:free", ("pid", "libc.so.6", "free", "entry", 0)),
        ("uretprobe:./prog:work", ("pid", "prog", "work", "return", 0)),
        ("syscall:::entry", ("syscall", None, "*", "entry", 0)),
        ("syscall::read:return", ("syscall", None, "read", "return", 0)),
        ("tracepoint:syscalls:sys_exit_openat", ("syscall", None, "openat", "return", 0)),
        ("tick-1s", ("tick", None, "", "", 10**9)),
        ("tick-100ms", ("tick", None, "", "", 10**8)),
        ("tick-4", ("tick", None, "", "", 250_000_000)),
        ("interval:ms:20", ("tick", None, "", "", 20_000_000)),
        ("BEGIN", ("begin", None, "", "", 0)),
    ],
)
def test_probe_descriptions(text: str, want: tuple[object, ...]) -> None:
    assert probe(text) == want


def test_a_path_in_a_uprobe_is_not_a_predicate() -> None:
    clause = parse(Src("-n", "uprobe:/usr/lib/libc.so.6:malloc /arg0 > 1/ { }")).clauses[0]
    assert clause.probes[0].text == "uprobe:/usr/lib/libc.so.6:malloc"
    assert isinstance(clause.predicate, A.Binary) and clause.predicate.op == ">"


def test_division_in_a_predicate_needs_parentheses() -> None:
    clause = parse(Src("-n", "BEGIN /(x / 2) == 1/ { }")).clauses[0]
    assert isinstance(clause.predicate, A.Binary) and clause.predicate.op == "=="


def test_target_predicates_and_host_predicates() -> None:
    prog = compile_text(
        'pid$target::f:entry /arg0 > 10 && copyinstr(arg1) == "x" || tid == 7/ { @ = count(); }'
        " pid$target::g:entry /arg0 % 2/ { trace(arg0); }"
        " syscall::read:entry /pid == $target/ { @r = count(); }"
    )
    p1, p2, p3 = prog.table.probes.values()
    assert p1.where is not None
    assert p1.where.source == '(((a0 > 10) and (s1 == "x")) or (tid == 7))'
    assert [c.name for c in p1.entry or ()] == ["a0", "s1"]
    assert p2.where is None and prog.by_probe[2].predicate is not None  # % runs on the host
    assert p2.emit and not p1.emit
    assert p3.where is not None and p3.where.source == "True"


def test_paired_self_becomes_entry_captures_and_duration() -> None:
    prog = compile_text(
        "pid$target::f:entry { self->ts = timestamp; self->n = arg0; }"
        " pid$target::f:return /self->ts/ { @[self->n] = quantize(timestamp - self->ts);"
        " self->ts = 0; }"
    )
    (p,) = prog.table.probes.values()  # the entry clause had nothing else: it is gone
    assert [c.name for c in p.entry or ()] == ["e0"]
    assert [(c.name, c.src) for c in p.exit or ()] == [("dur", "duration")]
    (agg,) = p.aggregations
    assert (agg.func, agg.arg, [k.capture for k in agg.keys]) == ("quantize", "dur", ["e0"])
    assert prog.by_probe[p.id].paired


def test_self_read_by_another_function_is_not_paired() -> None:
    prog = compile_text(
        "pid$target::f:entry { self->x = arg0; } pid$target::g:entry { trace(self->x); }"
    )
    assert len(prog.table) == 2
    assert not any(c.paired for c in prog.clauses)


@pytest.mark.parametrize(
    ("fmt", "values", "want"),
    [
        ("%d|%i|%u", [-1, 7, -1], "-1|7|18446744073709551615"),
        ("%x %X %#x %o %#o", [255, 255, 255, 8, 8], "ff FF 0xff 10 010"),
        ("[%5d][%-5d][%05d][%+d][% d]", [42, 42, 42, 42, 42], "[   42][42   ][00042][+42][ 42]"),
        ("[%10s][%-6s][%.2s]", ["abc", "abc", "abc"], "[       abc][abc   ][ab]"),
        ("%c%c %p %lld %llu %%", [104, 105, 4096, -5, 5], "hi 0x1000 -5 5 %"),
        ("%.3d", [7], "007"),
    ],
)
def test_printf(fmt: str, values: list[int | str], want: str) -> None:
    loc = parse(Src("-n", "BEGIN {}")).clauses[0].loc
    assert render(parse_format(fmt, loc), values) == want


def _table(name: str, func: str, rows: list[AggRow]) -> AggTable:
    return AggTable(name, "d/c1", func, "a0", ("probefunc",), tuple(rows), 0, 4096)  # type: ignore[arg-type]


def test_one_aggregation_over_several_probes_is_merged() -> None:
    prog = compile_text(
        "pid$target::f:entry { @n[probefunc] = sum(arg0); }"
        " pid$target::g:entry { @n[probefunc] = sum(arg0); }"
    )
    out = io.StringIO()
    rt = Runtime(prog, out, 42, "prog", lambda s: None)
    rt.on_snapshot(
        AggSnapshot(
            0,
            0,
            True,
            (
                _table("d/a1", "sum", [AggRow(("f",), 2, 30), AggRow(("h",), 1, 5)]),
                _table("d/a2", "sum", [AggRow(("g",), 1, 7), AggRow(("h",), 1, 6)]),
            ),
        )
    )
    rt.print_all()
    assert out.getvalue() == "\n" + "".join(
        f"  {k:<50}{v:>17}\n" for k, v in [("g", 7), ("h", 11), ("f", 30)]
    )


def test_a_one_liner_is_the_probe_set_a_user_would_write() -> None:
    """Not a second engine: the agent gets the same plan (and so the same tier and cost)."""
    from instr.probes import load_text

    d = compile_text(
        "pid$target::malloc:entry { @[probefunc] = count(); }"
        " pid$target::read:entry /arg0 == 0/ { @b = sum(arg2); }"
    )
    yaml_set = load_text(
        """
version: 1
sets:
  s:
    probes:
      - function: malloc
        aggregate:
          calls: count() by probefunc
      - function: read
        capture: {fd: arg0:i64, n: arg2:i64}
        where: "fd == 0"
        aggregate:
          bytes: sum(n)
"""
    ).compile(["s"])
    assert d.table.plan() == yaml_set.plan()
    assert [p.agg_tier for p in d.table] == [p.agg_tier for p in yaml_set] == ["fast", "fast"]


def test_lexical_odds_and_ends() -> None:
    prog = parse(
        Src(
            "-s",
            "#!/usr/sbin/dtrace -s\n"
            "/* a comment */ BEGIN // and another\n"
            "{ x = 0x10 + 010 + 'A' + 7u; y = \"tab\\there\"; }\n",
        )
    )
    (clause,) = prog.clauses
    x, y = clause.body
    assert isinstance(x, A.Assign) and isinstance(y, A.Assign)
    assert isinstance(y.value, A.Str) and y.value.value == "tab\there"
    values = []
    e = x.value
    while isinstance(e, A.Binary):
        assert isinstance(e.right, A.Int)
        values.append(e.right.value)
        e = e.left
    assert isinstance(e, A.Int)
    assert [e.value, *reversed(values)] == [16, 8, 65, 7]


def _event(probe_id: int, tid: int, args: dict[str, object], phase: str = "entry") -> Event:
    return Event(1, probe_id, "d/c", phase, tid, 1000, 0, dict(args))


def test_host_semantics_from_events() -> None:
    """What runs on the host, fed events by hand: C's 64-bit arithmetic, self-> per
    thread, this-> per firing, and a division by zero that skips one firing only."""
    text = (
        "pid$target::f:entry { self->n = self->n + arg0; this->q = arg0 / arg1; "
        'printf("%d %d %d %d|", self->n, this->q, -7 / 2, -7 % 2); }'
        ' pid$target::g:entry { printf("%d %x|", arg0 * 4, 1 << 63); }'
    )
    prog = compile_program(parse(Src("-n", text)), MACROS, "prog", quiet=True)
    out, warnings = io.StringIO(), []
    rt = Runtime(prog, out, 42, "prog", warnings.append)
    rt.on_events(
        [
            _event(1, 100, {"a0": 10, "a1": 3}),
            _event(1, 200, {"a0": 5, "a1": 0}),  # division by zero: this firing stops
            _event(1, 100, {"a0": 1, "a1": 1}),
            _event(2, 100, {"a0": 2**62}),  # wraps like int64_t
        ]
    )
    assert out.getvalue() == "10 3 -3 -1|11 1 -3 -1|0 8000000000000000|"
    assert len(warnings) == 1 and "division by zero" in warnings[0]
