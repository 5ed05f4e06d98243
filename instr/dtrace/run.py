"""``instr dtrace``: parse, compile onto the probe IR, run through ``instr.session``.

The lifecycle (spawn or attach, arm, resume, the acked final flush, the leave)
is ``Session``'s; this module adds what D puts around it: BEGIN before the
target resumes, tick clauses on a timer, ``exit()``, END and the final
aggregations after the close. Profile clauses start instr profile's sampler on
the same session's agent (``AgentSampler``) and count its samples here
(``instr.dtrace.profiling``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from instr.aggregate.model import AggSnapshot, AggTable
from instr.dtrace.compiler import DProgram, compile_program
from instr.dtrace.errors import DError, Loc, Src
from instr.dtrace.parser import parse
from instr.dtrace.probes import ProbeSpec
from instr.dtrace.runtime import Runtime
from instr.errors import InstrError, NothingArmedError, UsageError
from instr.events import Event, RunContext, RunInfo, RunSummary
from instr.guard import public_pid
from instr.probes.ir import PlanOptions
from instr.runner import exit_status
from instr.session import Session
from instr.signals import signals_held, sigterm_as_interrupt
from instr.target import DeviceSpec, TargetSpec, check_program


@dataclass(frozen=True)
class DConfig:
    sources: tuple[Src, ...]
    pid: int | None = None
    command: str | None = None
    args: tuple[str, ...] = ()  # $1, $2, ...
    quiet: bool = False
    output: str | None = None
    timeline: str | None = None  # --timeline FILE: Chrome trace JSON (docs/outputs.md)
    list_only: bool = False
    xopts: tuple[str, ...] = ()  # -x NAME[=VALUE], as #pragma D option NAME[=VALUE]
    destructive: bool = False  # -w: raise(), stop(), copyout(), override()... are allowed
    device: DeviceSpec = field(default_factory=DeviceSpec)
    options: PlanOptions = field(default_factory=PlanOptions)
    metrics: tuple[str, int] | None = None  # --metrics HOST:PORT (instr.metrics)


def load_sources(programs: tuple[str, ...], script: str | None) -> tuple[Src, ...]:
    srcs = [Src("-n" if len(programs) == 1 else f"-n#{i + 1}", p) for i, p in enumerate(programs)]
    if script is not None:
        try:
            srcs.append(Src(script, Path(script).read_text(encoding="utf-8")))
        except OSError as e:
            raise UsageError(f"cannot read D script '{script}': {e.strerror or e}") from e
    if not srcs:
        raise UsageError("no D program", "give -n 'PROGRAM' or -s FILE.d")
    return tuple(srcs)


def _main_module(config: DConfig, argv: tuple[str, ...] | None) -> str | None:
    if argv is not None:
        return os.path.basename(os.path.realpath(check_program(argv[0])))
    if config.pid is not None:
        try:
            return os.path.basename(os.readlink(f"/proc/{config.pid}/exe"))
        except OSError:
            return None
    return None


def compile_config(config: DConfig) -> tuple[DProgram, tuple[str, ...] | None]:
    argv = tuple(shlex.split(config.command)) if config.command is not None else None
    if argv == ():
        raise UsageError("-c needs a command")
    if argv is not None and config.pid is not None:
        raise UsageError("give -c CMD or -p PID, not both")
    macros = {str(i + 1): a for i, a in enumerate(config.args)}
    if config.pid is not None:
        macros["target"] = macros["pid"] = str(config.pid)
    elif argv is not None:
        macros["target"] = macros["pid"] = "$target"  # known once spawned
    main = _main_module(config, argv)
    from instr.dtrace import ast as A

    clauses: list[Any] = []
    options: list[Any] = []
    for src in config.sources:
        p = parse(src)
        clauses += p.clauses
        options += p.options
    for x in config.xopts:
        name, _, value = x.partition("=")
        options.append((name, value or None, Loc(Src("-x", x), 1, 1)))
    program = A.Program(tuple(clauses), tuple(options))
    args = (program, macros, main, config.options, config.quiet, config.destructive)
    timeline = config.timeline is not None
    prog = compile_program(*args, timeline=timeline)
    if not config.list_only and any(s.offset is not None for s in prog.probes):
        from instr.dtrace.offsets import resolve_offsets

        target = TargetSpec(argv=argv) if argv is not None else TargetSpec(pid=config.pid)
        if argv is not None or config.pid is not None:
            offsets = resolve_offsets(prog, config.device, target)
            prog = compile_program(*args, offsets, timeline=timeline)
    return prog, argv


class _DCollector:
    """Hands the probes' events and aggregation snapshots to the runtime, in order."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.seq = -1

    def open(self, ctx: RunContext, info: RunInfo) -> None:
        self.rt.ctx = ctx

    def on_events(self, events: list[Event]) -> None:
        self.rt.on_events(events)

    def on_aggregations(self, snapshot: AggSnapshot) -> None:
        self.rt.on_snapshot(snapshot)
        self.seq = snapshot.seq

    def close(self, summary: RunSummary) -> None:
        pass


class _DTimeline:
    """``--timeline FILE``: the run as Chrome trace JSON (instr.collectors.timeline).
    A function's entry and return clauses are two probes, so calls are paired
    by function; the counters are the D aggregations (``@name``: their tables
    merged, as printa shows them), read from the runtime after each snapshot."""

    def __init__(self, path: str, rt: Runtime) -> None:
        from instr.collectors.timeline import TimelineCollector

        self.rt = rt
        self.timeline = TimelineCollector(path, by_function=True)

    def open(self, ctx: RunContext, info: RunInfo) -> None:
        self.timeline.open(ctx, info)

    def on_events(self, events: list[Event]) -> None:
        self.timeline.on_events(events)

    def on_aggregations(self, snapshot: AggSnapshot) -> None:
        merged = tuple(_d_aggs(self.rt))
        self.timeline.on_aggregations(dataclasses.replace(snapshot, tables=merged))

    def close(self, summary: RunSummary) -> None:
        self.timeline.close(summary)


def run_dtrace(config: DConfig, status: TextIO | None = None) -> int:
    err = status if status is not None else sys.stderr

    def warn(text: str) -> None:
        print(f"instr: {text}", file=err, flush=True)

    prog, argv = compile_config(config)

    def say(text: str) -> None:
        if not prog.quiet:  # -q or #pragma D option quiet
            print(f"instr: {text}", file=err, flush=True)

    if config.list_only:
        from instr.dtrace.listing import list_probes

        listed: int = list_probes(prog, config, argv)
        return listed
    out: TextIO = open(config.output, "w") if config.output else sys.stdout  # noqa: SIM115
    try:
        if argv is None and config.pid is None:
            if any(c.spec.kind == "profile" for c in prog.clauses):
                raise UsageError("profile probes sample a process", "give -p PID or -c CMD")
            if any(not c.spec.is_host for c in prog.clauses):
                raise UsageError("pid and syscall probes need a process", "give -p PID or -c CMD")
            if config.timeline is not None:
                raise UsageError("--timeline records a process", "give -p PID or -c CMD")
            return _host_only(prog, out, warn)
        return _run(prog, config, argv, out, say, warn)
    finally:
        if config.output:
            out.close()


def _host_only(prog: DProgram, out: TextIO, warn: Any) -> int:
    rt = Runtime(prog, out, public_pid(), "instr", warn)  # the pid its user knows
    for hc in rt.host_clauses("begin"):
        rt.run_host(hc, time.monotonic_ns())
    with contextlib.suppress(KeyboardInterrupt):
        _ticks(rt, None)
    return _end(rt, 0)


def _run(
    prog: DProgram,
    config: DConfig,
    argv: tuple[str, ...] | None,
    out: TextIO,
    say: Any,
    warn: Any,
) -> int:
    target = TargetSpec(argv=argv) if argv is not None else TargetSpec(pid=config.pid)
    rt = Runtime(prog, out, 0, "", warn)
    collectors: list[Any] = [_DCollector(rt)]  # first: the timeline reads its snapshot
    if config.timeline is not None:
        collectors.append(_DTimeline(config.timeline, rt))
    metrics = None
    if config.metrics is not None:  # bound before the target is touched; after _DCollector
        from instr.metrics import open_endpoint

        metrics = open_endpoint(config.metrics, fresh=True, say=say, view=lambda s: _d_aggs(rt))
        collectors.append(metrics.sink)
    session = Session(
        prog.table, target, device=config.device, collectors=collectors,
        source="dtrace", stream=False,
    )  # fmt: skip
    prof = _Profiling(prog, rt, session) if rt.host_clauses("profile") else None
    with sigterm_as_interrupt():
        try:
            reports = session.start(resume=False)
        except KeyboardInterrupt:
            raise InstrError("interrupted while arming the probes") from None
        except NothingArmedError:
            raise DError(
                [(_spec(prog, r.id).loc, f"probe description {_spec(prog, r.id).text} matches "
                  f"nothing: {r.reason}", "instr dtrace -l lists what a description matches")
                 for r in session.reports]
            ) from None  # fmt: skip
        assert session.pid is not None
        rt.pid = session.pid
        rt.execname = _comm(session.pid)
        if metrics is not None:
            metrics.bind(session)
        try:
            for r in reports:
                if r.state != "armed":
                    spec = _spec(prog, r.id)
                    warn(f"{spec.loc}: probe description {spec.text} {r.state}: {r.reason}")
            sites = sum(r.sites for r in reports if r.state == "armed")
            if prog.probes:
                say(f"matched {sites} probe site(s) in pid {session.pid}")
            if prof is not None:
                say(prof.start(session.pid))
            for hc in rt.host_clauses("begin"):
                rt.run_host(hc, time.monotonic_ns())
            if not rt.exited.is_set():
                session.resume()
                _ticks(rt, session, prof.pump if prof is not None else None)
        except KeyboardInterrupt:
            pass
        except BaseException:
            with signals_held():
                session.close()
            raise
        if metrics is not None:
            metrics.closing()
        with signals_held():
            if prof is not None:
                prof.finish()
            summary = session.close()
    if prof is not None:
        say(prof.summary())
        for e in prof.sampler.errors:
            warn(f"sampler: {e}")
    if summary.drops:
        warn(f"dropped {summary.drops} records when the in-target buffer was full")
    for e in summary.errors:
        warn(f"error: {e}")
    code = rt.exit_code if rt.exit_code is not None else exit_status(summary, target.spawns)
    if session.leave_note is not None and not target.spawns:
        say(session.leave_note)
    return _end(rt, code)


def _end(rt: Runtime, code: int) -> int:
    rt.exited.clear()
    rt.in_end = True
    for hc in rt.host_clauses("end"):
        rt.run_host(hc, time.monotonic_ns())
    with rt.lock:
        rt.print_all()
        rt.out.flush()
    return code if rt.exit_code is None else rt.exit_code


def _ticks(rt: Runtime, session: Session | None, pump: Callable[[], None] | None = None) -> None:
    """Wait for the end (target gone, exit(), Ctrl-C), firing tick clauses on time;
    ``pump`` takes the sampler's batches (profile clauses) as they come."""
    ticks = rt.host_clauses("tick")
    start = time.monotonic()
    due = [start + hc.spec.period_ns / 1e9 for hc in ticks]
    target_aggs = any(a.ir_names for a in rt.prog.aggs.values())
    while not rt.exited.is_set():
        if pump is not None:
            pump()
        now = time.monotonic()
        wait = min([0.25 if pump is None else 0.05, *(d - now for d in due)])
        if session is not None:
            if session.wait(max(0.0, wait)):
                return
        else:
            if not ticks:
                return  # BEGIN only: done
            rt.exited.wait(max(0.0, wait))
        now = time.monotonic()
        for i, hc in enumerate(ticks):
            if now >= due[i]:
                due[i] += hc.spec.period_ns / 1e9
                if pump is not None:
                    pump()
                if session is not None and target_aggs and _uses_aggs(hc):
                    _fresh_snapshot(rt, session)
                rt.run_host(hc, time.monotonic_ns())


class _Profiling:
    """The program's profile clauses: one sampler on the session's agent, at the
    highest rate asked for; its batches are unwound and counted here."""

    def __init__(self, prog: DProgram, rt: Runtime, session: Session) -> None:
        from instr.dtrace.profiling import ProfileAggs
        from instr.profile.session import AgentSampler

        self.session = session
        self.aggs = ProfileAggs(rt.host_clauses("profile"), rt)
        self.sampler = AgentSampler(lambda: session.rpc)
        session.tap("profile", self.sampler.post)
        rt.host_table = self.aggs.table

    def start(self, pid: int) -> str:
        from instr.profile.session import SamplerOptions

        started = self.sampler.start(SamplerOptions(hz=self.aggs.hz))
        return (
            f"profiling pid {pid} at {self.aggs.hz} Hz of CPU time per thread: armed"
            f" ({started.get('threads')} thread(s), signal {started.get('signal')})"
        )

    def pump(self, wait: float = 0.0) -> None:
        """Count the batches received; name their new frames while the agent answers."""
        from instr.profile.session import Batch

        unwinder = self.sampler.unwinder
        if unwinder is None:
            return
        deadline = time.monotonic() + wait
        while True:
            got = self.sampler.next_batch(max(0.0, deadline - time.monotonic()) if wait else 0)
            if not isinstance(got, Batch):
                return
            self.aggs.drops = max(self.aggs.drops, got.drops)
            new = {a for a in self.aggs.add(got.samples, unwinder.walk) if a not in self.aggs.names}
            if not new:
                continue
            alive = not got.final and not self.session.ended
            symbols = self.sampler.symbolize(new, ask_agent=alive)
            self.aggs.name_frames(new, symbols, unwinder.module_at)

    def finish(self) -> None:
        """Stop the sampler (the agent sends what its ring holds first) and count the rest."""
        if not self.session.ended:
            self.sampler.stop()
        self.pump(0.2 if not self.session.ended else 0.0)

    def summary(self) -> str:
        a = self.aggs
        return f"profile: {a.samples} samples at {a.hz} Hz; {a.drops} dropped (ring full)"


def _d_aggs(rt: Runtime) -> list[AggTable]:
    """The D aggregations as printa shows them (``--metrics``, ``--timeline``)."""
    tables = [rt.tables(name) for name in rt.prog.aggs]
    return [t for t in tables if t is not None]


def _uses_aggs(hc: Any) -> bool:
    from instr.dtrace import ast as A
    from instr.dtrace.compiler import walk

    return any(isinstance(n, A.AggRef) for st in hc.body for n in walk(st))


def _fresh_snapshot(rt: Runtime, session: Session) -> None:
    """Ask the target for its tables and wait (bounded) until they are here."""
    before = rt.snapshot.seq if rt.snapshot is not None else -1
    session.snapshot()
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and not session.ended:
        snap = rt.snapshot
        if snap is not None and snap.seq > before:
            return
        time.sleep(0.01)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _spec(prog: DProgram, probe_id: int) -> ProbeSpec:
    return prog.by_probe[probe_id].spec
