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
from helpers import Targets, run_instr

N = 30
# What the target does for N = 30 (see oneliners.c).
ADD_ARG0 = sum(range(N))  # 435
ADD_ARG1 = 2 * ADD_ARG0  # 870
ADD_RET = 3 * ADD_ARG0  # 1305
ALLOC = {16: 8, 32: 8, 64: 7, 128: 7}  # size -> calls
READ_ZERO = sum(1 + i % 8 for i in range(N))  # 129 bytes asked of /dev/zero
FAILED_OPENS = len(range(0, N, 5))  # 6


def agg_line(key: str | int | None, value: int) -> str:
    """One row of DTrace's default printa: a string key in 50 columns, ints in 16."""
    if key is None:
        return f"{value:>17}"
    k = f"  {key:<50}" if isinstance(key, str) else f" {key:>16}"
    return f"{k}{value:>17}"


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


@pytest.mark.xfail(
    strict=True,
    reason="the fast tier's replaceFast on malloc also counts Frida's own threads' mallocs "
    "(the JS tier and Interceptor.attach leave them out); reported to the lead",
)
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

PATH = "PROG"  # the target's path, for uprobe:PATH:FUNC (filled in per test)


def rows(*pairs: tuple[str | int | None, int]) -> str:
    """One aggregation printed at the end: a blank line, then its rows."""
    return "\n" + "".join(agg_line(k, v) + "\n" for k, v in pairs)


def hist(*buckets: tuple[int, int]) -> list[str]:
    """DTrace's quantize/lquantize block for (bucket, count) rows, all rows given."""
    total = sum(c for _, c in buckets)
    lines = ["           value  ------------- Distribution ------------- count"]
    for b, c in buckets:
        bar = "@" * ((c * 80 + total) // (2 * total))
        lines.append(f"{b:>16} |{bar:<40} {c}")
    return lines


SIZES_BY_COUNT = sorted(ALLOC.items(), key=lambda kv: (kv[1], kv[0]))
NAMES = [("alpha", 10), ("beta", 10), ("gamma", 10)]

# (id, D program, expected output, bpftrace program or None, bpftrace's maps)
TABLE: list[tuple[str, str, str, str | None, dict[str, dict[str, int]]]] = [
    (
        "count-calls",
        "pid$target::ol_add:entry { @ = count(); }",
        rows((None, N)),
        "uprobe:PROG:ol_add { @ = count(); }",
        {"@": {"": N}},
    ),
    (
        "sum-arg0",
        "pid$target::ol_add:entry { @ = sum(arg0); }",
        rows((None, ADD_ARG0)),
        "uprobe:PROG:ol_add { @ = sum(arg0); }",
        {"@": {"": ADD_ARG0}},
    ),
    (
        "count-by-arg0",
        "pid$target::ol_alloc:entry { @[arg0] = count(); }",
        rows(*SIZES_BY_COUNT),
        "uprobe:PROG:ol_alloc { @[arg0] = count(); }",
        {"@": {str(k): v for k, v in ALLOC.items()}},
    ),
    (
        "sum-retval",
        "pid$target::ol_add:return { @ = sum(retval); }",
        rows((None, ADD_RET)),
        "uretprobe:PROG:ol_add { @ = sum(retval); }",
        {"@": {"": ADD_RET}},
    ),
    (
        "arg1-is-retval-in-return",
        "pid$target::ol_add:return { @ = sum(arg1); }",
        rows((None, ADD_RET)),
        None,
        {},
    ),
    (
        "negative-retval-predicate",
        "pid$target::ol_neg:return /retval < -10/ { @ = count(); }",
        rows((None, 6)),
        "uretprobe:PROG:ol_neg /(int64)retval < -10/ { @ = count(); }",
        {"@": {"": 6}},
    ),
    (
        "min-max-avg",
        "pid$target::ol_neg:return { @lo = min(retval); @hi = max(retval); @mean = avg(retval); }",
        rows((None, -27)) + rows((None, 0)) + rows((None, -13)),
        None,
        {},
    ),
    (
        "count-by-string",
        "pid$target::ol_name:entry { @[copyinstr(arg0)] = count(); }",
        rows(*NAMES),
        "uprobe:PROG:ol_name { @[str(arg0)] = count(); }",
        {"@": {k: v for k, v in NAMES}},
    ),
    (
        "count-by-retval",
        "pid$target::ol_name:return { @[retval] = count(); }",
        rows((4, 10), (5, 20)),
        "uretprobe:PROG:ol_name { @[retval] = count(); }",
        {"@": {"4": 10, "5": 20}},
    ),
    (
        "glob-by-probefunc",
        "pid$target::ol_*:entry { @[probefunc] = count(); }",
        rows(("ol_neg", 10), ("ol_add", N), ("ol_alloc", N), ("ol_name", N)),
        None,
        {},
    ),
    (
        "a-out-module-printf",
        'pid$target:a.out:ol_add:entry /arg0 == 7/ { printf("%d %d\\n", arg0, arg1); }',
        "7 14\n",
        None,
        {},
    ),
    (
        "host-predicate-modulo",
        'pid$target::ol_add:entry /arg0 % 10 == 0/ { printf("%d:%d ", arg0, arg1); }',
        "0:0 10:20 20:40 ",
        None,
        {},
    ),
    (
        "quantize",
        "pid$target::ol_alloc:entry { @ = quantize(arg0); }",
        "\n" + "\n".join(hist((8, 0), (16, 8), (32, 8), (64, 7), (128, 7), (256, 0))) + "\n\n",
        None,
        {},
    ),
    (
        "lquantize",
        "pid$target::ol_add:entry { @ = lquantize(arg0, 0, 30, 10); }",
        "\n"
        + "\n".join(
            [
                "           value  ------------- Distribution ------------- count",
                f"{'< 0':>16} |{'':<40} 0",
                f"{0:>16} |{'@' * 13:<40} 10",
                f"{10:>16} |{'@' * 13:<40} 10",
                f"{20:>16} |{'@' * 13:<40} 10",
                f"{'>= 30':>16} |{'':<40} 0",
            ]
        )
        + "\n\n",
        None,
        {},
    ),
    (
        "probefunc-probename",
        'pid$target::ol_add:entry /arg0 < 3/ { printf("%s:%s %d\\n", probefunc, probename, arg0); }',
        "ol_add:entry 0\nol_add:entry 1\nol_add:entry 2\n",
        None,
        {},
    ),
    (
        "begin-end",
        'BEGIN { printf("hello\\n"); } END { printf("bye\\n"); }',
        "hello\nbye\n",
        None,
        {},
    ),
    (
        "global-in-predicate",
        'BEGIN { x = 5; } pid$target::ol_add:entry /arg0 == x/ { printf("%d\\n", arg1); }',
        "10\n",
        None,
        {},
    ),
    (
        "global-counter",
        'pid$target::ol_add:entry { n = n + 1; } END { printf("%d\\n", n); }',
        f"{N}\n",
        None,
        {},
    ),
    (
        "ternary",
        'pid$target::ol_add:entry /arg0 < 4/ { printf("%s ", arg0 % 2 ? "odd" : "even"); }',
        "even odd even odd ",
        None,
        {},
    ),
    (
        "printf-flags",
        'pid$target::ol_add:entry /arg0 == 1/ { printf("%x|%5d|%-5d|%05d|%#x\\n", 255, arg1, '
        "arg1, arg1, arg0); }",
        "ff|    2|2    |00002|0x1\n",
        None,
        {},
    ),
    (
        "unsigned-view",
        'pid$target::ol_neg:return /retval == -3/ { printf("%d %u\\n", retval, retval); }',
        "-3 18446744073709551613\n",
        None,
        {},
    ),
    (
        "printa-format",
        'pid$target::ol_*:entry { @[probefunc] = count(); } END { printa("%-8s %@d\\n", @); }',
        "ol_neg   10\nol_add   30\nol_alloc 30\nol_name  30\n",
        None,
        {},
    ),
    (
        "trunc",
        "pid$target::ol_alloc:entry { @[arg0] = sum(arg0); } END { trunc(@, 2); }",
        rows((64, 448), (128, 896)),
        None,
        {},
    ),
    (
        "clear",
        "pid$target::ol_add:entry { @ = count(); } END { clear(@); }",
        "",  # cleared, so empty: an empty aggregation is not printed at the end
        None,
        {},
    ),
    (
        "two-aggregations",
        "pid$target::ol_add:entry { @a = count(); @b = sum(arg1); }",
        rows((None, N)) + rows((None, ADD_ARG1)),
        "uprobe:PROG:ol_add { @a = count(); @b = sum(arg1); }",
        {"@a": {"": N}, "@b": {"": ADD_ARG1}},
    ),
    (
        "two-probes-one-clause",
        "pid$target::ol_add:entry, pid$target::ol_neg:entry { @[probefunc] = count(); }",
        rows(("ol_neg", 10), ("ol_add", N)),
        None,
        {},
    ),
    (
        "self-host-pairing",
        "pid$target::ol_add:entry { self->a = arg0; } "
        'pid$target::ol_add:return /self->a == 5/ { printf("%d\\n", retval); self->a = 0; }',
        "15\n",
        None,
        {},
    ),
    (
        "self-string-paired",
        "pid$target::ol_name:entry { self->s = copyinstr(arg0); } "
        "pid$target::ol_name:return { @[self->s] = sum(retval); self->s = 0; }",
        rows(("beta", 40), ("alpha", 50), ("gamma", 50)),
        None,
        {},
    ),
    (
        "self-arg-paired-predicate",
        "pid$target::ol_add:entry { self->a = arg0; } "
        "pid$target::ol_add:return /retval == 3 * self->a/ { @ = count(); }",
        rows((None, N)),
        None,
        {},
    ),
    (
        "normalize",
        "pid$target::ol_alloc:entry { @[arg0] = sum(arg0); } END { normalize(@, 8); }",
        rows((16, 16), (32, 32), (64, 56), (128, 112)),
        None,
        {},
    ),
    (
        "clause-local-this",
        'pid$target::ol_add:entry /arg0 < 2/ { this->x = arg0 * 10; printf("%d ", this->x + 1); }',
        "1 11 ",
        None,
        {},
    ),
    (
        "string-ordering-on-the-host",
        'pid$target::ol_name:entry /copyinstr(arg0) < "b"/ { n = n + 1; } END { printf("%d\\n", n); }',
        "10\n",
        None,
        {},
    ),
    (
        "strlen-predicate",
        "pid$target::ol_name:entry /strlen(copyinstr(arg0)) == 4/ { @ = count(); }",
        rows((None, 10)),
        'uprobe:PROG:ol_name /str(arg0) == "beta"/ { @ = count(); }',
        {"@": {"": 10}},
    ),
    (
        "and-or-predicate",
        "pid$target::ol_add:entry /arg0 >= 10 && arg0 < 20 || arg0 == 29/ { @ = count(); }",
        rows((None, 11)),
        "uprobe:PROG:ol_add /(arg0 >= 10 && arg0 < 20) || arg0 == 29/ { @ = count(); }",
        {"@": {"": 11}},
    ),
    (
        "avg-max",
        "pid$target::ol_add:entry { @mean = avg(arg0); @top = max(arg1); }",
        rows((None, 14)) + rows((None, 58)),
        "uprobe:PROG:ol_add { @mean = avg(arg0); @top = max(arg1); }",
        {"@mean": {"": 14}, "@top": {"": 58}},
    ),
    (
        "stddev",
        "pid$target::ol_add:entry { @ = stddev(arg0); }",
        rows((None, 8)),
        None,
        {},
    ),
    (
        "uprobe-spelling",
        "uprobe:PROG:ol_add { @c = count(); }",
        rows((None, N)),
        "uprobe:PROG:ol_add { @c = count(); }",
        {"@c": {"": N}},
    ),
    (
        "uretprobe-spelling",
        "uretprobe:PROG:ol_name { @s = sum(retval); }",
        rows((None, 140)),
        "uretprobe:PROG:ol_name { @s = sum(retval); }",
        {"@s": {"": 140}},
    ),
    (
        "syscall-count-by-probefunc",
        "syscall::read*:entry, syscall::write:entry { @[probefunc] = count(); }",
        rows(("read", N + 1), ("write", N + 2)),
        None,
        {},
    ),
    (
        "syscall-read-bytes-by-fd",
        "syscall::read:entry { @[arg0] = sum(arg2); }",
        rows((10, READ_ZERO), (0, 4096)),
        None,
        {},
    ),
    (
        "syscall-write-bytes",
        "syscall::write:entry /arg0 == 11/ { @bytes = sum(arg2); }",
        rows((None, 10 * N)),
        "tracepoint:syscalls:sys_enter_write /pid == cpid && args->fd == 11/ "
        "{ @bytes = sum(args->count); }",
        {"@bytes": {"": 10 * N}},
    ),
    (
        "syscall-write-by-fd",
        "syscall::write:entry { @[arg0] = count(); }",
        rows((1, 2), (11, N)),
        "tracepoint:syscalls:sys_enter_write /pid == cpid/ { @[args->fd] = count(); }",
        {"@": {"1": 2, "11": N}},
    ),
    (
        "syscall-open-paths",
        'syscall::openat:entry { printf("%s\\n", copyinstr(arg1)); }',
        "/dev/zero\n/dev/null\n" + "/nonexistent/oneliners\n" * FAILED_OPENS,
        None,
        {},
    ),
    (
        "syscall-errno",
        "syscall::openat:return /retval < 0/ { @[errno] = count(); }",
        rows((2, FAILED_OPENS)),
        None,
        {},
    ),
    (
        "syscall-read-retval",
        "syscall::read:return { @[retval] = count(); }",
        rows((0, 1), (7, 3), (8, 3), (1, 4), (2, 4), (3, 4), (4, 4), (5, 4), (6, 4)),
        None,
        {},
    ),
    (
        "tracepoint-spelling",
        "tracepoint:syscalls:sys_enter_write { @[probefunc] = count(); }",
        rows(("write", N + 2)),
        None,
        {},
    ),
    (
        "pid-is-target",
        "syscall::read:entry /pid == $target/ { @ = count(); }",
        rows((None, N + 1)),
        None,
        {},
    ),
    (
        "syscall-quantize",
        "syscall::write:entry { @ = quantize(arg2); }",
        "\n" + "\n".join(hist((2, 0), (4, 1), (8, 31), (16, 0))) + "\n\n",
        None,
        {},
    ),
]


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
