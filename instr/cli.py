"""The ``instr`` command line: flags in, library calls out. No logic lives here."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click
import frida

from instr.cliopts import COUNT, INTERVAL, PID, POSITIVE, buffer_size_option, duration_option
from instr.errors import InstrError, ProbeSetError, UsageError
from instr.lifecycle import lost_target, release_frida
from instr.probes.ir import PlanOptions
from instr.signals import die_of_sigpipe

F = Callable[..., Any]


def _debug_enabled() -> bool:
    return os.environ.get("INSTR_DEBUG", "") not in ("", "0")


def _fail(err: BaseException, code: int) -> NoReturn:
    if _debug_enabled():
        raise err
    # Probe-set diagnostics carry their own "file:line:col: error:" prefix.
    prefix = "" if isinstance(err, ProbeSetError) else "instr: error: "
    click.echo(f"{prefix}{err}", err=True)
    sys.exit(code)


def _guard(fn: F) -> F:
    """Turn errors into a short message and an exit code; --debug shows the traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if kwargs.pop("debug", False):
            os.environ["INSTR_DEBUG"] = "1"
        try:
            return fn(*args, **kwargs)
        except InstrError as e:
            _fail(e, e.exit_code)
        except BrokenPipeError:  # instr ... | head: the reader went away
            pass  # below, once Frida is closed (its injector may still be at work)
        except OSError as e:
            _fail(InstrError(f"{e.strerror or e}: {e.filename}" if e.filename else str(e)), 1)
        except (frida.InvalidOperationError, frida.TransportError) as e:
            # "script has been destroyed": say what became of the target.
            lost = lost_target()
            if lost is None:
                _fail(
                    InstrError(
                        f"{type(e).__name__}: {e}", hint="rerun with --debug for a traceback"
                    ),
                    1,
                )
            _fail(InstrError(lost), 1)
        except Exception as e:  # an unexpected failure: short, unless --debug
            _fail(
                InstrError(f"{type(e).__name__}: {e}", hint="rerun with --debug for a traceback"), 1
            )
        finally:
            release_frida()
        die_of_sigpipe()

    return wrapper


def _debug_option(fn: F) -> F:
    return click.option("--debug", is_flag=True, help="Show tracebacks on errors.")(fn)


def _target_options(fn: F) -> F:
    for opt in reversed(
        [
            click.option("-D", "--device", "device_id", metavar="ID", help="Device by id."),
            click.option("-U", "--usb", is_flag=True, help="The USB device."),
            click.option(
                "-R", "--remote", is_flag=True, help="The remote frida-server (default host)."
            ),
            click.option("-H", "--host", metavar="HOST[:PORT]", help="A remote frida-server."),
            click.option("-f", "--file", "spawn_file", metavar="PROGRAM", help="Spawn PROGRAM."),
            click.option(
                "-p", "--pid", "attach_pid", type=PID, metavar="PID", help="Attach to PID."
            ),
            click.option("-n", "--name", "attach_name", metavar="NAME", help="Attach to NAME."),
            click.option(
                "-o",
                "--output",
                "outputs",
                multiple=True,
                metavar="PATH",
                help="Write events to PATH: .jsonl, .db/.sqlite, or - for the console. Repeatable.",
            ),
            duration_option,
            buffer_size_option,
            click.option(
                "--on-full",
                type=click.Choice(["block", "drop"]),
                default="block",
                show_default=True,
                help="When the in-target buffer is full: slow the target, or drop and count.",
            ),
            click.option("-q", "--quiet", is_flag=True, help="No status lines on stderr."),
            click.option(
                "--interval",
                callback=INTERVAL,
                metavar="SECONDS",
                help="Report aggregations every SECONDS (a live view on a terminal).",
            ),
            click.option(
                "--top",
                type=click.IntRange(min=1),
                metavar="N",
                help="Aggregations: the N largest rows.",
            ),
            click.argument("program", nargs=-1, type=click.UNPROCESSED),
        ]
    ):
        fn = opt(fn)
    return fn


def _device(kw: dict[str, Any]) -> Any:
    from instr.target import DeviceSpec

    chosen = [k for k in ("device_id", "usb", "remote", "host") if kw.get(k)]
    if len(chosen) > 1:
        raise UsageError("give at most one of -D, -U, -R, -H")
    if kw.get("device_id"):
        return DeviceSpec("id", kw["device_id"])
    if kw.get("usb"):
        return DeviceSpec("usb")
    if kw.get("remote"):
        return DeviceSpec("remote")
    if kw.get("host"):
        return DeviceSpec("host", kw["host"])
    return DeviceSpec()


def _target(kw: dict[str, Any]) -> Any:
    from instr.target import TargetSpec

    program: tuple[str, ...] = kw.get("program") or ()
    spawn = kw.get("spawn_file")
    if spawn and program:
        raise UsageError("give the program either with -f or after --, not both")
    argv = (spawn, *program) if spawn else program or None
    return TargetSpec(argv=argv, pid=kw.get("attach_pid"), name=kw.get("attach_name"))


def _execute(table: Any, kw: dict[str, Any], source: str, sets: tuple[str, ...]) -> None:
    from instr.runner import RunConfig, finish, run

    config = RunConfig(
        table=table,
        target=_target(kw),
        device=_device(kw),
        outputs=tuple(kw["outputs"]),
        source=source,
        sets=sets,
        duration_s=kw.get("duration"),
        quiet=kw["quiet"],
        interval_s=kw.get("interval"),
        top=kw.get("top"),
        destructive=bool(kw.get("destructive", False)),
    )
    finish(*run(config))


def _options(kw: dict[str, Any]) -> PlanOptions:
    return PlanOptions(buffer_bytes=kw["buffer_size"], on_full=kw["on_full"])


CONTEXT = {"ignore_unknown_options": False, "allow_interspersed_args": False}


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
@_target_options
@_debug_option
@_guard
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
    "-l", "--list", "list_only", is_flag=True, help="List the functions -i/-x match; arm nothing."
)
@_target_options
@_debug_option
@_guard
def trace(
    includes: tuple[str, ...], excludes: tuple[str, ...], aggs: tuple[str, ...], **kw: Any
) -> None:
    """Trace entry and exit of functions matching -i globs, without a probe set.

    With --agg, aggregate in the target instead of emitting events, e.g.
    --agg 'bytes=sum(arg0:size_t) by execname'."""
    from instr.probes import compile_quick, compile_quick_aggs

    if kw.pop("list_only"):
        from instr.dtrace.listing import list_table

        table = compile_quick(list(includes), list(excludes), _options(kw))
        for line in list_table(_device(kw), _target(kw), table):
            click.echo(line)
        return

    if aggs:
        table = compile_quick_aggs(list(includes), list(excludes), aggs, _options(kw))
    else:
        table = compile_quick(list(includes), list(excludes), _options(kw))
    _execute(table, kw, "cli", ())


@main.command()
@click.argument("file")
@click.option("--explain", is_flag=True, help="Show each probe's tier and why.")
@_debug_option
@_guard
def check(file: str, explain: bool) -> None:
    """Validate a probe-set FILE; report every problem as file:line:col."""
    from instr.probes import check_file, explain_file

    click.echo(check_file(file))
    if explain:
        for line in explain_file(file):
            click.echo(line)


@main.command()
@click.argument("file")
@_debug_option
@_guard
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
@click.option("-l", "list_only", is_flag=True, help="List the probes matched; arm nothing.")
@click.option(
    "-w", "destructive", is_flag=True, help="Allow destructive actions (raise, copyout...)."
)
@click.option(
    "-x", "xopts", multiple=True, metavar="OPT[=VAL]", help="quiet, strsize=N, bufsize=N[k|m]."
)
@click.argument("args", nargs=-1)
@_debug_option
@_guard
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
        list_only=kw["list_only"],
        xopts=kw["xopts"],
        destructive=kw["destructive"],
    )
    sys.exit(run_dtrace(config))


_cc_option = click.option(
    "--cc",
    "compiler",
    type=click.Choice(["auto", "system", "tinycc"]),
    default="auto",
    show_default=True,
    help="Who builds the hooks' C: the system's C compiler (faster code) or Frida's TinyCC; "
    "auto: the system's when it can.",
)


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
    help="The program's thread gets an fd table apart from Frida's threads at its next "
    "hooked call (the default for a spawned program; attached, only when asked: fd "
    "calls cost ~60-90 ns less), or keeps sharing it (see docs/syscalls.md).",
)
@_cc_option
@_target_options
@_debug_option
@_guard
def syscalls(trace_spec: str | None, summary: bool, follow: bool, **kw: Any) -> None:
    """List a program's system calls (decoded), or count them with -c."""
    from instr.syscalls.cli import run_syscalls

    sys.exit(run_syscalls(_target(kw), _device(kw), trace_spec, summary, follow, kw))


# --------------------------------------------------------------------------- instr mem / peek


def _where_options(fn: F) -> F:
    """Device and target flags only (frida-tools style), for mem and peek."""
    for opt in reversed(
        [
            click.option("-D", "--device", "device_id", metavar="ID", help="Device by id."),
            click.option("-U", "--usb", is_flag=True, help="The USB device."),
            click.option("-R", "--remote", is_flag=True, help="The remote frida-server."),
            click.option("-H", "--host", metavar="HOST[:PORT]", help="A remote frida-server."),
            click.option(
                "-p", "--pid", "attach_pid", type=PID, metavar="PID", help="Attach to PID."
            ),
            click.option("-n", "--name", "attach_name", metavar="NAME", help="Attach to NAME."),
        ]
    ):
        fn = opt(fn)
    return fn


@main.command(context_settings=CONTEXT)
@_where_options
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
@_cc_option
@click.option("-o", "--output", metavar="FILE.json", help="Write the final report as JSON.")
@duration_option
@click.option("-q", "--quiet", is_flag=True, help="No status lines on stderr.")
@click.argument("program", nargs=-1, type=click.UNPROCESSED)
@_debug_option
@_guard
def mem(**kw: Any) -> None:
    """Track allocations: sizes, stacks, live and peak bytes; leaks at exit.

    SIGUSR1 to instr prints a report at once. Ctrl-C or SIGTERM detaches with
    a report of the live allocations.
    """
    from instr.mem.run import MemConfig, run_mem
    from instr.mem.session import MemOptions

    config = MemConfig(
        target=_target(kw),
        device=_device(kw),
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


@main.command()
@_where_options
@click.argument("specs", nargs=-1, required=True, metavar="SPEC...")
@_debug_option
@_guard
def peek(specs: tuple[str, ...], **kw: Any) -> None:
    """Read typed values in a running process: 'prog!counter:i64', 'name:cstr',
    '0xADDR:hex[64]' (types: i8..u64, f32, f64, ptr, bool, cstr, hex[N]; arrays: TYPE[N])."""
    from instr.mem.peek_run import peek_values

    if kw.get("attach_pid") is None and kw.get("attach_name") is None:
        raise UsageError("peek needs a running process: -p PID or -n NAME")
    for line in peek_values(_target(kw), _device(kw), list(specs)):
        click.echo(line)


@main.command()
@_where_options
@click.option(
    "-w", "--destructive", is_flag=True, help="Allow writing the target's memory (required)."
)
@click.argument("writes", nargs=-1, required=True, metavar="SPEC=VALUE...")
@_debug_option
@_guard
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
    for line in poke_values(_target(kw), _device(kw), list(writes)):
        click.echo(line)


@main.command(context_settings=CONTEXT)
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
@_target_options
@_debug_option
@_guard
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
        target=_target(kw),
        device=_device(kw),
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


@main.command(context_settings=CONTEXT)
@_where_options
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
@_debug_option
@_guard
def profile(**kw: Any) -> None:
    """Sample on-CPU stacks of every thread: a top-N table, folded stacks, a flame graph."""
    from instr.profile.run import ProfileConfig, run_profile

    config = ProfileConfig(
        target=_target(kw),
        device=_device(kw),
        hz=kw["hz"],
        duration_s=kw["duration"],
        outputs=tuple(kw["outputs"]),
        top=kw["top"],
        quiet=kw["quiet"],
        off_cpu=kw["off_cpu"],
    )
    sys.exit(run_profile(config).exit_code)
