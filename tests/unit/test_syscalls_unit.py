"""Pure parts of instr.syscalls: selection, wrapper choice, decoding, records,
the -c table and the strace window parser used by the integration tests."""

from __future__ import annotations

import struct

import pytest
from strace_window import window_counts

from instr.errors import UsageError
from instr.syscalls import category, select
from instr.syscalls.decode import FdTable, errno_name, format_record, open_flags, sockaddr
from instr.syscalls.records import HEAD, MEM, Record, parse
from instr.syscalls.result import Count
from instr.syscalls.summary import format_summary
from instr.syscalls.table import NUMBERS, SIGNATURES
from instr.syscalls.wrappers import F_ENTER, F_FORK, F_INDIRECT, candidates, choose

X86 = NUMBERS["x86_64"]


def test_table_numbers_and_kinds() -> None:
    assert X86["read"] == 0 and X86["openat"] == 257 and X86["exit_group"] == 231
    assert NUMBERS["arm64"]["openat"] == 56 and NUMBERS["arm64"]["read"] == 63
    assert "open" not in NUMBERS["arm64"]  # aarch64 has only openat
    cats, args = SIGNATURES["openat"]
    assert cats == ("desc", "file")
    assert [k for _n, _t, k in args] == ["dirfd", "path", "open_flags", "mode"]
    assert SIGNATURES["connect"][1][1][2] == "sockaddr"
    assert SIGNATURES["accept4"][1][1][2] == "sockaddr_out"
    assert SIGNATURES["sendto"][1][1][2] == "buf_in"
    assert SIGNATURES["read"][1][1][2] == "buf_out"


def test_select_names_categories_and_negation() -> None:
    assert select("trace=read,write") == {"read", "write"}
    net = select("%network")
    assert {"socket", "connect", "accept4", "sendto"} <= net and "read" not in net
    assert category("%file") >= {"openat", "unlink", "execve"}
    assert "read" not in select("!read")
    assert select(None) == set(X86)


def test_select_errors() -> None:
    with pytest.raises(UsageError, match="unknown system call 'opne'") as e:
        select("trace=opne")
    assert "open" in str(e.value.hint)
    with pytest.raises(UsageError, match="unknown syscall category %files"):
        select("%files")


def test_candidates() -> None:
    assert candidates("open64")[0] == "openat"
    assert candidates("__libc_pread64")[:1] == ("pread64",)
    assert candidates("_exit")[0] == "exit_group"
    assert candidates("gettid") == ()  # the monitor's own clock/tid: never hooked
    assert candidates("__xstat") == ()  # legacy, versioned arguments


def test_choose_keeps_only_what_the_name_says() -> None:
    scan = [
        {"name": "open", "address": "0x10", "nrs": [257]},
        {"name": "open64", "address": "0x10", "nrs": [257]},  # an alias: one site
        {"name": "isatty", "address": "0x20", "nrs": [86]},  # mis-scanned: dropped
        {"name": "_Fork", "address": "0x30", "nrs": [56, 273]},
        {"name": "_exit", "address": "0x40", "nrs": [60, 231]},
        {"name": "syscall", "address": "0x50", "nrs": [-1]},
        {"name": "send", "address": "0x60", "nrs": [44]},
    ]
    sites = {s.address: s for s in choose(scan, "x86_64")}
    assert set(sites) == {"0x10", "0x30", "0x40", "0x50", "0x60"}
    assert (sites["0x10"].syscall, sites["0x10"].pre, sites["0x10"].arity) == ("openat", -100, 3)
    assert sites["0x30"].syscall == "clone" and sites["0x30"].flags & F_FORK
    assert sites["0x40"].syscall == "exit_group" and sites["0x40"].flags & F_ENTER
    assert sites["0x50"].flags == F_INDIRECT and sites["0x50"].arity == 6
    assert (sites["0x60"].syscall, sites["0x60"].arity) == ("sendto", 4)


def test_decoders() -> None:
    assert open_flags(0o2000000 | 0o100 | 1) == "O_WRONLY|O_CREAT|O_CLOEXEC"
    assert open_flags(0) == "O_RDONLY"
    assert errno_name(2) == "ENOENT"
    v4 = struct.pack("<H", 2) + struct.pack(">H", 8080) + bytes([127, 0, 0, 1]) + bytes(8)
    assert (
        sockaddr(v4) == '{sa_family=AF_INET, sin_port=htons(8080), sin_addr=inet_addr("127.0.0.1")}'
    )
    v6 = struct.pack("<H", 10) + struct.pack(">H", 443) + bytes(4) + bytes(15) + b"\x01" + bytes(4)
    assert sockaddr(v6) == '{sa_family=AF_INET6, sin6_port=htons(443), sin6_addr="::1"}'
    unix = struct.pack("<H", 1) + b"/tmp/s\0"
    assert sockaddr(unix) == '{sa_family=AF_UNIX, sun_path="/tmp/s"}'


def _record(
    nr: int, args: tuple[int, ...], ret: int, err: int, mem: dict[int, bytes], known: int = 6
) -> bytes:
    body = b""
    for i, b in mem.items():
        body += MEM.pack(i, len(b)) + b + bytes((-len(b)) % 8)
    size = HEAD.size + len(body)
    return HEAD.pack(size, nr, 0, len(mem), known, 42, err, 1000, 2500, ret, *args) + body


def test_records_roundtrip_and_formatting() -> None:
    data = _record(257, (-100 & 0xFFFFFFFF, 0x1000, 0o2000000, 0, 0, 0), 3, 0, {1: b"/etc/hosts"})
    data += _record(0, (3, 0x2000, 64, 0, 0, 0), 5, 0, {1: b"hello"})
    data += _record(3, (3, 0, 0, 0, 0, 0), -1, 9, {})
    recs = list(parse(data + bytes(8)))  # a zero size ends the records
    assert [r.nr for r in recs] == [257, 0, 3]
    fds = FdTable()
    lines = [
        format_record(n, r, fds) for n, r in zip(("openat", "read", "close"), recs, strict=True)
    ]
    assert (
        lines[0] == 'openat(AT_FDCWD, "/etc/hosts", O_RDONLY|O_CLOEXEC) = 3</etc/hosts> <0.000003>'
    )
    assert lines[1] == 'read(3</etc/hosts>, "hello", 64) = 5 <0.000003>'
    assert lines[2] == "close(3</etc/hosts>) = -1 EBADF (Bad file descriptor) <0.000003>"


def test_arguments_a_wrapper_was_not_given_print_as_unknown() -> None:
    """_Fork issues clone but takes no arguments: the record says none are
    known, and they print as ? rather than as zeros the call never had."""
    (rec,) = list(parse(_record(56, (0,) * 6, 4242, 0, {}, known=0)))
    assert rec.known == 0
    assert format_record("clone", rec, FdTable()) == "clone(?, ?, ?, ?, ?) = 4242 <0.000003>"
    (rec,) = list(parse(_record(257, (-100 & 0xFFFFFFFF, 0, 0, 0, 0, 0), 3, 0, {}, known=2)))
    assert format_record("openat", rec, FdTable()).startswith("openat(AT_FDCWD, NULL, ?")


def test_summary_table() -> None:
    text = format_summary({"write": Count(10, 0, 5000), "close": Count(2, 1, 1000)})
    lines = text.splitlines()
    assert lines[0].split() == ["%", "time", "seconds", "usecs/call", "calls", "errors", "syscall"]
    assert lines[2].split() == ["83.33", "0.000005", "0", "10", "write"]
    assert lines[3].split() == ["16.67", "0.000001", "0", "2", "1", "close"]
    assert lines[-1].split() == ["100.00", "0.000006", "0", "12", "1", "total"]


def test_strace_window() -> None:
    text = "\n".join(
        [
            '10 execve("./t", ["./t"], 0x0 /* 1 vars */) = 0',
            '10 openat(AT_FDCWD, "/lib/libc.so.6", O_RDONLY) = 3',  # before main: not counted
            "10 getppid()                         = 9",
            "10 close(-1)                         = -1 EBADF (Bad file descriptor)",
            "10 clone(child_stack=NULL, flags=SIGCHLD) = 11",
            '11 write(1, "x", 1 <unfinished ...>',
            "10 wait4(11,  <unfinished ...>",
            "11 <... write resumed>)              = 1",
            '11 execve("./t", ["./t", "again"], 0x0) = 0',
            "11 brk(NULL)                         = 0x1000",  # the new image, before main
            "11 getppid()                         = 10",
            "11 exit_group(4)                     = ?",
            "11 +++ exited with 4 +++",
            "10 <... wait4 resumed>[{WIFEXITED(s) && WEXITSTATUS(s) == 4}], 0, NULL) = 11",
            "10 exit_group(0)                     = ?",
        ]
    )
    assert window_counts(text) == {
        "getppid": (2, 0),
        "close": (1, 1),
        "clone": (1, 0),
        "write": (1, 0),
        "wait4": (1, 0),
        "execve": (1, 0),
        "exit_group": (2, 0),
    }


def test_record_type() -> None:
    r = Record(1, 0, 1, 0, 0, 0, 0, (0,) * 6)
    assert r.mem == {}
