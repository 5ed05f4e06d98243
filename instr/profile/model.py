"""Profiles as counted stacks of names: folded stacks, the top-N table, demangling.

A stack is a tuple of frame names, outermost first (``main`` before the
function it calls), the order of the folded format FlameGraph and speedscope
read: ``main;hot_a 59``, one stack per line, frames joined by ``;`` and the
sample count after the last space.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from instr.demangle import demangle as demangle  # instr.profile.run imports it from here

Stack = tuple[str, ...]
OFF_CPU = "[off-cpu]"  # the leaf of an off-CPU sample's stack


@dataclass
class Profile:
    stacks: Counter[Stack] = field(default_factory=Counter)
    samples: int = 0  # samples unwound
    complete: int = 0  # of them, walked up to the thread's first frame
    drops: int = 0  # samples the target's ring had no room for
    threads: set[int] = field(default_factory=set)
    hz: int = 0
    off_cpu: int = 0  # of the samples, those of blocked threads (their stacks end in OFF_CPU)

    def folded(self) -> str:
        return "".join(f"{';'.join(s)} {n}\n" for s, n in sorted(self.stacks.items()))


class FoldedError(ValueError):
    pass


def parse_folded(text: str) -> Counter[Stack]:
    """Stacks from folded text (what ``Profile.folded`` writes, or FlameGraph's stackcollapse)."""
    out: Counter[Stack] = Counter()
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        stack, sep, count = line.rpartition(" ")
        if not sep or not stack or not count.isdigit():
            raise FoldedError(f"line {lineno}: not 'frame;frame;... count': {line!r}")
        out[tuple(stack.split(";"))] += int(count)
    return out


@dataclass(frozen=True)
class TopRow:
    name: str
    self_samples: int
    total_samples: int


def top(stacks: Counter[Stack], n: int | None = None) -> list[TopRow]:
    """Functions by self samples (innermost frame), with their total (anywhere on the stack, once per sample)."""
    selfs: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    for stack, count in stacks.items():
        if not stack:
            continue
        selfs[stack[-1]] += count
        for name in set(stack):
            totals[name] += count
    rows = [TopRow(name, selfs[name], totals[name]) for name in totals]
    rows.sort(key=lambda r: (-r.self_samples, -r.total_samples, r.name))
    return rows if n is None else rows[:n]


def render_top(stacks: Counter[Stack], n: int) -> str:
    total = sum(stacks.values())
    lines = [f"{'SELF%':>7} {'TOTAL%':>7} {'SAMPLES':>8}  FUNCTION"]
    for r in top(stacks, n):
        lines.append(
            f"{_pct(r.self_samples, total):>7} {_pct(r.total_samples, total):>7}"
            f" {r.self_samples:>8}  {r.name}"
        )
    return "\n".join(lines) + "\n"


def _pct(n: int, total: int) -> str:
    return f"{100.0 * n / total:.1f}" if total else "0.0"
