"""Seeing every system call of a program without injecting anything: seccomp
user notification (Linux >= 5.5; ``SECCOMP_USER_NOTIF_FLAG_CONTINUE``).

The child installs a BPF filter that answers ``SECCOMP_RET_USER_NOTIF`` for
the chosen system calls, then execs the program. Each such call stops in the
kernel until the supervisor (this process) has received it on the filter's
listener fd and let it continue. Children forked by the program inherit the
filter, exec'ed images keep it. The supervisor sees the number and arguments
at entry; it never sees results (the call runs after it answered).

    arch = native_arch()
    child = spawn(["./prog"], build_filter(arch, None, set()), arch)
    with child.listener as lst:
        n = lst.recv()                    # Notification(id, pid, nr, arch, ...)
        lst.let_through(n.id)             # False: withdrawn (a signal came first)

Only ctypes and the standard library: no compiler is needed at run time.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import platform
import select
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from instr.errors import TargetError
from instr.syscalls.seccomp_child import SYS_SECCOMP

# <linux/seccomp.h>, <linux/filter.h>, <linux/audit.h>
SECCOMP_GET_NOTIF_SIZES = 3
RET_ALLOW = 0x7FFF0000
RET_USER_NOTIF = 0x7FC00000
USER_NOTIF_FLAG_CONTINUE = 1
IOCTL_RECV = 0xC0502100  # _IOWR('!', 0, struct seccomp_notif)
IOCTL_SEND = 0xC0182101  # _IOWR('!', 1, struct seccomp_notif_resp)
IOCTL_ID_VALID = 0x40082102  # _IOW('!', 2, __u64)
IOCTL_SET_FLAGS = 0x40082104  # _IOW('!', 4, __u64), Linux 6.6
FD_SYNC_WAKE_UP = 1  # wake the supervisor on the target's CPU (Linux 6.6)

# struct seccomp_notif {u64 id; u32 pid; u32 flags; seccomp_data {i32 nr; u32 arch; u64 ip; u64 args[6]}}
NOTIF = struct.Struct("<QIIiIQ6Q")
RESP = struct.Struct("<QqiI")  # struct seccomp_notif_resp {u64 id; s64 val; s32 error; u32 flags}
_ID = struct.Struct("<Q")
SIZES = struct.Struct("<HHH")  # struct seccomp_notif_sizes {u16 notif, resp, data}
DATA_SIZE = 64

# BPF opcodes
BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_JSET_K = 0x45
BPF_RET_K = 0x06
OFF_NR, OFF_ARCH = 0, 4

AUDIT_ARCH = {"x86_64": 0xC000003E, "arm64": 0xC00000B7}
FOREIGN_ARCH = {0x40000003: "i386", 0x40000028: "arm"}
X32_BIT = 0x40000000  # x86_64's x32 ABI: the native arch with this bit in nr
SYS_PIDFD_GETFD = 438  # the same on every architecture (unified numbers)
LISTENER_LINK = "anon_inode:seccomp notify"
LISTENER_WAIT_S = 10.0
CHILD_SCRIPT = str(Path(__file__).with_name("seccomp_child.py"))


def native_arch() -> str:
    """The signature table's name for this machine (``x86_64``, ``arm64``)."""
    m = platform.machine()
    arch = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(m)
    if arch is None:
        raise TargetError(f"no seccomp support in instr for {m}")
    return arch


# -- the filter -----------------------------------------------------------------


def build_filter(arch: str, notify: set[int] | None, always: set[int]) -> list[tuple[int, ...]]:
    """The BPF program: ``SECCOMP_RET_USER_NOTIF`` for the syscall numbers in
    ``notify`` and ``always`` of the native ``arch``, ``SECCOMP_RET_ALLOW`` for
    the rest. ``notify=None`` notifies every call, of any architecture (the
    supervisor names foreign ones). Instructions are (code, jt, jf, k)."""
    if notify is None:
        return [(BPF_RET_K, 0, 0, RET_USER_NOTIF)]
    prog: list[tuple[int, ...]] = [
        (BPF_LD_W_ABS, 0, 0, OFF_ARCH),
        (BPF_JEQ_K, 1, 0, AUDIT_ARCH[arch]),
        (BPF_RET_K, 0, 0, RET_ALLOW),  # another arch's numbers mean other calls
        (BPF_LD_W_ABS, 0, 0, OFF_NR),
    ]
    if arch == "x86_64":
        prog += [(BPF_JSET_K, 0, 1, X32_BIT), (BPF_RET_K, 0, 0, RET_ALLOW)]
    # One compare and one return per number: no jump is ever longer than one
    # instruction (BPF's conditional jumps reach 255 at most).
    for nr in sorted(notify | always):
        prog += [(BPF_JEQ_K, 0, 1, nr), (BPF_RET_K, 0, 0, RET_USER_NOTIF)]
    prog.append((BPF_RET_K, 0, 0, RET_ALLOW))
    if len(prog) > 4096:
        raise ValueError(f"filter too long ({len(prog)} instructions)")
    return prog


def pack_filter(prog: Sequence[tuple[int, ...]]) -> bytes:
    """``struct sock_filter[]``: u16 code, u8 jt, u8 jf, u32 k."""
    return b"".join(struct.pack("<HBBI", *insn) for insn in prog)


def syscall_name(nr: int, arch_id: int, arch: str, names: dict[int, str]) -> str:
    """What to call a notified call: the table's name, or ``syscall_N(ABI)``."""
    if arch_id != AUDIT_ARCH[arch]:
        return f"syscall_{nr}({FOREIGN_ARCH.get(arch_id, hex(arch_id))})"
    if arch == "x86_64" and nr & X32_BIT:
        return f"syscall_{nr & ~X32_BIT}(x32)"
    return names.get(nr, f"syscall_{nr}")


# -- the kernel interface -------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _sys(nr: int, *args: int | ctypes.c_void_p) -> int:
    cargs = [a if isinstance(a, ctypes.c_void_p) else ctypes.c_long(a) for a in args]
    r = int(_libc.syscall(ctypes.c_long(nr), *cargs))
    if r == -1:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


def check_kernel(arch: str) -> None:
    """TargetError unless the kernel has user notification with the struct
    sizes this module reads and writes (SECCOMP_GET_NOTIF_SIZES)."""
    buf = ctypes.create_string_buffer(SIZES.size)
    addr = ctypes.c_void_p(ctypes.addressof(buf))
    try:
        _sys(SYS_SECCOMP[arch], SECCOMP_GET_NOTIF_SIZES, 0, addr)
    except OSError as e:
        raise TargetError(
            f"this kernel has no seccomp user notification ({e.strerror})",
            hint="instr needs Linux >= 5.6 for static programs",
        ) from e
    sizes = SIZES.unpack(buf.raw)
    if sizes != (NOTIF.size, RESP.size, DATA_SIZE):
        raise TargetError(f"unexpected seccomp notification sizes {sizes} from this kernel")


class Notification(NamedTuple):
    id: int
    pid: int  # the calling thread's id, in our pid namespace
    nr: int
    arch: int  # AUDIT_ARCH_*
    ip: int
    args: tuple[int, ...]

    @classmethod
    def of(cls, raw: tuple[int, ...]) -> Notification:
        """From ``Listener.recv_raw``'s tuple."""
        return cls(raw[0], raw[1], raw[3], raw[4], raw[5], raw[6:12])


class Listener:
    """The filter's notification fd (ours, copied from the child)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buf = bytearray(NOTIF.size)
        self._zero = bytes(NOTIF.size)
        self._resp = bytearray(RESP.size)
        RESP.pack_into(self._resp, 0, 0, 0, 0, USER_NOTIF_FLAG_CONTINUE)
        self.sync_wakeup = False
        try:  # the target and instr then hand the CPU to each other (measured: faster)
            fcntl.ioctl(fd, IOCTL_SET_FLAGS, FD_SYNC_WAKE_UP)  # by value
            self.sync_wakeup = True
        except OSError:
            pass

    def recv_raw(self) -> tuple[int, ...] | None:
        """The next notification (blocks) as a tuple: id, pid, flags, nr, arch,
        ip, args[6] (the hot path builds no object); None when it vanished first."""
        buf = self._buf
        buf[:] = self._zero  # the kernel requires a zeroed struct
        try:
            fcntl.ioctl(self.fd, IOCTL_RECV, buf, True)
        except OSError as e:
            # ENOENT: the caller was interrupted or killed, or (Linux >= 6.6) no
            # process holds the filter any more; EINTR: a signal instr handles
            if e.errno in (errno.ENOENT, errno.EINTR):
                return None
            raise
        return NOTIF.unpack(buf)

    def recv(self) -> Notification | None:
        raw = self.recv_raw()
        return None if raw is None else Notification.of(raw)

    def valid(self, nid: int) -> bool:
        """Is the call still waiting? (after reading its memory: the pid could
        otherwise have died and been reused)."""
        try:
            fcntl.ioctl(self.fd, IOCTL_ID_VALID, struct.pack("<Q", nid))
        except OSError as e:
            if e.errno == errno.ENOENT:
                return False
            raise
        return True

    def let_through(self, nid: int) -> bool:
        """Continue the call as if nothing had stopped it. False when it was
        withdrawn first (a signal: it is notified again if it restarts)."""
        resp = self._resp
        _ID.pack_into(resp, 0, nid)
        try:
            fcntl.ioctl(self.fd, IOCTL_SEND, resp, False)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return False
            raise
        return True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_memory(pid: int, addr: int, size: int, cstring: bool = False) -> bytes | None:
    """Up to ``size`` bytes of ``pid``'s memory at ``addr`` (to the first NUL with
    ``cstring``), read page by page; None when nothing is readable."""
    if addr == 0 or size <= 0:
        return None
    try:
        fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    out = b""
    try:
        while len(out) < size:
            chunk = min(size - len(out), 4096 - ((addr + len(out)) & 4095))
            try:
                got = os.pread(fd, chunk, addr + len(out))
            except OSError:
                break
            if not got:
                break
            if cstring and b"\0" in got:
                return out + got[: got.index(b"\0")]
            out += got
    finally:
        os.close(fd)
    return out if out or not cstring else None


# -- starting the program under the filter ------------------------------------------------


@dataclass
class Child:
    proc: subprocess.Popen[bytes]
    pidfd: int
    listener: Listener
    report: int  # the child writes "STEP:ERRNO" here if its execve fails

    @property
    def pid(self) -> int:
        return self.proc.pid

    def failure(self) -> str | None:
        """Why the child's execve failed, or None (read after the child ended)."""
        try:
            msg = os.read(self.report, 200).decode()
        except OSError:
            return None
        step, _, code = msg.partition(":")
        return f"{step}: {os.strerror(int(code))}" if code.isdigit() else None

    def close(self) -> None:
        self.listener.close()
        for fd in (self.pidfd, self.report):
            with contextlib.suppress(OSError):
                os.close(fd)


def spawn(
    argv: Sequence[str],
    prog: Sequence[tuple[int, ...]],
    arch: str,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> Child:
    """Start ``argv`` under the filter; return once the listener fd is ours
    (the child is then waiting in its execve). The child is a fresh Python
    running ``seccomp_child.py``: forking instr itself would copy Frida's
    threads' state into it."""
    check_kernel(arch)
    r, w = os.pipe2(os.O_CLOEXEC)
    cmd = [sys.executable, "-I", "-S", CHILD_SCRIPT, arch, str(w), pack_filter(prog).hex()]
    try:
        proc = subprocess.Popen([*cmd, argv[0], *argv], pass_fds=(w,), env=env, cwd=cwd)
    except OSError:
        os.close(r)
        raise
    finally:
        os.close(w)
    try:
        pidfd = os.pidfd_open(proc.pid)
        listener = _take_listener(proc.pid, pidfd, r)
    except BaseException:
        os.close(r)
        proc.kill()
        proc.wait()
        raise
    os.set_blocking(r, False)
    return Child(proc, pidfd, listener, r)


def _take_listener(pid: int, pidfd: int, report: int) -> Listener:
    """Copy the child's listener fd (pidfd_getfd) as soon as it appears in
    /proc/PID/fd; the child's own copy closes at exec (O_CLOEXEC)."""
    deadline = time.monotonic() + LISTENER_WAIT_S
    delay = 0.0002
    while True:
        ready, _, _ = select.select([report], [], [], delay)
        if ready:  # the child failed before its execve could block
            msg = os.read(report, 200).decode()
            step, _, code = msg.partition(":")
            if not msg:
                raise TargetError("the child exited before installing the seccomp filter")
            e = int(code)
            raise TargetError(
                f"cannot run {step} for the seccomp filter: {os.strerror(e)}",
                hint="Linux >= 5.5 with seccomp user notification is needed"
                if step.startswith("seccomp")
                else None,
            )
        fd = _find_listener(pid)
        if fd is not None:
            try:
                return Listener(_sys(SYS_PIDFD_GETFD, pidfd, fd, 0))
            except OSError as e:
                raise TargetError(
                    f"cannot take the seccomp listener from pid {pid}: {e.strerror}",
                    hint="pidfd_getfd needs ptrace permission over the child (Linux >= 5.6)",
                ) from e
        if time.monotonic() > deadline:
            raise TargetError(f"pid {pid} never installed its seccomp filter")
        delay = min(delay * 2, 0.01)


def _find_listener(pid: int) -> int | None:
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    for name in names:
        try:
            if os.readlink(f"/proc/{pid}/fd/{name}") == LISTENER_LINK:
                return int(name)
        except OSError:
            continue
    return None
