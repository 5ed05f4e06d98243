"""Helpers for the live-patching tests: the patchme target's addresses, its code
bytes read from /proc/PID/mem, and waiting for its output to change."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from helpers import TargetProcess

ORIGINAL = 42  # target_value(7) and target_const() unpatched
PATCHED = 1234
MOV_EAX_42 = bytes.fromhex("b82a000000")  # mov eax, 42
MOV_EAX_1234 = bytes.fromhex("b8d2040000")  # mov eax, 1234


@dataclass(frozen=True)
class Patchme:
    proc: TargetProcess
    exe: Path
    value_addr: int
    const_addr: int
    data_addr: int

    @property
    def pid(self) -> int:
        return self.proc.pid

    def code(self, address: int, size: int = 16) -> bytes:
        with open(f"/proc/{self.pid}/mem", "rb") as mem:
            mem.seek(address)
            return mem.read(size)

    def base(self) -> int:
        real = str(self.exe.resolve())
        for line in Path(f"/proc/{self.pid}/maps").read_text().splitlines():
            fields = line.split()
            if fields[-1] == real and int(fields[2], 16) == 0:
                return int(fields[0].split("-")[0], 16)
        raise AssertionError(f"{real} is not mapped in pid {self.pid}")

    def const_offset(self) -> int:
        """module+offset of the `mov eax, 42` inside target_const."""
        at = self.code(self.const_addr).find(MOV_EAX_42)
        assert at >= 0, self.code(self.const_addr).hex()
        return self.const_addr + at - self.base()

    def wait_values(self, value: int, const: int, settle: int = 5) -> None:
        """Read lines until ``value=V const=C`` shows, then ``settle`` more lines the same."""
        want = f"value={value} const={const}"
        seen: list[str] = []
        for _ in range(20000):
            line = self.proc.readline(30)
            assert line is not None, f"no output; waiting for {want!r}, last lines {seen[-5:]}"
            seen.append(line)
            if line == want:
                break
        else:
            raise AssertionError(f"never saw {want!r}; last lines {seen[-5:]}")
        for _ in range(settle):
            assert self.proc.readline(30) == want


def start_patchme(launch, exe: Path, mode: str = "loop") -> Patchme:
    proc = launch(exe, mode)
    proc.go()
    line = proc.readline()
    m = re.fullmatch(
        r"value_addr=(0x[0-9a-f]+) const_addr=(0x[0-9a-f]+) data_addr=(0x[0-9a-f]+)", line or ""
    )
    assert m is not None, line
    return Patchme(proc, exe, int(m[1], 16), int(m[2], 16), int(m[3], 16))
