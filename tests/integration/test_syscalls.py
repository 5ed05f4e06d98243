"""instr syscalls against strace on the same deterministic targets.

Both tools count from the first getppid() of each process image (the targets
make it first thing in main) to the image's end: strace sees the dynamic
loader's calls before main too, and instr arms before main and sees none.
Per-syscall calls and errors must be equal, exactly; the only exceptions are
named (DEFAULT_MODE_MISSES) and asserted to be exactly what differs.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import Targets, run_instr, start_instr
from strace_window import strace_counts

from instr import cbuild
from instr.syscalls import monitor
from instr.syscalls.monitor import SyscallRun
from instr.syscalls.result import Result
from instr.target import TargetSpec

# malloc's initialisation: under instr it happened before main, when Frida's
# injection (dlopen, on Frida's thread) first used malloc, so the program makes
# neither call (the complete mode, which sees every syscall instruction of the
# program's thread, confirms it); strace sees the program's first malloc do it.
DEFAULT_MODE_MISSES = {"brk", "getrandom"}


def run_counts(
    argv: list[str], timeout: float = 60, **options: Any
) -> tuple[SyscallRun, Result, dict[str, tuple[int, int]]]:
    """The run, its result and ``{syscall: (calls, errors)}``."""
    run = SyscallRun(TargetSpec(argv=tuple(argv)), **options)
    result = run.run(timeout=timeout)
    return run, result, {k: (v.calls, v.errors) for k, v in result.counts.items()}


def instr_counts(
    argv: list[str], follow: bool = False, complete: bool = False
) -> dict[str, tuple[int, int]]:
    return run_counts(argv, follow=follow, complete=complete)[2]


def compare(expected: dict[str, tuple[int, int]], got: dict[str, tuple[int, int]]) -> None:
    missed = {k: v for k, v in expected.items() if k not in got}
    assert set(missed) <= DEFAULT_MODE_MISSES, f"instr missed {missed}"
    rest = {k: v for k, v in expected.items() if k not in missed}
    assert got == rest


def test_files_equal_strace(targets: Targets, pie: bool, tmp_path: Path) -> None:
    argv = [str(targets.path("sys_files", pie)), str(tmp_path)]
    expected = strace_counts(argv, tmp_path / "strace.out")
    got = instr_counts(argv)
    compare(expected, got)
    assert got["close"] == (6, 1) and got["openat"] == (3, 1) and got["access"] == (2, 1)
    assert got["write"] == (6, 0) and got["exit_group"] == (1, 0)


def test_both_toolchains_count_the_same(targets: Targets, tmp_path: Path) -> None:
    """The monitor's C built by the host's gcc (the default where it can) and
    by TinyCC in the agent: the same exact counts."""
    argv = [str(targets.path("sys_files")), str(tmp_path)]
    expected = strace_counts(argv, tmp_path / "strace.out")
    for compiler, toolchain in (("auto", "host"), ("system", "host"), ("tinycc", "tinycc")):
        run, _result, got = run_counts(argv, compiler=compiler)
        assert run.toolchain == toolchain, (compiler, run.toolchain_note)
        compare(expected, got)
        assert got["close"] == (6, 1) and got["write"] == (6, 0), compiler


def test_host_object_that_does_not_load_falls_back_to_tinycc(
    targets: Targets, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An object the agent cannot map (here: not an ELF file) is reported, and
    TinyCC builds the C instead; the counts stay exact."""
    monkeypatch.setattr(cbuild, "object_for", lambda *a: (b"not an ELF object", None))
    argv = [str(targets.path("sys_files")), str(tmp_path)]
    expected = strace_counts(argv, tmp_path / "strace.out")
    said: list[str] = []
    run, _result, got = run_counts(argv, say=said.append)
    assert run.toolchain == "tinycc"
    assert "the host-built syscalls module did not load" in str(run.toolchain_note)
    assert any(s.startswith("TinyCC because the host-built syscalls module") for s in said), said
    compare(expected, got)


def test_cli_system_compiler_missing_is_a_clear_error(targets: Targets) -> None:
    r = run_instr(
        "syscalls",
        "-c",
        "--cc",
        "system",
        "--",
        targets.path("sys_files"),
        "/tmp",
        env={"CC": "/nonexistent/cc"},
    )
    assert r.returncode != 0
    assert "cannot build the syscalls hooks with the host's C compiler: no C compiler" in r.stderr
    assert "Traceback" not in r.stderr


def test_threads_past_the_state_slots(targets: Targets, tmp_path: Path) -> None:
    """With no per-thread state slot left, a thread keeps its state in its TLS
    value: the counts are the same, in both modes."""
    argv = [str(targets.path("sys_files")), str(tmp_path)]
    expected = strace_counts(argv, tmp_path / "strace.out")
    for complete in (False, True):
        _run, _result, got = run_counts(argv, complete=complete, thread_slots=0)
        compare(expected, got)
        assert got["close"] == (6, 1) and got["write"] == (6, 0), complete


def test_network_equal_strace(targets: Targets, tmp_path: Path) -> None:
    argv = [str(targets.path("sys_net"))]
    expected = strace_counts(argv, tmp_path / "strace.out")
    got = instr_counts(argv)
    assert got == expected  # nothing missed here
    assert got["connect"] == (2, 1) and got["recvfrom"] == (3, 0) and got["sendto"] == (2, 0)


def test_follow_exec_equal_strace(targets: Targets, tmp_path: Path) -> None:
    argv = [str(targets.path("sys_exec"))]
    expected = strace_counts(argv, tmp_path / "strace.out")
    got = instr_counts(argv, follow=True)
    assert got == expected
    assert got["getppid"] == (2, 0) and got["execve"] == (1, 0) and got["exit_group"] == (1, 0)


def test_follow_fork_equal_strace(targets: Targets, tmp_path: Path) -> None:
    """-F on forks: three forked children and one that execs, in -c and stream
    mode; every child ends normally. Each forked child's set_robust_list (made
    in line in glibc's _Fork before the child is held) is counted from the
    robust-list head the kernel cleared at the fork."""
    argv = [str(targets.path("sys_fork"))]
    expected = strace_counts(argv, tmp_path / "strace.out")
    assert expected["set_robust_list"] == (4, 0)  # one per forked child
    assert expected["clone"] == (4, 0) and expected["exit_group"] == (5, 0)
    lines: list[str] = []
    for stream in (False, True):
        run, result, got = run_counts(argv, follow=True, stream=stream, on_line=lines.append)
        assert (result.exit_code, run.errors) == (0, []), (stream, got)  # no child died
        assert got == expected, stream
    robust = [ln for ln in lines if "set_robust_list(" in ln]
    assert len(robust) == 4, lines
    assert all(
        re.search(r"set_robust_list\(0x[0-9a-f]+, 24\) = 0 <made in fork", ln) for ln in robust
    )


def test_a_child_still_being_armed_at_the_end_is_reported(
    targets: Targets, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that stops while a forked child is still being armed (here: its
    agent loaded, the monitor's start held on purpose, as a hung syscallStart
    would be) says so: no silent gap."""
    release = threading.Event()
    real_start = monitor.start_monitor

    def start(*args: Any, **kw: Any) -> Any:
        if kw.get("forked"):
            release.wait(30)
            raise RuntimeError("not armed: the test held it")
        return real_start(*args, **kw)

    monkeypatch.setattr(monitor, "start_monitor", start)
    run = SyscallRun(TargetSpec(argv=(str(targets.path("sys_fork")),)), follow=True)
    try:
        run.run(timeout=3)
        errors = list(run.errors)  # before the held arming fails (and says so too)
    finally:
        release.set()
    # (The resumed child may let the parent fork again before the run has
    # detached: following that one can fail too, and says so.)
    wanted = re.compile(
        r"1 child process\(es\) were still being armed when the run stopped \(\d+\);"
        r" their calls are not counted"
    )
    assert errors and wanted.fullmatch(errors[0]), errors
    # A child whose arming never finished can be left spinning in sched_yield
    # inside Frida's agent once the run has gone (seen 2 runs in 4 here, with
    # or without detaching its session first): the test does not leave it
    # behind to load the rest of the suite.
    assert run.root_pid is not None
    kill_tree(run.root_pid)


def kill_tree(root: int) -> None:
    """Kill ROOT, then its descendants (ROOT first: it can fork no more)."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            parent[int(stat.parent.name)] = int(stat.read_text().rpartition(")")[2].split()[1])
    todo = [root]
    while todo:
        pid = todo.pop()
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        todo += [c for c, pp in parent.items() if pp == pid]


def test_cli_summary_and_exit_status(targets: Targets) -> None:
    r = run_instr("syscalls", "-c", "-q", "-F", "--", targets.path("sys_exec"))
    assert r.returncode == 4, r.stderr  # the exec'ed image's status
    rows = {}
    for line in r.stdout.splitlines()[2:]:
        parts = line.split()
        if len(parts) >= 5 and parts[-1] != "total" and not line.startswith("-"):
            errors = int(parts[4]) if len(parts) == 6 else 0
            rows[parts[-1]] = (int(parts[3]), errors)
    assert rows == {
        "getppid": (2, 0),
        "close": (2, 1),
        "execve": (1, 0),
        "openat": (1, 0),
        "write": (1, 0),
        "exit_group": (1, 0),
    }


def test_a_crash_is_said_and_gives_the_signal_status(targets: Targets) -> None:
    """strace's convention: 128+N when signal N killed the program; and the
    run says what crashed it, where."""
    r = run_instr("syscalls", "-c", "-e", "trace=write", "--", targets.path("endings"), "segv", 3)
    assert r.returncode == 128 + 11, r.stderr
    said = [ln for ln in r.stderr.splitlines() if "crashed" in ln]
    assert len(said) == 1 and re.fullmatch(
        r"instr: pid \d+: target crashed: SIGSEGV at endings!crash_here\+0x[0-9a-f]+"
        r" \(address 0x0\)",
        said[0],
    ), r.stderr
    assert "write" in r.stdout  # the count is printed all the same


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_program_killed_from_outside_gives_the_signal_status(
    targets: Targets, sig: signal.Signals
) -> None:
    """No agent sees SIGKILL (nor a SIGTERM the program does not catch): the
    status comes from the kernel, through a pidfd opened at spawn, once Frida
    has reaped the program. It used to be 0, with nothing said."""
    argv = ("syscalls", "-c", "-e", "trace=write", "--", str(targets.path("sys_fdhold")))
    with start_instr(*argv) as ins:
        pid = int(ins.err.expect("counting system calls in pid").split()[6])
        assert ins.readline() == "ready"
        os.kill(pid, sig)
        done = ins.finish()
    assert done.returncode == 128 + sig, done.err
    assert f"instr: pid {pid}: target was killed by {sig.name}" in done.stderr, done.err


def test_stream_decodes_arguments(targets: Targets, tmp_path: Path) -> None:
    r = run_instr("syscalls", "-q", "--", targets.path("sys_net"))
    out = r.stdout
    assert r.returncode == 0, r.stderr
    port = re.search(
        r"getsockname\(\d+<127\.0\.0\.1:0>, \{sa_family=AF_INET, sin_port=htons\((\d+)\)", out
    )
    assert port is not None, out
    p = port.group(1)
    assert re.search(
        rf'connect\((\d+)<socket>, \{{sa_family=AF_INET, sin_port=htons\({p}\), sin_addr=inet_addr\("127\.0\.0\.1"\)\}}, 16\) = 0',
        out,
    ), out
    assert re.search(rf'sendto\(\d+<127\.0\.0\.1:{p}>, "ping", 4, 0, NULL, 0\) = 4', out), out
    assert "socket(AF_INET, 1, 0) = " in out
    assert re.search(r"connect\(\d+, .*\) = -1 EBADF \(Bad file descriptor\)", out), out
    assert re.search(r'write\(\d+, "unix", 4\) = 4', out), out  # socketpair's fds: not learnt
    assert out.rstrip().endswith("exit_group(0) = ?")

    r = run_instr("syscalls", "-q", "-e", "trace=%file", "--", targets.path("sys_files"), tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert all(
        re.match(r"(openat|newfstatat|mkdir|access|rename|unlink|rmdir)\(", ln) for ln in lines
    ), lines
    a = f"{tmp_path}/files/a.txt"
    opened = re.compile(
        re.escape(f'openat(AT_FDCWD, "{a}", O_WRONLY|O_CREAT|O_TRUNC, 0600) = ')
        + rf"\d+<{re.escape(a)}> <"
    )
    assert any(opened.match(ln) for ln in lines), lines
    enoent = 'access("/nonexistent/instr", F_OK) = -1 ENOENT (No such file or directory) <'
    assert any(ln.startswith(enoent) for ln in lines), lines


def test_bad_trace_set_is_a_usage_error(targets: Targets) -> None:
    r = run_instr("syscalls", "-e", "trace=opne", "--", targets.path("sys_net"))
    assert r.returncode == 2
    assert r.stderr.startswith("instr: error: unknown system call 'opne' in -e trace=opne")
    assert "did you mean open" in r.stderr
    assert r.stdout == ""


def test_complete_mode_catches_raw_syscalls(targets: Targets, tmp_path: Path) -> None:
    """Inline `syscall` instructions bypass libc: the default mode misses them,
    the complete (Stalker) mode counts them, equal to strace."""
    argv = [str(targets.path("sys_raw"))]
    expected = strace_counts(argv, tmp_path / "strace.out")
    assert expected["getpid"] == (4, 0) and expected["close"] == (1, 1)
    assert instr_counts(argv, complete=True) == expected
    default = instr_counts(argv)
    assert default == {"getppid": (1, 0), "getpid": (1, 0), "exit_group": (1, 0)}


def test_complete_mode_files_equal_strace(targets: Targets, tmp_path: Path) -> None:
    """brk and getrandom are missed in both modes for the same reason: Frida's
    injection (dlopen of its agent, in its own thread) initialised malloc before
    main, so the program's first malloc makes neither call (complete mode sees
    every syscall instruction the program's thread executes)."""
    argv = [str(targets.path("sys_files")), str(tmp_path)]
    expected = strace_counts(argv, tmp_path / "strace.out")
    compare(expected, instr_counts(argv, complete=True))


def test_complete_mode_follow_exec_equal_strace(targets: Targets, tmp_path: Path) -> None:
    """-F with --complete: each exec'ed image is followed from its main; close,
    which Frida's child gating hooks (run natively, out of Stalker's sight), is
    counted at its wrapper."""
    argv = [str(targets.path("sys_exec"))]
    expected = strace_counts(argv, tmp_path / "strace.out")
    assert instr_counts(argv, follow=True, complete=True) == expected


def test_complete_mode_forked_children_survive(targets: Targets, tmp_path: Path) -> None:
    """--complete without -F on forks: a child forked under Stalker died of
    SIGSEGV; now fork's wrapper runs outside Stalker (and is counted there), the
    children end as they should (the target exits 0 only then) and the parent's
    counts equal strace's for the parent."""
    argv = [str(targets.path("sys_fork"))]
    expected = strace_counts(argv, tmp_path / "strace.out", root_only=True)
    assert expected["clone"] == (4, 0) and expected["wait4"] == (4, 0)
    run, result, got = run_counts(argv, complete=True)
    assert (result.exit_code, run.errors) == (0, []), got
    assert got == expected


def test_complete_mode_follows_forked_children(targets: Targets, tmp_path: Path) -> None:
    """--complete -F on forks equals strace -f: the parent is followed through
    each fork() (its call is made natively through the fork gate, and the
    parent returns to Stalker), each child is followed from its own agent once
    it waits in the gate's stub, and close() (hooked by Frida's child gating)
    is called natively and counted at its wrapper. Every child ends normally."""
    argv = [str(targets.path("sys_fork"))]
    expected = strace_counts(argv, tmp_path / "strace.out")
    for stream in (False, True):
        lines: list[str] = []
        run, result, got = run_counts(
            argv, timeout=90, follow=True, complete=True, stream=stream, on_line=lines.append
        )
        assert (result.exit_code, run.errors) == (0, []), (stream, got)
        assert got["openat"] == (4, 0) and got["close"] == (7, 3)  # 3 children + the exec'ed image
        assert got["wait4"] == (4, 0) and got["getpid"] == (1, 0)
        assert got == expected, stream
    # The stream names each child's calls with its pid: the root and 4 children.
    pids = {m.group(1) for ln in lines if (m := re.match(r"\[pid +(\d+)\]", ln))}
    assert len(pids) == 5, lines


def test_vfork_parent_survives(targets: Targets) -> None:
    """A vfork child runs on its parent's stack: with vfork's wrapper hooked the
    parent died of stack smashing (sh -c 'sleep 1; ls'); it is not hooked."""
    run = SyscallRun(TargetSpec(argv=(str(targets.path("sys_vfork")),)), stream=True)
    result = run.run(timeout=60)
    assert result.exit_code == 0
    assert result.counts["write"].calls == 1 and result.counts["wait4"].calls == 1
    assert "vfork" not in result.counts


def test_an_agent_that_stops_answering_does_not_hang_the_run(
    targets: Targets, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Leaving waits for the agent (dispose, detach); an agent deadlocked
    inside Frida (seen at a spawned program's exit) would make that wait for
    ever. Here leaving is held on purpose: after the grace time the program
    instr spawned is killed and the run ends, saying so."""
    release = threading.Event()
    real_stop = SyscallRun._stop

    def stop(self: SyscallRun) -> None:
        release.wait(60)
        real_stop(self)

    monkeypatch.setattr(SyscallRun, "_stop", stop)
    # stdin is a pipe nobody writes to: the program waits in read() until killed
    spec = TargetSpec(argv=(str(targets.path("sys_fdhold")),), stdio="pipe")
    run = SyscallRun(spec, trace_spec="trace=write")
    run.stop_grace_s = 1.0
    try:
        run.run(timeout=1)
    finally:
        release.set()
    assert run.errors == [
        f"instr's agent in pid {run.root_pid} stopped answering while instr was leaving"
        " (a deadlock inside Frida, see docs/syscalls.md); instr killed it"
    ]
    assert run.root_pid is not None
    # Killed: its pidfd becomes readable when it ends (ESRCH: already reaped).
    try:
        pidfd = os.pidfd_open(run.root_pid)
    except ProcessLookupError:
        return
    try:
        ready, _, _ = select.select([pidfd], [], [], 10)
    finally:
        os.close(pidfd)
    assert ready, "the program was not killed"
