#!/usr/bin/env python3
"""Generate ``instr/syscalls/table.py``: Linux syscalls for x86_64 and aarch64.

Sources (both must be given; nothing is guessed):

* strace's per-architecture tables, ``src/linux/x86_64/syscallent.h`` and
  ``src/linux/aarch64/syscallent.h`` (with the files they include), for the
  numbers, argument counts and strace's categories (TD=%desc, TF=%file,
  TN=%network, TP=%process, TS=%signal, TI=%ipc, TM=%memory, TC=%creds).
  Debian: ``apt-get source strace`` (strace 6.1 was used).
* the running kernel's syscall tracepoint formats,
  ``/sys/kernel/tracing/events/syscalls/sys_enter_*/format``, for argument
  names and C types (``mount -t tracefs nodev /sys/kernel/tracing`` first).

    python3 scripts/gen_syscalls.py STRACE_SRC_DIR [TRACEFS_DIR] > instr/syscalls/table.py

Argument *kinds* (how the host decodes a value) are derived here from the
names and types by the rules in ``kind_of``; they are data in the output.
"""

from __future__ import annotations

import platform
import re
import sys
from pathlib import Path

ENTRY = re.compile(
    r'^\[\s*(?:BASE_NR\s*\+\s*)?(\d+)\]\s*=\s*\{\s*(\d+),\s*([A-Za-z0-9_|]+),\s*SEN\((\w+)\),\s*"(\w+)"'
)
CATS = {"TD": "desc", "TF": "file", "TN": "network", "TP": "process", "TS": "signal",
        "TI": "ipc", "TM": "memory", "TC": "creds"}  # fmt: skip
FIELD = re.compile(r"field:(.+?)\s+(\w+);\s+offset:(\d+);")

PATH_NAMES = {"filename", "pathname", "path", "oldname", "newname", "oldpath", "newpath",
              "specialfile", "dev_name", "dir_name", "library", "old", "new", "uservaddr_path"}  # fmt: skip


def read_entries(path: Path, seen: set[Path] | None = None) -> list[tuple[int, int, str, str]]:
    """(nr, nargs, flags, name) from a syscallent.h and the files it includes."""
    seen = seen or set()
    out: list[tuple[int, int, str, str]] = []
    for line in path.read_text().splitlines():
        inc = re.match(r'#\s*include\s+"(.+)"', line)
        if inc:
            name = inc.group(1)
            cands = [path.parent / name, path.parent.parent / "generic" / name]
            target = next((c for c in cands if c.exists()), None)
            if target is None or target in seen:
                continue
            seen.add(target)
            out.extend(read_entries(target, seen))
            continue
        m = ENTRY.match(line.strip())
        if m:
            out.append((int(m.group(1)), int(m.group(2)), m.group(3), m.group(5)))
    return out


def read_formats(root: Path) -> dict[str, list[tuple[str, str]]]:
    """syscall name -> [(arg name, C type)] from the tracepoint formats."""
    out: dict[str, list[tuple[str, str]]] = {}
    for fmt in sorted(root.glob("sys_enter_*/format")):
        name = fmt.parent.name[len("sys_enter_") :]
        args = []
        for m in FIELD.finditer(fmt.read_text()):
            ctype, field, offset = m.group(1).strip(), m.group(2), int(m.group(3))
            if offset >= 16:  # after common_* and __syscall_nr
                args.append((field, ctype))
        out[name] = args
    return out


def kind_of(syscall: str, args: list[tuple[str, str]], i: int) -> str:
    """How the host decodes argument ``i`` (see instr/syscalls/decode.py)."""
    name, ctype = args[i]
    nxt = args[i + 1][0] if i + 1 < len(args) else ""
    if ctype in ("const char *", "char *") and (name in PATH_NAMES or name.endswith("name")):
        return "path"
    if "sockaddr" in ctype:
        # Filled in by the kernel: accept, getsockname, getpeername, recvfrom.
        out = syscall.startswith(("accept", "recvfrom", "getsockname", "getpeername"))
        return "sockaddr_out" if out else "sockaddr"
    if name in (
        "fd",
        "oldfd",
        "newfd",
        "fd_in",
        "fd_out",
        "out_fd",
        "in_fd",
        "epfd",
        "dfd",
        "olddfd",
        "newdfd",
        "dirfd",
    ):
        return "dirfd" if name in ("dfd", "olddfd", "newdfd", "dirfd") else "fd"
    if name == "flags" and syscall in ("open", "openat", "creat"):
        return "open_flags"
    # Data the call reads (write, send*) or fills in (read, recv*).
    sends = syscall.startswith(("write", "send", "pwrite"))
    if (
        name in ("buf", "ubuf", "buff")
        and nxt in ("count", "len", "size")
        and (ctype in ("const char *", "const void *") or sends)
    ):
        return "buf_in"
    if (
        name in ("buf", "ubuf")
        and ctype in ("char *", "void *")
        and nxt in ("count", "len", "size")
    ):
        return "buf_out"
    if name == "mode" and syscall in ("access", "faccessat", "faccessat2"):
        return "access_mode"
    if name == "mode" or ctype == "umode_t":
        return "mode"
    if name in ("sig", "signum") or (name == "sig" and "int" in ctype):
        return "signal"
    if name == "family" and syscall in ("socket", "socketpair"):
        return "family"
    if "*" in ctype:
        return "ptr"
    if ctype.startswith("unsigned") or ctype in ("size_t", "u32", "u64", "umode_t"):
        return "uint"
    return "int"


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    src = Path(argv[1]) / "src" / "linux"
    tracefs = Path(argv[2] if len(argv) > 2 else "/sys/kernel/tracing") / "events" / "syscalls"
    if not tracefs.is_dir():
        print(f"no tracepoint formats in {tracefs}: mount tracefs first", file=sys.stderr)
        return 1
    formats = read_formats(tracefs)
    arches = {"x86_64": src / "x86_64" / "syscallent.h", "arm64": src / "aarch64" / "syscallent.h"}
    numbers: dict[str, dict[str, int]] = {}
    info: dict[str, tuple[int, tuple[str, ...]]] = {}
    for arch, path in arches.items():
        numbers[arch] = {}
        for nr, nargs, flags, name in read_entries(path):
            if name.startswith(("sys_", "_")) or nr in numbers[arch].values():
                continue
            numbers[arch].setdefault(name, nr)
            cats = tuple(sorted({CATS[f] for f in flags.split("|") if f in CATS}))
            if name not in info:
                info[name] = (nargs, cats)
    print('"""Linux system calls for x86_64 and arm64: GENERATED, do not edit.')
    print()
    print("Generated by scripts/gen_syscalls.py from strace 6.1's")
    print("src/linux/{x86_64,aarch64}/syscallent.h (numbers, argument counts, categories)")
    print(f"and the tracepoint formats of Linux {platform.release()} (argument names and C types).")
    print('"""')
    print()
    print("# name: (categories, ((arg name, C type, kind), ...))")
    print("SIGNATURES: dict[str, tuple[tuple[str, ...], tuple[tuple[str, str, str], ...]]] = {")
    for name in sorted(info):
        nargs, cats = info[name]
        fargs = formats.get(name)
        if fargs is None or len(fargs) != nargs:
            fargs = [(f"arg{i}", "long") for i in range(nargs)]
        args = tuple((a, t, kind_of(name, fargs, i)) for i, (a, t) in enumerate(fargs))
        print(f"    {name!r}: ({cats!r}, {args!r}),")
    print("}")
    print()
    print("# arch -> name -> number")
    print("NUMBERS: dict[str, dict[str, int]] = {")
    for arch in sorted(numbers):
        print(f"    {arch!r}: {{")
        for name, nr in sorted(numbers[arch].items(), key=lambda kv: kv[1]):
            print(f"        {name!r}: {nr},")
        print("    },")
    print("}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
