"""A live view for terminals: each report redraws the screen in place, like ``top``.

Plain ANSI escapes, no curses: the view switches to the terminal's alternate
screen (so the shell's scrollback is left as it was), hides the cursor, and
draws every frame from the top-left corner, clearing each line's rest and
everything below the last line (no full clear, so no flicker).  Frames are
fitted to the terminal: lines are cut to its width, and when the report is
taller than the screen the last row says how many lines did not fit.
``close`` restores the normal screen and the cursor.

``compose_frame`` is pure (tested with a fake stream); ``LiveView`` only
writes its result.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import TextIO

HOME = "\x1b[H"
CLEAR_LINE = "\x1b[K"  # from the cursor to the end of the line
CLEAR_BELOW = "\x1b[J"  # from the cursor to the end of the screen
ENTER = "\x1b[?1049h\x1b[?25l"  # alternate screen, cursor hidden
LEAVE = "\x1b[?25h\x1b[?1049l"  # cursor shown, normal screen back

TerminalSize = Callable[[], tuple[int, int]]  # () -> (columns, lines)


def terminal_size() -> tuple[int, int]:
    size = shutil.get_terminal_size()
    return size.columns, size.lines


def fit(lines: list[str], columns: int, rows: int) -> list[str]:
    """At most ``rows`` lines of at most ``columns`` characters; the cut is said on the last row."""
    columns, rows = max(columns, 1), max(rows, 1)
    if len(lines) > rows:
        hidden = len(lines) - (rows - 1)
        lines = [*lines[: rows - 1], f"... {hidden} more lines (enlarge the terminal, or --top N)"]
    return [line if len(line) <= columns else line[: columns - 1] + "…" for line in lines]


def compose_frame(lines: list[str], columns: int, rows: int) -> str:
    """The text that redraws the screen with ``lines``, from the home position.

    Rows are separated by newlines, except after the last one, so that a frame
    exactly as tall as the terminal does not scroll it.
    """
    shown = fit(lines, columns, rows)
    return HOME + "\n".join(line + CLEAR_LINE for line in shown) + CLEAR_BELOW


class LiveView:
    """Redraws ``stream`` in place; ``close`` (idempotent) gives the screen back."""

    def __init__(self, stream: TextIO, size: TerminalSize = terminal_size) -> None:
        self.stream = stream
        self.size = size
        self.active = False

    def show(self, lines: list[str]) -> None:
        columns, rows = self.size()
        frame = compose_frame(lines, columns, rows)
        self.stream.write(frame if self.active else ENTER + frame)
        self.active = True
        self.stream.flush()

    def close(self) -> None:
        if self.active:
            self.active = False
            self.stream.write(LEAVE)
            self.stream.flush()
