"""Syscall points on the host (instr.syscalls.points), from synthetic monitor
records: captures and their forms, the fd table, where, aggregations."""

from __future__ import annotations

import struct

import pytest

from instr.aggregate.decode import lquantize_bucket, quantize_bucket
from instr.aggregate.host import bucket_lq as _bucket_lq
from instr.aggregate.host import bucket_q as _bucket_q
from instr.probes import load_text
from instr.probes.predicate import CapInfo, compile_predicate
from instr.syscalls import numbers
from instr.syscalls.points import SyscallPoints, evaluate
from instr.syscalls.records import HEAD, MEM

NR = numbers("x86_64")
NO_PID = 0  # /proc/0 does not exist: the fd table starts empty


def rec(name: str, args: list[int], ret: int, err: int = 0, mem: dict[int, bytes] | None = None,
        ts: int = 1000, dur: int = 10, tid: int = 7) -> bytes:  # fmt: skip
    body = b""
    for i, m in (mem or {}).items():
        body += MEM.pack(i, len(m)) + m + b"\0" * (-len(m) % 8)
    args = (args + [0] * 6)[:6]
    size = HEAD.size + len(body)
    return HEAD.pack(size, NR[name], 0, len(mem or {}), 0, tid, err, ts, dur, ret, *args) + body


def engine(yaml_probes: str) -> SyscallPoints:
    psf = load_text(f"version: 1\nsets:\n  t:\n    probes:\n{yaml_probes}", "t.yaml")
    return SyscallPoints(psf.compile(["t"]).syscall_probes(), NO_PID, "x64", "prog")


def sockaddr_in(port: int) -> bytes:
    return struct.pack("<H", 2) + struct.pack(">H", port) + bytes([127, 0, 0, 1]) + b"\0" * 8


def test_captures_forms_and_fd_table() -> None:
    sp = engine(
        """      - syscall: [openat, read, close]
        capture: {p: filename, fl: "flags:str", f: "fd:path", fs: "fd:str", n: retval,
                  e: "errno:str", en: errno, d: duration, s: syscall}
"""
    )
    assert {"openat", "read", "close", "socket", "dup2"} <= sp.selected()
    data = (
        rec("openat", [-100, 0x1000, 0o2000000], 3, mem={1: b"/etc/hosts"}, ts=1000)
        + rec("read", [3, 0x2000, 64], 12, mem={1: b"127.0.0.1 lo"}, ts=2000)
        + rec("openat", [-100, 0x1000, 0], -1, err=2, mem={1: b"/nope"}, ts=3000)
        + rec("close", [3], 0, ts=4000)
        + rec("read", [3], -1, err=9, ts=5000)
    )
    events, sites = sp.handle({"tick_ns": 2.0, "clock": ["1000", "500000"], "drops": 3}, data)
    assert sp.drops == 3
    assert [s.symbol for s in sites] == ["openat", "read", "close"]
    got = [(e.args, e.retval, e.duration_ns) for e in events]
    assert got[0] == (
        {"p": "/etc/hosts", "fl": "O_RDONLY|O_CLOEXEC", "f": None, "fs": None, "e": "", "en": 0,
         "s": "openat"},
        3, 20,
    )  # fmt: skip
    assert got[1][0]["f"] == "/etc/hosts" and got[1][0]["fs"] == "3</etc/hosts>"
    assert got[1][0]["p"] is None and got[1][1] == 12
    assert got[2][0]["e"] == "ENOENT" and got[2][0]["en"] == 2 and got[2][1] == -1
    assert got[3][0]["f"] == "/etc/hosts"  # what close closes
    assert got[4][0]["f"] == "" and got[4][0]["e"] == "EBADF"  # closed: unknown
    assert [e.ts_ns for e in events] == [500000, 502000, 504000, 506000, 508000]


def test_where_aggregations_and_peers() -> None:
    sp = engine(
        """      - syscall: [sendto, recvfrom, write]
        capture: {peer: "fd:peer", n: retval}
        where: "n > 0 and len(peer) > 0"
        aggregate:
          bytes: sum(n) by syscall, peer
          sizes: quantize(n)
          calls: count() by fd
"""
    )
    data = (
        rec("socket", [2, 1, 0], 5)
        + rec("connect", [5, 0x10, 16], 0, mem={1: sockaddr_in(8080)})
        + rec("sendto", [5, 0, 4], 4)
        + rec("sendto", [5, 0, 100], 100)
        + rec("recvfrom", [5, 0, 64], 0)  # n == 0: filtered
        + rec("write", [1, 0, 3], 3)  # not a socket: no peer
        + rec("socket", [2, 1, 0], 6)
        + rec("sendto", [6, 0, 7], 7)  # a socket not connected: no peer
    )
    events, _ = sp.handle({}, data)
    assert events == []  # aggregations only
    tables = {t.name: t for t in sp.tables()}
    assert {r.keys: r.total for r in tables["t/bytes"].rows} == {("sendto", "127.0.0.1:8080"): 104}
    assert {r.keys: r.count for r in tables["t/calls"].rows} == {(5,): 2}
    assert [(b.lo, b.hi, b.count) for b in tables["t/sizes"].rows[0].buckets] == [
        (4, 8, 1),
        (64, 128, 1),
    ]
    assert tables["t/bytes"].tier == "host"


def test_max_keys_overflow_is_counted() -> None:
    sp = engine(
        """      - syscall: close
        max_keys: 2
        aggregate: {c: count() by fd}
"""
    )
    sp.handle({}, b"".join(rec("close", [fd], -1, err=9) for fd in (1, 2, 3, 4, 1)))
    (t,) = sp.tables()
    assert {r.keys: r.count for r in t.rows} == {(1,): 2, (2,): 1} and t.overflow == 2


@pytest.mark.parametrize("v", [0, 1, 2, 3, 4, 1023, 1024, -1, -2, -3, -1000, 2**62, -(2**62)])
def test_quantize_buckets_agree_with_the_decoder(v: int) -> None:
    b = quantize_bucket(_bucket_q(v))
    assert b.lo is not None and b.lo <= v and (b.hi is None or v < b.hi)


@pytest.mark.parametrize("v", [-5, 0, 9, 10, 11, 55, 99, 100, 1000])
def test_lquantize_buckets_agree_with_the_decoder(v: int) -> None:
    lq = (10, 100, 10)
    b = lquantize_bucket(_bucket_lq(v, lq), lq)
    assert (b.lo is None or b.lo <= v) and (b.hi is None or v < b.hi)


@pytest.mark.parametrize(
    ("source", "want"),
    [
        ("n > 3 and s.startswith('/e')", True),
        ("n // 2 == 2 and n % 3 == 2", True),
        ("not (n < 5) or 'hosts' in s", True),
        ("n in (1, 2, 3)", False),
        ("s.endswith('x') or len(s) == 10", True),
        ("-n + (n << 2) == 15 and ~n == -6 and n ^ 1 == 4", True),
        ("tid == 7 and n != 5", False),
    ],
)
def test_predicates_on_the_host(source: str, want: bool) -> None:
    env = {"n": CapInfo("exit", 0, "i64"), "s": CapInfo("exit", 1, "cstr")}
    pred, errs = compile_predicate(source, env, entry_hook=False)
    assert errs == [] and pred is not None
    assert bool(evaluate(pred.expr, [5, "/etc/hosts"], 7)) is want
