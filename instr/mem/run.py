"""``instr mem`` as a function: track, report at intervals / on SIGUSR1 / at the end.

The end is the target's exit (a leak scan then runs inside the target, which
waits for this side to take the report), or, for a process that keeps
running, Ctrl-C, SIGTERM or ``--duration``: the report then lists the live
allocations, oldest first, instead of leaks.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import TextIO

from instr.errors import InstrError
from instr.mem.model import MemReport
from instr.mem.render import render_text, to_json
from instr.mem.session import MemOptions, MemSession
from instr.signals import stop
from instr.target import DeviceSpec, TargetSpec


@dataclass(frozen=True)
class MemConfig:
    target: TargetSpec
    device: DeviceSpec = field(default_factory=DeviceSpec)
    options: MemOptions = field(default_factory=MemOptions)
    interval_s: float | None = None
    top: int = 10
    oldest: int = 10
    output: str | None = None  # JSON file for the final report
    duration_s: float | None = None
    quiet: bool = False


@dataclass
class MemResult:
    final: MemReport | None
    reports: list[MemReport]
    exit_code: int


def run_mem(
    config: MemConfig,
    out: TextIO | None = None,
    err: TextIO | None = None,
    on_report: Callable[[MemReport], None] | None = None,
) -> MemResult:
    out = out or sys.stdout
    err = err or sys.stderr

    def say(text: str) -> None:
        if not config.quiet:
            print(f"instr: {text}", file=err, flush=True)

    session = MemSession(config.target, config.device, config.options)
    reports: list[MemReport] = []
    previous: dict[int, int] = {}
    final: MemReport | None = None

    def show(report: MemReport) -> None:
        growth = {s.id: s.live_bytes - previous.get(s.id, 0) for s in report.stacks}
        report.extra["growth"] = {k: v for k, v in growth.items() if v}
        previous.clear()
        previous.update({s.id: s.live_bytes for s in report.stacks if s.live_bytes})
        session.symbolize(report, config.top, everything=config.output is not None)
        reports.append(report)
        if on_report is not None:
            on_report(report)
        print(render_text(report, config.top), file=out, flush=True)

    with _signals() as flags:
        try:
            started = session.start()
        except KeyboardInterrupt:
            raise InstrError("interrupted while starting") from None
        ended = False
        try:  # from here on, an interrupt stops the run with its final report
            hooked = started.get("hooked", [])
            for failure in started.get("failed", []):
                say(f"cannot hook {failure}")
            if os.environ.get("INSTR_DEBUG"):
                say(f"agent: {started}")
            cc = "the host's C compiler" if started.get("toolchain") == "host" else "TinyCC"
            say(
                f"tracking {len(hooked)} allocator functions in pid {session.pid} (hooks built by {cc}): armed"
            )
            tool = started.get("tool") or {}
            if tool.get("excluded") and not (tool.get("start_offset") and tool.get("tid_offset")):
                say(
                    "threads Frida starts from now on may be counted as the program's: "
                    "glibc's thread descriptor layout was not recognised"
                )
            why = started.get("toolchain_error")
            if cc == "TinyCC" and config.options.compiler != "tinycc" and why:
                say(f"TinyCC because {why}")
            session.resume()
            deadline = None if config.duration_s is None else time.monotonic() + config.duration_s
            next_tick = None if config.interval_s is None else time.monotonic() + config.interval_s
            while True:
                now = time.monotonic()
                waits = [t - now for t in (deadline, next_tick) if t is not None]
                got = session.next_report(max(0.0, min([*waits, 0.25])))
                if isinstance(got, MemReport):
                    if got.exit_code is not None:
                        show(got)
                        final = got
                        session.ack(got.token)
                    else:
                        show(got)
                    continue
                if got == "ended":
                    ended = True
                    break
                if flags.get("stop"):
                    break
                now = time.monotonic()
                # Once the exit report is in, the process is exiting: no more asking
                # (a request then found its script destroyed: instr failed).
                wanted = flags.pop("report", False) and final is None
                if wanted and session.request("signal", config.oldest) is None:
                    next_tick = None  # gone: its end comes as "ended"
                if next_tick is not None and now >= next_tick:
                    next_tick = now + (config.interval_s or 1.0)
                    if final is not None or session.request("interval", config.oldest) is None:
                        next_tick = None
                if deadline is not None and now >= deadline:
                    break
        except KeyboardInterrupt:
            pass
        if not ended and final is None:
            final = _final_at_detach(session, config, show, say)
        session.stop(kill=config.target.spawns)
    for e in session.errors:
        say(f"agent error: {e}")
    if session.leave_note is not None:
        say(session.leave_note)
    if final is not None and config.output:
        with open(config.output, "w") as f:
            json.dump(to_json(final), f, indent=1)
            f.write("\n")
    if final is None:
        say(f"the target ended without a final report ({session.detach_reason})")
    code = 0
    if config.target.spawns and final is not None and final.exit_code is not None:
        code = final.exit_code & 0xFF
    return MemResult(final, reports, code)


def _final_at_detach(
    session: MemSession,
    config: MemConfig,
    show: Callable[[MemReport], None],
    say: Callable[[str], None],
) -> MemReport | None:
    try:
        token = session.request("detach", config.oldest)
    except Exception as e:  # the agent could not build it
        say(f"no final report: {e}")
        return None
    if token is None:
        say("no final report: the target went away")
        return None
    t0 = time.monotonic()
    while time.monotonic() - t0 < 30:
        got = session.next_report(1.0)
        if isinstance(got, MemReport):
            show(got)
            if got.exit_code is not None:
                session.ack(got.token)
            return got
        if got == "ended":
            return None
    return None


@contextlib.contextmanager
def _signals() -> Iterator[dict[str, bool]]:
    """SIGUSR1: a report now. SIGTERM and SIGHUP (a closed terminal): stop like Ctrl-C.
    SIGINT raises KeyboardInterrupt, also where it was inherited ignored (a
    script's ``instr mem ... &`` without job control: kill -INT did nothing)."""
    flags: dict[str, bool] = {}

    def on_usr1(signum: int, frame: FrameType | None) -> None:
        flags["report"] = True

    def on_term(signum: int, frame: FrameType | None) -> None:
        flags["stop"] = True

    saved = []
    try:
        saved.append((signal.SIGUSR1, signal.signal(signal.SIGUSR1, on_usr1)))
        saved.append((signal.SIGTERM, signal.signal(signal.SIGTERM, on_term)))
        saved.append((signal.SIGHUP, signal.signal(signal.SIGHUP, on_term)))
        saved.append((signal.SIGINT, signal.signal(signal.SIGINT, stop)))
    except ValueError:  # not the main thread
        pass
    try:
        yield flags
    finally:
        for sig, handler in saved:
            signal.signal(sig, handler)
