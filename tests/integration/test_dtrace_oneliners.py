"""`instr dtrace` one-liners, from DTrace's and bpftrace's classic collections adapted to
user space, run on tests/targets/oneliners.c (its behaviour is exact: see the file).

Each row runs the one-liner with -c against the target (N = 30 iterations) and
compares the program's output exactly. Where bpftrace can say the same thing
(uprobes, syscall tracepoints) and can run here, the same test runs bpftrace on
the same target and compares the numbers.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from dtrace_table import (
    ADD_ARG1,
    ALLOC,
    PATH,
    SIZES_BY_COUNT,
    TABLE,
    N,
    agg_line,
    rows,
)
from helpers import Targets, run_instr


def dtrace(targets: Targets, tmp_path: Path, *args: str, n: int = N, code: int = 0) -> str:
    """Run ``instr dtrace -q ARGS -c 'oneliners N' -o FILE``; the program's output."""
    out = tmp_path / "d.out"
    prog = targets.path("oneliners")
    res = run_instr("dtrace", "-q", "-o", out, *args, "-c", f"{prog} {n}")
    assert res.returncode == code, res.stderr
    assert "Traceback" not in res.stderr
    return out.read_text()


# -------------------------------------------------------------------- bpftrace, where it runs


def _bpftrace_runs() -> bool:
    exe = shutil.which("bpftrace")
    if exe is None:
        return False
    res = subprocess.run(
        [exe, "-e", "BEGIN { exit(); }"], capture_output=True, text=True, timeout=60, check=False
    )
    return res.returncode == 0


BPFTRACE = _bpftrace_runs()


def bpftrace(targets: Targets, program: str, n: int = N) -> dict[str, dict[str, int]]:
    """Run bpftrace on the same target; its maps: {"@name": {key: value}} ("" unkeyed)."""
    prog = targets.path("oneliners")
    res = subprocess.run(
        ["bpftrace", "-e", program.replace("PROG", str(prog)), "-c", f"{prog} {n}"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    maps: dict[str, dict[str, int]] = {}
    for m in re.finditer(r"^(@\w*)(?:\[(.*)\])?: (-?\d+)$", res.stdout, re.M):
        maps.setdefault(m.group(1), {})[m.group(2) or ""] = int(m.group(3))
    return maps


def compare(targets: Targets, program: str, want: dict[str, dict[str, int]]) -> None:
    """bpftrace's maps for ``program`` are ``want`` (the numbers instr gave)."""
    if not BPFTRACE:
        return  # instr's own numbers were checked exactly; bpftrace cannot run here
    assert bpftrace(targets, program) == want


# -------------------------------------------------------------------- the seeds


def test_seed_syscall_entry_probefunc(targets: Targets, tmp_path: Path) -> None:
    out = dtrace(targets, tmp_path, "-n", 'syscall:::entry { printf("%s", probefunc); }')
    loop = "".join("readwrite" + ("openat" if i % 5 == 0 else "") for i in range(N))
    # opens of /dev/zero and /dev/null, moved to fds 10 and 11, stdout's fstat, "ready", stdin's fstat (a pipe:
    # no isatty ioctl), the read of the go line; the loop; "done" at exit (exit_group
    # never returns: syscall probes fire when a call returns, see docs/dtrace.md)
    assert out == "openatopenatdup2dup2closeclosenewfstatatwritenewfstatatread" + loop + "write"


def test_seed_malloc_bytes_by_execname(targets: Targets, tmp_path: Path) -> None:
    seed = "pid$target::malloc:entry { @bytes[execname] = sum(arg0); }"
    out = dtrace(targets, tmp_path, "-n", seed)
    # stdout's and stdin's stdio buffers, then ol_alloc's blocks
    total = 4096 + 4096 + sum(size * calls for size, calls in ALLOC.items())
    assert out == "\n" + agg_line("oneliners", total) + "\n"


def test_seed_attach_with_p(targets: Targets, tmp_path: Path, launch, instr_bg) -> None:
    """dtrace -p PID: attach to a running program, which keeps running after."""
    proc = launch(targets.path("oneliners"), N)
    out = tmp_path / "d.out"
    instr = instr_bg(
        "dtrace", "-o", out, "-p", proc.pid, "-n",
        "pid$target::ol_add:entry { @calls = count(); @sum = sum(arg1); } "
        "syscall::write:entry /arg0 == 11/ { @w = count(); }",
    )  # fmt: skip
    instr.err.expect(re.compile(r"matched \d+ probe site"), 60)
    proc.go()
    assert proc.out.expect(re.compile(r"done")) == f"done {N}"
    assert proc.finish(30).returncode == 0
    assert instr.finish(60).returncode == 0
    assert out.read_text() == "\n".join(
        ["", agg_line(None, N), "", agg_line(None, ADD_ARG1), "", agg_line(None, N), ""]
    )


# -------------------------------------------------------------------- the table


@pytest.mark.parametrize(
    ("program", "want", "bpf", "bpf_want"),
    [t[1:] for t in TABLE],
    ids=[t[0] for t in TABLE],
)
def test_oneliner(
    targets: Targets,
    tmp_path: Path,
    program: str,
    want: str,
    bpf: str | None,
    bpf_want: dict[str, dict[str, int]],
) -> None:
    prog = str(targets.path("oneliners"))
    assert dtrace(targets, tmp_path, "-n", program.replace(PATH, prog)) == want
    if bpf is not None:
        compare(targets, bpf, bpf_want)


def test_table_size() -> None:
    assert len(TABLE) + 3 >= 40  # with the three seeds


def test_script_file_with_macro_and_pragma(targets: Targets, tmp_path: Path) -> None:
    script = tmp_path / "add.d"
    script.write_text(
        "#!/usr/sbin/dtrace -s\n#pragma D option quiet\n"
        'pid$target::ol_add:entry\n/arg0 == $1/\n{\n\tprintf("%d\\n", arg1);\n}\n'
    )
    prog = targets.path("oneliners")
    out = tmp_path / "d.out"
    res = run_instr("dtrace", "-o", out, "-s", script, "-c", f"{prog} {N}", "5")
    assert res.returncode == 0, res.stderr
    assert out.read_text() == "10\n"
    assert res.stderr == ""  # quiet: no status lines


def test_exit_in_begin_sets_the_status_and_never_resumes(targets: Targets, tmp_path: Path) -> None:
    out = dtrace(
        targets,
        tmp_path,
        "-n",
        'BEGIN { printf("stop\\n"); exit(3); } pid$target::ol_add:entry { @ = count(); }',
        code=3,
    )
    assert out == "stop\n"  # the target never ran: @ is empty, and not printed


def test_exit_from_a_probe_stops_the_run(targets: Targets, tmp_path: Path) -> None:
    out = dtrace(
        targets,
        tmp_path,
        "-n",
        'pid$target::ol_name:entry { printf("%s\\n", str(arg0)); exit(0); }',
    )
    assert out == "alpha\n"


def test_attach_then_ctrl_c_runs_end(targets: Targets, tmp_path: Path, launch, instr_bg) -> None:
    """The usual `dtrace -p PID`: attach, let it run, Ctrl-C; END and the tables are
    printed, and the program keeps running without instr."""
    proc = launch(targets.path("oneliners"), N, "hold")
    out = tmp_path / "d.out"
    instr = instr_bg(
        "dtrace", "-o", out, "-p", proc.pid, "-n",
        'pid$target::ol_alloc:entry { @[arg0] = count(); } END { printf("end\\n"); }',
    )  # fmt: skip
    instr.err.expect(re.compile(r"matched \d+ probe site"), 60)
    proc.go()
    assert proc.out.expect("done") == f"done {N}"
    assert proc.out.expect("ready") == "ready"  # holding: every call was made
    instr.interrupt()
    assert instr.finish(60).returncode == 0
    assert out.read_text() == "end\n" + rows(*SIZES_BY_COUNT)
    proc.go()  # still alive, and unhooked
    assert proc.finish(30).returncode == 0
