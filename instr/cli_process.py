"""The commands that read, change or sample a running process: mem, peek,
poke, patch and profile (registered on ``instr`` by cli.py). Flags only: the
work is in instr.mem, instr.patch and instr.profile."""

from __future__ import annotations

import sys
from typing import Any

import click

from instr.clicore import (
    CONTEXT,
    cc_option,
    debug_option,
    device_of,
    guard,
    target_of,
    target_options,
    where_options,
)
from instr.cliopts import COUNT, INTERVAL, POSITIVE, duration_option
from instr.errors import UsageError


@click.command(context_settings=CONTEXT)
@where_options
@click.option("-f", "--file", "spawn_file", metavar="PROGRAM", help="Spawn PROGRAM.")
@click.option("--interval", callback=INTERVAL, metavar="SECONDS", help="A report every SECONDS.")
@click.option("--top", type=POSITIVE, default=10, show_default=True, help="Stacks per list.")
@click.option("--oldest", type=COUNT, default=10, show_default=True, help="Oldest blocks shown.")
@click.option("--depth", type=click.IntRange(1, 32), default=16, show_default=True)
@click.option(
    "--max-live",
    type=click.IntRange(1024, 1 << 28),
    default=1 << 20,
    show_default=True,
    help="Live blocks tracked at once; beyond, allocations are counted as untracked.",
)
@click.option("--no-mmap", is_flag=True, help="Do not track mmap/munmap.")
@click.option("--no-cxx", is_flag=True, help="Do not hook C++ operator new/delete.")
@click.option(
    "--include-tool",
    is_flag=True,
    help="Also count the calls made on instr's and Frida's own threads (left out by "
    "default: the report is the program's; this shows the tool's own cost).",
)
@cc_option
@click.option("-o", "--output", metavar="FILE.json", help="Write the final report as JSON.")
@duration_option
@click.option("-q", "--quiet", is_flag=True, help="No status lines on stderr.")
@click.argument("program", nargs=-1, type=click.UNPROCESSED)
@debug_option
@guard
def mem(**kw: Any) -> None:
    """Track allocations: sizes, stacks, live and peak bytes; leaks at exit.

    SIGUSR1 to instr prints a report at once. Ctrl-C or SIGTERM detaches with
    a report of the live allocations.
    """
    from instr.mem.run import MemConfig, run_mem
    from instr.mem.session import MemOptions

    config = MemConfig(
        target=target_of(kw),
        device=device_of(kw),
        options=MemOptions(
            max_live=kw["max_live"],
            depth=kw["depth"],
            cxx=not kw["no_cxx"],
            mmap=not kw["no_mmap"],
            compiler=kw["compiler"],
            include_tool=kw["include_tool"],
        ),
        interval_s=kw["interval"],
        top=kw["top"],
        oldest=kw["oldest"],
        output=kw["output"],
        duration_s=kw["duration"],
        quiet=kw["quiet"],
    )
    result = run_mem(config)
    sys.exit(result.exit_code)


@click.command()
@where_options
@click.argument("specs", nargs=-1, required=True, metavar="SPEC...")
@debug_option
@guard
def peek(specs: tuple[str, ...], **kw: Any) -> None:
    """Read typed values in a running process: 'prog!counter:i64', 'name:cstr',
    '0xADDR:hex[64]' (types: i8..u64, f32, f64, ptr, bool, cstr, hex[N]; arrays: TYPE[N])."""
    from instr.mem.peek_run import peek_values

    if kw.get("attach_pid") is None and kw.get("attach_name") is None:
        raise UsageError("peek needs a running process: -p PID or -n NAME")
    for line in peek_values(target_of(kw), device_of(kw), list(specs)):
        click.echo(line)


@click.command()
@where_options
@click.option(
    "-w", "--destructive", is_flag=True, help="Allow writing the target's memory (required)."
)
@click.argument("writes", nargs=-1, required=True, metavar="SPEC=VALUE...")
@debug_option
@guard
def poke(writes: tuple[str, ...], destructive: bool, **kw: Any) -> None:
    """Write typed values in a running process: 'prog!counter:i64=7',
    'table:i32[4]=1,2,3,4', 'name:cstr=bob', '0xADDR:hex=00ff'. Data only (code is
    'instr patch'); prints each value before and after."""
    from instr.mem.peek_run import poke_values

    if kw.get("attach_pid") is None and kw.get("attach_name") is None:
        raise UsageError("poke needs a running process: -p PID or -n NAME")
    if not destructive:
        raise UsageError(
            "poke changes the target's memory; refusing without -w/--destructive",
            hint="add -w (--destructive) to allow the write",
        )
    for line in poke_values(target_of(kw), device_of(kw), list(writes)):
        click.echo(line)


@click.command(context_settings=CONTEXT)
@click.option("--ret", "ret", multiple=True, metavar="TARGET=VALUE", help="Force the return value.")
@click.option(
    "--skip", multiple=True, metavar="TARGET[=VALUE]", help="Do not run the function; return VALUE."
)
@click.option(
    "--bytes",
    "bytes_",
    multiple=True,
    metavar="TARGET:EXPECTED:NEW",
    help="Write NEW (hex) where the code is EXPECTED (hex).",
)
@click.option(
    "--nop", multiple=True, metavar="TARGET[:N]", help="Overwrite N instructions with NOPs."
)
@click.option(
    "--replace-c",
    "replace_c",
    multiple=True,
    metavar="TARGET=FILE.c[:FN]",
    help="Replace the function by FN (default 'replacement') compiled from FILE.c.",
)
@click.option(
    "-P", "--probes", "probes_file", metavar="FILE", help="Apply the patch probes of sets in FILE."
)
@click.option("-s", "--set", "set_names", multiple=True, metavar="SET", help="A set of FILE.")
@click.option(
    "-w", "--destructive", is_flag=True, help="Allow changing the target (required to patch)."
)
@click.option("--persist", is_flag=True, help="Leave the patches in place when instr exits.")
@click.option("--list", "list_", is_flag=True, help="List the patches in the target's ledger.")
@click.option("--revert", metavar="ID[,ID...]|all", help="Revert patches from the ledger.")
@click.option("--json", "as_json", is_flag=True, help="--list/--revert: print JSON.")
@target_options
@debug_option
@guard
def patch(**kw: Any) -> None:
    """Patch a running process (or a program it spawns): TARGET is MODULE!SYMBOL,
    SYMBOL, 0xADDRESS or MODULE+0xOFFSET. Patches are reverted when instr exits,
    unless --persist."""
    from instr.patch.command import PatchCommand, parse_revert, run_patch
    from instr.patch.probes import specs_from_sets
    from instr.patch.quick import parse_quick

    specs = parse_quick(kw["ret"], kw["skip"], kw["bytes_"], kw["nop"], kw["replace_c"])
    if bool(kw["probes_file"]) != bool(kw["set_names"]):
        raise UsageError("-P FILE and -s SET go together")
    if kw["probes_file"]:
        specs += specs_from_sets(kw["probes_file"], kw["set_names"])
    cmd = PatchCommand(
        target=target_of(kw),
        device=device_of(kw),
        specs=tuple(specs),
        destructive=kw["destructive"],
        persist=kw["persist"],
        list_=kw["list_"],
        revert=parse_revert(kw["revert"]),
        as_json=kw["as_json"],
        duration_s=kw.get("duration"),
        quiet=kw["quiet"],
    )
    sys.exit(run_patch(cmd))


# --------------------------------------------------------------------------- instr profile


@click.command(context_settings=CONTEXT)
@where_options
@click.option("-f", "--file", "spawn_file", metavar="PROGRAM", help="Spawn PROGRAM.")
@click.option(
    "-F",
    "--frequency",
    "hz",
    type=click.IntRange(1, 5000),
    default=99,
    show_default=True,
    metavar="HZ",
    help="Samples per second of each thread's CPU time (1 to 5000).",
)
@click.option(
    "-o",
    "--output",
    "outputs",
    multiple=True,
    metavar="PATH",
    help="Write folded stacks (.folded) or a flame graph (.svg). Repeatable.",
)
@click.option("--top", type=POSITIVE, default=20, show_default=True, help="Rows of the table.")
@click.option(
    "--off-cpu",
    is_flag=True,
    help="Also sample threads blocked in system calls, HZ times per second of wall time "
    "(their stacks end in [off-cpu]).",
)
@duration_option
@click.option("-q", "--quiet", is_flag=True, help="No status lines on stderr.")
@click.argument("program", nargs=-1, type=click.UNPROCESSED)
@debug_option
@guard
def profile(**kw: Any) -> None:
    """Sample on-CPU stacks of every thread: a top-N table, folded stacks, a flame graph."""
    from instr.profile.run import ProfileConfig, run_profile

    config = ProfileConfig(
        target=target_of(kw),
        device=device_of(kw),
        hz=kw["hz"],
        duration_s=kw["duration"],
        outputs=tuple(kw["outputs"]),
        top=kw["top"],
        quiet=kw["quiet"],
        off_cpu=kw["off_cpu"],
    )
    sys.exit(run_profile(config).exit_code)
