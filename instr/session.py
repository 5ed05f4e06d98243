"""A run of probes against one target: the library API under the CLI.

    from instr import Session, load_file

    table = load_file("probes.yaml").compile(["calls"])
    with Session.spawn(["./demo"], table) as run:
        for event in run.events():
            print(event.probe, event.args)
    print(run.summary)

The Frida callback thread only hands messages to the ``Dispatcher``; its worker
decodes and feeds collectors. ``Session`` owns the Frida device, session and
script, the lifecycle (resume, ack of the agent's final flush, dispose,
detach) and turns Frida's failures into ``InstrError``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any

import frida

from instr import target as tgt
from instr.aggregate.model import AggSnapshot
from instr.attach_all import AllRun, AllSpec, check_table, parent_of
from instr.collectors.base import Collector
from instr.dispatch import Dispatcher
from instr.errors import AgentError, NothingArmedError, TargetError, UsageError
from instr.events import Ending, Event, ProbeReport, RunContext, RunInfo, RunSummary
from instr.follow import Children, Image
from instr.lifecycle import Agent, TargetProcess
from instr.patch.model import RevertResult
from instr.probes.ir import ProbeTable
from instr.protocol import PROTOCOL_VERSION, ack, credit
from instr.unload import leave_bounded

_SENTINEL: list[Event] = []


class _QueueCollector:
    """Feeds ``Session.events()``: the worker puts decoded batches on a queue."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[list[Event]] = queue.SimpleQueue()

    def open(self, ctx: RunContext, info: RunInfo) -> None:
        pass

    def on_events(self, events: list[Event]) -> None:
        self.queue.put(events)

    def close(self, summary: RunSummary) -> None:
        self.queue.put(_SENTINEL)


class Session:
    """Spawn or attach, arm a compiled probe set, stream events, close cleanly."""

    def __init__(
        self,
        table: ProbeTable,
        target: tgt.TargetSpec,
        device: tgt.DeviceSpec | None = None,
        collectors: Sequence[Collector] = (),
        source: str | None = None,
        sets: Sequence[str] = (),
        kill_on_stop: bool | None = None,
        stream: bool = True,
        follow: bool = False,
        attach_all: AllSpec | None = None,
    ) -> None:
        if follow:  # forked and exec'ed children too (docs/follow.md)
            if table.patch_probes() or table.syscall_probes():
                raise UsageError("-F follows function probes only, not patch or syscall probes")
            table.options = dataclasses.replace(table.options, follow=True)
        if attach_all is not None:
            check_table(table)
        self.follow = follow
        # --all: every matching process (docs/all.md); on_note: what to tell the user
        self._all = None if attach_all is None else AllRun(attach_all, self._note, follow)
        self.on_note: Callable[[str], None] | None = None
        self._children: Children | None = None
        self._root: Image | None = None
        self._left_children: list[Image] = []  # children whose agent stop() made leave
        self.table = table
        self.target = target
        self.device_spec = device or tgt.DeviceSpec()
        self.collectors: list[Collector] = list(collectors)
        self.source = source
        self.sets = tuple(sets)
        # A spawned target dies with the run when the user stops it; an attached one never.
        self.kill_on_stop = target.spawns if kill_on_stop is None else kill_on_stop
        self._killed_at_stop = False  # stop() ended the program instr started
        self.ctx = RunContext(table)
        self.pid: int | None = None
        self.reports: list[ProbeReport] = []
        self.summary: RunSummary | None = None
        self._proc: TargetProcess | None = None
        self._agent: Agent | None = None
        self._dispatcher: Dispatcher | None = None
        # events() reads decoded batches from this queue; the CLI streams to collectors only.
        self._events: _QueueCollector | None = _QueueCollector() if stream else None
        if self._events is not None:
            self.collectors.append(self._events)
        self._close_lock = threading.Lock()
        self._ended = threading.Event()
        self.patch_reverts: list[RevertResult] = []  # patch probes, reverted at stop
        self.agent_left: bool | None = None  # after stop(): the agent had unloaded in time
        self._died_at_unload = False  # the target ended while Frida's agent was leaving it
        # Program threads blocked inside instr's hooks when it left: the agent
        # stays until they return (docs/leaving.md).
        self.held: list[int] = []
        self.leaving = False  # the agent had not unloaded when instr left (see held)
        self.leave_note: str | None = None  # what to say about it
        self.stop_grace_s = 20.0  # how long leaving may take before the agent counts as hung
        # Agent messages another instrument on this session takes (``tap``), by payload type.
        self._taps: dict[str, Any] = {}
        self._profile: Any = None  # instr.profile.probes.ProfilePoints, for profile probes

    # -- construction helpers -------------------------------------------------

    @classmethod
    def spawn(cls, argv: Sequence[str], table: ProbeTable, **kw: Any) -> Session:
        stdio = kw.pop("stdio", "inherit")
        return cls(table, tgt.TargetSpec(argv=tuple(argv), stdio=stdio), **kw)

    @classmethod
    def attach(cls, pid_or_name: int | str, table: ProbeTable, **kw: Any) -> Session:
        if isinstance(pid_or_name, int):
            return cls(table, tgt.TargetSpec(pid=pid_or_name), **kw)
        return cls(table, tgt.TargetSpec(name=pid_or_name), **kw)

    @classmethod
    def every(cls, spec: AllSpec, table: ProbeTable, **kw: Any) -> Session:
        """Every process ``spec`` matches (``--all``, docs/all.md)."""
        return cls(table, spec.target(), attach_all=spec, **kw)

    # -- lifecycle (instr/lifecycle.py) ---------------------------------------

    def start(self, resume: bool = True) -> list[ProbeReport]:
        """Open the device, spawn or attach, load the agent and arm the probes.

        A spawned target stays suspended until ``resume()`` (called here unless
        ``resume=False``), so probes are armed before ``main`` runs.
        """
        if self._all is not None:  # the first match is this session's target
            self.target = tgt.TargetSpec(pid=self._all.find())
        self._proc = TargetProcess.open(self.device_spec, self.target)
        self.pid = self._proc.pid
        if self.follow or self._all is not None:
            self._children = Children(
                self._proc,
                self._arm_child,
                lambda key: lambda m, d: self._on_message(m, d, key),
                self._child_added,
                self._children_changed,
                self._child_error,
                gate=self.follow,
            )
            self._root = self._children.root(self.pid)
            if self.follow:
                self._children.listen()
        try:
            self._arm()
            if self._all is not None and self._children is not None:
                assert self._dispatcher is not None  # _arm made it
                self._all.begin(self._children, self._dispatcher.sources.process)
        except BaseException:
            self._abort()
            raise
        if self._all is not None:
            self._all.watch()
        if resume:
            self.resume()
        return self.reports

    def _arm(self) -> None:
        assert self._proc is not None and self.pid is not None
        info = RunInfo(
            started_ns=time.time_ns(),
            device=str(self.device_spec),
            pid=self.pid,
            argv=self.target.argv,
            source=self.source,
            sets=self.sets,
        )
        self._dispatcher = Dispatcher(
            self.ctx, self.collectors, on_ending=self._on_ending, on_batch_done=self._credit
        )
        for c in self.collectors:
            c.open(self.ctx, info)
        self._dispatcher.follow = self.follow or self._all is not None
        if self._all is not None:
            self._dispatcher.add_source(0, self.pid, parent_of(self.pid), "attach")
        else:
            self._dispatcher.add_source(0, self.pid, None, "root")
        self._agent = Agent.load(
            self._proc, "instr", on_message=self._on_message, on_detached=self._on_detached
        )
        if self._root is not None:
            self._root.agent = self._agent
        try:
            result = self._agent.rpc.configure(self.table.plan())
        except frida.RPCException as e:
            raise AgentError(f"the agent rejected the plan: {e}") from e
        self.reports = [self._report(s) for s in result["probes"]]
        if self.table.patch_probes():
            from instr.patch.probes import apply_probes

            self.reports += apply_probes(self._agent.script, self.table)
        if self.table.syscall_probes():
            self.reports += self._arm_syscalls(str(self._agent.hello.get("arch", "x64")))
        if self.table.profile_probes():
            from instr.profile.probes import ProfilePoints

            self._profile = ProfilePoints(self.table.profile_probes(), lambda: self.rpc)
            self._taps["profile"] = self._profile.post
            self._dispatcher.add_host_tables(self._profile)
            self.reports += self._profile.arm(self.pid)
        self._dispatcher.set_reports(self.reports)
        if self.reports and all(r.state == "failed" for r in self.reports):
            reasons = "\n".join(f"  {r.name}: {r.reason}" for r in self.reports)
            raise NothingArmedError(f"no probe could be armed:\n{reasons}")
        if self.follow:  # in force before the program goes on (Agent.gate_children)
            note = self._agent.gate_children()
            if note is not None:
                self._dispatcher.error(note)

    # -- children (-F: instr/follow.py) ------------------------------------------

    def _note(self, text: str) -> None:
        if self.on_note is not None:
            self.on_note(text)

    @property
    def pids(self) -> list[int]:
        """The processes this run has attached to or followed, live or not."""
        if self._children is None:
            return [self.pid] if self.pid is not None else []
        return [img.pid for img in list(self._children.images)]

    def where(self) -> str:
        """Where the probes are armed, for the status line."""
        return f"pid {self.pid}" if self._all is None else self._all.where(self.pids)

    def _arm_child(self, agent: Agent) -> None:
        """A child's agent gets the run's plan (Children._adopt, Frida held it)."""
        try:
            agent.rpc.configure(self.table.plan())
        except frida.RPCException as e:
            raise AgentError(f"the agent rejected the plan: {e}") from e

    def _child_added(self, key: int, pid: int, parent: int | None, origin: str) -> None:
        assert self._dispatcher is not None
        self._dispatcher.add_source(key, pid, parent, origin)

    def _child_error(self, text: str) -> None:
        if self._dispatcher is not None:
            self._dispatcher.error(text)

    def _children_changed(self) -> None:
        if self._all is not None and self._all.watching:  # goes on until stopped
            return
        if self._children is not None and self._children.all_done():
            self._ended.set()

    def _agent_of(self, source: int) -> Agent | None:
        if source == 0 or self._children is None:
            return self._agent
        return self._children.agent(source)

    def _arm_syscalls(self, arch: str) -> list[ProbeReport]:
        """Syscall probes: the host arms the agent's syscall monitor (see instr.syscalls.points)."""
        from instr.syscalls.points import arm_points

        assert self._agent is not None and self.pid is not None and self._dispatcher is not None
        points, reports = arm_points(
            self._agent.script, self.table, self.pid, arch, self.device_spec.kind
        )
        self._dispatcher.add_syscall_points(points)
        return reports

    def _report(self, status: dict[str, Any]) -> ProbeReport:
        probe = self.table.probes[int(status["id"])]
        return ProbeReport(
            id=probe.id,
            name=probe.name,
            state=str(status["state"]),
            tier=status.get("tier"),
            sites=int(status.get("sites", 0)),
            reason=status.get("reason"),
        )

    def tap(self, kind: str, handler: Any) -> None:
        """Hand the agent's messages whose payload type is ``kind`` (e.g. the
        sampler's "profile" batches) to ``handler(message, data)`` instead of the
        dispatcher. It runs on Frida's thread: it should only queue. Call before
        ``start``."""
        self._taps[kind] = handler

    @property
    def rpc(self) -> Any:
        """The agent's exports, for an instrument riding this session (the sampler)."""
        if self._agent is None:
            raise AgentError("the session is not started")
        return self._agent.rpc

    def _on_message(self, message: dict[str, Any], data: bytes | None, source: int = 0) -> None:
        payload = message.get("payload") if isinstance(message, dict) else None
        if self._taps and source == 0 and isinstance(payload, dict):
            handler = self._taps.get(payload.get("type"))  # type: ignore[arg-type]
            if handler is not None:
                handler(message, data)
                return
        assert self._dispatcher is not None
        self._dispatcher.post(message, data, source)

    def resume(self) -> None:
        if self._proc is not None:
            self._proc.resume()

    def input(self, data: bytes | str) -> None:
        """Write to a target spawned with ``stdio="pipe"``."""
        if self._proc is None or self.target.stdio != "pipe":
            raise TargetError("input() needs a target spawned with stdio='pipe'")
        self._proc.input(data.encode() if isinstance(data, str) else data)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the target ends or the session is lost; False on timeout."""
        return self._ended.wait(timeout)

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    @property
    def output_closed(self) -> bool:
        """The console's reader went away (``instr ... | head``): stop as on Ctrl-C."""
        return self._dispatcher is not None and self._dispatcher.pipe_closed.is_set()

    def snapshot(self) -> None:
        """Ask the agent for the aggregations now; they reach the collectors in order."""
        if self._agent is None or self._ended.is_set():
            return
        if self._children is not None:
            self._snapshot_all()
            return
        with contextlib.suppress(
            frida.InvalidOperationError, frida.TransportError, frida.RPCException
        ):
            self._agent.rpc.snapshot(False)
            d = self._dispatcher
            agent_aggs = any(
                p.aggregations for p in self.table if not p.is_syscall and not p.is_profile
            )
            if d is not None and d.points is not None and not agent_aggs:
                # only host tables (syscall points): no agent snapshot will carry them
                d.post({"v": PROTOCOL_VERSION, "type": "host-aggs"}, None)

    def _snapshot_all(self) -> None:
        """-F: every live image's tables, then one merged snapshot (an agent's
        messages reach the dispatcher before its RPC returns)."""
        assert self._children is not None and self._dispatcher is not None
        for img in self._children.live(root=True):
            with contextlib.suppress(
                frida.InvalidOperationError, frida.TransportError, frida.RPCException
            ):
                if img.agent is not None:
                    img.agent.rpc.snapshot(False)
        self._dispatcher.post({"v": PROTOCOL_VERSION, "type": "merge-aggs"}, None)

    @property
    def profile(self) -> Any:
        """The sampler of the table's profile probes (``instr.profile.probes.ProfilePoints``),
        once armed; None without profile probes."""
        return self._profile

    @property
    def progress(self) -> tuple[int, int]:
        """Events decoded and records dropped so far (any thread may ask)."""
        d = self._dispatcher
        return (d.events, sum(d.drops.copy().values())) if d is not None else (0, 0)

    @property
    def aggregations(self) -> AggSnapshot | None:
        """The latest aggregation snapshot received (the final one after ``close``)."""
        return self._dispatcher.last_snapshot if self._dispatcher is not None else None

    def stop(self) -> None:
        """Flush and disarm; detach. A spawned target is then killed (see ``kill_on_stop``).

        Not for ever: leaving waits for the agent's dispose, and an agent that
        no longer answers (a deadlock inside Frida, docs/syscalls.md) gets
        ``stop_grace_s``; then a target instr spawned is killed, which ends its
        session, and the run says so. A thread blocked inside a hook is not
        waited for (docs/leaving.md)."""

        def kill() -> None:
            if self._proc is not None:
                self._proc.kill()

        error = leave_bounded(self._leave, self.stop_grace_s, self.pid, self.target.spawns, kill)
        if error is not None and self._dispatcher is not None:
            self._dispatcher.error(error)
        if self.kill_on_stop and self._proc is not None:
            self._proc.kill()
            self._killed_at_stop = True
            if self._dispatcher is not None:  # -F: the root's image, unless it exec'ed
                self._dispatcher.source_ended(0, Ending("stopped", signal="SIGKILL"))
            for child in self._left_children:  # the program's tree, as it was started
                with contextlib.suppress(Exception):
                    tgt.kill(self._proc.device, child.pid)
                if self._dispatcher is not None:
                    self._dispatcher.source_ended(child.key, Ending("stopped", signal="SIGKILL"))

    def _leave(self) -> None:
        """Revert patches, dispose of the agent, detach, wait for it to unload."""
        if self._all is not None:
            self._all.stop()  # no more attaches; one under way finishes first
        if self._children is not None:
            self._leave_children()
        agent = self._agent
        if agent is None or self._ended.is_set():
            return
        if self._profile is not None:
            self._profile.finish()  # its counts complete before the agent's final snapshot
        if self.table.patch_probes():
            from instr.patch.probes import revert_owned

            self.patch_reverts = revert_owned(agent.script)
        left = agent.leave(wait=not self.kill_on_stop)
        self.held = left.held
        self.agent_left = left.done
        self.leaving = left.done is False
        self.leave_note = left.note or self.leave_note  # a child's (-F) otherwise
        # Not "the target keeps running" if it did not (seen once in CI).
        self._died_at_unload = left.died
        self._left_alive(0)

    def _leave_children(self) -> None:
        """-F: no more adoptions (held children resumed), then every child's
        agent leaves the one way (Agent.leave)."""
        assert self._children is not None
        held = self._children.stop()
        if held and self._dispatcher is not None:
            self._dispatcher.error(
                f"{len(held)} child process(es) were still being armed when the run stopped"
                f" ({', '.join(map(str, held))}); their calls are not all traced"
            )
        self._left_children = self._children.live()
        for child in self._left_children:
            assert child.agent is not None
            left = child.agent.leave(wait=not self.kill_on_stop)
            if left.note is not None and self.leave_note is None:
                self.leave_note = left.note
            self._left_alive(child.key)

    def _left_alive(self, key: int) -> None:
        """-F: an image instr left running (stop() kills those it started instead)."""
        if self._dispatcher is not None and self._children is not None and not self.kill_on_stop:
            self._dispatcher.source_ended(key, Ending("detach"))

    def _image_endings(self) -> None:
        """-F: how each image ended when its agent could not say (killed, lost)."""
        if self._children is None or self._dispatcher is None:
            return
        for img in list(self._children.images):
            ending = img.agent.ending() if img.agent is not None else None
            if ending is not None:
                self._dispatcher.source_ended(img.key, ending)

    def close(self) -> RunSummary:
        """Stop if needed, drain everything, close the collectors; returns the summary."""
        with self._close_lock:
            if self.summary is not None:
                return self.summary
            if not self._ended.is_set():
                self.stop()
            if self._dispatcher is None:
                raise TargetError("the session was never started")
            if self._profile is not None:  # the target ended first: count what came
                self._profile.finish(ended=True)
            # Frida's kill is SIGKILL: said as it happened, not "the target keeps running"
            stopped = Ending("stopped", signal="SIGKILL") if self._killed_at_stop else None
            self._image_endings()
            self.summary = self._dispatcher.close(self._fallback_ending(), stopped)
            if self._proc is not None:
                self._proc.close()
            return self.summary

    def _abort(self) -> None:
        """Undo a half-started session: detach, kill what we spawned, close collectors."""
        if self._all is not None:
            self._all.stop()
        if self._children is not None:
            self._children.stop()  # no more adoptions
            for img in self._children.live():  # --all: those attached before the failure
                if img.agent is not None:
                    img.agent.leave()
        if self._proc is not None:
            self._proc.abandon(self._agent)
        if self._dispatcher is not None:
            self.summary = self._dispatcher.close(None)

    # -- callbacks (Frida's thread, or the dispatcher worker) -----------------

    def _post(self, message: dict[str, object]) -> None:
        """A message to the agent; a target that is already gone cannot take it."""
        if self._agent is not None:
            self._agent.post(message)

    def _on_ending(self, ending: Ending, token: int) -> None:
        """The agent flushed everything and waits: all earlier batches are decoded."""
        source = self._dispatcher.source if self._dispatcher is not None else 0
        agent = self._agent_of(source)  # the worker is on that agent's message
        if agent is not None:
            agent.post(ack(token))

    def _credit(self, seq: int) -> None:
        """Flow control: the host has finished with batch ``seq``; the agent may send more."""
        if not self._ended.is_set():
            source = self._dispatcher.source if self._dispatcher is not None else 0
            agent = self._agent_of(source)  # the worker is on that agent's batch
            if agent is not None:
                agent.post(credit(seq))

    def _on_detached(self, reason: str, crash: Any) -> None:
        if self._profile is not None:
            self._profile.sampler.detached()  # the sampler runs on the root's agent
        if self._children is not None and self._root is not None:
            self._children.detached(self._root, reason)  # ends the run when all are done
            return
        self._ended.set()

    def _fallback_ending(self) -> Ending | None:
        """How the run ended when the agent could not say (SIGKILL, lost device)."""
        if self._died_at_unload:
            return Ending("lost", signal="the target ended while Frida's agent left it")
        ending = self._agent.ending() if self._agent is not None else None
        return ending or Ending("detach")

    # -- iteration and context manager ----------------------------------------

    def events(self) -> Iterator[Event]:
        """Yield decoded events until the run ends. Starts the session if needed."""
        if self._events is None:
            raise TargetError("this session was created with stream=False")
        if self._dispatcher is None:
            self.start()
        closer = threading.Thread(target=self._close_when_ended, daemon=True)
        closer.start()
        while True:
            batch = self._events.queue.get()
            if batch is _SENTINEL:
                return
            yield from batch

    def _close_when_ended(self) -> None:
        self._ended.wait()
        self.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._dispatcher is not None:
            self.close()  # idempotent
