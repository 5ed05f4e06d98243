"""The YAML loader: located nodes, YAML 1.2 scalars, parser errors as diagnostics."""

from __future__ import annotations

import pytest

from instr.probes.diag import Diagnostics
from instr.probes.loader import YMap, YScalar, YSeq, parse_yaml, to_data


def parse(text: str) -> tuple[object, list[str]]:
    diags = Diagnostics()
    node = parse_yaml(text, "p.yaml", diags)
    return node, [str(d) for d in diags.items]


def scalar(node: object, *path: str) -> YScalar:
    for key in path:
        assert isinstance(node, YMap)
        node = node.get(key)
    assert isinstance(node, YScalar)
    return node


def test_marks_are_one_based() -> None:
    node, errors = parse("version: 1\nsets:\n  calls:\n    description: hi\n")
    assert errors == []
    assert isinstance(node, YMap)
    assert str(node.loc) == "p.yaml:1:1"
    assert str(node.entries["sets"].key_loc) == "p.yaml:2:1"
    assert str(scalar(node, "sets", "calls", "description").loc) == "p.yaml:4:18"


def test_yaml_1_2_scalars() -> None:
    node, errors = parse(
        "on: [entry, exit]\nyes_: yes\nt: true\nh: 0x10\no: 0o17\nn: ~\ns: '12'\nx: !!str 12\nf: 1.5\n"
    )
    assert errors == []
    assert to_data(node) == {  # type: ignore[arg-type]
        "on": ["entry", "exit"],
        "yes_": "yes",
        "t": True,
        "h": 16,
        "o": 15,
        "n": None,
        "s": "12",
        "x": "12",
        "f": 1.5,
    }


def test_yaml_1_2_infinity_and_nan() -> None:
    # found by tests/unit/test_fuzz_parsers.py: float(".nan") raised ValueError
    node, errors = parse("a: .nan\nb: -.Inf\nc: +.INF\nd: .NaN\ne: .5\n")
    assert errors == []
    data = to_data(node)  # type: ignore[arg-type]
    assert data["a"] != data["a"] and data["d"] != data["d"]  # NaN
    assert (data["b"], data["c"], data["e"]) == (float("-inf"), float("inf"), 0.5)


def test_tag_and_anchor_are_skipped_in_locations() -> None:
    node, errors = parse("a: &x !!str hello\nb: *x\n")
    assert errors == []
    assert str(scalar(node, "a").loc) == "p.yaml:1:13"
    assert scalar(node, "b").value == "hello"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "a: [1, 2\nb: 3\n",
            "p.yaml:2:2: error: invalid YAML: expected ',' or ']', but got ':'\n"
            "  hint: while parsing a flow sequence that starts at line 1, column 4",
        ),
        ("a: b: c\n", "p.yaml:1:5: error: invalid YAML: mapping values are not allowed here"),
        (
            'a: "abc\n',
            "p.yaml:2:1: error: invalid YAML: found unexpected end of stream\n"
            "  hint: while scanning a quoted scalar that starts at line 1, column 4",
        ),
        (
            "x: 1\n---\ny: 2\n",
            "p.yaml:2:1: error: invalid YAML: but found another document\n"
            "  hint: expected a single document in the stream that starts at line 1, column 1",
        ),
        ("a: \x07\n", "p.yaml:1:4: error: invalid YAML: special characters are not allowed"),
        ("", "p.yaml:1:1: error: empty probe-set file\n  hint: start with 'version: 1'"),
        (
            "# only a comment\n",
            "p.yaml:1:1: error: empty probe-set file\n  hint: start with 'version: 1'",
        ),
    ],
)
def test_malformed_yaml(text: str, expected: str) -> None:
    node, errors = parse(text)
    assert node is None
    assert errors == [expected]


def test_duplicate_keys_and_custom_tags() -> None:
    _, errors = parse("a: 1\nb: !env X\na: 2\n")
    assert errors == [
        "p.yaml:2:4: error: unsupported YAML tag '!env'\n"
        "  hint: quote values that start with '!', e.g. \"!foo\"",
        "p.yaml:3:1: error: duplicate key 'a' (first defined at line 1)",
    ]


def test_unquoted_globs() -> None:
    _, errors = parse("f: *malloc\n")
    assert errors == [
        "p.yaml:1:4: error: invalid YAML: found undefined alias 'malloc'\n"
        "  hint: quote values that start with '*', e.g. \"*!malloc\""
    ]
    node, errors = parse("f: !malloc\n")
    assert len(errors) == 1
    assert scalar(node, "f").value == "!malloc"


def test_non_string_keys() -> None:
    node, errors = parse("? [a]\n: 1\n")
    assert isinstance(node, YMap) and not node.entries
    assert errors == ["p.yaml:1:3: error: mapping keys must be plain strings"]


@pytest.mark.parametrize(
    ("text", "offset", "where"),
    [
        ("w: size > 10\n", 7, "1:11"),  # plain
        ('w: "size > 10"\n', 7, "1:12"),  # double-quoted
        ("w: 'size > 10'\n", 7, "1:12"),  # single-quoted
        ('w: "a \\" b"\n', 4, "1:10"),  # an escape before the offset
        ("w: |\n  size > 1 and\n  path\n", 13, "3:3"),  # literal block
        ("w: >-\n  size > 1 and\n  path\n", 13, "3:3"),  # folded block
        ("w: size > 1 and\n   path\n", 13, "2:4"),  # plain, folded over two lines
        ("w: x\n", 1, "1:5"),  # one past the end
    ],
)
def test_scalar_positions(text: str, offset: int, where: str) -> None:
    node, errors = parse(text)
    assert errors == []
    s = scalar(node, "w")
    loc = s.pos(offset)
    assert f"{loc.line}:{loc.col}" == where


def test_sequences_keep_locations() -> None:
    node, _ = parse("a:\n  - x\n  - {b: 1}\n")
    assert isinstance(node, YMap)
    seq = node.get("a")
    assert isinstance(seq, YSeq)
    assert [str(i.loc) for i in seq.items] == ["p.yaml:2:5", "p.yaml:3:5"]
