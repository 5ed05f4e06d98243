"""The D front end's error corpus: every bad program exits 2 with one diagnostic at
FILE:LINE:COL, the line itself, a caret under the column and (mostly) a hint; no traceback.

Pure compile-time checks (nothing is spawned: errors come before the target)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import instr.clicore
from instr.cli import main


@pytest.fixture(autouse=True)
def _keep_frida(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command closes Frida's device manager as it ends (instr.clicore.guard); in this
    process that would leave it closed for every later test, so here it stays open."""
    monkeypatch.setattr(instr.clicore, "release_frida", lambda *a, **k: None)


# (program, first line of the diagnostic, hint or None)
CORPUS = [
    ("BEGIN { speculate(1); }", "-n:1:9: error: speculation is not supported", None),
    ("BEGIN { x++; }", "-n:1:10: error: '++' is not supported", "write x = x + 1"),
    (
        "BEGIN { y = (int)x; }",
        "-n:1:13: error: casts are not supported",
        "values are 64-bit integers or strings",
    ),
    (
        "BEGIN { *p = 1; }",
        "-n:1:9: error: pointer dereference is not supported",
        "read memory with copyinstr() or str()",
    ),
    (
        "fbt::vfs_read:entry { }",
        "-n:1:1: error: the fbt provider traces kernel functions: instr traces user space only",
        "use uprobe:LIBRARY:FUNCTION or tracepoint:syscalls:sys_enter_NAME",
    ),
    (
        "kprobe:do_sys_open { }",
        "-n:1:1: error: kprobes trace kernel functions: instr traces user space only",
        "use uprobe:LIBRARY:FUNCTION or tracepoint:syscalls:sys_enter_NAME",
    ),
    (
        "profile-0 { @[ustack()] = count(); }",
        "-n:1:1: error: bad sampling rate '0'",
        "e.g. profile-99 (Hz), profile-997hz or profile-10ms; 1 to 5000 Hz",
    ),
    (
        "profile-9999 { @ = count(); }",
        "-n:1:1: error: sampling rate '9999' is out of range",
        "the sampler takes 1 to 5000 samples a second of each thread's CPU time: "
        "profile-1 to profile-5000, profile-1s to profile-200us",
    ),
    (
        "profile:hz { @ = count(); }",
        "-n:1:1: error: bad profile probe 'profile:hz'",
        "write profile:hz:N, profile:ms:N, profile:us:N or profile:s:N",
    ),
    (
        "profile-99 { @ = count(); trace(tid); }",
        "-n:1:27: error: profile clauses only count samples into aggregations",
        "e.g. @[ustack()] = count(); actions go in other clauses",
    ),
    (
        "profile-99 { @[arg0] = count(); }",
        "-n:1:16: error: this key has no value in a profile clause",
        "keys here: ustack(), ustack(N), tid, pid, execname, ufunc(arg1), umod(arg1)",
    ),
    (
        "profile-99 /arg0 == 1/ { @ = count(); }",
        "-n:1:13: error: a profile-99 predicate can test tid, pid and execname only",
        "a sample has no arguments or variables",
    ),
    (
        "profile-99 { @ = sum(1); }",
        "-n:1:18: error: a profile clause counts samples: its aggregations use count()",
        "e.g. @[ustack()] = count()",
    ),
    (
        "profile-99 { @[ufunc(arg0)] = count(); }",
        "-n:1:16: error: in a profile clause ufunc() takes arg1, the sampled user PC",
        "write ufunc(arg1)",
    ),
    (
        "profile-97 { }",
        "-n:1:1: error: a profile-97 clause needs an aggregation",
        "e.g. profile-99 { @[ustack()] = count(); }",
    ),
    (
        "profile-99, syscall::read:entry { @ = count(); }",
        "-n:1:1: error: a clause cannot mix profile probes with other probes",
        "write two clauses",
    ),
    (
        "tracepoint:sched:sched_switch { }",
        "-n:1:1: error: tracepoint 'tracepoint:sched:sched_switch' is not supported",
        "only tracepoint:syscalls:sys_enter_NAME and sys_exit_NAME",
    ),
    (
        "syscall::opne:entry { }",
        "-n:1:1: error: unknown system call 'opne'",
        "did you mean 'open'?",
    ),
    (
        "pid$target::malloc { }",
        "-n:1:1: error: probe description 'pid$target::malloc' needs four fields: provider:module:function:name",
        "e.g. pid$target::malloc:entry",
    ),
    (
        "pid$target::malloc:entri { }",
        "-n:1:1: error: unknown probe name 'entri' for the pid provider",
        "use entry or return, or a hex offset",
    ),
    (
        "tick-0s { exit(0); }",
        "-n:1:1: error: bad period '0s'",
        "e.g. tick-1s, tick-100ms, tick-10hz",
    ),
    ("uprobe:libc { }", "-n:1:1: error: bad uprobe 'uprobe:libc'", "write uprobe:LIBRARY:FUNCTION"),
    (
        "pid$target::malloc:entry { @x = summ(arg0); }",
        "-n:1:33: error: unknown aggregating function 'summ'",
        "did you mean 'sum'?",
    ),
    (
        'pid$target::malloc:entry { printf("%d %d\\n", arg0); }',
        "-n:1:35: error: printf format has 2 conversion(s) but 1 argument(s) follow it",
        None,
    ),
    (
        'pid$target::malloc:entry { printf("%d\\n", execname); }',
        "-n:1:43: error: %d needs an integer, not a string",
        "use %s",
    ),
    (
        'pid$target::malloc:entry { printf("%f\\n", arg0); }',
        "-n:1:35: error: printf conversion '%f' is not supported",
        "supported: %d %i %u %x %X %o %c %s %p %%",
    ),
    (
        "pid$target::malloc:entry { trace(retval); }",
        "-n:1:34: error: retval has a value only in :return probes",
        "trace the function's return: ...:return",
    ),
    (
        "pid$target::malloc:return { trace(arg0); }",
        "-n:1:35: error: in a :return probe arg0 is not an argument (arg0 is the return offset, arg1 the return value)",
        "use retval, or save the argument at entry: self->x = arg0",
    ),
    (
        "pid$target::malloc:entry { @a = count(); } pid$target::free:entry { @a = sum(arg0); }",
        "-n:1:74: error: @a is count() at 1:28, not sum()",
        "an aggregation keeps one function",
    ),
    (
        "pid$target::malloc:entry { @a = sum(copyinstr(arg0)); }",
        "-n:1:37: error: this value cannot be aggregated in the target",
        "aggregate an argument (arg0..arg9), retval, or timestamp - self->ts with self->ts = timestamp at the same function's entry",
    ),
    (
        "BEGIN { @a = count(); }",
        "-n:1:12: error: aggregations cannot be updated in BEGIN clauses",
        "update them in pid or syscall clauses",
    ),
    (
        "pid$target::malloc:entry { printa(@a); }",
        "-n:1:28: error: printa() is supported in BEGIN, END and tick clauses only",
        None,
    ),
    (
        'BEGIN { printf("hi") ',
        "-n:1:22: error: expected ';' or '}' after a statement, found the end of the program",
        None,
    ),
    ('BEGIN { printf("hi); }', "-n:1:16: error: string is not closed", 'end it with "'),
    (
        "BEGIN { foo(); }",
        "-n:1:9: error: unknown action 'foo'",
        "actions: printf, printa, trace, exit, clear, trunc",
    ),
    (
        "BEGIN { exit(); }",
        "-n:1:9: error: exit() takes 1 argument (the exit status), not 0",
        "e.g. exit(0)",
    ),
    (
        "pid$target::malloc:entry { @a = lquantize(arg0); }",
        "-n:1:33: error: lquantize() takes 3 or 4 arguments, not 1",
        None,
    ),
    (
        "pid$target::malloc:entry { @a = llquantize(arg0, 10, 0, 6); }",
        "-n:1:33: error: llquantize() takes 5 arguments, not 4",
        None,
    ),
    (
        "pid$target::malloc:entry { @a = llquantize(arg0, 1, 0, 6, 20); }",
        "-n:1:50: error: llquantize()'s factor must be 2 or more, not 1",
        "e.g. 10",
    ),
    (
        "pid$target::malloc:entry { @a = llquantize(arg0, 10, 3, 3, 20); }",
        "-n:1:57: error: llquantize()'s high magnitude (3) must be greater than its low "
        "magnitude (3)",
        "e.g. llquantize(x, 10, 0, 6, 20)",
    ),
    (
        "pid$target::malloc:entry { @a = llquantize(arg0, 10, 0, 6, 25); }",
        "-n:1:60: error: llquantize()'s steps (25) must be a multiple of its factor (10)",
        "e.g. 10, 20 or 100",
    ),
    (
        "pid$target::malloc:entry { @a = llquantize(arg0, 4, 0, 6, 24); }",
        "-n:1:59: error: llquantize()'s steps (24) must divide a power of its factor (4)",
        "e.g. 4 or 16",
    ),
    (
        "pid$target::malloc:entry { @a = llquantize(arg0, 10, 0, 20, 10); }",
        "-n:1:57: error: llquantize(): 10 to the power 21 does not fit in 64 bits",
        "lower the high magnitude",
    ),
    (
        "pid$target::malloc:entry { @a = llquantize(arg0, 10, 0, x, 10); }",
        "-n:1:57: error: llquantize()'s bounds must be integer constants",
        None,
    ),
    (
        "pid$target::malloc:entry { this->b = copyin(arg0, 4); }",
        "-n:1:38: error: copyin()'s bytes can only be printed or made a string here",
        'use printf("%s", copyin(...)), tracemem(copyin(arg0, 16), 16) or stringof(copyin(...))',
    ),
    (
        'syscall::read:entry { printf("%s", copyin(arg1, 4)); }',
        "-n:1:36: error: copyin() is supported in pid :entry probes only",
        "the bytes are read at the function's entry",
    ),
    (
        'pid$target::malloc:entry { printf("%s", copyin(arg0, 0)); }',
        "-n:1:54: error: copyin()'s size must be a constant from 1 to 4096 or an argument",
        "e.g. copyin(arg1, 16) or copyin(arg1, arg2)",
    ),
    (
        'pid$target::malloc:entry { printf("%s", copyin(probefunc, 4)); }',
        "-n:1:48: error: copyin() reads at an argument here: arg0..arg9",
        "e.g. copyin(arg1, 16)",
    ),
    (
        'pid$target::malloc:entry { printf("%x", copyin(arg0, 4)); }',
        "-n:1:41: error: %x needs an integer, not copyin()'s bytes",
        "print them with %s or tracemem()",
    ),
    (
        "pid$target::malloc:entry { tracemem(arg0, 4); }",
        "-n:1:37: error: tracemem() dumps copyin()'s bytes",
        "e.g. tracemem(copyin(arg0, 16), 16)",
    ),
    (
        "pid$target::malloc:entry { stop(); }",
        "-n:1:28: error: destructive action stop() needs -w",
        "instr dtrace -w (or #pragma D option destructive) allows actions that change the target",
    ),
    (
        "#pragma D option destructive\npid$target::malloc:return { raise(SIGUSR1); }",
        "-n:2:29: error: raise() is supported in pid :entry clauses only",
        "it runs as the call starts",
    ),
    (
        "#pragma D option destructive\nsyscall::read:entry { override(0); }",
        "-n:2:23: error: override() is supported in pid probes only",
        "it runs in the target, at the function's hook",
    ),
    (
        "#pragma D option destructive\npid$target::malloc:entry { raise(SIGFOO); }",
        "-n:2:34: error: unknown signal 'SIGFOO'",
        "e.g. SIGUSR1, SIGTERM",
    ),
    (
        "#pragma D option destructive\npid$target::malloc:entry /x == 1/ { raise(SIGUSR1); }",
        "-n:2:27: error: this predicate runs on the host (x is a variable), so it cannot decide "
        "raise() in the target",
        "use arguments, retval, tid and constants here",
    ),
    (
        "#pragma D option destructive\npid$target::malloc:entry { override(arg0); }",
        "-n:2:37: error: override()'s value must be an integer constant",
        "the target applies it without asking the host",
    ),
    (
        '#pragma D option destructive\npid$target::malloc:entry { copyout("x", probefunc, 1); }',
        "-n:2:41: error: copyout() writes where an argument points here: arg0..arg9",
        'e.g. copyout("text", arg0, 4)',
    ),
    (
        "#pragma D option destructive\npid$target::malloc:entry { stop(1); }",
        "-n:2:28: error: stop() takes 0 arguments, not 1",
        "e.g. stop()",
    ),
    (
        "pid$target::mall*:1c { }",
        "-n:1:1: error: an instruction probe names one function, not a pattern",
        "name it, e.g. pid$target::main:1c",
    ),
    (
        "pid$target::malloc:1c { @ = sum(arg0); }",
        "-n:1:33: error: arg0 has no value at an instruction probe (pid$target::malloc:1c)",
        "read arguments at :entry and the result at :return",
    ),
    (
        "#pragma D option destructive\npid$target::malloc:4 { override(0); }",
        "-n:2:24: error: override() is supported in pid :entry and :return clauses",
        "an instruction probe is inside the function",
    ),
    (
        "inline int x = 1;",
        "-n:1:1: error: inline declarations are not supported",
        "write probe clauses only",
    ),
    (
        "pid$target::malloc:entry { stack(); }",
        "-n:1:28: error: stack() is a kernel stack: instr traces user space (use ustack())",
        None,
    ),
    (
        "pid$target::malloc:entry { copyout(arg0, arg1, 1); }",
        "-n:1:28: error: destructive action copyout() needs -w",
        "instr dtrace -w (or #pragma D option destructive) allows actions that change the target",
    ),
    (
        "BEGIN { if (x) { exit(0); } }",
        "-n:1:9: error: 'if' statements are not supported",
        "use a predicate /.../ or the ?: operator",
    ),
    (
        "#pragma D option flowindent\nBEGIN { exit(0); }",
        "-n:1:1: error: option 'flowindent' is not supported",
        "supported: quiet, destructive, strsize=N, bufsize=N[k|m|g]",
    ),
    (
        'pid$target::malloc:entry { printf("%s\\n", copyinstr(retval)); }',
        "-n:1:53: error: retval has a value only in :return probes",
        "trace the function's return: ...:return",
    ),
    (
        "BEGIN { trace(arg0); }",
        "-n:1:15: error: arg0 has no value in a BEGIN probe",
        "arguments exist in pid and syscall probes",
    ),
    (
        'BEGIN { printf("%s\\n", $3); }',
        "-n:1:24: error: macro $3 is not defined",
        "macro arguments $1, $2... follow the program on the command line; $target needs -p PID or -c CMD",
    ),
    ("BEGIN\n{\n  x = 1 +;\n}", "-n:3:10: error: expected an expression, found ';'", None),
    ("BEGIN { x = 08; }", "-n:1:13: error: bad integer constant '08'", None),
    (
        "pid$target::malloc:return { ustack(); }",
        "-n:1:29: error: ustack() is supported in pid :entry probes only",
        "the stack is read at the function's entry",
    ),
    (
        "pid$target::malloc:entry { trace(ustack()); }",
        "-n:1:34: error: ustack() is supported as an action and as an aggregation key only",
        "e.g. ustack(); or @[ustack()] = count()",
    ),
    (
        "pid$target::malloc:return { @[ustack()] = count(); }",
        "-n:1:31: error: ustack() is supported in pid :entry probes only",
        "the stack is read at the function's entry",
    ),
    (
        "syscall::read:entry { @[ucaller] = count(); }",
        "-n:1:25: error: ucaller has a value in pid :entry probes only",
        "the return address is read at the function's entry",
    ),
    (
        'tracepoint:syscalls:sys_enter_openat { printf("%s\\n", str(args->filename)); }',
        "-n:1:59: error: args->NAME is bpftrace's; D has arg0, arg1...",
        "e.g. tracepoint:syscalls:sys_enter_openat's args->filename is copyinstr(arg1)",
    ),
    (
        "uprobe:/bin/prog:f { @start[tid] = nsecs; }",
        "-n:1:36: error: an aggregation is assigned an aggregating function",
        "e.g. @n[probefunc] = count(); bpftrace's @start[tid] = nsecs is self->start = timestamp in D",
    ),
    (
        "uprobe:/bin/prog:f { @ = hist(arg0); }",
        "-n:1:26: error: unknown aggregating function 'hist'",
        "bpftrace's hist() is quantize() in D",
    ),
    (
        'uprobe:/bin/prog:f { $x = arg0; printf("%d\\n", $x); }',
        "-n:1:22: error: $x is a macro, not a variable",
        "bpftrace's scratch variable $x is this->x in D",
    ),
    (
        "pid$target::f:entry /* never closed { }",
        "-n:1:21: error: comment is not closed",
        "end it with */",
    ),
    (
        "BEGIN { printf(\"%c\\n\", 'ab'); }",
        "-n:1:24: error: character constant is not closed",
        "write one character: 'a'",
    ),
    (
        "#pragma D option strsize=8k\nBEGIN { exit(0); }",
        "-n:1:1: error: option strsize=8k is out of range (1 to 4096 bytes)",
        None,
    ),
]


@pytest.mark.parametrize(("program", "head", "hint"), CORPUS, ids=range(len(CORPUS)))
def test_bad_program(program: str, head: str, hint: str | None) -> None:
    res = CliRunner().invoke(main, ["dtrace", "-n", program, "-c", "true"])
    assert res.exit_code == 2
    lines = res.stderr.splitlines()
    assert "Traceback" not in res.stderr
    assert lines[0] == head
    line, col = (int(x) for x in head.split(":")[1:3])
    # the program's line, then a caret under the column (both indented by two)
    assert lines[1] == "  " + program.splitlines()[line - 1]
    assert lines[2] == "  " + " " * (col - 1) + "^"
    assert (lines[3] if len(lines) > 3 else None) == (None if hint is None else f"  hint: {hint}")


def test_the_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 25
    assert len({h for _, h, _ in CORPUS}) == len(CORPUS)  # no two alike


def test_a_script_file_is_named_in_its_errors(tmp_path) -> None:
    path = tmp_path / "bad.d"
    path.write_text('BEGIN\n{\n  printf("%d\\n");\n}\n')
    res = CliRunner().invoke(main, ["dtrace", "-s", str(path)])
    assert res.exit_code == 2
    assert res.stderr.splitlines()[0] == (
        f"{path}:3:10: error: printf format has 1 conversion(s) but 0 argument(s) follow it"
    )
