"""What every instr command shares: the error guard (a short message and an
exit code, a traceback only with --debug), and the device, target and
compiler flags with the specs they become. The commands are in cli.py
(probes, D, system calls) and cli_process.py (memory, patches, profiling)."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click
import frida

from instr.cliopts import INTERVAL, PID, buffer_size_option, duration_option
from instr.errors import InstrError, ProbeSetError, UsageError
from instr.lifecycle import lost_target, release_frida
from instr.signals import die_of_sigpipe

F = Callable[..., Any]


def debug_enabled() -> bool:
    return os.environ.get("INSTR_DEBUG", "") not in ("", "0")


def fail(err: BaseException, code: int) -> NoReturn:
    if debug_enabled():
        raise err
    # Probe-set diagnostics carry their own "file:line:col: error:" prefix.
    prefix = "" if isinstance(err, ProbeSetError) else "instr: error: "
    click.echo(f"{prefix}{err}", err=True)
    sys.exit(code)


def guard(fn: F) -> F:
    """Turn errors into a short message and an exit code; --debug shows the traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if kwargs.pop("debug", False):
            os.environ["INSTR_DEBUG"] = "1"
        interrupted = False
        try:
            return fn(*args, **kwargs)
        except InstrError as e:
            fail(e, e.exit_code)
        except BrokenPipeError:  # instr ... | head: the reader went away
            pass  # below, once Frida is closed (its injector may still be at work)
        except KeyboardInterrupt:  # stopped before the run began, or as it ended
            interrupted = True
        except OSError as e:
            fail(InstrError(f"{e.strerror or e}: {e.filename}" if e.filename else str(e)), 1)
        except (frida.InvalidOperationError, frida.TransportError) as e:
            # "script has been destroyed": say what became of the target.
            lost = lost_target()
            if lost is None:
                fail(
                    InstrError(
                        f"{type(e).__name__}: {e}", hint="rerun with --debug for a traceback"
                    ),
                    1,
                )
            fail(InstrError(lost), 1)
        except Exception as e:  # an unexpected failure: short, unless --debug
            fail(
                InstrError(f"{type(e).__name__}: {e}", hint="rerun with --debug for a traceback"), 1
            )
        finally:
            release_frida()
        if interrupted:
            print("instr: interrupted", file=sys.stderr)
            sys.exit(130)
        die_of_sigpipe()

    return wrapper


def debug_option(fn: F) -> F:
    return click.option("--debug", is_flag=True, help="Show tracebacks on errors.")(fn)


def target_options(fn: F) -> F:
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


def device_of(kw: dict[str, Any]) -> Any:
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


def target_of(kw: dict[str, Any]) -> Any:
    from instr.target import TargetSpec

    program: tuple[str, ...] = kw.get("program") or ()
    spawn = kw.get("spawn_file")
    if spawn and program:
        raise UsageError("give the program either with -f or after --, not both")
    argv = (spawn, *program) if spawn else program or None
    return TargetSpec(argv=argv, pid=kw.get("attach_pid"), name=kw.get("attach_name"))


cc_option = click.option(
    "--cc",
    "compiler",
    type=click.Choice(["auto", "system", "tinycc"]),
    default="auto",
    show_default=True,
    help="Who builds the hooks' C: the system's C compiler (faster code) or Frida's TinyCC; "
    "auto: the system's when it can.",
)


wall_time_option = click.option(
    "--wall-time",
    is_flag=True,
    help="Console: the time of day of each event (HH:MM:SS.microseconds) instead of "
    "milliseconds since the first.",
)

follow_option = click.option(
    "-F", "--follow", is_flag=True, help="Follow forked and exec'ed children (docs/follow.md)."
)


def all_options(fn: F) -> F:
    """--all, --all-matching, --watch: every matching process (docs/all.md)."""
    for opt in reversed(
        [
            click.option(
                "--all", "attach_all", is_flag=True, help="Attach to every process named -n NAME."
            ),
            click.option(
                "--all-matching",
                metavar="REGEX",
                help="Attach to every process whose command line REGEX is found in.",
            ),
            click.option(
                "--watch",
                is_flag=True,
                help="With --all or --all-matching: also attach to matching processes that "
                "start later (a poll of /proc; docs/all.md).",
            ),
        ]
    ):
        fn = opt(fn)
    return fn


def all_of(kw: dict[str, Any]) -> Any:
    """The run's AllSpec from --all/--all-matching/--watch, or None."""
    from instr.attach_all import AllSpec

    every, matching, watch = kw.get("attach_all"), kw.get("all_matching"), kw.get("watch")
    if not every and matching is None:
        if watch:
            raise UsageError("--watch goes with --all -n NAME or --all-matching REGEX")
        return None
    if every and matching is not None:
        raise UsageError("give --all -n NAME or --all-matching REGEX, not both")
    if kw.get("attach_pid") or kw.get("spawn_file") or kw.get("program"):
        raise UsageError("--all and --all-matching attach to running processes: no -p, no program")
    if every and not kw.get("attach_name"):
        raise UsageError("--all needs -n NAME (or give --all-matching REGEX)")
    if matching is not None and kw.get("attach_name"):
        raise UsageError("--all-matching REGEX takes no -n NAME")
    if device_of(kw).kind != "local":
        raise UsageError("--all and --all-matching read this machine's /proc: local only")
    return AllSpec(name=kw.get("attach_name"), matching=matching, watch=bool(watch))


def all_target(kw: dict[str, Any], spec: Any) -> Any:
    """The target of a run: the usual one, or under --all what was asked (the
    processes are found when the run starts)."""
    return target_of(kw) if spec is None else spec.target()


def where_options(fn: F) -> F:
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


CONTEXT = {"ignore_unknown_options": False, "allow_interspersed_args": False}
