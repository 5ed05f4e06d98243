"""Diagnostics for D programs: ``FILE:LINE:COL: error: ...``, the line, a caret, a hint.

Every error the D front end finds is a ``DError``; the CLI prints it and exits 2
(``ProbeSetError``'s exit code), with no traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from instr.errors import Diagnostic, ProbeSetError


@dataclass(frozen=True)
class Src:
    """A program's text and the name used in diagnostics (``-n``, or the file)."""

    name: str
    text: str

    def line(self, n: int) -> str:
        lines = self.text.splitlines()
        return lines[n - 1] if 0 < n <= len(lines) else ""


@dataclass(frozen=True)
class Loc:
    src: Src = field(repr=False, compare=False)
    line: int  # 1-based
    col: int  # 1-based

    def __str__(self) -> str:
        return f"{self.src.name}:{self.line}:{self.col}"


class DError(ProbeSetError):
    """One or more problems in a D program, each shown with its line and a caret."""

    def __init__(self, items: list[tuple[Loc, str, str | None]]) -> None:
        diags = [Diagnostic(loc.src.name, loc.line, loc.col, msg, hint) for loc, msg, hint in items]
        super().__init__(diags)
        self.items = items
        self.message = "\n".join(_render(loc, msg, hint) for loc, msg, hint in items)

    def __str__(self) -> str:
        return self.message


def _render(loc: Loc, message: str, hint: str | None) -> str:
    text = loc.src.line(loc.line).expandtabs(1)
    out = [f"{loc}: error: {message}", f"  {text}", "  " + " " * (loc.col - 1) + "^"]
    if hint:
        out.append(f"  hint: {hint}")
    return "\n".join(out)


def fail(loc: Loc, message: str, hint: str | None = None) -> DError:
    return DError([(loc, message, hint)])
