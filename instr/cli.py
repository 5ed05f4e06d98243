"""The ``instr`` command line: flags in, library calls out. No logic lives here."""

from __future__ import annotations

import sys
from typing import Any

import click

from instr.cli_process import mem, patch, peek, poke, profile
from instr.clicore import (
    CONTEXT,
    all_of,
    all_options,
    all_target,
    cc_option,
    debug_option,
    device_of,
    follow_option,
    guard,
    target_of,
    target_options,
    wall_time_option,
)
from instr.cliopts import metrics_option
from instr.errors import UsageError
from instr.probes.ir import PlanOptions


def _execute(table: Any, kw: dict[str, Any], source: str, sets: tuple[str, ...]) -> None:
    from instr.runner import RunConfig, finish, run

    every = all_of(kw)  # --all, --all-matching, --watch (docs/all.md)
    config = RunConfig(
        table=table,
        target=all_target(kw, every),
        device=device_of(kw),
        outputs=tuple(kw["outputs"]),
        source=source,
        sets=sets,
        duration_s=kw.get("duration"),
        quiet=kw["quiet"],
        interval_s=kw.get("interval"),
        top=kw.get("top"),
        destructive=bool(kw.get("destructive", False)),
        follow=bool(kw.get("follow", False)),
        wall_time=bool(kw.get("wall_time", False)),
        metrics=kw.get("metrics"),
        attach_all=every,
    )
    finish(*run(config))


def _options(kw: dict[str, Any]) -> PlanOptions:
    return PlanOptions(buffer_bytes=kw["buffer_size"], on_full=kw["on_full"])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="instr")
def main() -> None:
    """Dynamic instrumentation of native programs, driven by YAML probe sets."""


@main.command(context_settings=CONTEXT)
@click.option(
    "-P", "--probes", "probes_file", required=True, metavar="FILE", help="Probe-set file."
)
@click.option(
    "-s",
    "--set",
    "set_names",
    multiple=True,
    required=True,
    metavar="SET",
    help="A set to run (repeatable).",
)
@click.option(
    "-w", "--destructive", is_flag=True, help="Allow the sets' patch actions (change the target)."
)
@follow_option
@all_options
@target_options
@wall_time_option
@metrics_option
@debug_option
@guard
def run(probes_file: str, set_names: tuple[str, ...], **kw: Any) -> None:
    """Run probe sets from FILE against a program (spawned) or a process (-p/-n)."""
    from instr.probes import compile_sets, load_file

    table = compile_sets(load_file(probes_file), list(set_names), _options(kw))
    _execute(table, kw, probes_file, set_names)


@main.command(context_settings=CONTEXT)
@click.option(
    "-i",
    "--include",
    "includes",
    multiple=True,
    required=True,
    metavar="GLOB",
    help="Trace functions matching MODULE!SYMBOL (or SYMBOL). Repeatable.",
)
@click.option(
    "-x",
    "--exclude",
    "excludes",
    multiple=True,
    metavar="GLOB",
    help="Leave out functions matching MODULE!SYMBOL. Repeatable.",
)
@click.option(
    "--agg",
    "aggs",
    multiple=True,
    metavar="NAME=SPEC",
    help="Aggregate instead of tracing: NAME='FUNC(VALUE) [by KEY,...]'. Repeatable.",
)
@click.option(
    "-a",
    "--args",
    "captures",
    multiple=True,
    metavar="N|KEY:NAME=SPEC",
    help="N: the first N arguments (arg0 ...) and the return value (ret), raw, in hex. "
    "KEY:NAME=SPEC: a capture of the include KEY, e.g. malloc:size=arg0:u64. Repeatable.",
)
@click.option(
    "--where",
    metavar="EXPR",
    help="Only calls where EXPR holds, over the -a captures, e.g. 'arg0 > 4096'.",
)
@click.option(
    "-l", "--list", "list_only", is_flag=True, help="List the functions -i/-x match; arm nothing."
)
@follow_option
@all_options
@target_options
@wall_time_option
@metrics_option
@debug_option
@guard
def trace(
    includes: tuple[str, ...],
    excludes: tuple[str, ...],
    aggs: tuple[str, ...],
    captures: tuple[str, ...],
    where: str | None,
    **kw: Any,
) -> None:
    """Trace entry and exit of functions matching -i globs, without a probe set.

    -a 3 shows each call's first three arguments and its return value. With
    --agg, aggregate in the target instead of emitting events, e.g.
    --agg 'bytes=sum(arg0:size_t) by execname'."""
    from instr.probes import compile_quick, compile_quick_aggs

    if kw.pop("list_only"):
        from instr.dtrace.listing import list_table

        if all_of(kw) is not None:
            raise UsageError("-l lists the functions of one process: give -p PID, not --all")

        table = compile_quick(list(includes), list(excludes), _options(kw))
        for line in list_table(device_of(kw), target_of(kw), table):
            click.echo(line)
        return

    if aggs:
        if captures or where:
            raise UsageError(
                "-a and --where trace calls; --agg takes its values and filters itself"
            )
        table = compile_quick_aggs(list(includes), list(excludes), aggs, _options(kw))
    else:
        table = compile_quick(
            list(includes), list(excludes), _options(kw), captures=captures, where=where
        )
    _execute(table, kw, "cli", ())


@main.command()
@click.argument("file")
@click.option("--explain", is_flag=True, help="Show each probe's tier and why.")
@debug_option
@guard
def check(file: str, explain: bool) -> None:
    """Validate a probe-set FILE; report every problem as file:line:col."""
    from instr.probes import check_file, explain_file

    click.echo(check_file(file))
    if explain:
        for line in explain_file(file):
            click.echo(line)


@main.command()
@click.argument("file")
@debug_option
@guard
def sets(file: str) -> None:
    """List the sets in a probe-set FILE with their descriptions."""
    from instr.probes import load_file

    psf = load_file(file)
    width = max((len(n) for n in psf.sets), default=0)
    for name, info in psf.sets.items():
        click.echo(f"{name:<{width}}  {info.description or ''}".rstrip())


@main.command(context_settings={"ignore_unknown_options": False, "allow_interspersed_args": True})
@click.option("-n", "programs", multiple=True, metavar="PROGRAM", help="A D program (repeatable).")
@click.option("-s", "script", metavar="FILE", help="A D program file.")
@click.option("-p", "attach_pid", type=int, metavar="PID", help="Attach to PID ($target).")
@click.option("-c", "command", metavar="CMD", help="Run CMD, traced from its start ($target).")
@click.option("-q", "quiet", is_flag=True, help="Quiet: only what the program prints.")
@click.option("-o", "output", metavar="FILE", help="Write the program's output to FILE.")
@click.option(
    "--timeline",
    metavar="FILE.json",
    help="Also write the run as a timeline (Chrome trace JSON, for Perfetto UI).",
)
@click.option("-l", "list_only", is_flag=True, help="List the probes matched; arm nothing.")
@click.option(
    "-w", "destructive", is_flag=True, help="Allow destructive actions (raise, copyout...)."
)
@click.option(
    "-x", "xopts", multiple=True, metavar="OPT[=VAL]", help="quiet, strsize=N, bufsize=N[k|m]."
)
@click.argument("args", nargs=-1)
@metrics_option
@debug_option
@guard
def dtrace(programs: tuple[str, ...], script: str | None, args: tuple[str, ...], **kw: Any) -> None:
    """Run a D program (DTrace's language, a subset; docs/dtrace.md) against -p PID or -c CMD.

    ARGS are the macro arguments $1, $2, ..."""
    from instr.dtrace.run import DConfig, load_sources, run_dtrace

    config = DConfig(
        sources=load_sources(programs, script),
        pid=kw["attach_pid"],
        command=kw["command"],
        args=args,
        quiet=kw["quiet"],
        output=kw["output"],
        timeline=kw["timeline"],
        list_only=kw["list_only"],
        xopts=kw["xopts"],
        destructive=kw["destructive"],
        metrics=kw["metrics"],
    )
    sys.exit(run_dtrace(config))


@main.command(context_settings=CONTEXT)
@click.option(
    "-e", "trace_spec", metavar="trace=SET", help="strace's -e trace=: names, %file, %network, ..."
)
@click.option("-c", "--summary", is_flag=True, help="Count calls, errors and time per syscall.")
@click.option("-F", "--follow", is_flag=True, help="Follow forked and exec'ed children.")
@click.option(
    "--complete",
    is_flag=True,
    help="Catch raw syscall instructions too (Stalker: slower; static programs: seccomp, "
    "calls only; see docs/syscalls.md).",
)
@click.option(
    "--own-fds/--shared-fds",
    default=None,
    help="Give the program an fd table apart from Frida's threads, so its fd calls cost "
    "~60-90 ns less (the default for a spawned program), and say how it went; or leave it "
    "shared (see docs/syscalls.md).",
)
@cc_option
@target_options
@debug_option
@guard
def syscalls(trace_spec: str | None, summary: bool, follow: bool, **kw: Any) -> None:
    """List a program's system calls (decoded), or count them with -c."""
    from instr.syscalls.cli import run_syscalls

    sys.exit(run_syscalls(target_of(kw), device_of(kw), trace_spec, summary, follow, kw))


for _command in (mem, peek, poke, patch, profile):
    main.add_command(_command)
