"""Device and target control: pick a Frida device, spawn or attach, resolve names.

Every Frida failure a user can cause is turned into a short ``TargetError`` or
``DeviceError`` that says what is wrong; nothing here prints.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import frida

from instr.errors import DeviceError, TargetError, UsageError

DeviceKind = Literal["local", "usb", "remote", "id", "host"]


@dataclass(frozen=True)
class DeviceSpec:
    """Which Frida device: frida-tools' ``-D ID``, ``-U``, ``-R``, ``-H HOST[:PORT]``."""

    kind: DeviceKind = "local"
    value: str | None = None  # the id for "id", host[:port] for "host"

    def __str__(self) -> str:
        return self.kind if self.value is None else f"{self.kind}:{self.value}"


@dataclass(frozen=True)
class TargetSpec:
    """What to instrument: spawn ``argv``, or attach to ``pid`` or ``name``."""

    argv: tuple[str, ...] | None = None
    pid: int | None = None
    name: str | None = None
    stdio: Literal["inherit", "pipe"] = "inherit"
    env: tuple[tuple[str, str], ...] | None = None
    cwd: str | None = None

    def __post_init__(self) -> None:
        given = sum(x is not None for x in (self.argv, self.pid, self.name))
        if given != 1:
            raise UsageError(
                "give exactly one target: a program to spawn (-f PROGRAM or -- PROGRAM ARGS), "
                "-p PID or -n NAME"
            )
        if self.argv is not None and not self.argv:
            raise UsageError("the program to spawn is empty")

    @property
    def spawns(self) -> bool:
        return self.argv is not None


DEVICE_TIMEOUT_S = 5


def open_device(spec: DeviceSpec) -> Any:
    """The Frida device for ``spec``; ``DeviceError`` if it cannot be found or reached."""
    mgr = frida.get_device_manager()
    try:
        device = _lookup(mgr, spec)
        if spec.kind != "local":
            # Fail here, not halfway through a spawn. A portal (frida-portal,
            # PortalService) answers "not supported": it answered, so it is there.
            with contextlib.suppress(frida.NotSupportedError):
                device.query_system_parameters()
        return device
    except (frida.InvalidArgumentError, frida.TimedOutError) as e:
        known = ", ".join(f"{d.id} ({d.type})" for d in mgr.enumerate_devices())
        raise DeviceError(
            f"device not found: {spec.value or spec.kind} ({e})",
            hint=f"devices available: {known}" if known else None,
        ) from e
    except (frida.ServerNotRunningError, frida.TransportError) as e:
        raise DeviceError(
            f"cannot reach frida-server on {spec.value or spec.kind}: {e}",
            hint="start frida-server on the device, or check host and port",
        ) from e


def _lookup(mgr: Any, spec: DeviceSpec) -> Any:
    if spec.kind == "local":
        return frida.get_local_device()
    if spec.kind == "usb":
        return mgr.get_usb_device(DEVICE_TIMEOUT_S)
    if spec.kind == "remote":
        return mgr.get_remote_device()
    assert spec.value is not None
    if spec.kind == "host":
        return mgr.add_remote_device(spec.value)
    return mgr.get_device(spec.value, timeout=DEVICE_TIMEOUT_S)


def check_program(argv0: str) -> str:
    """The path of a local program to spawn, or ``TargetError`` when it cannot run."""
    path = argv0 if os.sep in argv0 else shutil.which(argv0)
    if path is None:
        raise TargetError(f"program not found: {argv0}", hint="give a path, or a name on $PATH")
    if not os.path.exists(path):
        raise TargetError(f"program not found: {path}")
    if os.path.isdir(path):
        raise TargetError(f"cannot run {path}: it is a directory")
    if not os.access(path, os.X_OK) or not os.stat(path).st_mode & 0o111:
        raise TargetError(f"cannot run {path}: not executable", hint=f"chmod +x {path}")
    return path


def spawn(device: Any, spec: TargetSpec) -> int:
    """Spawn ``spec.argv`` suspended; return its pid."""
    assert spec.argv is not None
    argv = list(spec.argv)
    if device.type == "local":
        argv[0] = check_program(argv[0])
    kwargs: dict[str, Any] = {"stdio": spec.stdio}
    if spec.env is not None:
        kwargs["env"] = dict(spec.env)
    if spec.cwd is not None:
        kwargs["cwd"] = spec.cwd
    try:
        pid: int = device.spawn(argv, **kwargs)
    except frida.ExecutableNotFoundError as e:
        raise TargetError(f"program not found: {spec.argv[0]} ({e})") from e
    except frida.ExecutableNotSupportedError as e:
        raise TargetError(f"cannot run {spec.argv[0]}: {e}") from e
    except frida.PermissionDeniedError as e:
        raise TargetError(f"permission denied spawning {spec.argv[0]}: {e}") from e
    except frida.NotSupportedError as e:
        raise TargetError(f"cannot spawn {spec.argv[0]}: {e}") from e
    return pid


def resolve_name(device: Any, name: str) -> int:
    """The pid of the one process called ``name``; ``TargetError`` on none or several."""
    procs = device.enumerate_processes()
    matches = [p for p in procs if p.name == name]
    if not matches:
        close = difflib.get_close_matches(name, sorted({p.name for p in procs}), n=3)
        raise TargetError(
            f"no process named {name!r}",
            hint=f"did you mean {', '.join(repr(c) for c in close)}?" if close else None,
        )
    if len(matches) > 1:
        listing = ", ".join(str(p.pid) for p in sorted(matches, key=lambda p: p.pid))
        raise TargetError(
            f"{len(matches)} processes are named {name!r} (pids {listing})",
            hint="pick one with -p PID",
        )
    pid: int = matches[0].pid
    return pid


def attach(device: Any, pid: int) -> Any:
    """A Frida session on ``pid``."""
    if pid <= 0:
        raise TargetError(f"invalid pid {pid}")
    try:
        return device.attach(pid)
    except frida.ProcessNotFoundError as e:
        raise TargetError(f"no process with pid {pid}", hint="is it still running?") from e
    except frida.PermissionDeniedError as e:
        raise TargetError(
            f"permission denied attaching to pid {pid}: {e}",
            hint="run as root or as the process's owner, and check kernel.yama.ptrace_scope",
        ) from e
    except frida.ProcessNotRespondingError as e:
        raise TargetError(f"pid {pid} is not responding: {e}") from e
    except frida.TransportError as e:
        raise TargetError(f"lost the connection while attaching to pid {pid}: {e}") from e
    except frida.NotSupportedError as e:
        raise TargetError(f"cannot attach to pid {pid}: {e}") from e


def refuse_static(path: str, argv: str | None, what: str | None = None) -> None:
    """Refuse a statically linked program: Frida cannot inject into it (its
    loader dies with SIGSEGV and prints a register dump). ``instr syscalls
    --complete`` is the one thing instr can do with it."""
    from instr.syscalls.static import elf_static  # it imports this module

    if not elf_static(path):
        return
    hint = "instr syscalls --complete lists the system calls of a static program it starts"
    if argv is not None:
        hint = f"to list its system calls: instr syscalls --complete -- {argv}"
    raise TargetError(
        f"{what or path} is statically linked: Frida cannot inject into it, so instr "
        "cannot hook its functions or follow its memory",
        hint=hint,
    )


PF_KTHREAD = 0x00200000  # include/linux/sched.h


def proc_stat(pid: int) -> list[str] | None:
    """The fields of local process ``pid``'s /proc/PID/stat after its command
    name (state, ppid, pgrp, ...: ``proc_pid_stat(5)``'s field 3 on, so field N
    is index N - 3); None when it cannot be read (gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return stat.rpartition(")")[2].split()


def check_local_pid(pid: int) -> None:
    """Refuse, before anything is opened, a pid of this machine that is gone
    or is a kernel thread (which has no user-space code: Frida's attempt ends
    in a confusing "failed to open /proc/PID/auxv")."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise TargetError(f"no process with pid {pid}", hint="is it still running?") from None
    except OSError:
        return  # Frida will say what is wrong
    name = stat[stat.find("(") + 1 : stat.rfind(")")]
    fields = stat[stat.rfind(")") + 2 :].split()  # state, ppid, pgrp, session, tty, tpgid, flags
    if len(fields) > 6 and fields[6].isdigit() and int(fields[6]) & PF_KTHREAD:
        raise TargetError(
            f"pid {pid} ({name}) is a kernel thread: it runs no user-space code, "
            "so instr cannot instrument it",
            hint="give the pid of a user-space process",
        )


def kill(device: Any, pid: int) -> None:
    """Kill a process we spawned; a process already gone is fine."""
    try:
        device.kill(pid)
    except (frida.ProcessNotFoundError, frida.InvalidOperationError, frida.TransportError):
        pass
    except frida.NotSupportedError as e:
        # The process ended while Frida was looking it up (it reads /proc/PID/auxv).
        if "No such process" not in str(e):
            raise


def open_target(device_spec: DeviceSpec, target: TargetSpec) -> tuple[Any, int]:
    """The device, and the pid of the target: spawned (suspended), given, or found by name."""
    device = open_device(device_spec)
    if target.argv is not None:
        if device.type == "local":
            refuse_static(check_program(target.argv[0]), shlex.join(target.argv))
        return device, spawn(device, target)
    if target.pid is not None:
        if device.type == "local":
            check_local_pid(target.pid)
            with contextlib.suppress(OSError):  # unreadable: Frida will say what is wrong
                exe = os.readlink(f"/proc/{target.pid}/exe")
                refuse_static(f"/proc/{target.pid}/exe", None, f"pid {target.pid} ({exe})")
        return device, target.pid
    assert target.name is not None
    return device, resolve_name(device, target.name)


# PIDFD_GET_INFO (Linux >= 6.15): _IOWR(0xFF, 11, struct pidfd_info), 64 bytes
# in its first version; PIDFD_INFO_EXIT asks for the wait status, which the
# kernel keeps once the process has been reaped. struct pidfd_info: mask
# (u64), cgroupid (u64), eleven u32 ids, then exit_code (s32) at offset 60.
_PIDFD_GET_INFO = 0xC040FF0B
_PIDFD_INFO_EXIT = 1 << 3


def exit_status(pidfd: int, wait_s: float = 0.0) -> int | None:
    """The wait status (as waitpid(2) gives it) of the process behind
    ``pidfd``, once it has ended and been reaped by whoever reaps it (Frida,
    for a program it spawned), waiting up to ``wait_s`` for that; None if it
    has not, or where the kernel cannot say (before Linux 6.15)."""
    import fcntl
    import struct
    import time

    deadline = time.monotonic() + wait_s
    while True:
        buf = bytearray(64)
        struct.pack_into("<Q", buf, 0, _PIDFD_INFO_EXIT)
        try:
            fcntl.ioctl(pidfd, _PIDFD_GET_INFO, buf)
        except OSError:
            return None
        if struct.unpack_from("<Q", buf, 0)[0] & _PIDFD_INFO_EXIT:
            return int(struct.unpack_from("<i", buf, 60)[0])
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.01)


def open_pidfd(device_spec: DeviceSpec, target: TargetSpec, pid: int) -> int | None:
    """A pidfd on a program instr spawned on this machine (see exit_status), else None."""
    if not target.spawns or device_spec.kind != "local":
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None
