"""Hostile probe files: every limit of instr/probes/limits.py breaks with a
located diagnostic and exit 2, never a hang, a traceback or Python's own
RecursionError/ValueError. The command-line cases also bound time and memory."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from instr.errors import ProbeSetError
from instr.probes import limits, load_text
from instr.probes.predicate import CapInfo, compile_predicate

HEAD = "version: 1\nsets:\n  s:\n    probes:\n      - function: 'libc.so*!malloc'\n"

# Runs `instr ARGS` in a fresh interpreter that reports its one child's peak RSS.
_MEASURED = (
    "import resource, subprocess, sys\n"
    "r = subprocess.run([sys.executable, '-m', 'instr', *sys.argv[1:]])\n"
    "print('maxrss_kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(r.returncode)\n"
)


def errors(text: str) -> list[str]:
    with pytest.raises(ProbeSetError) as info:
        load_text(text, "p.yaml")
    assert info.value.exit_code == 2
    return [str(d) for d in info.value.diagnostics]


def instr_check(path: Path | str, *command: str) -> tuple[int, str, int]:
    """(exit status, stderr without the RSS line, peak RSS in KiB) of `instr check
    PATH`, or of `instr COMMAND... PATH`."""
    r = subprocess.run(
        [sys.executable, "-c", _MEASURED, *(command or ("check",)), str(path)],
        capture_output=True,
        text=True,
        timeout=120,  # a bound, generous for a loaded 2-core VM; takes ~1 s
    )
    err, _, rss = r.stderr.rpartition("maxrss_kb ")
    assert "Traceback" not in err
    return r.returncode, err, int(rss)


def bomb(levels: int = 9) -> str:
    """Billion laughs: level n is a list of 9 aliases of level n-1."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


EXPANDS = "aliases expand the file to more than 50000 nodes"
EXPANDS_HINT = "\n  hint: an alias counts as every node it repeats, nested aliases expanded"


def test_billion_laughs_under_an_unused_key(tmp_path: Path) -> None:
    text = "version: 1\nunused:\n" + textwrap.indent(bomb(), "  ") + HEAD[len("version: 1\n") :]
    # 8,309 nodes up to a4's list, each alias of a3 adds 7,381: the 6th crosses 50,000
    assert errors(text) == [f"p.yaml:7:32: error: {EXPANDS}{EXPANDS_HINT}"]
    f = tmp_path / "bomb.yaml"
    f.write_text(text)
    code, err, rss = instr_check(f)
    assert (code, err) == (2, f"{f}:7:32: error: {EXPANDS}{EXPANDS_HINT}\n")
    assert rss < 1 << 20  # KiB: under 1 GB


def test_aliases_within_the_limits_still_work() -> None:
    text = (
        "version: 1\nsets:\n  s:\n    probes:\n"
        "      - function: 'libc.so*!malloc'\n"
        "        capture: &caps {size: arg0:u64}\n"
        "      - function: 'libc.so*!calloc'\n"
        "        capture: *caps\n"
    )
    probes = load_text(text, "p.yaml").sets["s"].probes
    assert [[c.name for c in p.captures("entry")] for p in probes] == [["size"], ["size"]]


def test_alias_count_and_self_reference() -> None:
    many = "version: 1\nv: &v 1\nl: [" + ", ".join(["*v"] * 1001) + "]\n"
    assert errors(many) == [
        "p.yaml:3:4005: error: more than 1000 aliases in one file"
        "\n  hint: write the values out, or share fewer of them"
    ]
    assert errors("version: 1\nx: &a [1, *a]\n") == [
        "p.yaml:2:11: error: alias '*a' refers to a node that contains it"
        "\n  hint: an alias can only repeat a node that is complete"
    ]


def test_node_count() -> None:
    text = "version: 1\nx: [" + "1," * 60_000 + "1]\n"
    # the root mapping, version, 1, x, the list: its 49,996th item is node 50,001
    assert errors(text) == [
        f"p.yaml:2:{5 + 2 * 49_995}: error: more than 50000 nodes in one file"
        "\n  hint: keys, values, lists and mappings count; probe sets are far smaller"
    ]


DEEP = (
    "error: mappings and lists nest deeper than 64 levels"
    "\n  hint: a probe file needs a few levels; this looks generated or corrupt"
)


def test_nesting(tmp_path: Path) -> None:
    # the root mapping is level 1: the 64th '[' (column 4 + 63) is one level too deep
    assert errors("version: 1\nx: " + "[" * 100_000 + "\n") == [f"p.yaml:2:67: {DEEP}"]
    assert errors("version: 1\nx: " + "{a: " * 2000 + "1" + "}" * 2000 + "\n") == [
        f"p.yaml:2:{4 + 4 * 63}: {DEEP}"
    ]
    block = "version: 1\nx:\n" + "".join("  " * i + "a:\n" for i in range(1, 201))
    # line 2 holds the first mapping (x's), so the 65th starts on line 66
    assert errors(block) == [f"p.yaml:66:{2 * 64 + 1}: {DEEP}"]
    f = tmp_path / "deep.yaml"
    f.write_text("version: 1\nx: " + "[" * 100_000 + "\n")
    code, err, _ = instr_check(f)
    assert (code, err) == (2, f"{f}:2:67: {DEEP}\n")


BIG = "error: probe-set file is larger than 1 MiB\n  hint: probe sets are small; is this the right file?"


def test_file_size(tmp_path: Path) -> None:
    f = tmp_path / "big.yaml"
    with f.open("w") as out:
        out.write("version: 1\n")
        for _ in range(50 << 20 >> 10):  # 50 MiB of 1 KiB comment lines
            out.write("#" * 1023 + "\n")
    code, err, rss = instr_check(f)
    # byte 1 MiB + 1: after line 1 (11 bytes) and 1023 lines of 1024, 1013 bytes into line 1025
    assert (code, err) == (2, f"{f}:1025:1014: {BIG}\n")
    assert rss < 1 << 20
    for command in (("check",), ("sets",), ("run", "-s", "x", "-P")):
        code, err, rss = instr_check("/dev/zero", *command)
        assert (code, err) == (2, f"/dev/zero:1:{(1 << 20) + 1}: {BIG}\n")
        assert rss < 1 << 20
    assert errors("#" * (1 << 20) + "\n") == [f"p.yaml:1:{(1 << 20) + 1}: {BIG}"]


def test_integers_beyond_64_bits() -> None:
    huge = "9" * 5000
    # unused: never converted, no error of its own
    assert errors(f"version: 1\nx: {huge}\n")[1:] == [
        "p.yaml:2:1: error: unknown key 'x' in the file\n  hint: the file keys are 'version' or 'sets'"
    ]
    assert errors(f"version: {huge}\nsets: {{}}\n")[0] == (
        "p.yaml:1:10: error: unsupported probe-set version a 5000-digit number"
        "\n  hint: this instr reads version 1"
    )
    assert errors(HEAD + f"        capture: {{n: 'arg{huge}:u64'}}\n") == [
        "p.yaml:6:26: error: argument index must be between 0 and 31, not a 5000-digit number"
    ]
    assert errors(HEAD.replace("function: 'libc.so*!malloc'", f"address: {huge}")) == [
        "p.yaml:5:18: error: address a 5000-digit number is out of range"
    ]
    agg = f"lquantize(arg0, 0, {huge}, 1)"
    assert errors(HEAD + f"        aggregate: {{x: '{agg}'}}\n") == [
        "p.yaml:6:44: error: the high bound does not fit in 64 bits"
    ]
    assert limits.decimal("-" + "0" * 5000 + "7") == -7  # leading zeros are not digits


def where(pred: str) -> list[str]:
    return errors(HEAD + "        capture: {size: arg0:u64}\n" + f'        where: "{pred}"\n')


def test_predicate_limits(tmp_path: Path) -> None:
    at = "p.yaml:7:17"  # the predicate's first character
    hint = "\n  hint: a predicate is one short condition; filter further after the run"
    long = " + ".join(["size"] * 100_000) + " > 1"
    assert where(long) == [
        f"p.yaml:7:{17 + 4096}: error: predicate is longer than 4096 characters{hint}"
    ]
    terms = " or ".join(["size == 1"] * 200)  # 400 terms; the 257th is the 129th 'size'
    assert where(terms) == [
        f"p.yaml:7:{17 + 128 * 13}: error: predicate has more than 256 terms"
        "\n  hint: names and constants count; split the condition"
    ]
    deep_hint = "\n  hint: each operator nests one level (a + b + c nests two); split the condition"
    deep = f"error: predicate nests deeper than 64 levels{deep_hint}"
    # the comparison is level 1: the 64th '-' is level 65
    assert where("-" * 100 + "size > 1") == [f"p.yaml:7:{17 + 63}: {deep}"]
    assert where("-" * 4000 + "size > 1") == [f"{at}: {deep}"]  # the parser's own limit
    assert where(" + ".join(["size"] * 100) + " > 1") == [f"{at}: {deep}"]
    ok = (
        HEAD
        + "        capture: {size: arg0:u64}\n"
        + f'        where: "{" + ".join(["size"] * 60)} > 1"\n'
    )
    assert len(load_text(ok, "p.yaml").sets["s"].probes) == 1
    # Python's own warning for "1and" must not reach the user's terminal
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a SyntaxWarning would raise here
        pred, errs = compile_predicate("size > 1and 1", {"size": CapInfo("entry", 0, "u64")})
        assert errs == [] and pred is not None
    assert where("size > 1" + "0" * 30) == [
        f"p.yaml:7:{17 + 7}: error: integer constant of 31 digits does not fit in 64 bits"
        "\n  hint: predicate values are 64-bit integers"
    ]
    f = tmp_path / "pred.yaml"
    f.write_text(HEAD + "        capture: {size: arg0:u64}\n" + f'        where: "{long}"\n')
    code, err, _ = instr_check(f)
    assert (code, err) == (
        2,
        f"{f}:7:{17 + 4096}: error: predicate is longer than 4096 characters{hint}\n",
    )


def test_integers_in_specs() -> None:
    huge = "9" * 5000
    patch = HEAD + f"        patch:\n          args:\n            ? arg{huge}\n            : 1\n"
    assert errors(patch) == [
        f"p.yaml:8:15: error: 'arg{'9' * 37}… (5003 characters)' is not an argument:"
        " write arg0 .. arg15"
    ]
    # leading zeros: a decimal, as in YAML (int(text, 0) refused them)
    agg = HEAD + "        aggregate: {x: 'lquantize(arg0, 0, 0100, 10)'}\n"
    (agg_spec,) = load_text(agg, "p.yaml").sets["s"].probes[0].aggregations
    assert agg_spec.lquantize == (0, 100, 10)
