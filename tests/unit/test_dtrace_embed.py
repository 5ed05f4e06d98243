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
        # once compiled to no probe at all, and instr run sampled nothing
        (
            "profile-99 { @[ustack()] = count(); }",
            "p.yaml:6:7: profile-99 clauses count on the host's sampler",
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
