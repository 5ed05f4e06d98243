"""The one-liner table of tests/integration/test_dtrace_oneliners.py: each row is a D
program, what `instr dtrace -q` prints for it on tests/targets/oneliners.c with N = 30,
and, where bpftrace can say the same, the bpftrace program and the maps it prints."""

from __future__ import annotations

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


# -------------------------------------------------------------------- the table

PATH = "PROG"  # the target's path, for uprobe:PATH:FUNC (filled in per test)


def rows(*pairs: tuple[str | int | None, int]) -> str:
    """One aggregation printed at the end: a blank line, then its rows."""
    return "\n" + "".join(agg_line(k, v) + "\n" for k, v in pairs)


def hist(*buckets: tuple[int | str, int]) -> list[str]:
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
        "sum-expression",  # computed on the host (instr/aggregate/host.py)
        "pid$target::ol_add:entry { @ = sum(arg0 * 2 + arg1); }",
        rows((None, 2 * ADD_ARG0 + ADD_ARG1)),
        "uprobe:PROG:ol_add { @ = sum(arg0 * 2 + arg1); }",
        {"@": {"": 2 * ADD_ARG0 + ADD_ARG1}},
    ),
    (
        "key-expression",  # computed on the host
        "pid$target::ol_add:entry { @[arg0 % 3] = count(); }",
        rows((0, N // 3), (1, N // 3), (2, N // 3)),
        "uprobe:PROG:ol_add { @[arg0 % 3] = count(); }",
        {"@": {"0": N // 3, "1": N // 3, "2": N // 3}},
    ),
    (
        "host-predicate-aggregation",  # a global in the predicate: updated on the host
        "BEGIN { lim = 10; } pid$target::ol_add:entry /arg0 < lim/ { @ = sum(arg0); }",
        rows((None, sum(range(10)))),
        None,
        {},
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
        # the fast tier (compiled C): 0 is below 10^0; 1..9 one wide; 10..90 ten wide
        "llquantize",
        "pid$target::ol_add:entry { @ = llquantize(arg0, 10, 0, 1, 10); }",
        "\n"
        + "\n".join(hist(("< 1", 1), *((v, 1) for v in range(1, 10)), (10, 10), (20, 10), (30, 0)))
        + "\n\n",
        None,
        {},
    ),
    (
        # the JS tier (a string key); retval 5, 4, 5 for alpha, beta, gamma: 4..7 one wide
        "llquantize-js-keyed",
        "pid$target::ol_name:entry { self->s = copyinstr(arg0); } "
        "pid$target::ol_name:return { @[self->s] = llquantize(retval, 2, 0, 3, 8); }",
        "\n"
        + "".join(
            f"  {name:<50}\n" + "\n".join(hist((b - 1, 0), (b, 10), (b + 1, 0))) + "\n\n"
            for name, b in (("alpha", 5), ("beta", 4), ("gamma", 5))
        ),
        None,
        {},
    ),
    (
        # the host tier (syscall records): reads of 1 + i % 8 bytes; 4 and 6 are two
        # wide (2^3 / 4 steps), 8 and up the top bucket
        "llquantize-syscall",
        "syscall::read:entry /arg0 == 10/ { @ = llquantize(arg2, 2, 0, 2, 4); }",
        "\n"
        + "\n".join(hist(("< 1", 0), (1, 4), (2, 4), (3, 4), (4, 8), (6, 7), (">= 8", 3)))
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
        "self-printf-paired",
        "pid$target::ol_add:entry { self->a = arg0; self->ts = timestamp; } "
        "pid$target::ol_add:return /self->a < 2/ "
        '{ printf("%d %d %d\\n", self->a, retval, timestamp - self->ts > 0); }',
        "0 0 1\n1 3 1\n",
        None,
        {},
    ),
    (
        "pragma-strsize",
        "#pragma D option strsize=3\npid$target::ol_name:entry { @[copyinstr(arg0)] = count(); }",
        rows(("alp", 10), ("bet", 10), ("gam", 10)),
        None,
        {},
    ),
    (
        "syscall-self-paired",
        "syscall::write:entry { self->fd = arg0; self->ts = timestamp; } "
        "syscall::write:return /self->ts/ { @w[self->fd] = count(); @ok = count(); self->ts = 0; }",
        rows((1, 2), (11, N)) + rows((None, N + 2)),
        None,
        {},
    ),
    (
        "syscall-self-string-paired",
        "syscall::openat:entry { self->path = copyinstr(arg1); } "
        "syscall::openat:return /retval < 0/ { @[self->path] = count(); }",
        rows(("/nonexistent/oneliners", FAILED_OPENS)),
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
