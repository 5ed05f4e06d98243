"""The seccomp mode's pure parts: the BPF program (run by a small classic-BPF
interpreter here), ELF detection, naming, the -c table with its unknowns, the
dispatch's errors and the counting of synthetic notifications."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from instr.errors import UsageError
from instr.syscalls import numbers
from instr.syscalls.seccomp import (
    AUDIT_ARCH,
    BPF_JEQ_K,
    BPF_JSET_K,
    BPF_LD_W_ABS,
    BPF_RET_K,
    RET_ALLOW,
    RET_USER_NOTIF,
    X32_BIT,
    Notification,
    build_filter,
    pack_filter,
    syscall_name,
)
from instr.syscalls.static import StaticRun, elf_static, format_summary, wants_seccomp
from instr.target import DeviceSpec, TargetSpec

X86 = AUDIT_ARCH["x86_64"]
I386 = 0x40000003
NRS = numbers("x86_64")


def run_bpf(prog: list[tuple[int, ...]], nr: int, arch: int) -> int:
    """What the kernel would answer for seccomp_data {nr, arch}."""
    data = struct.pack("<iIQ6Q", nr, arch, 0, *([0] * 6))
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = prog[pc]
        if code == BPF_LD_W_ABS:
            acc = struct.unpack_from("<I", data, k)[0]
        elif code == BPF_JEQ_K:
            pc += jt if acc == k else jf
        elif code == BPF_JSET_K:
            pc += jt if acc & k else jf
        elif code == BPF_RET_K:
            return k
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
        pc += 1


def test_filter_for_everything_notifies_every_arch() -> None:
    prog = build_filter("x86_64", None, set())
    for nr, arch in ((0, X86), (59, X86), (999, X86), (4, I386), (1 | X32_BIT, X86)):
        assert run_bpf(prog, nr, arch) == RET_USER_NOTIF


def test_filter_for_a_selection() -> None:
    chosen = {NRS["openat"], NRS["write"]}
    always = {NRS["execve"]}
    prog = build_filter("x86_64", chosen, always)
    assert all(jt <= 1 and jf <= 1 for _c, jt, jf, _k in prog)  # no long jumps
    for name, nr in NRS.items():
        want = RET_USER_NOTIF if name in ("openat", "write", "execve") else RET_ALLOW
        assert run_bpf(prog, nr, X86) == want, name
    assert run_bpf(prog, NRS["write"], I386) == RET_ALLOW  # i386's 1 is exit
    assert run_bpf(prog, NRS["write"] | X32_BIT, X86) == RET_ALLOW
    arm = build_filter("arm64", {64}, set())  # arm64's write
    assert run_bpf(arm, 64, AUDIT_ARCH["arm64"]) == RET_USER_NOTIF
    assert run_bpf(arm, 64, X86) == RET_ALLOW


def test_filter_limits_and_layout() -> None:
    assert len(build_filter("x86_64", set(NRS.values()), set())) < 4096
    with pytest.raises(ValueError, match="too long"):
        build_filter("x86_64", set(range(3000)), set())
    raw = pack_filter([(BPF_JEQ_K, 1, 2, 0x01020304), (BPF_RET_K, 0, 0, RET_ALLOW)])
    assert raw == b"\x15\x00\x01\x02\x04\x03\x02\x01" + b"\x06\x00\x00\x00\x00\x00\xff\x7f"


def test_syscall_names() -> None:
    names = {nr: n for n, nr in NRS.items()}
    assert syscall_name(1, X86, "x86_64", names) == "write"
    assert syscall_name(4000, X86, "x86_64", names) == "syscall_4000"
    assert syscall_name(4, I386, "x86_64", names) == "syscall_4(i386)"
    assert syscall_name(1 | X32_BIT, X86, "x86_64", names) == "syscall_1(x32)"
    assert syscall_name(1, 0x1234, "x86_64", names) == "syscall_1(0x1234)"


def elf(path: Path, types: list[int], bits: int = 64, little: bool = True) -> Path:
    """A minimal ELF header and program header table with these p_types."""
    e = "<" if little else ">"
    head = bytearray(64 if bits == 64 else 52)
    head[:6] = b"\x7fELF" + bytes([2 if bits == 64 else 1, 1 if little else 2])
    entsize = 56 if bits == 64 else 32
    if bits == 64:
        struct.pack_into(e + "Q", head, 0x20, len(head))
        struct.pack_into(e + "HH", head, 0x36, entsize, len(types))
    else:
        struct.pack_into(e + "I", head, 0x1C, len(head))
        struct.pack_into(e + "HH", head, 0x2A, entsize, len(types))
    table = b"".join(struct.pack(e + "I", t).ljust(entsize, b"\0") for t in types)
    path.write_bytes(bytes(head) + table)
    path.chmod(0o755)
    return path


def test_elf_static(tmp_path: Path) -> None:
    assert elf_static(str(elf(tmp_path / "s", [6, 1, 1, 4]))) is True  # PHDR, LOAD..., NOTE
    assert elf_static(str(elf(tmp_path / "pie", [1, 2, 1]))) is True  # static-pie: DYNAMIC
    assert elf_static(str(elf(tmp_path / "d", [6, 3, 1, 2]))) is False  # INTERP
    assert elf_static(str(elf(tmp_path / "d32", [3, 1], bits=32, little=False))) is False
    assert elf_static(str(elf(tmp_path / "s32", [1, 1], bits=32))) is True
    cut = tmp_path / "cut"
    cut.write_bytes((tmp_path / "s").read_bytes()[:80])
    assert elf_static(str(cut)) is None
    (tmp_path / "script").write_text("#!/bin/sh\necho hi\n")
    assert elf_static(str(tmp_path / "script")) is None
    assert elf_static(str(tmp_path / "missing")) is None


def test_summary_shows_unknowns_as_dashes() -> None:
    assert format_summary({"write": 3, "brk": 5, "close": 3}).splitlines() == [
        "% time     seconds  usecs/call     calls    errors syscall",
        "------ ----------- ----------- --------- --------- ----------------",
        "     -           -           -         5         - brk",
        "     -           -           -         3         - close",
        "     -           -           -         3         - write",
        "------ ----------- ----------- --------- --------- ----------------",
        "     -           -           -        11         - total",
    ]


def test_dispatch(tmp_path: Path) -> None:
    static = elf(tmp_path / "prog", [6, 1])
    local = DeviceSpec()
    with pytest.raises(UsageError, match="statically linked") as err:
        wants_seccomp(TargetSpec(argv=(str(static), "a b")), local, complete=False)
    assert err.value.hint is not None and f"--complete -- {static} 'a b'" in err.value.hint
    assert wants_seccomp(TargetSpec(argv=(str(static),)), local, complete=True)
    assert not wants_seccomp(TargetSpec(argv=(str(static),)), DeviceSpec("remote"), True)
    assert not wants_seccomp(TargetSpec(argv=("sh", "-c", "true")), local, complete=True)
    import os

    assert not wants_seccomp(TargetSpec(pid=os.getpid()), local, complete=True)  # dynamic


def notif(nid: int, pid: int, name: str, *args: int, arch: int = X86) -> Notification:
    nr = NRS.get(name, 4000) if arch == X86 else 4
    return Notification(nid, pid, nr, arch, 0, (*args, 0, 0, 0, 0, 0, 0)[:6])


def feed(run: StaticRun, *calls: Notification, withdrawn: int = -1) -> list[int]:
    passed: list[int] = []

    def let_through(nid: int) -> bool:
        passed.append(nid)
        return nid != withdrawn

    for n in calls:
        run.handle(n, let_through, lambda nid: True)
    return passed


def test_counting_window_follow_and_withdrawn() -> None:
    run = StaticRun(("sh",), follow=False)
    run.root = 100
    run.tgids.update({100: 100, 101: 100, 200: 200})  # 101: a thread; 200: a child
    passed = feed(
        run,
        notif(1, 100, "write", 1),  # instr's own child, before its execve: not counted
        notif(2, 100, "execve"),
        notif(3, 101, "write", 1),
        notif(4, 200, "write", 1),  # a forked child, without -F
        notif(5, 100, "close", 3),  # withdrawn (killed before instr answered)
        notif(6, 100, "getpid", arch=I386),
        notif(7, 100, "exit_group"),
        withdrawn=5,
    )
    assert passed == [1, 2, 3, 4, 5, 6, 7]  # every call is let through
    assert run.result().counts == {
        "execve": 1,
        "write": 1,
        "syscall_4(i386)": 1,
        "exit_group": 1,
    }
    assert run.withdrawn == 1
    assert 100 not in run.tgids and 101 not in run.tgids  # exit_group forgets the process

    follow = StaticRun(("sh",), follow=True, trace_spec="write")
    follow.root = 100
    feed(follow, notif(1, 100, "execve"), notif(2, 200, "write"), notif(3, 100, "close", 3))
    assert follow.result().counts == {"write": 1}


def test_stream_lines_show_entries_only() -> None:
    lines: list[str] = []
    run = StaticRun(("sh",), follow=True, stream=True, on_line=lines.append)
    run.root = 100
    feed(run, notif(1, 100, "execve"), notif(2, 100, "close", (1 << 32) - 1))
    feed(run, notif(3, 100, "getpid", arch=I386))
    assert lines[1:] == ["[pid    100] close(-1) = ?", "[pid    100] syscall_4(i386)(...) = ?"]
