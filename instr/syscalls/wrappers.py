"""Which C library functions the default mode hooks, and as which syscall.

The agent reports, for each exported libc function it was asked about, the
syscall numbers its code issues directly (``agents/src/syscalls/syscalls_scan.ts: scan``).
This module keeps a function only when one of those numbers is the syscall
its name says it wraps (``open`` -> ``openat``, ``_Fork`` -> ``clone``,
``__read_nocancel`` -> ``read``), so that a mis-scanned function is never
counted as something it is not.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from instr.syscalls.table import NUMBERS, SIGNATURES

F_INDIRECT = 1
F_ENTER = 2  # does not return on success (execve, exit_group)
F_FORK = 4  # returns twice (clone family): the child's return is not a call
# F_SLOW = 8 is the agent's
F_PARTIAL = 16  # the syscall's arguments past the wrapper's are unknown (_Fork's clone)

# libc names whose syscall has another name (glibc, Linux).
ALIASES: dict[str, tuple[str, ...]] = {
    "open": ("openat",),
    "creat": ("creat", "openat"),
    "pipe": ("pipe2", "pipe"),
    "select": ("pselect6", "select"),
    "pselect": ("pselect6",),
    "recv": ("recvfrom",),
    "send": ("sendto",),
    "Fork": ("clone", "clone3"),
    "fork": ("clone", "clone3", "fork"),
    "vfork": ("vfork",),
    "clone": ("clone", "clone3"),
    "fstatat": ("newfstatat",),
    "fxstatat": ("newfstatat",),
    "xstat": ("stat",),
    "lxstat": ("lstat",),
    "fxstat": ("fstat",),
    "prlimit": ("prlimit64",),
    "getrlimit": ("prlimit64", "getrlimit"),
    "setrlimit": ("prlimit64", "setrlimit"),
    "exit": ("exit_group",),
    "Exit": ("exit_group",),
    "pread": ("pread64",),
    "pwrite": ("pwrite64",),
    "preadv64v2": ("preadv2",),
    "pwritev64v2": ("pwritev2",),
    "posix_fadvise": ("fadvise64",),
    "posix_fallocate": ("fallocate",),
    "tcgetattr": ("ioctl",),
    "tcsetattr": ("ioctl",),
    "tcdrain": ("ioctl",),
    "tcsetpgrp": ("ioctl",),
    "eventfd": ("eventfd2",),
    "signalfd": ("signalfd4",),
    "inotify_init": ("inotify_init1", "inotify_init"),
    "epoll_create": ("epoll_create1", "epoll_create"),
    "umount": ("umount2",),
    "faccessat": ("faccessat2", "faccessat"),
    "lll_lock_wait_private": ("futex",),
    "lll_lock_wake_private": ("futex",),
    "sigaction": ("rt_sigaction",),
    "libc_sigaction": ("rt_sigaction",),
}

# How a wrapper's arguments become its syscall's when they differ:
# (constant inserted first or None, how many wrapper arguments follow).
# A wrapper not listed here whose name is not its syscall's gets arity 0:
# its arguments are shown as 0, never misread as pointers.
ARGS: dict[str, tuple[int | None, int]] = {
    "open": (-100, 3),  # AT_FDCWD
    "pipe": (None, 1),
    "recv": (None, 4),
    "send": (None, 4),
    "select": (None, 5),
    "pselect": (None, 6),
    "getrlimit": (0, 2),
    "setrlimit": (0, 2),
    "prlimit": (None, 4),
    "fstatat": (None, 4),
    "faccessat": (None, 4),
    "exit": (None, 1),
    "Exit": (None, 1),
    "pread": (None, 4),
    "pwrite": (None, 4),
    "eventfd": (None, 2),
    "signalfd": (None, 3),
    "sigaction": (None, 3),
    "libc_sigaction": (None, 3),
    "posix_fadvise": (None, 4),
}

# Never hooked: vDSO-backed (they rarely enter the kernel and strace does not
# see them), and what the monitor itself calls.
EXCLUDE = frozenset(
    {
        "gettid",
        "clock_gettime",
        "gettimeofday",
        "time",
        "clock_getres",
        "getcpu",
        "sched_getcpu",
        "xstat",
        "lxstat",
        "fxstat",
        "fxstatat",
    }  # legacy: a version argument first
)


def base_name(export: str) -> str:
    """``__libc_pread64_nocancel`` -> ``pread64``; ``__open64`` -> ``open64``."""
    n = export.lstrip("_")
    if n.startswith("libc_") and n != "libc_sigaction":
        n = n[len("libc_") :]
    if n.endswith("_nocancel"):
        n = n[: -len("_nocancel")]
    return n


def candidates(export: str) -> tuple[str, ...]:
    """The syscalls an exported function's name says it may issue, best first."""
    b = base_name(export)
    if b in EXCLUDE or export in EXCLUDE:
        return ()
    short = b[:-2] if b.endswith("64") else b
    out: list[str] = [b, short, "rt_" + b, "rt_" + short, b + "64", short + "64", "new" + short]
    for key in (b, short, export.lstrip("_")):
        out = list(ALIASES.get(key, ())) + out
    seen: list[str] = []
    for name in out:
        if name not in seen:
            seen.append(name)
    return tuple(seen)


def scan_names(arch: str) -> list[str]:
    """Export names worth scanning: every spelling of every syscall, and the aliases."""
    out: set[str] = {"syscall"}
    for name in list(NUMBERS[arch]) + list(ALIASES):
        for n in (name, name + "64"):
            out.update({n, "__" + n, "__libc_" + n, "__" + n + "_nocancel", "_" + n})
    return sorted(out)


@dataclass(frozen=True)
class Site:
    address: str
    name: str  # the libc function
    syscall: str  # what it is counted as ("" for the indirect syscall(2))
    nr: int
    flags: int
    listener: bool = False
    pre: int | None = None
    arity: int = 6

    def to_plan(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "nr": self.nr,
            "flags": self.flags,
            "listener": self.listener,
            "pre": self.pre,
            "arity": self.arity,
        }


def arguments(export: str, syscall: str) -> tuple[int | None, int, bool]:
    """``(pre, arity, known)`` for a wrapper counted as ``syscall``. ``known``:
    the mapping is known, so the syscall's arguments past ``arity`` are 0;
    otherwise they are not the wrapper's to give (``_Fork`` for ``clone``)."""
    b = base_name(export)
    short = b[:-2] if b.endswith("64") else b
    for key in (b, short):
        if key in ARGS and not (key == "open" and syscall != "openat"):
            return (*ARGS[key], True)
    if syscall in (b, short, "rt_" + b, "rt_" + short, b + "64", short + "64"):
        return None, len(SIGNATURES.get(syscall, ((), ()))[1]), True
    return None, 0, False


def choose(functions: Iterable[dict[str, Any]], arch: str) -> list[Site]:
    """Sites to hook from the agent's scan (``[{name, address, nrs}]``)."""
    by_nr = {nr: name for name, nr in NUMBERS[arch].items()}
    sites: dict[str, Site] = {}
    for f in sorted(functions, key=lambda f: (len(f["name"]), f["name"])):
        address, export = str(f["address"]), str(f["name"])
        if address in sites:
            continue  # an alias of a function already chosen
        if export == "syscall":
            sites[address] = Site(address, export, "", -1, F_INDIRECT, arity=6)
            continue
        names = candidates(export)
        found = [n for n in f["nrs"] if n >= 0 and by_nr.get(n) in names]
        if not found:
            continue
        # The syscall the name prefers, among those the code issues.
        nr = min(found, key=lambda n: names.index(by_nr[n]))
        syscall = by_nr[nr]
        flags = 0
        if syscall in ("execve", "execveat", "exit_group", "exit"):
            flags |= F_ENTER
        if syscall in ("clone", "clone3", "fork", "vfork"):
            flags |= F_FORK
        pre, arity, known = arguments(export, syscall)
        if not known and SIGNATURES.get(syscall, ((), ()))[1]:
            flags |= F_PARTIAL  # the rest are not zeros
        sites[address] = Site(
            address, export, syscall, nr, flags, listener=syscall == "vfork", pre=pre, arity=arity
        )
    return list(sites.values())
