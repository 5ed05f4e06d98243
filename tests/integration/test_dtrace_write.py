"""`instr dtrace` reading and writing the target's memory: copyin() with printf's %s,
stringof() and tracemem(), on tests/targets/dwrite.c (its behaviour is exact: see the
file)."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

from helpers import Targets, run_instr

N = 3


def dtrace(targets: Targets, tmp_path: Path, program: str, *flags: str) -> tuple[str, str]:
    """``instr dtrace -q FLAGS -n PROGRAM -c 'dwrite N'``: (the D output, the target's)."""
    out = tmp_path / "d.out"
    prog = targets.path("dwrite")
    res = run_instr("dtrace", "-q", *flags, "-o", out, "-n", program, "-c", f"{prog} {N}")
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    return out.read_text(), res.stdout


HEADER = "       0  1  2  3  4  5  6  7  8  9  a  b  c  d  e  f  0123456789abcdef"


def test_tracemem_of_copyin_with_a_size_argument(targets: Targets, tmp_path: Path) -> None:
    out, target = dtrace(
        targets, tmp_path, "pid$target::dw_buf:entry { tracemem(copyin(arg0, arg1), 20); }"
    )
    one = "\n".join(
        [
            "",
            HEADER,
            "    0: 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f  ................",
            "   10: 61 62 63 00" + "   " * 12 + "  abc.",
        ]
    )
    assert out == (one + "\n") * N
    assert target == f"ready\nsum {sum(range(N))}\nusr1 0\nbuf ........\n"


def test_tracemem_shows_at_most_its_size(targets: Targets, tmp_path: Path) -> None:
    out, _ = dtrace(
        targets, tmp_path, "pid$target::dw_buf:entry /tid/ { tracemem(copyin(arg0, 20), 3); }"
    )
    assert out == (f"\n{HEADER}\n    0: 00 01 02{'   ' * 13}  ...\n") * N


def test_copyin_as_text_stops_at_the_nul(targets: Targets, tmp_path: Path) -> None:
    out, _ = dtrace(
        targets,
        tmp_path,
        'pid$target::dw_text:entry { printf("%s|%s|%d\\n", copyin(arg0, 12), '
        "stringof(copyin(arg0, 3)), strlen(stringof(copyin(arg0, 12)))); }",
    )
    assert out == "hello|hel|5\n" * N


def test_copyin_in_a_host_predicate(targets: Targets, tmp_path: Path) -> None:
    out, _ = dtrace(
        targets,
        tmp_path,
        'pid$target::dw_text:entry /stringof(copyin(arg0, 4)) == "hell"/ { n = n + 1; } '
        'pid$target::dw_text:entry /stringof(copyin(arg0, 4)) == "help"/ { m = m + 1; } '
        'END { printf("%d %d\\n", n, m); }',
    )
    assert out == f"{N} 0\n"


# -------------------------------------------------------------------- destructive actions (-w)


def target_lines(sum_: int = sum(range(N)), usr1: int = 0, buf: str = "........") -> str:
    return f"ready\nsum {sum_}\nusr1 {usr1}\nbuf {buf}\n"


def test_raise_is_handled_by_the_target_before_the_call_goes_on(
    targets: Targets, tmp_path: Path
) -> None:
    """The clause's printf runs on the host; raise() in the target, gated by the predicate."""
    out, target = dtrace(
        targets,
        tmp_path,
        'pid$target::dw_sig:entry /arg0 != 1/ { raise(SIGUSR1); printf("%d\\n", arg0); }',
        "-w",
    )
    assert target == target_lines(usr1=N - 1)
    assert out == "".join(f"{i}\n" for i in range(N) if i != 1)


def test_bpftrace_signal_spelling(targets: Targets, tmp_path: Path) -> None:
    _, target = dtrace(targets, tmp_path, 'uprobe:PROG:dw_sig { signal("USR1"); }'.replace(
        "PROG", str(targets.path("dwrite"))), "-w")  # fmt: skip
    assert target == target_lines(usr1=N)


def test_override_at_return_changes_the_value_the_caller_sees(
    targets: Targets, tmp_path: Path
) -> None:
    _, target = dtrace(
        targets, tmp_path, "pid$target::dw_value:return /retval == 2/ { override(100); }", "-w"
    )
    assert target == target_lines(sum_=0 + 1 + 100)


def test_override_at_entry_skips_the_function(targets: Targets, tmp_path: Path) -> None:
    out, target = dtrace(
        targets,
        tmp_path,
        "pid$target::dw_value:entry /arg0 == 1/ { override(-5); } "
        'pid$target::dw_value:return { printf("%d ", retval); }',
        "-w",
    )
    assert target == target_lines(sum_=0 - 5 + 2)
    assert out == "0 -5 2 "  # the return probe sees what the caller gets


def test_copyout_and_copyoutstr_write_the_callers_buffer(targets: Targets, tmp_path: Path) -> None:
    _, target = dtrace(
        targets, tmp_path, 'pid$target::dw_fill:entry { copyout("ABC", arg0, 3); }', "-w"
    )
    assert target == target_lines(buf="ABC.....")
    _, target = dtrace(
        targets, tmp_path, 'pid$target::dw_fill:entry { copyoutstr("hi", arg0, 8); }', "-w"
    )
    assert target == target_lines(buf="hi")


def test_stop_stops_the_process_until_sigcont(targets: Targets, launch, instr_bg) -> None:
    proc = launch(targets.path("dwrite"), N)
    program = "pid$target::dw_sig:entry /arg0 == 1/ { stop(); }"
    instr = instr_bg("dtrace", "-w", "-p", proc.pid, "-n", program)  # not -q: the status line
    instr.err.expect(re.compile(r"matched \d+ probe site"), 60)
    proc.go()
    _, status = os.waitpid(proc.pid, os.WUNTRACED)  # the target is our child: no polling
    assert os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGSTOP
    os.kill(proc.pid, signal.SIGCONT)
    done = proc.finish(30)
    assert (done.returncode, done.stdout) == (0, ["sum 3", "usr1 0", "buf ........"])
    assert instr.finish(60).returncode == 0
