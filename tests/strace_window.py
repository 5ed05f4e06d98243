"""Per-syscall counts from ``strace -f -o FILE`` output, inside each process
image's window: from its first call of the marker syscall (the targets make
it first thing in main) to its end or its successful execve. A forked child
starts inside its parent's window (it is a copy of it)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

LINE = re.compile(r"^(\d+)\s+(.*)$")
CALL = re.compile(r"^(\w+)\(")
RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>")
ERROR = re.compile(r"\)\s+= -1 E[A-Z0-9]+ ")


def window_counts(
    text: str, marker: str = "getppid", root_only: bool = False
) -> dict[str, tuple[int, int]]:
    """``{syscall: (calls, errors)}``; ``root_only``: the first process's calls only."""
    counting: dict[int, bool] = {}
    first: int | None = None
    counts: dict[str, list[int]] = {}
    unfinished: dict[int, str] = {}  # pid -> the counted call waiting for its result
    for raw in text.splitlines():
        m = LINE.match(raw)
        if m is None:
            continue
        pid, rest = int(m.group(1)), m.group(2)
        if first is None:
            first = pid
        if root_only and pid != first:
            continue
        counting.setdefault(pid, pid != first)  # forked children start inside
        if rest.startswith(("+++", "---")):
            continue
        r = RESUMED.match(rest)
        if r is not None:
            name = unfinished.pop(pid, None)
            if name is not None:
                _finish(counts, counting, pid, name, rest)
            continue
        c = CALL.match(rest)
        if c is None:
            continue
        name = c.group(1)
        if name == marker and not counting[pid]:
            counting[pid] = True
        if not counting[pid]:
            continue
        counts.setdefault(name, [0, 0])[0] += 1
        if rest.endswith("<unfinished ...>"):
            unfinished[pid] = name
        else:
            _finish(counts, counting, pid, name, rest)
    return {k: (v[0], v[1]) for k, v in counts.items()}


def _finish(
    counts: dict[str, list[int]], counting: dict[int, bool], pid: int, name: str, rest: str
) -> None:
    if ERROR.search(rest):
        counts[name][1] += 1
    elif name in ("execve", "execveat") and rest.rstrip().endswith("= 0"):
        counting[pid] = False  # the new image's window starts at its marker


def strace_counts(
    argv: list[str], out: Path, root_only: bool = False
) -> dict[str, tuple[int, int]]:
    if shutil.which("strace") is None:
        import pytest

        pytest.skip("strace is not installed")
    # The target's own exit status does not matter here (sys_exec exits with 4).
    subprocess.run(
        ["strace", "-f", "-qq", "-o", str(out), *argv], check=False, stdout=subprocess.DEVNULL
    )
    return window_counts(out.read_text(), root_only=root_only)
