"""Run a compiled probe table against a target until it ends or the user stops it.

This is what ``instr run`` and ``instr trace`` do, as a function a script can call.
"""

from __future__ import annotations

import errno
import sys
import time
from dataclasses import dataclass, field
from typing import NoReturn, TextIO

from instr.attach_all import AllSpec, wait_first
from instr.collectors import open_output
from instr.collectors.base import Collector
from instr.collectors.console import ConsoleCollector
from instr.errors import InstrError
from instr.events import RunSummary
from instr.patch.model import require_destructive
from instr.probes.ir import ProbeTable
from instr.session import Session
from instr.signals import signals_held, sigterm_as_interrupt
from instr.target import DeviceSpec, TargetSpec


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs; the CLI builds it from flags."""

    table: ProbeTable
    target: TargetSpec
    device: DeviceSpec = field(default_factory=DeviceSpec)
    outputs: tuple[str, ...] = ()  # paths; "-" is the console; none means the console
    source: str | None = None
    sets: tuple[str, ...] = ()
    duration_s: float | None = None  # stop after this long
    quiet: bool = False
    interval_s: float | None = None  # aggregation snapshots this often (and at the end)
    top: int | None = None  # reports: the N largest rows of each aggregation
    destructive: bool = False  # -w: allow the sets' patch actions
    follow: bool = False  # -F: forked and exec'ed children too (docs/follow.md)
    wall_time: bool = False  # --wall-time: the console shows the time of day
    metrics: tuple[str, int] | None = None  # --metrics HOST:PORT (instr.metrics)
    attach_all: AllSpec | None = None  # --all, --all-matching, --watch (docs/all.md)


def exit_status(summary: RunSummary, spawned: bool) -> int:
    """strace's convention: a spawned target's own status; 128+N when signal N killed it."""
    ending = summary.ending
    status = ending.status() if ending is not None and spawned else None
    return status if status is not None else 0


def _collectors(config: RunConfig) -> list[Collector]:
    out = [open_output(o) for o in (config.outputs or ("-",))]
    for c in out:
        configure = getattr(c, "configure_reports", None)
        if configure is not None:
            configure(top=config.top, live=config.interval_s is not None)
        if isinstance(c, ConsoleCollector):
            c.wall_time = config.wall_time
    return out


def run(config: RunConfig, status: TextIO | None = None) -> tuple[RunSummary, int]:
    """Run to the end; return the summary and the exit status the CLI should use."""
    out = status if status is not None else sys.stderr

    def say(text: str) -> None:
        if not config.quiet:
            print(f"instr: {text}", file=out, flush=True)

    if config.table.patch_probes():
        require_destructive(config.destructive, "this probe set has patch actions; it")
    collectors = _collectors(config)
    metrics = None
    if config.metrics is not None:  # bound before the target is touched
        from instr.metrics import open_endpoint

        metrics = open_endpoint(config.metrics, fresh=config.interval_s is None, say=say)
        collectors = metrics.collectors(collectors)
    session = Session(
        config.table,
        config.target,
        device=config.device,
        collectors=collectors,
        source=config.source,
        sets=config.sets,
        stream=False,
        follow=config.follow,
        attach_all=config.attach_all,
    )
    session.on_note = say
    duration_s = config.duration_s
    with sigterm_as_interrupt():
        if config.attach_all is not None:  # --watch: waits for the first match
            duration_s = wait_first(config.attach_all, duration_s, say)
        try:
            reports = session.start(resume=False)  # cleans up after itself on failure
        except KeyboardInterrupt:
            raise InstrError("interrupted while arming the probes") from None
        try:  # from here on, an interrupt stops the run: nothing may escape before the close
            armed = [r for r in reports if r.state == "armed"]
            for r in reports:
                if r.state != "armed":
                    say(f"probe {r.name} {r.state}: {r.reason}")
            sites = sum(r.sites for r in armed)
            pending = sum(r.state == "pending" for r in reports)
            extra = f", {pending} pending" if pending else ""
            say(
                f"armed {len(armed)} of {len(reports)} probes ({sites} sites{extra})"
                f" in {session.where()}"
            )
            if metrics is not None:
                metrics.bind(session)
            session.resume()
            _wait(session, duration_s, config.interval_s)
        except KeyboardInterrupt:
            say("stopping")
        if metrics is not None:
            metrics.closing()
        with signals_held():  # a second Ctrl-C must not cut the flush short
            summary = session.close()
    for rev in session.patch_reverts:
        say(rev.describe())
    if session.leave_note is not None and not config.target.spawns:
        say(session.leave_note)
    if summary.drops:
        per = ", ".join(f"{r.name} {r.drops}" for r in summary.probes if r.drops)
        say(
            f"dropped {summary.drops} records when the in-target buffer was full ({per}); "
            "use --on-full block or a larger --buffer-size to keep them"
        )
    if summary.lost_batches:
        say(f"lost {summary.lost_batches} batches in transit")
    console = not config.outputs or "-" in config.outputs
    if summary.ending is not None and not console:  # the console summary already says it
        say(summary.ending.describe())
    if len(summary.processes) > 1:  # -F: how each process ended
        for proc in summary.processes:
            say(proc.describe())
    failures = [f.describe(summary.events) for f in summary.output_failures]
    for err in summary.errors:
        if err not in failures:
            say(f"error: {err}")
    for text in failures:  # said even with -q: the run's record is incomplete
        print(f"instr: error: {text}", file=out, flush=True)
    code = exit_status(summary, config.target.spawns)
    if any(not rev.good for rev in session.patch_reverts) and code == 0:
        code = 1
    if summary.output_failures and code == 0:
        code = 1
    return summary, code


def finish(summary: RunSummary, code: int) -> NoReturn:
    """Exit the process with ``code``, or raise BrokenPipeError when the console's
    reader went away (``instr ... | head``): the CLI then dies of SIGPIPE, as grep
    does, once Frida is closed."""
    if summary.pipe_closed:
        raise BrokenPipeError(errno.EPIPE, "the console's reader went away")
    sys.exit(code)


def _wait(session: Session, duration_s: float | None, interval_s: float | None = None) -> None:
    now = time.monotonic()
    deadline = None if duration_s is None else now + duration_s
    snap_at = None if interval_s is None else now + interval_s
    while True:
        waits = [t - time.monotonic() for t in (deadline, snap_at) if t is not None]
        if session.wait(max(0.0, min([0.25, *waits]))) or session.output_closed:
            return
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return
        if snap_at is not None and interval_s is not None and now >= snap_at:
            session.snapshot()
            snap_at = now + interval_s
