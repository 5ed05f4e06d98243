"""``instr profile`` as a function: sample, unwind, symbolise, write the outputs.

Samples are unwound and their new addresses symbolised batch by batch while
the agent is alive (the agent answers no calls once the process exits).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from instr.errors import InstrError, UsageError
from instr.profile.limits import HZ_MAX, HZ_MIN
from instr.profile.model import OFF_CPU, Profile, Stack, demangle, render_top
from instr.profile.session import Batch, ProfileSession, SamplerOptions
from instr.profile.svg import render_svg
from instr.profile.unwind import Walk
from instr.signals import signals_held, sigterm_as_interrupt
from instr.target import DeviceSpec, TargetSpec

OUTPUT_KINDS = (".folded", ".svg")


@dataclass(frozen=True)
class ProfileConfig:
    target: TargetSpec
    device: DeviceSpec = field(default_factory=DeviceSpec)
    hz: int = 99
    duration_s: float | None = None
    outputs: tuple[str, ...] = ()  # .folded and/or .svg paths
    top: int = 20
    quiet: bool = False
    stack_bytes: int = 32 << 10
    off_cpu: bool = False


@dataclass
class ProfileResult:
    profile: Profile
    exit_code: int


def check_outputs(outputs: tuple[str, ...]) -> None:
    """Refuse, before anything starts, an output instr could not write."""
    for path in outputs:
        if not path.endswith(OUTPUT_KINDS):
            raise UsageError(
                f"-o {path}: unknown output kind",
                hint="give a .folded (folded stacks) or .svg (flame graph) path",
            )
        p = Path(path)
        if p.is_dir():
            raise InstrError(f"-o {path}: is a directory")
        existed = p.exists()
        try:  # the one sure test, root included: open it for writing (truncated at the end)
            with open(p, "a"):
                pass
        except OSError as e:
            raise InstrError(f"-o {path}: cannot write: {e.strerror or e}") from None
        if not existed:
            p.unlink(missing_ok=True)


def check_hz(hz: int) -> None:
    if not HZ_MIN <= hz <= HZ_MAX:
        raise UsageError(f"-F {hz}: give a sampling rate from {HZ_MIN} to {HZ_MAX} Hz")


class _Collector:
    """Walks per batch; names once the addresses are symbolised."""

    def __init__(self, session: ProfileSession) -> None:
        self.session = session
        self.walks: Counter[tuple[int, ...]] = Counter()
        self.off_walks: Counter[tuple[int, ...]] = Counter()
        self.samples = 0
        self.complete = 0
        self.threads: set[int] = set()
        self.drops = 0
        self.final = False  # the agent sent its last batch: it answers no more calls

    def add(self, batch: Batch) -> None:
        unwinder = self.session.unwinder
        assert unwinder is not None
        new: set[int] = set()
        walks = self.off_walks if batch.off_cpu else self.walks
        for s in batch.samples:
            w: Walk = unwinder.walk(s)
            self.samples += 1
            self.complete += w.complete
            self.threads.add(s.tid)
            if w.frames not in walks:
                new.update(w.frames)
            walks[w.frames] += 1
        self.drops = max(self.drops, batch.drops)
        self.final = self.final or batch.final
        if new and not self.final:
            self.session.symbolize(new)

    def profile(self, hz: int) -> Profile:
        addrs = {a for walks in (self.walks, self.off_walks) for frames in walks for a in frames}
        symbols = self.session.symbolize(addrs, ask_agent=not self.final)
        unwinder = self.session.unwinder
        names: dict[int, str] = {}
        for a in addrs:
            _mod, sym, _off = symbols.get(a, (None, None, 0))
            if sym:
                names[a] = sym
            else:
                m = unwinder.module_at(a) if unwinder is not None else None
                names[a] = f"{m.name}+0x{a - m.base:x}" if m is not None else f"0x{a:x}"
        pretty = demangle(names.values())
        stacks: Counter[Stack] = Counter()
        for walks, leaf in ((self.walks, ()), (self.off_walks, (OFF_CPU,))):
            for frames, n in walks.items():
                stack = tuple(pretty.get(names[a], names[a]) for a in reversed(frames))
                stacks[stack + leaf] += n
        off = sum(self.off_walks.values())
        return Profile(stacks, self.samples, self.complete, self.drops, self.threads, hz, off)


def run_profile(
    config: ProfileConfig, out: TextIO | None = None, err: TextIO | None = None
) -> ProfileResult:
    out = out or sys.stdout
    err = err or sys.stderr
    check_hz(config.hz)
    check_outputs(config.outputs)

    def say(text: str) -> None:
        if not config.quiet:
            print(f"instr: {text}", file=err, flush=True)

    session = ProfileSession(config.target, config.device)
    collector = _Collector(session)
    with sigterm_as_interrupt():
        try:
            options = SamplerOptions(
                hz=config.hz, stack_bytes=config.stack_bytes, off_cpu=config.off_cpu
            )
            started = session.start(options)
        except KeyboardInterrupt:
            raise InstrError("interrupted while starting the sampler") from None
        try:
            say(
                f"profiling pid {session.pid} at {config.hz} Hz of CPU time per thread: armed"
                f" ({started.get('threads')} thread(s), signal {started.get('signal')})"
            )
            session.resume()
            _wait(session, collector, config.duration_s)
        except KeyboardInterrupt:
            say("stopping")
        with signals_held():
            session.stop_sampling()
            _drain(session, collector)
            profile = collector.profile(config.hz)
            session.leave(kill=config.target.spawns and not session.ended.is_set())
    for e in session.errors:
        say(f"agent: {e}")
    if session.leave_note is not None:
        say(session.leave_note)
    for path in config.outputs:
        text = profile.folded() if path.endswith(".folded") else render_svg(profile.stacks)
        Path(path).write_text(text)
    if profile.samples:
        print(render_top(profile.stacks, config.top), file=out, end="", flush=True)
    pct = 100.0 * profile.complete / profile.samples if profile.samples else 0.0
    off = f" ({profile.off_cpu} off-CPU)" if config.off_cpu else ""
    say(
        f"{profile.samples} samples{off} from {len(profile.threads)} thread(s), {pct:.1f}% unwound"
        f" to the thread's first frame; {profile.drops} dropped (ring full)"
    )
    code = 0
    if config.target.spawns:
        status = session.exit_status()
        code = status if status is not None else 0
    return ProfileResult(profile, code)


def _wait(session: ProfileSession, collector: _Collector, duration_s: float | None) -> None:
    deadline = None if duration_s is None else time.monotonic() + duration_s
    while True:
        left = 0.25 if deadline is None else min(0.25, deadline - time.monotonic())
        if left <= 0:
            return
        got = session.next_batch(left)
        if got == "ended":
            return
        if isinstance(got, Batch):
            collector.add(got)
            if got.final:
                _drain(session, collector)
                return


def _drain(session: ProfileSession, collector: _Collector) -> None:
    """Batches already received (bounded: the agent sent them before stop returned)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < 5.0:
        got = session.next_batch(0.05 if session.ended.is_set() else 0)
        if not isinstance(got, Batch):
            return
        collector.add(got)
