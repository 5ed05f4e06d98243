"""``instr syscalls``: count or trace a process's system calls (and, with
``follow``, its forked and exec'ed children's, through Frida's child gating).

    from instr.syscalls.monitor import SyscallRun
    run = SyscallRun(TargetSpec(argv=("./prog",)), follow=True)
    result = run.run()
    print(result.counts)       # {"openat": Count(calls=3, errors=1, ns=...)}
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import frida

from instr import cbuild
from instr import target as tgt
from instr.errors import TargetError
from instr.events import Ending
from instr.lifecycle import Agent, TargetProcess
from instr.probes.ir import PlanOptions, ProbeTable
from instr.protocol import ack
from instr.syscalls import ARCHES, fdsplit, numbers, select
from instr.syscalls import names as nr_names
from instr.syscalls.decode import FdTable, format_record, memory_kinds
from instr.syscalls.records import Record, parse
from instr.syscalls.result import Count, Image, Result, summarize
from instr.syscalls.wrappers import F_INDIRECT, Site, choose, scan_names
from instr.unload import leave_bounded

# What Frida's own Interceptor hooks on a followed process (child gating).
FRIDA_HOOKED = frozenset({"close"})
# Complete mode: the wrappers that fork a process run outside Stalker (see
# start_monitor) and are counted at the wrapper.
FORK_WRAPPERS = frozenset({"_Fork", "__libc_fork", "fork"})


def start_monitor(
    script: Any,
    arch: str,
    chosen: set[str],
    scans: dict[tuple[str, str], list[dict[str, Any]]],
    *,
    stream: bool,
    bufmax: int = 32,
    buffer_bytes: int = 8 << 20,
    follow: bool = False,
    agent: Agent | None = None,
    kinds: list[list[Any]] | None = None,
    complete: bool = False,
    spawned: bool = False,
    thread_slots: int = 4096,
    forked: bool = False,
    built: bytes | None = None,
    fork_stub: str | None = None,
) -> tuple[dict[str, Any], list[Site]]:
    """Scan libc (once per libc: ``scans``), choose the wrappers and arm the
    agent's syscall monitor for the ``chosen`` syscalls. ``arch`` is the
    table's name (``x86_64``, ``arm64``); ``built`` the monitor's C built by
    the host (instr/cbuild.py; None: TinyCC in the agent). Returns the agent's
    answer and the sites."""
    # Scan before child gating is enabled: Frida's own hooks (close, fork)
    # would hide the code. A forked child has its parent's libc, already
    # hooked by the inherited gating: it reuses the parent's scan.
    functions: list[dict[str, Any]] | None = []
    if complete and not follow:  # Stalker needs no wrappers but fork's (below)
        functions = script.exports_sync.syscall_scan(sorted(FORK_WRAPPERS))["functions"]
    else:
        libc = script.exports_sync.syscall_scan(["\0"])
        key = (str(libc["module"]), str(libc["base"]))
        functions = scans.get(key)
        if functions is None:
            functions = script.exports_sync.syscall_scan(scan_names(arch))["functions"]
            scans[key] = functions
    sites = [] if functions is None else choose(functions, arch)
    if complete:
        # Functions Frida hooks itself run natively inside its (excluded) code,
        # so Stalker never sees their syscall: their wrappers are counted instead.
        # So is fork's: a child forked by a stalked thread died of SIGSEGV (jump
        # to 0, even with Stalker's default transform: Frida's), so the agent
        # excludes every site from Stalker and fork() runs natively.
        sites = [
            s for s in sites if (follow and s.syscall in FRIDA_HOOKED) or s.name in FORK_WRAPPERS
        ]
    nrs = numbers(arch)
    # Only the wrappers of selected syscalls (and syscall(2)): unselected sites
    # would pass through anyway, at the cost of a hook.
    wanted = {nrs[n] for n in chosen if n in nrs}
    sites = [s for s in sites if s.nr in wanted or s.flags & F_INDIRECT]
    # Not vfork: its child runs on the parent's stack, and with the wrapper hooked
    # (even by an entry-only listener) `sh -c 'sleep 1; ls'` died of "stack
    # smashing detected" (measured); its calls are not counted.
    sites = [s for s in sites if not s.listener]
    if kinds is None:
        kinds = []
        if stream:
            for name in chosen:
                k, lens = memory_kinds(name)
                if any(k):
                    kinds.append([nrs[name], k, lens])
    config = {
        "sites": [s.to_plan() for s in sites],
        "selected": sorted(nrs[n] for n in chosen if n in nrs),
        "trace": stream,
        "kinds": kinds,
        "strmax": 4096 if stream else 0,
        "bufmax": bufmax,
        "buffer_bytes": buffer_bytes if stream else 0,
        "fast": not follow,
        "follow": follow,
        "complete": complete,
        "spawned": spawned,
        "thread_slots": thread_slots,
        "forked": forked,
        "fork_stub": fork_stub,
    }
    start = script.exports_sync.syscall_start
    started = start(config) if built is None else start(config, built)
    # Child gating once the monitor is armed: the first child is adopted with
    # the same configuration (docs/syscalls.md, "Children").
    if follow and agent is not None:
        started["gating_note"] = agent.gate_children()
    return started, sites


KNOWN_UNHOOKED = frozenset({"__read_nocancel"})  # docs/syscalls.md, "What the default mode misses"


class SyscallRun:
    def __init__(
        self,
        target: tgt.TargetSpec,
        device: tgt.DeviceSpec | None = None,
        trace_spec: str | None = None,
        follow: bool = False,
        stream: bool = False,
        on_line: Callable[[str], None] | None = None,
        strmax: int = 32,
        bufmax: int = 32,
        buffer_bytes: int = 8 << 20,
        say: Callable[[str], None] | None = None,
        complete: bool = False,
        thread_slots: int = 4096,
        compiler: str = "auto",
        own_fds: bool | None = None,
    ) -> None:
        self.target = target
        # The program's own fd table, from its next hooked call (see _separate): None
        # where it can be done, True asked for (why not is said), False shared.
        self.own_fds = own_fds
        # Who builds the monitor's C: auto | system (the host's) | tinycc (cbuild.py).
        self.compiler = compiler
        self.toolchain = "tinycc"
        self.toolchain_note: str | None = None
        self.complete = complete
        self.device_spec = device or tgt.DeviceSpec()
        self.trace_spec = trace_spec
        self.follow = follow
        self.stream = stream
        self.on_line = on_line or (lambda s: None)
        self.strmax, self.bufmax, self.buffer_bytes = strmax, bufmax, buffer_bytes
        self.say = say or (lambda s: None)
        self.images: list[Image] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stop_asked = False  # request_stop(): the reader of the lines went away
        self._pending: set[int] = set()  # children being armed (held by child gating)
        self._device: Any = None
        self.root_pid: int | None = None
        self.errors: list[str] = []
        self.notes: list[str] = []  # what to say that is not an error (a held leave)
        self._scans: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._built: dict[str, tuple[bytes | None, str | None]] = {}  # by arch (cbuild.py)
        self._awaiting_exec: set[int] = set()
        # Threads whose state has a slot; the rest keep it in TLS (slower).
        self.thread_slots = thread_slots
        # How long leaving may take before the agent counts as hung (_stop_bounded).
        self.stop_grace_s = 20.0
        self._proc: TargetProcess | None = None  # the program instr runs or joined

    # -- per process -----------------------------------------------------------

    def _arm(
        self, pid: int, adopted: bool = False, forked: bool = False, fork_stub: str | None = None
    ) -> Image:
        img = Image(pid)
        if pid == self.root_pid and self.device_spec.kind == "local" and not self.target.spawns:
            img.fds = FdTable.from_proc(pid)  # this host's /proc: what it has open already
        assert self._proc is not None
        img.agent = Agent.load(
            self._proc,
            "instr-syscalls",
            on_message=lambda m, d: self._on_message(img, m, d),
            on_detached=lambda reason, crash: self._on_detached(img, reason),
            pid=pid,
        )
        img.session, img.script = img.agent.session, img.agent.script
        try:
            return self._arm_loaded(img, pid, adopted, forked, fork_stub)
        except BaseException:
            img.agent.leave()  # whatever was armed is reverted (docs/leaving.md)
            raise

    def _arm_loaded(
        self, img: Image, pid: int, adopted: bool, forked: bool, fork_stub: str | None
    ) -> Image:
        assert img.agent is not None
        img.arch = str(img.agent.hello["arch"])
        arch = "x86_64" if img.arch == "x64" else img.arch
        if forked:
            self._robust_list(img, arch)
        # No probes: the plan only sets up flushing and the exit/exec hooks.
        plan = ProbeTable(options=PlanOptions(buffer_bytes=1 << 17)).plan()
        img.script.exports_sync.configure(plan)
        # Once per architecture, not per image: every child would otherwise
        # send the C and headers again (~140 kB) while it is held.
        if img.arch not in self._built:
            self._built[img.arch] = cbuild.object_for(
                img.script, "syscalls", self.device_spec.kind, self.compiler
            )
        built, why = self._built[img.arch]
        started, sites = start_monitor(
            img.script,
            arch,
            select(self.trace_spec, arch),
            self._scans,
            stream=self.stream,
            bufmax=self.bufmax,
            buffer_bytes=self.buffer_bytes,
            follow=self.follow,
            agent=img.agent,
            complete=self.complete,
            spawned=adopted or self.target.spawns,  # suspended at its start
            thread_slots=self.thread_slots,
            forked=forked,
            built=built,
            fork_stub=fork_stub,
        )
        img.sites = int(started["armed"])
        if started.get("gating_note"):
            self.errors.append(str(started["gating_note"]))  # a child may be missed
        img.fork_stub = started.get("fork_stub")
        if pid == self.root_pid:
            self.toolchain = str(started.get("toolchain", "tinycc"))
            self.toolchain_note = started.get("toolchain_error") or why
        by_address = {s.address: f"{s.name} ({s.syscall})" for s in sites}
        named = [(str(f), by_address.get(str(f).partition(": ")[0])) for f in started["failed"]]
        if pid == self.root_pid:
            # Not about a wrapper: the complete mode's (no main symbol, a thread).
            for f, name in named:
                if name is None:
                    self.say(f)
        if img.sites == 0 and not self.complete and sites:
            # Nothing hooked: usually another instr (or Frida tool) already holds
            # libc's wrappers in this process. Counting nothing would be a lie.
            why = str(started["failed"][0]).partition(": ")[2] if started["failed"] else "?"
            why = why.removeprefix("Error: ").removesuffix("; please file a bug")
            raise TargetError(
                f"could not hook libc's system-call wrappers in pid {pid} ({why})",
                hint="is another instr or Frida tool already tracing its system calls?"
                " Stop it first",
            )
        # glibc's __read_nocancel: Frida refuses to intercept it at all, on every
        # run; docs/syscalls.md says so once, rather than every run's first line
        failed = [n for _, n in named if n is not None and n.split()[0] not in KNOWN_UNHOOKED]
        if failed and pid == self.root_pid:
            more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
            self.say(
                f"{len(failed)} libc wrapper(s) could not be hooked, so calls made through"
                f" them are not counted (--complete counts them): {', '.join(failed[:5])}{more}"
            )
        with self._lock:
            self.images.append(img)
        return img

    def _robust_list(self, img: Image, arch: str) -> None:
        """A forked child's ``set_robust_list``: glibc's ``_Fork`` makes it in
        line, right after the clone, before child gating holds the child, so no
        hook sees it. The kernel clears the robust-list head of a forked child;
        a head there now was set by that call, which is counted (as succeeded,
        untimed). docs/syscalls.md, "Children"."""
        if "set_robust_list" not in select(self.trace_spec, arch):
            return
        got = img.script.exports_sync.syscall_robust_list()
        if got is None or int(str(got[0]), 16) == 0:
            return
        img.extra["set_robust_list"] = img.extra.get("set_robust_list", 0) + 1
        if self.stream:
            self.on_line(
                self._prefix(img)
                + f"set_robust_list({got[0]}, {got[1]}) = 0 <made in fork(), seen after>"
            )

    def _on_message(self, img: Image, message: dict[str, Any], data: bytes | None) -> None:
        if message.get("type") != "send":
            self.errors.append(f"pid {img.pid}: agent: {message.get('description', message)}")
            return
        p = message["payload"]
        kind = p.get("type")
        if kind == "syscalls":
            img.tick_ns = float(p.get("tick_ns", 1.0))  # the agent's clock ticks, in ns
            img.counters = {
                int(nr): Count(int(c), int(e), round(int(ns) * img.tick_ns))
                for nr, c, e, ns in p["counters"]
            }
            img.drops = int(p.get("drops", 0))
            if data:
                self._records(img, data)
        elif kind == "ending":
            img.ending = p
            chosen = select(self.trace_spec, "x86_64" if img.arch == "x64" else img.arch)
            if p.get("reason") == "exit" and "exit_group" in chosen:
                img.extra["exit_group"] = img.extra.get("exit_group", 0) + 1
                if self.stream:
                    self.on_line(self._prefix(img) + f"exit_group({p.get('code')}) = ?")
            elif p.get("reason") == "exec":
                img.exec_pending = "execve" in chosen
            with contextlib.suppress(frida.InvalidOperationError, frida.TransportError):
                img.script.post(ack(int(p["token"])))
        elif kind == "fds" and self.own_fds:  # the fd table separated, or why not: if asked
            fdsplit.told(p, self.say)
        elif kind == "error":
            self.errors.append(f"pid {img.pid}: agent error: {p.get('message')}")

    def _prefix(self, img: Image) -> str:
        return f"[pid {img.pid:>6}] " if self.follow else ""

    def _records(self, img: Image, data: bytes) -> None:
        table = nr_names(img.arch)
        for rec in parse(data):
            rec.dur = round(rec.dur * img.tick_ns)
            name = table.get(rec.nr, f"syscall_{rec.nr}")
            self.on_line(self._line(img, name, rec))

    def _line(self, img: Image, name: str, rec: Record) -> str:
        return format_record(name, rec, img.fds, img.pid if self.follow else None)

    def _on_detached(self, img: Image, reason: str) -> None:
        with self._changed:
            img.detach_reason = reason
            if reason == "process-replaced" and img.exec_pending:
                img.extra["execve"] = img.extra.get("execve", 0) + 1
            if reason == "process-replaced" and self.follow:
                self._awaiting_exec.add(img.pid)  # its new image comes as a child
            self._changed.notify_all()

    def _on_child(self, child: Any) -> None:
        with self._changed:
            self._pending.add(child.pid)
            self._awaiting_exec.discard(child.pid)
        if self.stream and child.origin == "exec":
            self.on_line(f"[pid {child.pid:>6}] execve({child.path!r}, ...) = 0")
        threading.Thread(target=self._adopt, args=(child,), daemon=True).start()

    def _fork_stub(self, parent: int) -> str | None:
        """Where a child forked by ``parent`` waits to be followed (complete mode)."""
        with self._lock:
            for img in reversed(self.images):
                if img.pid == parent:
                    return img.fork_stub
        return None

    def _adopt(self, child: Any) -> None:
        try:
            forked = child.origin == "fork"
            stub = self._fork_stub(child.parent_pid) if forked else None
            self._arm(child.pid, adopted=True, forked=forked, fork_stub=stub)
        except Exception as e:  # the child is still resumed: never leave it stopped
            self.errors.append(f"cannot follow pid {child.pid}: {e}")
        finally:
            # A child already gone: Frida says NotSupported ("failed to open
            # /proc/PID/auxv: No such process"), seen once in 12 suite runs.
            with contextlib.suppress(
                frida.InvalidOperationError, frida.ProcessNotFoundError, frida.NotSupportedError
            ):
                self._device.resume(child.pid)
            with self._changed:
                self._pending.discard(child.pid)
                self._changed.notify_all()

    # -- the run ---------------------------------------------------------------

    def request_stop(self) -> None:
        """End the run as Ctrl-C does, from any thread (instr syscalls | head)."""
        with self._changed:
            self._stop_asked = True
            self._changed.notify_all()

    def _all_done(self) -> bool:
        if self._stop_asked:
            return True
        if self._awaiting_exec or self._pending:
            return False
        return all(i.detach_reason is not None for i in self.images)

    def run(self, timeout: float | None = None) -> Result:
        import platform

        # Bad -e input fails before anything is spawned (checked again per arch).
        select(self.trace_spec, ARCHES.get(platform.machine(), "x86_64"))
        # a spawned target is held until resumed, so no child appears before the handler
        self._proc = TargetProcess.open(self.device_spec, self.target)
        self._device, self.root_pid = self._proc.device, self._proc.pid
        if self.follow:
            self._device.on("child-added", self._on_child)
        try:
            self._arm(self.root_pid)
        except BaseException:
            self._proc.abandon(None)  # the images' agents left in _arm
            raise
        try:
            what = (
                "complete mode: Stalker"
                if self.complete
                else f"{self.images[0].sites} libc wrappers"
            )
            cc = "the host's C compiler" if self.toolchain == "host" else "TinyCC"
            # Armed before "counting" is said: an attached program's next call may follow it.
            shared = self._separate()
            verb = "tracing" if self.stream else "counting"  # the list, or -c's table
            self.say(f"{verb} system calls in pid {self.root_pid} ({what}; C built by {cc})")
            if self.toolchain != "host" and self.compiler != "tinycc" and self.toolchain_note:
                self.say(f"TinyCC because {self.toolchain_note}")
            if shared is not None:
                self.say(shared)
            self._proc.resume()
            with self._changed:
                self._changed.wait_for(self._all_done, timeout)
        except KeyboardInterrupt:
            self.say("stopping")
        finally:
            with self._lock:
                pending = sorted(self._pending)
            if pending:  # never a silent gap in the counts
                self.errors.append(
                    f"{len(pending)} child process(es) were still being armed when the run"
                    f" stopped ({', '.join(map(str, pending))}); their calls are not counted"
                )
                # Held children first: a detach waited for them (measured).
                for pid in pending:
                    with contextlib.suppress(
                        frida.InvalidOperationError, frida.ProcessNotFoundError
                    ):
                        self._device.resume(pid)
            self._stop_bounded()
        try:
            return self.result()
        finally:
            self._proc.close()

    def _separate(self) -> str | None:
        """Arm the program's thread to get its own fd table at its next hooked
        call (instr/syscalls/fdsplit.py): a spawned program by default, an
        attached one with --own-fds. Returns what to say when it is not done,
        only when --own-fds asked for it: by default the table is an internal
        matter (a few tens of ns per fd call), not worth a line every run."""
        if not self.images:
            return None
        why = fdsplit.why_shared(
            spawned=self.target.spawns,
            asked=self.own_fds,
            follow=self.follow,
            complete=self.complete,
        )
        if why is None:
            why = fdsplit.separate(self.images[0].script)
        return fdsplit.SHARED.format(why) if why is not None and self.own_fds else None

    def _stop_bounded(self) -> None:
        """_stop, but not for ever (instr/unload.py: leave_bounded)."""

        def kill() -> None:
            if self.root_pid is not None:
                tgt.kill(self._device, self.root_pid)

        error = leave_bounded(
            self._stop, self.stop_grace_s, self.root_pid, self.target.spawns, kill
        )
        if error is not None:
            self.errors.append(error)

    def _stop(self) -> None:
        for img in list(self.images):
            if img.detach_reason is None and img.agent is not None:
                # The leave waits for Frida's agent to be gone from the process
                # when it can go at once: a target that exits meanwhile hangs or
                # crashes in Frida's exit hook (instr/unload.py). Measured: the
                # bench target, told to quit right after `instr syscalls -p` was
                # stopped, hung.
                left = img.agent.leave()
                if left.note is not None:
                    self.notes.append(left.note)
        if self.follow and self._device is not None:
            with contextlib.suppress(Exception):
                self._device.off("child-added", self._on_child)

    def _kernel_ending(self) -> Ending | None:
        """How the program instr spawned ended, from the kernel (its pidfd),
        once Frida has reaped it; waits up to a second for that."""
        return self._proc.kernel_ending() if self._proc is not None else None

    def result(self) -> Result:
        res = summarize(self.images, self.root_pid)
        roots = [i for i in self.images if i.pid == self.root_pid]
        waited = self._kernel_ending() if roots and roots[-1].ending is None else None
        if waited is not None:
            # No ending from the agent: what the kernel said.
            res.exit_code = waited.status()
            if waited.reason == "killed":
                res.crash = f"pid {self.root_pid}: {waited.describe()}"
        return res
