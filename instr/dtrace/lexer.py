"""Tokens of the D subset, with 1-based line and column.

The parser drives the lexer: at the start of a clause it asks for a probe
description (``desc()``), which has its own lexical rules (``pid$target::m*:entry``,
``uprobe:/lib/libc.so.6:malloc``, ``tick-1s``); everywhere else it asks for
ordinary tokens (``next()``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from instr.dtrace.errors import Loc, Src, fail

Kind = Literal["ident", "int", "str", "punct", "macro", "agg", "eof"]

# Longest first.
PUNCT = (
    "<<=", ">>=", "->", "++", "--", "<<", ">>", "<=", ">=", "==", "!=", "&&", "||", "^^",
    "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=",
    "{", "}", "(", ")", "[", "]", ";", ",", "?", ":", "=", "<", ">", "+", "-", "*", "/",
    "%", "!", "~", "&", "|", "^", ".",
)  # fmt: skip
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", '"': '"', "'": "'", "a": "\a"}
_DESC_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_$:.*?-+[]!~@")


@dataclass(frozen=True)
class Token:
    kind: Kind
    text: str  # as written (for "str": the decoded value; for "int": the digits)
    loc: Loc
    value: int = 0  # for "int"

    def is_(self, text: str) -> bool:
        return self.kind in ("punct", "ident") and self.text == text


class Lexer:
    def __init__(self, src: Src) -> None:
        self.src = src
        self.text = src.text
        self.pos = 0
        self.line = 1
        self.col = 1

    def loc(self) -> Loc:
        return Loc(self.src, self.line, self.col)

    def _advance(self, n: int) -> str:
        s = self.text[self.pos : self.pos + n]
        for ch in s:
            if ch == "\n":
                self.line += 1
                self.col = 1
            else:
                self.col += 1
        self.pos += n
        return s

    def _peek(self, k: int = 0) -> str:
        i = self.pos + k
        return self.text[i] if i < len(self.text) else ""

    def skip_space(self) -> None:
        while self.pos < len(self.text):
            ch = self._peek()
            if ch in " \t\r\n":
                self._advance(1)
            elif self.text.startswith("/*", self.pos):
                start = self.loc()
                end = self.text.find("*/", self.pos + 2)
                if end < 0:
                    raise fail(start, "comment is not closed", "end it with */")
                self._advance(end + 2 - self.pos)
            elif self.text.startswith("//", self.pos) or (
                ch == "#" and self.text.startswith("#!", self.pos) and self.pos == 0
            ):
                end = self.text.find("\n", self.pos)
                self._advance((len(self.text) if end < 0 else end) - self.pos)
            else:
                return

    def at_eof(self) -> bool:
        self.skip_space()
        return self.pos >= len(self.text)

    def rest_of_line(self) -> tuple[Loc, str]:
        """A ``#pragma`` line, as written (the parser checks it)."""
        self.skip_space()
        loc = self.loc()
        end = self.text.find("\n", self.pos)
        return loc, self._advance((len(self.text) if end < 0 else end) - self.pos)

    def desc(self) -> Token:
        """One probe description: up to white space, ``{``, ``,`` or a predicate's ``/``.

        A ``/`` right after ``:`` (or in a field starting ``.`` or ``~``) starts a
        path (bpftrace's ``uprobe:/lib/x.so:f``, ``uprobe:./prog:f``), which runs to
        the next ``:``."""
        self.skip_space()
        loc = self.loc()
        start = self.pos
        in_path = False
        while self.pos < len(self.text):
            ch = self._peek()
            if ch == "/":
                # a path right after ':' (or './', '../', '~/'); elsewhere a predicate
                seg = self.text[start : self.pos].rpartition(":")
                if not in_path and not (seg[1] and (seg[2] == "" or seg[2][0] in ".~")):
                    break
                in_path = True
            elif ch == ":":
                in_path = False
            elif (ch not in _DESC_CHARS and not in_path) or (in_path and ch in " \t\r\n{,"):
                break
            self._advance(1)
        text = self.text[start : self.pos]
        if not text:
            ch = self._peek()
            found = repr(ch) if ch else "the end of the program"
            raise fail(
                loc,
                f"expected a probe description, found {found}",
                "a clause starts with a probe such as pid$target::malloc:entry or BEGIN",
            )
        return Token("ident", text, loc)

    def next(self) -> Token:
        self.skip_space()
        loc = self.loc()
        if self.pos >= len(self.text):
            return Token("eof", "", loc)
        ch = self._peek()
        if ch.isalpha() or ch == "_":
            return Token("ident", self._word(), loc)
        if ch.isdigit():
            return self._number(loc)
        if ch == '"':
            return self._string(loc)
        if ch == "'":
            return self._char(loc)
        if ch == "$":
            self._advance(1)
            word = self._word() if (self._peek().isalnum() or self._peek() == "_") else ""
            if not word:
                raise fail(loc, "'$' must be followed by a macro name", "write $target or $1")
            return Token("macro", word, loc)
        if ch == "@":
            self._advance(1)
            word = self._word() if (self._peek().isalnum() or self._peek() == "_") else ""
            return Token("agg", word, loc)
        for p in PUNCT:
            if self.text.startswith(p, self.pos):
                self._advance(len(p))
                return Token("punct", p, loc)
        raise fail(loc, f"unexpected character {ch!r}")

    def _word(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and (self._peek().isalnum() or self._peek() == "_"):
            self._advance(1)
        return self.text[start : self.pos]

    def _number(self, loc: Loc) -> Token:
        start = self.pos
        while self.pos < len(self.text) and (self._peek().isalnum() or self._peek() == "_"):
            self._advance(1)
        raw = self.text[start : self.pos]
        digits = raw.rstrip("uUlL")
        try:
            if digits.lower().startswith("0x"):
                value = int(digits, 16)
            elif len(digits) > 1 and digits.startswith("0"):
                value = int(digits, 8)
            else:
                value = int(digits, 10)
        except ValueError:
            raise fail(loc, f"bad integer constant '{raw}'") from None
        if value >= 1 << 64:
            raise fail(loc, f"integer constant '{raw}' does not fit in 64 bits")
        if self._peek() == "." and self._peek(1).isdigit():
            raise fail(loc, "floating-point constants are not supported", "D has integers only")
        return Token("int", raw, loc, value)

    def _string(self, loc: Loc) -> Token:
        self._advance(1)
        out: list[str] = []
        while True:
            ch = self._peek()
            if ch == "" or ch == "\n":
                raise fail(loc, "string is not closed", 'end it with "')
            self._advance(1)
            if ch == '"':
                return Token("str", "".join(out), loc)
            if ch == "\\":
                esc = self._peek()
                if esc not in _ESCAPES:
                    raise fail(self.loc(), f"unknown escape '\\{esc}' in a string")
                self._advance(1)
                out.append(_ESCAPES[esc])
            else:
                out.append(ch)

    def _char(self, loc: Loc) -> Token:
        self._advance(1)
        ch = self._advance(1)
        if ch == "\\":
            esc = self._advance(1)
            if esc not in _ESCAPES:
                raise fail(loc, f"unknown escape '\\{esc}' in a character constant")
            ch = _ESCAPES[esc]
        if self._peek() != "'":
            raise fail(loc, "character constant is not closed", "write one character: 'a'")
        self._advance(1)
        return Token("int", repr(ch), loc, ord(ch))
