"""Turning raw syscall arguments into strace-like text: flags, errno names,
sockaddrs, paths, buffers and file descriptors resolved to what they are."""

from __future__ import annotations

import contextlib
import errno as errno_mod
import os
import socket
import struct
from dataclasses import dataclass, field

from instr.syscalls.records import (
    MK_BUF_ARG,
    MK_BUF_RET,
    MK_CSTR,
    MK_SOCK_ARG,
    MK_SOCK_PTR,
    Record,
)
from instr.syscalls.table import SIGNATURES

AT_FDCWD = -100
O_FLAGS = [
    ("O_APPEND", 0o2000), ("O_ASYNC", 0o20000), ("O_CLOEXEC", 0o2000000), ("O_CREAT", 0o100),
    ("O_DIRECT", 0o40000), ("O_DIRECTORY", 0o200000), ("O_DSYNC", 0o10000), ("O_EXCL", 0o200),
    ("O_LARGEFILE", 0o100000), ("O_NOATIME", 0o1000000), ("O_NOCTTY", 0o400),
    ("O_NOFOLLOW", 0o400000), ("O_NONBLOCK", 0o4000), ("O_PATH", 0o10000000),
    ("O_SYNC", 0o4010000), ("O_TMPFILE", 0o20200000), ("O_TRUNC", 0o1000),
]  # fmt: skip
ACCESS = [("R_OK", 4), ("W_OK", 2), ("X_OK", 1)]
FAMILIES: dict[int, str] = {
    1: "AF_UNIX",
    2: "AF_INET",
    10: "AF_INET6",
    16: "AF_NETLINK",
    17: "AF_PACKET",
}


def memory_kinds(name: str) -> tuple[list[int], list[int]]:
    """What the agent copies for each argument of ``name`` (kind, length argument)."""
    _cats, args = SIGNATURES.get(name, ((), ()))
    kinds = [0] * 6
    lens = [0] * 6
    for i, (aname, _ctype, kind) in enumerate(args[:6]):
        nxt = i + 1 if i + 1 < len(args) else 0
        if kind == "path":
            kinds[i] = MK_CSTR
        elif kind == "buf_in":
            kinds[i], lens[i] = MK_BUF_ARG, nxt
        elif kind == "buf_out":
            kinds[i] = MK_BUF_RET
        elif kind == "sockaddr":
            kinds[i], lens[i] = MK_SOCK_ARG, nxt
        elif kind == "sockaddr_out":
            kinds[i], lens[i] = MK_SOCK_PTR, nxt
        del aname
    return kinds, lens


def errno_name(e: int) -> str:
    return errno_mod.errorcode.get(e, f"E{e}")


def open_flags(v: int) -> str:
    acc = {0: "O_RDONLY", 1: "O_WRONLY", 2: "O_RDWR"}.get(v & 3, str(v & 3))
    parts = [acc]
    rest = v & ~3
    for name, bit in sorted(O_FLAGS, key=lambda nb: nb[1]):  # strace's order
        if bit == 0o4010000:
            if rest & bit == bit:
                parts.append(name)
                rest &= ~bit
            continue
        if name == "O_TMPFILE":
            continue
        if rest & bit:
            parts.append(name)
            rest &= ~bit
    if rest:
        parts.append(hex(rest))
    return "|".join(parts)


def sockaddr(raw: bytes) -> str:
    if len(raw) < 2:
        return "{...}"
    (family,) = struct.unpack_from("<H", raw)
    fam = FAMILIES.get(family, str(family))
    if family == socket.AF_INET and len(raw) >= 8:
        port = struct.unpack_from(">H", raw, 2)[0]
        addr = socket.inet_ntop(socket.AF_INET, raw[4:8])
        return f'{{sa_family={fam}, sin_port=htons({port}), sin_addr=inet_addr("{addr}")}}'
    if family == socket.AF_INET6 and len(raw) >= 24:
        port = struct.unpack_from(">H", raw, 2)[0]
        addr = socket.inet_ntop(socket.AF_INET6, raw[8:24])
        return f'{{sa_family={fam}, sin6_port=htons({port}), sin6_addr="{addr}"}}'
    if family == socket.AF_UNIX:
        path = raw[2:].split(b"\0", 1)[0] if raw[2:3] != b"\0" else b"@" + raw[3:].rstrip(b"\0")
        return f"{{sa_family={fam}, sun_path={quote(path)}}}"
    return f"{{sa_family={fam}, ...}}"


def peer(raw: bytes) -> str:
    """A short form of a sockaddr for fd annotations: 127.0.0.1:8080, [::1]:80, /tmp/sock."""
    if len(raw) < 2:
        return "?"
    (family,) = struct.unpack_from("<H", raw)
    if family == socket.AF_INET and len(raw) >= 8:
        return f"{socket.inet_ntop(socket.AF_INET, raw[4:8])}:{struct.unpack_from('>H', raw, 2)[0]}"
    if family == socket.AF_INET6 and len(raw) >= 24:
        return f"[{socket.inet_ntop(socket.AF_INET6, raw[8:24])}]:{struct.unpack_from('>H', raw, 2)[0]}"
    if family == socket.AF_UNIX:
        return raw[2:].split(b"\0", 1)[0].decode(errors="replace") or "@"
    return "?"


def quote(b: bytes, limit: int = 32) -> str:
    out = []
    for ch in b[:limit]:
        c = chr(ch)
        if c == '"' or c == "\\":
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif 32 <= ch < 127:
            out.append(c)
        else:
            out.append(f"\\{ch:o}")
    return '"' + "".join(out) + '"' + ("..." if len(b) > limit else "")


@dataclass
class FdTable:
    """What each fd of one process is, learned from the calls seen (and /proc at attach)."""

    fds: dict[int, str] = field(default_factory=dict)
    socks: set[int] = field(default_factory=set)  # fds known to be sockets

    @classmethod
    def from_proc(cls, pid: int) -> FdTable:
        t = cls()
        try:
            for name in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    t.fds[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
                    if t.fds[int(name)].startswith("socket:"):
                        t.socks.add(int(name))
        except OSError:
            pass
        return t

    def name(self, fd: int) -> str:
        what = self.fds.get(fd)
        return f"{fd}<{what}>" if what else str(fd)

    def learn(self, name: str, rec: Record) -> None:
        a, r = rec.args, rec.ret
        if rec.errno != 0:
            return
        if name in ("open", "openat", "creat") and r >= 0:
            idx = 1 if name == "openat" else 0
            path = rec.mem.get(idx, b"").decode(errors="replace")
            self.fds[r] = path
        elif name == "socket" and r >= 0:
            self.fds[r] = "socket"
            self.socks.add(r)
        elif name in ("connect", "bind") and 1 in rec.mem:
            self.fds[_s32(a[0])] = peer(rec.mem[1])
            self.socks.add(_s32(a[0]))
        elif name in ("accept", "accept4") and r >= 0:
            self.fds[r] = peer(rec.mem[1]) if 1 in rec.mem else "socket"
            self.socks.add(r)
        elif name in ("dup", "dup2", "dup3", "fcntl") and r >= 0 and _s32(a[0]) in self.fds:
            if name != "fcntl" or a[1] in (0, 1030):  # F_DUPFD, F_DUPFD_CLOEXEC
                self.fds[r] = self.fds[_s32(a[0])]
                if _s32(a[0]) in self.socks:
                    self.socks.add(r)
        elif name == "close":
            self.fds.pop(_s32(a[0]), None)
            self.socks.discard(_s32(a[0]))


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def format_arg(name: str, i: int, kind: str, rec: Record, fds: FdTable) -> str:
    """Argument ``i`` of ``name`` as strace prints it."""
    v = rec.args[i]
    if i in rec.mem and kind == "path":
        return quote(rec.mem[i], 4096)
    if i in rec.mem and kind in ("buf_in", "buf_out"):
        return quote(rec.mem[i])
    if i in rec.mem and kind in ("sockaddr", "sockaddr_out"):
        return sockaddr(rec.mem[i])
    if kind == "fd":
        return fds.name(_s32(v))
    if kind == "dirfd":
        return "AT_FDCWD" if _s32(v) == AT_FDCWD else fds.name(_s32(v))
    if kind == "open_flags":
        return open_flags(v & 0xFFFFFFFF)
    if kind == "access_mode":
        m = v & 7
        return "F_OK" if m == 0 else "|".join(n for n, b in ACCESS if m & b)
    if kind == "mode":
        return f"0{v & 0o7777:o}"
    if kind == "family":
        return FAMILIES.get(v & 0xFFFF, str(v))
    if kind == "ptr" or kind in ("path", "buf_in", "buf_out", "sockaddr", "sockaddr_out"):
        return "NULL" if v == 0 else hex(v & 0xFFFFFFFFFFFFFFFF)
    if kind == "signal":
        return _signame(_s32(v))
    if kind == "int":
        return str(_s32(v)) if -(1 << 31) <= v < (1 << 31) or v >> 32 == 0 else str(v)
    return str(v & 0xFFFFFFFFFFFFFFFF)


def format_args(name: str, rec: Record, fds: FdTable) -> str:
    _cats, sig = SIGNATURES.get(name, ((), ()))
    out = []
    creates = True
    for i, (_aname, _ctype, kind) in enumerate(sig[:6]):
        if i >= rec.known:
            out.append("?")  # the wrapper was not given it (e.g. _Fork's clone)
            continue
        v = rec.args[i]
        if kind == "open_flags":
            creates = bool(v & (0o100 | 0o20000000))  # O_CREAT, O_TMPFILE
        if kind == "mode" and name in ("open", "openat") and not creates:
            continue  # strace shows the mode only when the call may create
        out.append(format_arg(name, i, kind, rec, fds))
    return ", ".join(out)


def _signame(n: int) -> str:
    import signal

    try:
        return signal.Signals(n).name
    except ValueError:
        return str(n)


def format_result(name: str, rec: Record, fds: FdTable) -> str:
    if rec.errno != 0:
        return f"-1 {errno_name(rec.errno)} ({os.strerror(rec.errno)})"
    if name in ("mmap", "brk", "mremap"):
        return hex(rec.ret & 0xFFFFFFFFFFFFFFFF)
    if name in ("open", "openat", "creat", "socket", "accept", "accept4", "dup", "dup2", "dup3"):
        return fds.name(rec.ret)
    return str(rec.ret)


def format_record(name: str, rec: Record, fds: FdTable, pid: int | None = None) -> str:
    """One line, as strace prints it (with ``-T`` durations)."""
    head = f"[pid {pid:>6}] " if pid is not None else ""
    args = format_args(name, rec, fds)
    fds.learn(name, rec)
    result = format_result(name, rec, fds)
    return f"{head}{name}({args}) = {result} <{rec.dur / 1e9:.6f}>"
