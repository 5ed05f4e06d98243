"""`instr dtrace` around the programs: -l listing without arming, timers and exit(),
programs without a target, and the flags' errors."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from helpers import Targets, instr_argv, instr_env, run_instr


def _listing(stdout: str) -> list[str]:
    return [
        re.sub(r"\bpid\d+\b", "pid<pid>", " ".join(line.split())) for line in stdout.splitlines()
    ]


def test_list_spawned_without_running_it(targets: Targets) -> None:
    prog = targets.path("oneliners")
    res = run_instr(
        "dtrace", "-l", "-n", "pid$target::ol_*:entry", "-n", "syscall::read*:entry",
        "-n", "tick-1s", "-c", f"{prog} 5",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert _listing(res.stdout) == [
        "ID PROVIDER MODULE FUNCTION NAME",
        "1 pid<pid> oneliners ol_add entry",
        "2 pid<pid> oneliners ol_alloc entry",
        "3 pid<pid> oneliners ol_name entry",
        "4 pid<pid> oneliners ol_neg entry",
        "5 syscall read entry",
        "6 syscall readahead entry",
        "7 syscall readlink entry",
        "8 syscall readlinkat entry",
        "9 syscall readv entry",
        "10 dtrace tick-1s",
    ]
    assert "ready" not in res.stdout  # never resumed: the program did not run


def test_list_attached_arms_nothing(targets: Targets, launch) -> None:
    proc = launch(targets.path("oneliners"), 3)
    res = run_instr("dtrace", "-l", "-n", "pid$target:a.out:ol_add:return", "-p", proc.pid)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split()[5:] == ["1", f"pid{proc.pid}", "oneliners", "ol_add", "return"]
    proc.go()
    assert proc.finish(30).returncode == 0  # left alone, it runs to its end


def test_a_tick_exits_while_the_target_waits(targets: Targets, tmp_path: Path) -> None:
    """The target blocks on stdin (never released): only the timer ends the run."""
    out = tmp_path / "d.out"
    prog = targets.path("oneliners")
    with subprocess.Popen(
        instr_argv(
            "dtrace", "-q", "-o", out, "-c", f"{prog} 5",
            "-n", 'interval:ms:100 { printf("tick\\n"); exit(5); } END { printf("end\\n"); }',
        ),
        stdin=subprocess.PIPE,  # kept open: the target waits for its go line
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=instr_env(),
    ) as p:  # fmt: skip
        code = p.wait(timeout=120)
        assert p.stderr is not None
        err = p.stderr.read()
    assert code == 5, err
    assert out.read_text() == "tick\nend\n"


def test_host_only_program_needs_no_target() -> None:
    res = run_instr(
        "dtrace", "-n", 'BEGIN { x = 6; printf("%d %s\\n", x * 7, $1); exit(0); }', "word"
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == "42 word\n"


def test_probes_without_a_target_say_so() -> None:
    res = run_instr("dtrace", "-n", "syscall::read:entry { @ = count(); }")
    assert res.returncode == 2
    assert res.stderr == (
        "instr: error: pid and syscall probes need a process\n  hint: give -p PID or -c CMD\n"
    )
    res = run_instr("dtrace", "-n", "pid$target::malloc:entry { @ = count(); }")
    assert res.returncode == 2
    assert res.stderr.splitlines()[0] == "-n:1:1: error: macro $target is not defined"


def test_a_description_that_matches_nothing_points_at_it(targets: Targets) -> None:
    prog = targets.path("oneliners")
    res = run_instr("dtrace", "-n", "BEGIN {}\npid$target::nosuch*:entry { @ = count(); }",
                    "-c", f"{prog} 3")  # fmt: skip
    assert res.returncode == 2
    assert res.stderr.splitlines() == [
        "-n:2:1: error: probe description pid$target::nosuch*:entry matches nothing: "
        "no function matches '*!nosuch*'",
        "  pid$target::nosuch*:entry { @ = count(); }",
        "  ^",
        "  hint: instr dtrace -l lists what a description matches",
    ]
    assert "ready" not in res.stdout  # never resumed


def _masked(targets: Targets, tmp_path: Path, program: str) -> str:
    out = tmp_path / "d.out"
    prog = targets.path("oneliners")
    res = run_instr("dtrace", "-q", "-o", out, "-c", f"{prog} 30", "-n", program)
    assert res.returncode == 0, res.stderr
    return re.sub(r"\+0x[0-9a-f]+", "+OFF", out.read_text())


def test_stacks_and_callers_as_keys(targets: Targets, tmp_path: Path) -> None:
    # (one probe at a time: a hook on ol_alloc moves its call to malloc into Frida's
    # trampoline, and malloc's stack would start there)
    stacks = _masked(
        targets, tmp_path, "pid$target::malloc:entry /arg0 == 64/ { @[ustack(2)] = count(); }"
    )
    assert stacks == (
        "\n"
        "              oneliners`ol_alloc+OFF\n"
        "              oneliners`main+OFF\n"
        "                7\n"
    )
    callers = _masked(targets, tmp_path, "pid$target::ol_alloc:entry { @c[ucaller] = count(); }")
    assert callers.startswith("\n  oneliners`main+OFF ") and callers.endswith(" 30\n")
    assert callers.split() == ["oneliners`main+OFF", "30"]


def test_ustack_as_an_action_prints_each_firings_stack(targets: Targets, tmp_path: Path) -> None:
    """The same stacks as the key above, one per firing, as DTrace prints them."""
    stacks = _masked(targets, tmp_path, "pid$target::malloc:entry /arg0 == 64/ { ustack(2); }")
    one = "\n              oneliners`ol_alloc+OFF\n              oneliners`main+OFF\n\n"
    assert stacks == one * 7


def test_a_tick_prints_fresh_tables(targets: Targets, tmp_path: Path) -> None:
    """A tick's printa() asks the target for its tables first: the last call counted
    before the tick saw it is in them. The tick waits for a global set by the program's
    "done" line, written after its last call;
    the target holds after its work (its stdin stays open), so only exit() ends the run."""
    out = tmp_path / "d.out"
    prog = targets.path("oneliners")
    program = (
        "pid$target::ol_add:entry { @n = count(); @s = sum(arg0); } "
        "syscall::write:entry /arg0 == 1 && arg2 != 6/ { last = 1; } "  # "done": not "ready"
        'tick-10ms /last/ { printa("%@d calls ", @n); printa("sum %@d\\n", @s); clear(@n); '
        "exit(0); } END { printa(@n); }"
    )
    with subprocess.Popen(
        instr_argv("dtrace", "-q", "-o", out, "-c", f"{prog} 30 hold", "-n", program),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=instr_env(),
    ) as p:
        assert p.stdin is not None and p.stderr is not None
        p.stdin.write("go\n")  # the first wait; the second one is never answered
        p.stdin.flush()
        code = p.wait(timeout=120)
        err = p.stderr.read()
    assert code == 0, err
    # END: @n was cleared (printa prints an empty table as a blank line); @s, not
    # printed by END, is printed at the end
    assert out.read_text() == "30 calls sum 435\n" + "\n" + f"\n{435:>17}\n"


def test_trace_lists_with_the_same_resolver(targets: Targets) -> None:
    prog = targets.path("oneliners")
    res = run_instr("trace", "-l", "-i", "ol_*", "-i", "libc.so*!mallo*", "-x", "malloc_*",
                    "-x", "ol_n*", "--", prog, 3)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        "oneliners!ol_add",
        "oneliners!ol_alloc",
        "libc.so.6!malloc",
        "libc.so.6!mallopt",
    ]
    assert "ready" not in res.stdout  # never resumed
