"""Forks of a program instr attached to, and left. Under ``-F``, the fork gate
(agents/src/syscalls/syscalls_fork.ts; docs/syscalls.md, "Forks under --complete -F"
and the D-Bus item under "What is left"): while instr follows a program,
fork()'s GOT slot points at the gate, in anonymous memory; forks made
through it are counted exactly and their children end normally, in both
modes; when instr leaves, the slot holds what it held before. In every mode
the program goes on forking normally after instr has left."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import pytest
from helpers import Targets, start_instr, start_target

pytestmark = pytest.mark.skipif(
    platform.machine() != "x86_64", reason="the fork gate is x86_64 only"
)


def fork_slot(pid: int, exe: Path) -> int:
    """The address of fork()'s GOT slot in the running program."""
    out = subprocess.run(["readelf", "-rW", str(exe)], capture_output=True, text=True, check=True)
    offsets = [
        int(f[0], 16)
        for f in (ln.split() for ln in out.stdout.splitlines())
        if len(f) >= 5 and f[2] == "R_X86_64_JUMP_SLOT" and f[4].startswith("fork@")
    ]
    assert len(offsets) == 1, out.stdout
    with open(exe, "rb") as f:
        pie = f.read(18)[16] == 3  # e_type ET_DYN
    base = 0
    if pie:
        real = os.path.realpath(exe)
        with open(f"/proc/{pid}/maps") as maps:
            base = min(int(ln.split("-")[0], 16) for ln in maps if ln.rstrip().endswith(real))
    return base + offsets[0]


def fork_code(pid: int) -> bytes:
    """The first bytes of libc's fork() in the running program."""
    with open(f"/proc/{pid}/maps") as maps:
        rows = [ln.split() for ln in maps]
    # its code: Frida maps the file again, read-only, to read its symbols
    libc = next(r for r in rows if len(r) == 6 and "x" in r[1]
                and os.path.basename(r[5]).startswith("libc.so"))  # fmt: skip
    base = int(libc[0].split("-")[0], 16) - int(libc[2], 16)
    out = subprocess.run(["readelf", "-sW", "--dyn-syms", libc[5]], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    value = next(int(f[1], 16) for f in (ln.split() for ln in out.splitlines())
                 if len(f) >= 8 and f[7].split("@")[0] == "fork")  # fmt: skip
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        mem.seek(base + value)
        return mem.read(5)


def read_slot(pid: int, address: int) -> int:
    with open(f"/proc/{pid}/mem", "rb") as mem:
        mem.seek(address)
        return int.from_bytes(mem.read(8), "little")


def mapping(pid: int, address: int) -> str | None:
    """The file mapped at ``address`` ("" for anonymous memory, None: unmapped)."""
    with open(f"/proc/{pid}/maps") as maps:
        for ln in maps:
            f = ln.split(maxsplit=5)
            lo, hi = (int(x, 16) for x in f[0].split("-"))
            if lo <= address < hi:
                return f[5].strip() if len(f) == 6 else ""
    return None


def calls(summary: list[str]) -> dict[str, int]:
    """``{syscall: calls}`` from a ``-c`` table."""
    rows = [ln.split() for ln in summary]
    return {r[-1]: int(r[3]) for r in rows if len(r) >= 5 and r[3].isdigit() and r[-1] != "total"}


# Not --complete: leaving a program whose thread Stalker follows while it is
# blocked in a system call (here read(2) on stdin) waits until the call returns
# (docs/syscalls.md, "What it misses"); test_complete_mode_follows_forked_children
# covers the gate in the complete mode.
@pytest.mark.parametrize("mode", [(), ("-F",)], ids=["attached", "follow"])
def test_forks_go_through_the_gate_and_the_slot_is_put_back(
    targets: Targets, mode: tuple[str, ...]
) -> None:
    """Without -F there is no gate. In every mode, a program instr has left
    forks normally: the agent used to leave an atfork handler in its freed
    code behind, and every child of a later fork died of SIGSEGV."""
    exe = targets.path("sys_fdhold")
    follow = "-F" in mode
    with start_target(exe) as t:
        slot = fork_slot(t.pid, exe)
        before = read_slot(t.pid, slot)
        argv = ("syscalls", "-c", *mode, "-e", "trace=write,clone", "-p", t.pid)
        with start_instr(*argv) as ins:
            ins.err.expect("counting system calls")
            gate = read_slot(t.pid, slot)
            if follow:
                assert gate != before and mapping(t.pid, gate) == ""
                # Frida's child gating is in force once instr says so: its
                # hook on fork() is written (a fork right after went ungated
                # when it was not yet; instr/lifecycle.py: gate_children)
                assert fork_code(t.pid)[0] == 0xE9, fork_code(t.pid).hex()
            else:
                assert gate == before
            t.send("fork")
            assert t.readline() == "forked 3"
            ins.interrupt()
            done = ins.finish()
        assert done.returncode == 0, done.err
        # The parent's fork and its answer, and with -F the child's write.
        expected = {"clone": 1, "write": 2 if follow else 1}
        assert calls(done.stdout) == expected, done.stdout
        # Put back; without -F the program's own fork() call may have bound it
        # lazily since (to fork() in libc).
        after = read_slot(t.pid, slot)
        assert after == before or (not follow and "libc" in (mapping(t.pid, after) or "")), hex(
            after
        )
        for _ in range(2):
            t.send("fork")
            assert t.readline() == "forked 3"
        t.send("quit")
        assert t.finish().returncode == 0
