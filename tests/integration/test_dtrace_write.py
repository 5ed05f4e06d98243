"""`instr dtrace` reading and writing the target's memory: copyin() with printf's %s,
stringof() and tracemem(), on tests/targets/dwrite.c (its behaviour is exact: see the
file)."""

from __future__ import annotations

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
