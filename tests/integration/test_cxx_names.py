"""C++ names: demangled in every output, and globs over demangled names
('cxx!ns::Widget::twice*'); backtraces without stale `main` frames.

tests/targets/cxx.cc is built here with g++ (the session fixture builds only
the C targets): ``cxx`` has libstdc++ (the agent demangles with the target's
``__cxa_demangle``), ``cxxplain`` (-DCXX_PLAIN) has no C++ runtime (the agent
spells qualified names itself, core/demangle.ts).
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from helpers import run_instr

SRC = Path(__file__).resolve().parent.parent / "targets" / "cxx.cc"
TWICE_INT = "ns::Widget::twice(int)"
TWICE_LONG = "ns::Widget::twice(long)"
OUTER = "ns::Widget::outer(int)"


@pytest.fixture(scope="module")
def cxx(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ is not installed: the C++ target cannot be built")
    if shutil.which("c++filt") is None:
        pytest.skip("c++filt (binutils) is not installed: names stay mangled (docs/outputs.md)")
    out = tmp_path_factory.mktemp("cxx")
    built = {}
    for name, extra in (("cxx", []), ("cxxplain", ["-DCXX_PLAIN"])):
        exe = out / name
        cmd = [gxx, "-O1", "-g", "-Wall", "-Wextra", *extra, "-o", exe, SRC]
        subprocess.run(cmd, check=True, timeout=120)
        built[name] = exe
    return built


def events(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in rows if r["type"] == "event"]


@pytest.mark.parametrize("name", ["cxx", "cxxplain"])
def test_glob_over_demangled_names(cxx: dict[str, Path], tmp_path: Path, name: str) -> None:
    out = tmp_path / "run.jsonl"
    res = run_instr(
        "trace", "-q", "-i", f"{name}!ns::Widget::twice*", "-o", out, "--", cxx[name], 2
    )
    assert res.returncode == 0, res.stderr
    assert "cxx calls=2 sum=6" in res.stdout
    got = [(e["phase"], e["function"]) for e in events(out)]
    one_call = [
        ("entry", f"{name}!{TWICE_INT}"),
        ("exit", f"{name}!{TWICE_INT}"),
        ("entry", f"{name}!{TWICE_LONG}"),
        ("exit", f"{name}!{TWICE_LONG}"),
    ]
    assert got == one_call * 2


def test_exclude_and_exact_names_without_parameters(cxx: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run.jsonl"
    res = run_instr(
        "trace",
        "-q",
        "-i",
        "cxx!ns::Widget::*",
        "-x",
        f"cxx!{TWICE_LONG}",
        "-i",
        "cxx!ns::Widget::outer",  # no glob, no parameters: every overload
        "-o",
        out,
        "--",
        cxx["cxx"],
        1,
    )
    assert res.returncode == 0, res.stderr
    got = [(e["probe"], e["phase"], e["function"]) for e in events(out)]
    wild, exact = "cli/cxx!ns::Widget::*", "cli/cxx!ns::Widget::outer"
    assert sorted(set(got)) == sorted(
        {
            (wild, "entry", f"cxx!{OUTER}"),
            (wild, "exit", f"cxx!{OUTER}"),
            (wild, "entry", f"cxx!{TWICE_INT}"),
            (wild, "exit", f"cxx!{TWICE_INT}"),
            (exact, "entry", f"cxx!{OUTER}"),
            (exact, "exit", f"cxx!{OUTER}"),
        }
    )
    assert len(got) == 6


def test_list_shows_demangled_names(cxx: dict[str, Path]) -> None:
    res = run_instr("trace", "-l", "-i", "cxx!ns::*", "--", cxx["cxx"])
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [f"cxx!{OUTER}", f"cxx!{TWICE_INT}", f"cxx!{TWICE_LONG}"]


def test_symbols_and_backtraces_are_demangled_everywhere(
    cxx: dict[str, Path], tmp_path: Path, probe_file
) -> None:
    """JSON Lines and SQLite carry demangled names; the stack-scanning backtrace
    (the JS tier's, without frame pointers) has `main` once, as the program does."""
    probes = probe_file(
        """
        version: 1
        sets:
          bt:
            probes:
              - function: "cxx!ns::Widget::twice(int)"
                capture: {stack: backtrace, who: caller}
        """
    )
    jl, db = tmp_path / "run.jsonl", tmp_path / "run.db"
    res = run_instr("run", "-q", "-P", probes, "-s", "bt", "-o", jl, "-o", db, "--", cxx["cxx"], 1)
    assert res.returncode == 0, res.stderr
    (event,) = events(jl)
    assert event["function"] == f"cxx!{TWICE_INT}"
    assert re.fullmatch(rf"cxx!{re.escape(OUTER)}\+0x[0-9a-f]+", event["args"]["who"]["symbol"])
    frames = [re.sub(r"\+0x[0-9a-f]+$", "", f["symbol"]) for f in event["args"]["stack"]]
    assert frames == [
        f"cxx!{OUTER}",
        "cxx!main",
        "libc.so.6",
        "libc.so.6!__libc_start_main",
        "cxx!_start",
    ]
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT symbol, function FROM sites").fetchall() == [
            (TWICE_INT, f"cxx!{TWICE_INT}")
        ]
        names = {n for (n,) in con.execute("SELECT name FROM symbols WHERE module = 'cxx'")}
        assert names == {OUTER, "main", "_start"}


def test_console_nests_calls(cxx: dict[str, Path]) -> None:
    """The console's CALL column: demangled names, indented per open call on the
    thread, as frida-trace draws them."""
    res = run_instr("trace", "-q", "-i", "cxx!ns::Widget::*", "--", cxx["cxx"], 1)
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()
    head = out.index("TIME             TID PROBE                 CALL")
    calls = [line.split(" cli/cxx!ns::Widget::* ", 1)[1] for line in out[head + 1 : head + 7]]
    assert calls == [
        f"→ cxx!{OUTER}",
        f"   | → cxx!{TWICE_INT}",
        f"   | ← cxx!{TWICE_INT}",
        f"   | → cxx!{TWICE_LONG}",
        f"   | ← cxx!{TWICE_LONG}",
        f"← cxx!{OUTER}",
    ]
    assert out[head + 7] == "--"


def test_did_you_mean_shows_demangled_names(cxx: dict[str, Path]) -> None:
    res = run_instr("trace", "-i", "cxx!twice", "--", cxx["cxx"])
    assert res.returncode != 0
    assert res.stderr.splitlines()[-1] == (
        "  cli/cxx!twice: no function matches 'cxx!twice';"
        f" did you mean 'cxx!{TWICE_INT}', 'cxx!{TWICE_LONG}'?"
    )
