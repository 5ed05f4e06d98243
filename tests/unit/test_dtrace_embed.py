"""Probe sets written in D (``dtrace:``, ``dtrace_file:``): the probes they compile to,
and errors at the probe-set file's line and column (or the .d file's)."""

from __future__ import annotations

from pathlib import Path

import pytest

from instr.errors import ProbeSetError
from instr.probes import load_file, load_text

SET = """\
version: 1
sets:
  d:
    description: written in D
    dtrace: |
      pid$target::f:entry /arg0 > 1/ { @calls = count(); @n[arg0] = sum(arg1); }
      pid$target::g:return { @n[retval] = sum(retval); }
      pid$target::h:entry { }
"""


def errors(text: str, file: str = "p.yaml") -> list[str]:
    with pytest.raises(ProbeSetError) as e:
        load_text(text, file).compile(["d"])
    return [f"{d.file}:{d.line}:{d.col}: {d.message}" for d in e.value.diagnostics]


def test_the_sets_probes_are_the_programs() -> None:
    table = load_text(SET).compile(["d"])
    probes = list(table.probes.values())
    assert [(p.name, p.point.to_plan()["symbol"], p.emit) for p in probes] == [
        ("d/c1", "f", False),
        ("d/c2", "g", False),
        ("d/c3", "h", True),  # no action: an event per call, DTrace's default
    ]
    assert [(a.name, a.func) for p in probes for a in p.aggregations] == [
        ("calls", "count"),
        ("n.1", "sum"),  # one D aggregation updated by two clauses: two tables
        ("n.2", "sum"),
    ]
    assert probes[0].where is not None and probes[0].where.source == "(a0 > 1)"
    assert probes[0].loc is not None and (probes[0].loc.line, probes[0].loc.col) == (6, 7)


@pytest.mark.parametrize(
    ("program", "want"),
    [
        ("pid$target::f:entry { @c = summ(arg0); }", "p.yaml:6:34: unknown aggregating function"),
        (
            'pid$target::f:entry\n  { printf("%d", arg0); }',
            "p.yaml:7:11: printf() runs on the host",
        ),
        ("BEGIN { }", "p.yaml:6:7: BEGIN clauses run on the host"),
        (
            "profile-99 /tid == 1/ { @[ustack()] = count(); }",
            "p.yaml:6:19: a profile-99 predicate runs on the host",
        ),
        ("pid$target::f:entry /x == 1/ { }", "p.yaml:6:28: this predicate runs on the host"),
    ],
)
def test_errors_point_into_the_block(program: str, want: str) -> None:
    text = (
        SET.split("    dtrace: |")[0]
        + "    dtrace: |\n"
        + "".join(f"      {line}\n" for line in program.splitlines())
    )
    (got,) = errors(text)
    assert got.startswith(want), got


def test_a_d_file_beside_the_set(tmp_path: Path) -> None:
    (tmp_path / "prog.d").write_text("pid$target::f:entry\n{\n  @[arg0] = count();\n}\n")
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\nsets:\n  d:\n    dtrace_file: prog.d\n")
    (probe,) = load_file(path).compile(["d"]).probes.values()
    assert [a.name for a in probe.aggregations] == ["agg"]
    (tmp_path / "prog.d").write_text("pid$target::f:entry\n{\n  @[arg0] = counts();\n}\n")
    with pytest.raises(ProbeSetError) as e:
        load_file(path)
    (d,) = e.value.diagnostics
    assert (d.file, d.line, d.col) == (str(tmp_path / "prog.d"), 3, 13)
    path.write_text("version: 1\nsets:\n  d:\n    dtrace_file: nothere.d\n")
    with pytest.raises(ProbeSetError) as e:
        load_file(path)
    assert str(e.value).startswith(f"{path}:4:18: error: cannot read D program 'nothere.d'")


def test_a_set_has_probes_or_a_program() -> None:
    text = "version: 1\nsets:\n  d:\n    dtrace: 'BEGIN { }'\n    probes: []\n"
    assert errors(text) == ["p.yaml:3:3: set 'd' has both 'probes' and a D program"]


def test_profile_clauses_are_the_sets_profile_probes() -> None:
    """Once compiled to no probe at all (instr run sampled nothing): now the
    set's ``profile: HZ`` probes, their aggregations keeping the D names."""
    from instr.probes.ir import AggKey, ProfilePoint

    text = SET.replace("pid$target::h:entry { }", "profile-99 { @[ustack()] = count(); @calls = count(); @t[tid] = count(); }\n"
                       "      profile:hz:99 { @f[ufunc(arg1), umod(arg1)] = count(); @[ustack(3)] = count(); }")  # fmt: skip
    table = load_text(text, "p.yaml").compile(["d"])
    got = [
        (p.name, p.point, p.loc, [(a.name, a.keys, a.source) for a in p.aggregations])
        for p in table.profile_probes()
    ]
    stack, tid = AggKey("backtrace", "backtrace", depth=1024), AggKey("tid", "tid")
    func, mod = AggKey("probefunc", "probefunc"), AggKey("module", "module")
    top = AggKey("backtrace", "backtrace", depth=3)
    assert [(n, pt, (loc.line, loc.col), a) for n, pt, loc, a in got] == [  # type: ignore[union-attr]
        ("d/profile-99", ProfilePoint(99), (8, 7), [
            ("agg", (stack,), "count() by backtrace(1024)"),
            ("calls.2", (), "count()"),  # the set has a table 'calls' already
            ("t", (tid,), "count() by tid"),
        ]),
        ("d/profile-99-2", ProfilePoint(99), (9, 7), [
            ("f", (func, mod), "count() by probefunc, module"),
            ("agg.2", (top,), "count() by backtrace(3)"),
        ]),
    ]  # fmt: skip
    assert [p.name for p in table if not p.is_profile] == ["d/c1", "d/c2"]
