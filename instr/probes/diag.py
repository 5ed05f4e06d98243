"""Collecting diagnostics: every pass reports into one ``Diagnostics`` and the
compiler raises once, with all of them (like bpftrace), at the end."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from instr.errors import Diagnostic, ProbeSetError
from instr.probes.ir import SourceLoc


def did_you_mean(word: str, options: Iterable[str]) -> str | None:
    """A ``did you mean 'x'?`` hint for the closest option, or None."""
    matches = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"did you mean '{matches[0]}'?" if matches else None


def one_of(options: Iterable[str]) -> str:
    """``'a', 'b' or 'c'``."""
    quoted = [f"'{o}'" for o in options]
    if len(quoted) <= 1:
        return "".join(quoted)
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]


class Diagnostics:
    """An ordered list of problems; ``check()`` raises them all at once."""

    def __init__(self) -> None:
        self.items: list[Diagnostic] = []

    def error(self, loc: SourceLoc, message: str, hint: str | None = None) -> None:
        self.items.append(Diagnostic(loc.file, loc.line, loc.col, message, hint))

    def __bool__(self) -> bool:
        return bool(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def check(self) -> None:
        """Raise ``ProbeSetError`` with every diagnostic, sorted by position."""
        if self.items:
            ordered = sorted(self.items, key=lambda d: (d.file, d.line, d.col))
            raise ProbeSetError(ordered)
