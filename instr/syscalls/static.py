"""``instr syscalls --complete`` for statically linked programs, where Frida
cannot inject (no dynamic loader, no libc to find): the kernel reports every
call through seccomp user notification (``instr/syscalls/seccomp.py``).

    from instr.syscalls.static import StaticRun
    result = StaticRun(("./static_prog",), follow=True).run()
    print(result.counts)          # {"openat": 3, "write": 6, ...}: calls only

What this mode cannot see: results, errors and durations (the supervisor lets
each call run after it has seen its entry). See docs/syscalls.md.
"""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

from instr import target as tgt
from instr.errors import TargetError, UsageError
from instr.signals import sigterm_as_interrupt
from instr.syscalls import names as nr_names
from instr.syscalls import numbers
from instr.syscalls import select as select_calls
from instr.syscalls.decode import FdTable, format_args, memory_kinds
from instr.syscalls.records import MK_BUF_ARG, MK_CSTR, MK_SOCK_ARG, Record
from instr.syscalls.seccomp import (
    AUDIT_ARCH,
    X32_BIT,
    Child,
    Listener,
    Notification,
    build_filter,
    native_arch,
    read_memory,
    spawn,
    syscall_name,
)

PT_INTERP = 3
STRMAX = 4096  # paths
BUFMAX = 32  # buffers shown (quote() cuts there and adds "...")
SOCKMAX = 128
TERM_GRACE_S = 2.0  # after SIGTERM, before SIGKILL, when instr is stopped
KILL_GRACE_S = 5.0


# -- which programs need this mode --------------------------------------------------


def elf_static(path: str) -> bool | None:
    """True for an ELF executable without a program interpreter (PT_INTERP):
    linked statically (static-pie included); False for a dynamically linked one;
    None when ``path`` is not an ELF file (a script) or cannot be read."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if len(head) < 52 or head[:4] != b"\x7fELF" or head[4] not in (1, 2):
                return None
            end = "<" if head[5] == 1 else ">"
            if head[4] == 2:
                (phoff,) = struct.unpack_from(end + "Q", head, 0x20)
                phentsize, phnum = struct.unpack_from(end + "HH", head, 0x36)
            else:
                (phoff,) = struct.unpack_from(end + "I", head, 0x1C)
                phentsize, phnum = struct.unpack_from(end + "HH", head, 0x2A)
            if phentsize < 4 or phnum == 0:
                return None
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return None
    if len(table) < phentsize * phnum:
        return None
    types = (struct.unpack_from(end + "I", table, i * phentsize)[0] for i in range(phnum))
    return PT_INTERP not in types


def wants_seccomp(target: tgt.TargetSpec, device: tgt.DeviceSpec, complete: bool) -> bool:
    """Whether ``instr syscalls`` must run ``target`` under seccomp: a local,
    statically linked program to spawn with ``--complete``. A static program
    without ``--complete``, or attached to, is a clear error (Frida would crash
    it)."""
    if device.kind != "local":
        return False
    if target.argv is not None:
        path = tgt.check_program(target.argv[0])
        if not elf_static(path):
            return False
        if not complete:
            raise UsageError(
                f"{path} is statically linked: Frida cannot inject into it",
                hint="use --complete, where the kernel reports its system calls (without "
                f"results, errors or times): instr syscalls --complete -- {shlex.join(target.argv)}",
            )
        return True
    pid = target.pid
    if pid is None:
        pid = tgt.resolve_name(tgt.open_device(device), target.name or "")
    if elf_static(f"/proc/{pid}/exe"):
        raise TargetError(
            f"pid {pid} runs a statically linked program: attaching Frida would abort it "
            "('Unable to locate the libc'), and --complete's seccomp filter can only be "
            "installed by a process itself, before it starts",
            hint="start the program under instr: instr syscalls --complete -- PROGRAM ARGS",
        )
    return False


# -- the run ------------------------------------------------------------------------


class ProcFds(FdTable):
    """fds named from /proc/PID/fd at the call's entry (no results to learn from)."""

    pid: int = 0

    def name(self, fd: int) -> str:
        try:
            return f"{fd}<{os.readlink(f'/proc/{self.pid}/fd/{fd}')}>"
        except OSError:
            return str(fd)


@dataclass
class StaticResult:
    counts: dict[str, int]  # calls per syscall; results, errors, times unknown
    exit_code: int | None  # the program's status (128+N when killed by signal N)
    withdrawn: int = 0  # calls that vanished before instr let them through (killed)


class StaticRun:
    """Count (or list) a spawned program's system calls through seccomp user
    notification. ``follow``: count forked children too (they inherit the
    filter either way; without it their calls are let through uncounted)."""

    def __init__(
        self,
        argv: tuple[str, ...],
        trace_spec: str | None = None,
        follow: bool = False,
        stream: bool = False,
        on_line: Callable[[str], None] | None = None,
        say: Callable[[str], None] | None = None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
    ) -> None:
        self.arch = native_arch()
        self.argv = (tgt.check_program(argv[0]), *argv[1:])
        self.follow, self.stream = follow, stream
        self.on_line = on_line or (lambda s: None)
        self.say = say or (lambda s: None)
        self.env, self.cwd = env, cwd
        chosen = select_calls(trace_spec, self.arch)
        nrs = numbers(self.arch)
        self.everything = chosen == set(nrs)
        self.chosen_nrs = {nrs[n] for n in chosen}
        self.names = nr_names(self.arch)
        self.native = AUDIT_ARCH[self.arch]
        self.execs = {nrs[n] for n in ("execve", "execveat") if n in nrs}
        self.exit_nrs = (nrs["exit"], nrs["exit_group"])
        # Calls _one() counts without building a Notification (exits update the
        # tid map when children are not followed).
        self.fast = self.chosen_nrs - (set() if follow else set(self.exit_nrs))
        self.inflight: int | None = None
        self.counts: dict[int, int] = {}  # nr -> calls (native arch)
        self.foreign: dict[str, int] = {}  # other ABIs, by name
        self.withdrawn = 0
        self.tgids: dict[int, int] = {}  # tid -> tgid (without follow)
        self.seen: set[int] = set()
        self.root = 0
        self.returncode: int | None = None  # Popen's: -N when killed by signal N
        self.reaped = False
        self.started = False
        self.kinds = {nr: memory_kinds(n) for n, nr in nrs.items()} if stream else {}
        self.fds = ProcFds()

    # -- per notification --------------------------------------------------------------

    def _tgid(self, tid: int) -> int:
        tgid = self.tgids.get(tid)
        if tgid is None:
            tgid = tid
            with contextlib.suppress(OSError), open(f"/proc/{tid}/status") as f:
                for ln in f:
                    if ln.startswith("Tgid:"):
                        tgid = int(ln.split()[1])
                        break
            self.tgids[tid] = tgid
        return tgid

    def _forget(self, n: Notification) -> None:
        """A thread (exit) or its whole process (exit_group) ends: its tids may be reused."""
        if n.nr == self.exit_nrs[0]:
            self.tgids.pop(n.pid, None)
        elif n.nr == self.exit_nrs[1]:
            gone = self.tgids.get(n.pid, n.pid)
            for tid in [t for t, g in self.tgids.items() if g == gone]:
                del self.tgids[tid]

    def _wanted(self, n: Notification) -> bool:
        if n.arch != self.native:
            return self.everything
        return n.nr in self.chosen_nrs or (self.everything and n.nr not in self.names)

    def _line(self, n: Notification, name: str, pid: int) -> str:
        """The call as strace prints it, from its entry: memory that the call
        reads (paths, buffers written, addresses) is shown; results are ``?``."""
        rec = Record(n.nr, 0, n.pid, 0, 0, 0, 0, n.args)
        none = ([0] * 6, [0] * 6)
        kinds, lens = self.kinds.get(n.nr, none) if n.arch == self.native else none
        for i, kind in enumerate(kinds):
            if kind == MK_CSTR:
                got = read_memory(n.pid, n.args[i], STRMAX, cstring=True)
            elif kind in (MK_BUF_ARG, MK_SOCK_ARG):
                cap = BUFMAX + 1 if kind == MK_BUF_ARG else SOCKMAX
                got = read_memory(n.pid, n.args[i], min(n.args[lens[i]], cap))
            else:
                continue
            if got is not None:
                rec.mem[i] = got
        self.fds.pid = n.pid
        args = format_args(name, rec, self.fds) if n.arch == self.native else "..."
        head = f"[pid {pid:>6}] " if self.follow else ""
        return f"{head}{name}({args}) = ?"

    def handle(
        self, n: Notification, let_through: Callable[[int], bool], valid: Callable[[int], bool]
    ) -> None:
        if not self.started:
            # Calls of instr's own child before it execs the program are not counted.
            if n.pid != self.root or n.arch != self.native or n.nr not in self.execs:
                let_through(n.id)
                return
            self.started = True
        counted = self._wanted(n) and (self.follow or self._tgid(n.pid) == self.root)
        line = None
        if counted and self.stream:
            name = syscall_name(n.nr, n.arch, self.arch, self.names)
            line = self._line(n, name, n.pid)
            if not valid(n.id):  # the memory read may be another process's: drop it
                line = None
        if not self.follow and n.nr in self.exit_nrs:
            self._forget(n)
        if not let_through(n.id):
            self.withdrawn += 1
            return
        if not counted:
            return
        self.seen.add(n.pid)
        if n.arch == self.native and not n.nr & X32_BIT:
            self.counts[n.nr] = self.counts.get(n.nr, 0) + 1
        else:
            name = syscall_name(n.nr, n.arch, self.arch, self.names)
            self.foreign[name] = self.foreign.get(name, 0) + 1
        if line is not None:
            self.on_line(line)

    # -- the loop ------------------------------------------------------------------------

    def run(self, timeout: float | None = None) -> StaticResult:
        prog = build_filter(self.arch, None if self.everything else self.chosen_nrs, self.execs)
        child = spawn(self.argv, prog, self.arch, env=self.env, cwd=self.cwd)
        self.root = child.pid
        what = "every system call" if self.everything else f"{len(self.chosen_nrs)} system calls"
        self.say(
            f"{'tracing' if self.stream else 'counting'} system calls in pid {child.pid}"
            " (static executable: seccomp user "
            f"notification on {what}; results, errors and times are not seen)"
        )
        try:
            with sigterm_as_interrupt():
                self._serve(child, None if timeout is None else time.monotonic() + timeout)
        except (KeyboardInterrupt, TimeoutError):
            self.say("stopping: ending the program (it cannot run on without instr in this mode)")
            self._end(child)
        finally:
            failure = child.failure()
            child.close()
        if failure is not None:
            raise TargetError(f"cannot run {self.argv[0]}: {failure}")
        return self.result()

    def _serve(self, child: Child, deadline: float | None) -> None:
        """Answer notifications until no process holds the filter any more,
        and reap the program (our child)."""
        if child.listener.sync_wakeup and threading.current_thread() is threading.main_thread():
            with _alarm(deadline), _interrupting(signal.SIGCHLD):
                self._serve_blocking(child)
        else:
            self._serve_polling(child, deadline)
        self._reap(child)

    def _serve_blocking(self, child: Child) -> None:
        """Linux >= 6.6 (the kernels with SYNC_WAKE_UP): RECV fails with ENOENT
        at once when no process holds the filter any more, so the ioctl itself
        waits for the next call, without a poll() per call (measured: ~1.5 µs
        less per call). SIGCHLD interrupts it when the program ends: reaped."""
        lst = child.listener
        recv, one = lst.recv_raw, self._one
        while True:
            raw = recv()
            if raw is not None:
                one(raw, lst)
            elif _hung_up(lst.fd):
                return
            elif not self.reaped:  # interrupted: did the program end?
                self.returncode = child.proc.poll()
                self.reaped = self.returncode is not None

    def _serve_polling(self, child: Child, deadline: float | None) -> None:
        """Older kernels, and runs outside the main thread (no signals there)."""
        lst = child.listener
        poller = select.poll()
        poller.register(lst.fd, select.POLLIN)
        if not self.reaped:
            poller.register(child.pidfd, select.POLLIN)
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic()) * 1000
            events = poller.poll(wait)
            if not events and deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError
            for fd, ev in events:
                if fd == child.pidfd:
                    self._reap(child)
                    poller.unregister(child.pidfd)
                elif ev & select.POLLIN:
                    raw = lst.recv_raw()
                    if raw is not None:
                        self._one(raw, lst)
                elif ev & (select.POLLHUP | select.POLLERR):  # no process has the filter
                    return

    def _one(self, raw: tuple[int, ...], lst: Listener) -> None:
        """One notification. The hot path (-c, after the exec: a selected call
        of the native arch) builds nothing; the rest goes through handle()."""
        self.inflight = raw[0]  # answered by _end if instr is stopped right here
        nr = raw[3]
        if raw[4] != self.native or nr not in self.fast or not self.started or self.stream:
            self.handle(Notification.of(raw), lst.let_through, lst.valid)
            self.inflight = None
            return
        tid = raw[1]
        if self.follow or (self.tgids.get(tid) or self._tgid(tid)) == self.root:
            if lst.let_through(raw[0]):
                self.counts[nr] = self.counts.get(nr, 0) + 1
                self.seen.add(tid)
            else:
                self.withdrawn += 1
        elif not lst.let_through(raw[0]):
            self.withdrawn += 1
        self.inflight = None

    def _reap(self, child: Child) -> None:
        if not self.reaped:
            self.returncode = child.proc.wait()
            self.reaped = True

    def _end(self, child: Child) -> None:
        """Stopped early: the program cannot live without its supervisor (its
        calls would fail with ENOSYS), so it is ended: SIGTERM, then SIGKILL."""
        if self.inflight is not None:
            child.listener.let_through(self.inflight)
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGTERM)
        for grace, sig in ((TERM_GRACE_S, None), (KILL_GRACE_S, signal.SIGKILL)):
            if sig is not None:
                for pid in {child.pid, *self.seen, *self.tgids.values()}:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, sig)
            with contextlib.suppress(TimeoutError):
                self._serve(child, time.monotonic() + grace)
                return
        self._reap(child)

    def result(self) -> StaticResult:
        counts = {self.names.get(nr, f"syscall_{nr}"): c for nr, c in self.counts.items()}
        counts.update(self.foreign)
        code = None
        if self.returncode is not None:
            code = 128 - self.returncode if self.returncode < 0 else self.returncode
        return StaticResult(counts, code, self.withdrawn)


def _hung_up(fd: int) -> bool:
    p = select.poll()
    p.register(fd, select.POLLIN)
    return any(ev & (select.POLLHUP | select.POLLERR) for _fd, ev in p.poll(0))


@contextlib.contextmanager
def _alarm(deadline: float | None) -> Iterator[None]:
    """TimeoutError at ``deadline`` (SIGALRM: it interrupts the blocking ioctl)."""
    if deadline is None:
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, max(deadline - time.monotonic(), 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _interrupting(sig: int) -> Iterator[None]:
    """A Python handler for ``sig`` that does nothing: the signal then interrupts
    a blocking call (EINTR) instead of being ignored."""
    previous = signal.signal(sig, lambda signum, frame: None)
    try:
        yield
    finally:
        signal.signal(sig, previous)


# -- output ------------------------------------------------------------------------


def format_summary(counts: dict[str, int]) -> str:
    """strace's ``-c`` table with what this mode cannot know shown as ``-``."""
    rule = "------ ----------- ----------- --------- --------- ----------------"
    lines = ["% time     seconds  usecs/call     calls    errors syscall", rule]
    for name, calls in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"{'-':>6} {'-':>11} {'-':>11} {calls:9d} {'-':>9} {name}")
    lines += [rule, f"{'-':>6} {'-':>11} {'-':>11} {sum(counts.values()):9d} {'-':>9} total"]
    return "\n".join(lines)


def run_static(
    target: tgt.TargetSpec, trace_spec: str | None, summary: bool, follow: bool, kw: dict[str, Any]
) -> int:
    """``instr syscalls --complete`` on a static program (cli.py's dispatch)."""
    assert target.argv is not None
    outputs = kw.get("outputs") or ()
    out = open(outputs[0], "w") if outputs and outputs[0] != "-" else sys.stdout  # noqa: SIM115

    def say(text: str) -> None:
        if not kw.get("quiet"):
            print(f"instr: {text}", file=sys.stderr, flush=True)

    run = StaticRun(
        target.argv,
        trace_spec,
        follow=follow,
        stream=not summary,
        on_line=lambda text: print(text, file=out, flush=False),
        say=say,
        env=dict(target.env) if target.env is not None else None,
        cwd=target.cwd,
    )
    try:
        result = run.run(timeout=kw.get("duration"))
        if summary:
            print(format_summary(result.counts), file=out)
    finally:
        out.flush()
        if out is not sys.stdout:
            out.close()
    if result.withdrawn:
        say(f"{result.withdrawn} call(s) vanished before instr let them through (killed)")
    return (result.exit_code or 0) & 0xFF
