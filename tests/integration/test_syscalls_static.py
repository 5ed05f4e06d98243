"""instr syscalls --complete on a statically linked program (seccomp user
notification; Frida cannot inject there) against strace on the same program.

Unlike the Frida modes (tests/integration/test_syscalls.py), this mode sees
every call from the program's execve on, as strace does, so whole runs are
compared, libc's start-up included. strace -c leaves out exit_group (it never
returns), which instr counts: that is the one named difference. strace's
error column is compared with nothing: this mode cannot see results, and its
table says so ("-").
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import TARGETS_SRC, instr_argv, instr_env, run_instr, start_instr, start_target

from instr.syscalls.static import StaticRun


@pytest.fixture(scope="session")
def static_prog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/targets/sys_static.c built with gcc -static (needs libc.a: libc6-dev)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc not found on PATH: it builds the static target")
    out = tmp_path_factory.mktemp("static") / "sys_static"
    cmd = ["gcc", "-static", "-O1", "-g", "-Wall", "-Wextra", "-o", str(out)]
    res = subprocess.run(
        [*cmd, str(TARGETS_SRC / "sys_static.c")], capture_output=True, text=True, check=False
    )
    if res.returncode != 0:
        if "cannot find -lc" in res.stderr:
            pytest.skip("static libc (libc.a, from libc6-dev) is missing: cannot link with -static")
        raise AssertionError(res.stderr)
    return out


def strace_c(argv: list[str], out: Path, *flags: str) -> dict[str, tuple[int, int]]:
    """``strace -c`` (and ``flags``): {syscall: (calls, errors)} from its table."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    subprocess.run(
        ["strace", "-c", "-o", str(out), *flags, *argv], check=False, stdout=subprocess.DEVNULL
    )
    return table_rows(out.read_text())


def table_rows(text: str) -> dict[str, tuple[int, int]]:
    """The rows of a ``-c`` table (strace's or instr's); errors "" or "-" are 0."""
    rows = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 5 or parts[0] in ("%", "------") or parts[-1] == "total":
            continue
        errors = parts[4] if len(parts) == 6 else "0"
        rows[parts[-1]] = (int(parts[3]), 0 if errors == "-" else int(errors))
    return rows


def instr_counts(
    argv: list[str], follow: bool, trace: str | None = None, thread: bool = False
) -> dict[str, int]:
    """``thread``: run outside the main thread, where instr cannot use signals
    and polls the listener (the loop older kernels get too)."""
    run = StaticRun(tuple(argv), trace_spec=trace, follow=follow)
    if thread:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            result = pool.submit(run.run, 60).result()
    else:
        result = run.run(timeout=60)
    assert result.exit_code == 0
    return result.counts


def test_follow_equals_strace_f_c(static_prog: Path, tmp_path: Path) -> None:
    argv = [str(static_prog), str(tmp_path)]
    expected = strace_c(argv, tmp_path / "strace.txt", "-f")
    assert expected["clone"] == (1, 0) and expected["close"] == (4, 1)  # the fork, then EBADF
    got = instr_counts(argv, follow=True)
    assert got.pop("exit_group") == 2  # the program and its forked child
    assert got == {name: calls for name, (calls, _errors) in expected.items()}


def test_without_follow_equals_strace_c(static_prog: Path, tmp_path: Path) -> None:
    """Without -F the child still carries the filter (instr lets its calls
    through) but only the program's own calls are counted: strace without -f.
    Run from a worker thread: the polling loop."""
    argv = [str(static_prog), str(tmp_path)]
    expected = strace_c(argv, tmp_path / "strace.txt")
    assert "getpid" not in expected  # the child's
    got = instr_counts(argv, follow=False, thread=True)
    assert got.pop("exit_group") == 1
    assert got == {name: calls for name, (calls, _errors) in expected.items()}


def test_trace_selection_equals_strace(static_prog: Path, tmp_path: Path) -> None:
    """-e trace=%file: the filter notifies only those calls (and execve, to
    start the count); strace's categories are the table's."""
    argv = [str(static_prog), str(tmp_path)]
    expected = strace_c(argv, tmp_path / "strace.txt", "-f", "-e", "trace=%file")
    got = instr_counts(argv, follow=True, trace="%file")
    assert got == {name: calls for name, (calls, _errors) in expected.items()}
    assert got["openat"] == 3 and got["execve"] == 1 and "read" not in got


def test_cli_summary_shows_unknowns(static_prog: Path, tmp_path: Path) -> None:
    r = run_instr("syscalls", "--complete", "-c", "-q", "-F", "--", static_prog, tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "% time     seconds  usecs/call     calls    errors syscall"
    rows = [ln.split() for ln in lines[2:] if not ln.startswith("---")]
    assert all(p[0] == p[1] == p[2] == p[4] == "-" for p in rows), lines  # time, errors
    got = table_rows(r.stdout)
    assert got["openat"] == (3, 0) and got["exit_group"] == (2, 0) and got["wait4"] == (1, 0)
    assert rows[-1][-1] == "total" and int(rows[-1][3]) == sum(c for c, _ in got.values())


def test_cli_stream_decodes_entries(static_prog: Path, tmp_path: Path) -> None:
    r = run_instr("syscalls", "--complete", "-q", "-F", "--", static_prog, tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    path = f"{tmp_path}/static.txt"
    pids = {int(m.group(1)) for ln in lines if (m := re.match(r"\[pid +(\d+)\] ", ln))}
    assert len(pids) == 2 and all(ln.startswith("[pid ") for ln in lines), lines
    calls = [ln.split("] ", 1)[1] for ln in lines]
    assert calls[0] == f'execve("{static_prog}", {calls[0].split(", ", 1)[1]}'
    assert f'openat(AT_FDCWD, "{path}", O_WRONLY|O_CREAT|O_TRUNC, 0600) = ?' in calls
    assert calls.count(f'write(3<{path}>, "static\\n", 7) = ?') == 3  # the fd, from /proc
    assert 'access("/nonexistent/instr", F_OK) = ?' in calls
    assert "close(-1) = ?" in calls and "exit_group(3) = ?" in calls  # the child's
    assert calls[-1] == "exit_group(0) = ?"
    assert all(c.endswith(" = ?") for c in calls)  # results are never seen


def test_without_cap_sys_admin(static_prog: Path, tmp_path: Path) -> None:
    """Without CAP_SYS_ADMIN (any non-root user) the filter needs no_new_privs,
    which the child then sets before installing it."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to drop CAP_SYS_ADMIN")
    drop = ["setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin"]
    argv = instr_argv("syscalls", "--complete", "-c", "-q", "--", static_prog, tmp_path)
    r = subprocess.run(
        [*drop, *argv], capture_output=True, text=True, env=instr_env(), timeout=60, check=False
    )
    assert r.returncode == 0, r.stderr
    got = table_rows(r.stdout)
    assert got["openat"] == (2, 0) and got["execve"] == (1, 0) and got["exit_group"] == (1, 0)


def test_static_needs_complete(static_prog: Path) -> None:
    r = run_instr("syscalls", "-c", "--", static_prog)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith(f"instr: error: {static_prog} is statically linked"), r.stderr
    assert "use --complete" in r.stderr


def test_static_pid_is_refused_and_left_alone(static_prog: Path, tmp_path: Path) -> None:
    """Attaching Frida would abort a static process: instr refuses first."""
    target = start_target(static_prog, tmp_path, "hold")
    try:
        r = run_instr("syscalls", "--complete", "-c", "-p", target.pid)
        assert r.returncode == 1
        assert f"pid {target.pid} runs a statically linked program" in r.stderr
        assert "instr syscalls --complete -- PROGRAM" in r.stderr
        target.go()
        assert target.finish().returncode == 0  # untouched
    finally:
        target.kill()


def test_duration_ends_the_program(static_prog: Path, tmp_path: Path) -> None:
    """The program cannot outlive instr in this mode (its calls would fail
    with ENOSYS): a stopped run ends it with SIGTERM and counts up to there."""
    # stdin stays open and empty: the program waits in read() until it is ended
    with start_instr(
        "syscalls", "--complete", "-c", "--duration", "0.5", "--", static_prog, tmp_path, "hold"
    ) as ins:
        code = ins.proc.wait(60)
        out, err = ins.out.rest(), "\n".join(ins.err.rest())
    assert code == 128 + 15, err  # SIGTERM
    assert "stopping: ending the program" in err
    got = table_rows("\n".join(out))
    assert got["write"] == (1, 0) and got["read"] == (1, 0) and "getppid" not in got
