"""Self-test of the test targets: they build cleanly and behave as documented, uninstrumented."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import (
    REPO,
    Targets,
    add_sum,
    attach_sum,
    buf_arg,
    long_str,
    mix_ret,
    plugin_ret,
    str_arg,
    work_ret,
)

ET_EXEC, ET_DYN = 2, 3
TARGET_FUNCTIONS = {
    "calls": ("target_add", "target_mix", "target_str", "target_buf"),
    "threads": ("target_work",),
    "endings": ("target_tick", "crash_here"),
    "attach": ("target_add",),
    "bench": ("target_add",),
}


def run_native(launch, path: Path, *args: object):
    proc = launch(path, *args)
    proc.go()
    return proc.finish(30)


def test_build_is_warning_free(targets: Targets) -> None:
    assert set(targets.names) >= {"attach", "bench", "calls", "dlopen_main", "endings", "threads"}
    assert {k: v for k, v in targets.warnings.items() if v} == {}


def test_pie_and_nopie_variants(targets: Targets, pie: bool) -> None:
    for name in targets.names:
        e_type = int.from_bytes(targets.path(name, pie).read_bytes()[16:18], "little")
        assert e_type == (ET_DYN if pie else ET_EXEC), name
    assert targets.plugin(pie).is_file()


@pytest.mark.skipif(shutil.which("nm") is None, reason="nm (binutils) not installed")
def test_target_functions_in_symtab_not_exported(targets: Targets, pie: bool) -> None:
    for name, functions in TARGET_FUNCTIONS.items():
        path = targets.path(name, pie)
        symtab = subprocess.run(["nm", path], capture_output=True, text=True, check=True).stdout
        dynsym = subprocess.run(["nm", "-D", path], capture_output=True, text=True).stdout
        for fn in functions:
            assert re.search(rf" T {fn}$", symtab, re.M), (name, fn)
            assert fn not in dynsym, (name, fn)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("1000",), [f"add calls=1000 sum={add_sum(1000)}"]),
        (("add", "100000"), [f"add calls=100000 sum={add_sum(100000)}"]),
        (("mix", "1000"), [f"mix calls=1000 sum={sum(mix_ret(i) for i in range(1000))}"]),
        (("str", "100"), [f"str calls=100 bytes={sum(len(str_arg(i)) for i in range(100))}"]),
        (("longstr", "300"), ["longstr len=300"]),
        (("nullstr",), ["nullstr calls=1"]),
        (
            ("buf", "100"),
            [
                f"buf calls=100 bytes={sum(len(buf_arg(i)) for i in range(100))}"
                f" checksum={sum(sum(buf_arg(i)) for i in range(100))}"
            ],
        ),
        (
            ("all", "3"),
            [
                "add calls=3 sum=9",
                f"mix calls=3 sum={mix_ret(0) + mix_ret(1) + mix_ret(2)}",
                "str calls=3 bytes=18",
                "buf calls=3 bytes=3 checksum=6",
            ],
        ),
    ],
    ids=["N", "add", "mix", "str", "longstr", "nullstr", "buf", "all"],
)
def test_calls(targets: Targets, pie: bool, launch, args, expected) -> None:
    done = run_native(launch, targets.path("calls", pie), *args)
    assert (done.returncode, done.stdout) == (0, expected)


def test_helpers_match_target_formulas() -> None:
    assert long_str(28) == "abcdefghijklmnopqrstuvwxyzab"
    assert buf_arg(18) == bytes([18])
    assert mix_ret(0) == -128 + 65535


def test_threads(targets: Targets, pie: bool, launch) -> None:
    k = 10000
    done = run_native(launch, targets.path("threads", pie), k)
    assert done.returncode == 0
    rows = [re.fullmatch(r"thread=(\d) tid=(\d+) calls=(\d+) sum=(\d+)", ln) for ln in done.stdout]
    assert all(rows[:4]) and done.stdout[4:] == ["total=40000"], done.stdout
    for t, m in enumerate(rows[:4]):
        assert m is not None
        assert (int(m[1]), int(m[3]), int(m[4])) == (t, k, sum(work_ret(t, i) for i in range(k)))
    assert len({m[2] for m in rows[:4] if m}) == 4


@pytest.mark.parametrize(
    ("mode", "code"), [("return", 0), ("exit", 3), ("_exit", 4), ("abort", -6), ("segv", -11)]
)
def test_endings(targets: Targets, pie: bool, launch, mode: str, code: int) -> None:
    done = run_native(launch, targets.path("endings", pie), mode, 1000)
    assert (done.returncode, done.stdout) == (code, [f"ticks=1000 sum={sum(range(1000))}"])


def test_dlopen(targets: Targets, pie: bool, launch) -> None:
    done = run_native(launch, targets.path("dlopen_main", pie), 1000)
    expected = ["loaded", f"plugin calls=1000 sum={sum(plugin_ret(i) for i in range(1000))}"]
    assert (done.returncode, done.stdout) == (0, expected)


def test_dlopen_missing_library(targets: Targets, launch, tmp_path: Path) -> None:
    done = run_native(launch, targets.path("dlopen_main"), 1, tmp_path / "nope.so")
    assert done.returncode == 1
    assert "dlopen failed" in done.err


def test_attach_loop(targets: Targets, pie: bool, launch) -> None:
    proc = launch(targets.path("attach", pie))
    for n in (0, 1, 10, 100000):
        proc.send(str(n))
        assert proc.readline() == f"sum={attach_sum(n)}"
    proc.send("x")
    assert proc.readline() == "error"
    done = proc.finish(10)
    assert (done.returncode, done.stdout) == (0, [])


def test_bench_protocol(targets: Targets, launch) -> None:
    proc = launch(targets.path("bench"))
    proc.send("ping")
    assert proc.readline() == "pong"
    for cmd, n, total in (("run", 1000, 1000 * 999), ("wloop", 100, 100), ("sloop", 10, 45)):
        proc.send(f"{cmd} {n}")
        line = proc.readline() or ""
        assert re.fullmatch(
            rf"ns_per_call=\d+\.\d+ calls={n} elapsed_ns=\d+ sum={total} cpu_ns=\d+", line
        )
    proc.send("run 0")
    assert proc.readline() == "error"
    proc.send("quit")
    assert proc.finish(10).returncode == 0


def test_bad_count_is_usage_error(targets: Targets) -> None:
    res = subprocess.run([targets.path("calls"), "add", "x"], capture_output=True, text=True)
    assert res.returncode == 2 and "bad count" in res.stderr


def test_demo_builds_as_documented_and_is_deterministic(tmp_path: Path, launch) -> None:
    if shutil.which("gcc") is None:
        pytest.skip("gcc not found on PATH")
    demo = tmp_path / "demo"
    cmd = ["gcc", "-O1", "-g", "-Wall", "-Wextra", "-o", demo, REPO / "examples" / "demo.c"]
    build = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert build.stderr == ""
    expected = ["hello, world", "work(5) = 75", "read file: ok", "done"]
    res = subprocess.run([demo], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert (res.returncode, res.stdout.splitlines()) == (0, expected)
    done = run_native(launch, demo, "--wait", 5)  # launch waits for "ready"
    assert (done.returncode, done.stdout) == (0, expected)
