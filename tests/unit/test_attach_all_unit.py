"""Which processes --all and --all-matching take (instr/attach_all.py):
names, command lines, and what never matches (kernel threads, instr)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from instr.attach_all import AllSpec, Proc, is_instr, matches, read_proc, scan
from instr.errors import UsageError


def _proc(argv: tuple[str, ...], comm: str = "x", exe: str = "/usr/bin/x") -> Proc:
    return Proc(pid=1234, start=1, comm=comm, argv=argv, exe=exe)


def test_a_name_is_the_command_name_the_executable_or_argv0() -> None:
    nginx = _proc(("nginx: worker process",), comm="nginx", exe="/usr/sbin/nginx")
    assert matches(AllSpec(name="nginx"), nginx)  # its title rewritten: comm and exe say it
    script = _proc(("/usr/bin/python3", "serve.py"), comm="python3", exe="/usr/bin/python3.11")
    assert matches(AllSpec(name="python3.11"), script)
    assert matches(AllSpec(name="python3"), script)
    assert not matches(AllSpec(name="serve.py"), script)
    renamed = _proc(("/opt/app/worker", "-v"), comm="worker-7", exe="/opt/app/worker")
    assert matches(AllSpec(name="worker"), renamed)
    assert not matches(AllSpec(name="work"), renamed)


def test_a_regex_is_searched_in_the_command_line_joined_by_spaces() -> None:
    p = _proc(("/usr/bin/python3", "-m", "http.server", "8080"))
    assert matches(AllSpec(matching=r"http\.server 80"), p)
    assert matches(AllSpec(matching=r"^/usr/bin/python3 -m"), p)
    assert not matches(AllSpec(matching=r"8081"), p)


@pytest.mark.parametrize(
    "argv",
    [
        ("/usr/local/bin/instr", "trace", "--all", "-n", "x"),
        ("/work/.venv/bin/python3", "-m", "instr", "trace", "--all-matching", "x"),
        ("python", "/usr/local/bin/instr", "run", "-P", "p.yaml"),
    ],
)
def test_instr_itself_is_recognised(argv: tuple[str, ...]) -> None:
    assert is_instr(_proc(argv))


@pytest.mark.parametrize(
    "argv", [("/usr/bin/python3", "-m", "http.server"), ("/usr/bin/instructor",), ("nginx",)]
)
def test_other_programs_are_not_instr(argv: tuple[str, ...]) -> None:
    assert not is_instr(_proc(argv))


def test_kernel_threads_are_not_processes_to_attach_to() -> None:
    kthreadd = Path("/proc/2/comm")
    if not kthreadd.exists() or kthreadd.read_text().strip() != "kthreadd":
        pytest.skip("no kthreadd at pid 2 here")
    assert read_proc(2) is None


def test_a_scan_finds_a_child_by_name_and_by_regex_but_never_this_process() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()", "marker-9z"],
                             stdin=subprocess.PIPE)  # fmt: skip
    try:
        me = read_proc(os.getpid())
        assert me is not None and child.pid != os.getpid()
        found = [p.pid for p in scan(AllSpec(matching="marker-9z"))]
        assert found == [child.pid]
        assert child.pid in [p.pid for p in scan(AllSpec(name=me.comm))]
        assert os.getpid() not in [p.pid for p in scan(AllSpec(name=me.comm))]
    finally:
        child.communicate(b"")


@pytest.mark.parametrize(
    ("kw", "said"),
    [
        ({}, "--all needs -n NAME"),
        ({"name": "a", "matching": "b"}, "--all needs -n NAME"),
        ({"matching": "("}, "--all-matching '('"),
    ],
)
def test_bad_specs_are_refused(kw: dict[str, str], said: str) -> None:
    with pytest.raises(UsageError, match=said.replace("(", r"\(")):
        AllSpec(**kw)  # type: ignore[arg-type]
