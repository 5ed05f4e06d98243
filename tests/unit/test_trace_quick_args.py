"""instr trace -a N / -a KEY:NAME=SPEC / --where, compiled to probes (no Frida)."""

from __future__ import annotations

import pytest

from instr.errors import UsageError
from instr.probes.quick import compile_quick


def test_raw_args_and_return_value_on_every_include() -> None:
    table = compile_quick(["malloc", "libc.so*!free"], [], captures=("2",))
    for probe in table.probes.values():
        assert probe.entry is not None and probe.exit is not None
        assert [(c.name, c.src, c.index, c.type) for c in probe.entry] == [
            ("arg0", "arg", 0, "ptr"),
            ("arg1", "arg", 1, "ptr"),
        ]
        assert [(c.name, c.src, c.type) for c in probe.exit] == [("ret", "retval", "ptr")]
        assert probe.where is None


def test_named_captures_beside_raw_ones() -> None:
    table = compile_quick(["malloc", "free"], [], captures=("1", "malloc:size=arg0:u64"))
    malloc, free = table.probes.values()
    assert malloc.entry is not None and [c.name for c in malloc.entry] == ["arg0", "size"]
    assert free.entry is not None and [c.name for c in free.entry] == ["arg0"]


def test_where_over_the_captures_runs_at_entry_or_exit() -> None:
    table = compile_quick(["malloc"], [], captures=("1",), where="arg0 > 100")
    (probe,) = table.probes.values()
    assert probe.where is not None
    assert (probe.where.source, probe.where.phase) == ("arg0 > 100", "entry")
    table = compile_quick(["malloc"], [], captures=("1",), where="ret != 0 and arg0 > 1")
    (probe,) = table.probes.values()
    assert probe.where is not None and probe.where.phase == "exit"


@pytest.mark.parametrize(
    ("captures", "where", "message"),
    [
        ((), "size > 1", "--where (for cli/malloc), column 1: unknown name 'size'"),
        (("2",), "arg0 = 1", "--where (for cli/malloc), column 6: invalid predicate"),
        (("9",), None, "-a 9: at most 8 arguments"),
    ],
)
def test_bad_input_is_a_usage_error(
    captures: tuple[str, ...], where: str | None, message: str
) -> None:
    with pytest.raises(UsageError) as info:
        compile_quick(["malloc"], [], captures=captures, where=where)
    assert str(info.value).startswith(message), str(info.value)
