"""YAML -> a small tree of nodes that remember where they came from.

PyYAML's ``compose`` gives nodes with 0-based marks; this module turns them
into ``YMap``/``YSeq``/``YScalar`` with 1-based ``SourceLoc`` and resolves plain
scalars with the YAML 1.2 core schema (so ``on:`` is a string key and ``yes``
is a string, as in editors that use the published JSON Schema). Keys are
always strings. Malformed YAML becomes a ``Diagnostic`` at the parser's mark.

Composing is bounded (``instr.probes.limits``): nesting depth, alias uses and
the nodes, aliases counted expanded, are counted as the composer goes, so a
billion-laughs file stops at the alias that crosses the bound, wherever it
sits, and nothing is expanded to be measured. A decimal integer longer than
64 bits is kept unconverted (``limits.HugeInt``): the check that uses it
refuses it, and an unused one costs nothing.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from instr.probes import limits
from instr.probes.diag import Diagnostics
from instr.probes.ir import SourceLoc

Scalar = str | int | float | bool | None

_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT10 = re.compile(r"^[-+]?[0-9]+$")
_INT8 = re.compile(r"^0o[0-7]+$")
_INT16 = re.compile(r"^0x[0-9a-fA-F]+$")
_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)


class _LimitHit(Exception):
    def __init__(self, mark: Any, message: str, hint: str) -> None:
        super().__init__(message)
        self.line: int = mark.line
        self.column: int = mark.column
        self.message, self.hint = message, hint


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's composer with the limits of ``instr.probes.limits`` enforced
    while it composes: an alias costs the size of what it refers to, known
    from when that node was composed, so nothing is ever expanded to be
    measured (the node graph PyYAML builds shares aliased nodes)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0
        self._aliases = 0
        self._count = 0  # nodes composed so far, aliases counted expanded
        self._sizes: dict[int, int] = {}  # id(node) -> its size, aliases expanded

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > limits.MAX_ALIASES:
                raise _LimitHit(
                    event.start_mark,
                    f"more than {limits.MAX_ALIASES} aliases in one file",
                    "write the values out, or share fewer of them",
                )
            node = super().compose_node(parent, index)
            size = self._sizes.get(id(node))
            if size is None:
                raise _LimitHit(
                    event.start_mark,
                    f"alias '*{event.anchor}' refers to a node that contains it",
                    "an alias can only repeat a node that is complete",
                )
            if self._count + size > limits.MAX_NODES:
                raise _LimitHit(
                    event.start_mark,
                    f"aliases expand the file to more than {limits.MAX_NODES} nodes",
                    "an alias counts as every node it repeats, nested aliases expanded",
                )
            self._count += size
            return node
        nests = isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent))
        if nests:
            self._depth += 1
            if self._depth > limits.MAX_DEPTH:
                raise _LimitHit(
                    event.start_mark,
                    f"mappings and lists nest deeper than {limits.MAX_DEPTH} levels",
                    "a probe file needs a few levels; this looks generated or corrupt",
                )
        self._count += 1
        if self._count > limits.MAX_NODES:
            raise _LimitHit(
                event.start_mark,
                f"more than {limits.MAX_NODES} nodes in one file",
                "keys, values, lists and mappings count; probe sets are far smaller",
            )
        before = self._count - 1
        node = super().compose_node(parent, index)
        if node is not None:
            self._sizes[id(node)] = self._count - before
        if nests:
            self._depth -= 1
        return node


def _compose(text: str) -> yaml.Node | None:
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


class _Source:
    """The text of one file, for turning character indexes into line/col."""

    def __init__(self, file: str, text: str) -> None:
        self.file = file
        self.text = text
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def loc(self, index: int) -> SourceLoc:
        line = bisect.bisect_right(self.line_starts, index) - 1
        return SourceLoc(self.file, line + 1, index - self.line_starts[line] + 1)


@dataclass(eq=False)
class YScalar:
    value: Scalar
    text: str  # the scalar's string form, as PyYAML read it
    loc: SourceLoc
    style: str | None = None  # None (plain), '"', "'", '|' or '>'
    _src: _Source | None = field(default=None, repr=False)
    _span: tuple[int, int] = (0, 0)

    def pos(self, offset: int) -> SourceLoc:
        """The source location of character ``offset`` of ``text``.

        Exact for plain, quoted and block scalars written without escapes;
        otherwise the best alignment found, or the scalar's own location.
        """
        if self._src is None:
            return self.loc
        start, end = self._span
        raw = self._src.text[start:end]
        skip = 0
        if self.style in ('"', "'"):
            skip = 1
        elif self.style in ("|", ">"):
            skip = raw.find("\n") + 1
            if skip == 0:
                return self.loc
        index = _align(raw, skip, self.text, offset)
        return self.loc if index is None else self._src.loc(start + index)


def _align(raw: str, j: int, text: str, offset: int) -> int | None:
    """Walk ``text`` and ``raw[j:]`` together (raw may hold extra indentation,
    line breaks and escape characters) and return the raw index of
    ``text[offset]`` (or of the end of the scalar when ``offset == len(text)``)."""
    i = 0
    while i < len(text) and j < len(raw):
        if raw[j] == text[i]:
            if i == offset:
                return j
            i, j = i + 1, j + 1
        elif text[i].isspace() and not raw[j].isspace():
            if i == offset:
                return j
            i += 1  # a folded line break or an escape: nothing to step over in raw
        else:
            j += 1  # indentation, a line break, an escape character
    return j if i == offset else None


@dataclass(eq=False)
class YEntry:
    key: str
    key_loc: SourceLoc
    value: YNode


@dataclass(eq=False)
class YMap:
    entries: dict[str, YEntry]
    loc: SourceLoc

    def get(self, key: str) -> YNode | None:
        entry = self.entries.get(key)
        return None if entry is None else entry.value


@dataclass(eq=False)
class YSeq:
    items: list[YNode]
    loc: SourceLoc


YNode = YScalar | YMap | YSeq


def check_integer(d: Diagnostics, node: YNode, key: str, low: int, high: int) -> int | None:
    """The integer at ``node`` if it is one within [low, high]; else None, reported."""
    v = node.value if isinstance(node, YScalar) else None
    if not isinstance(v, int) or isinstance(v, bool):
        d.error(node.loc, f"'{key}' must be an integer, not {describe(node)}")
        return None
    if not low <= v <= high:
        d.error(node.loc, f"'{key}' must be between {low} and {high}, not {v}")
        return None
    return v


def describe(node: YNode) -> str:
    """What a node is, for messages: ``a mapping``, ``a list``, ``the integer 3``."""
    if isinstance(node, YMap):
        return "a mapping"
    if isinstance(node, YSeq):
        return "a list"
    v = node.value
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"the boolean {'true' if v else 'false'}"
    if isinstance(v, int):
        return f"the integer {v}"
    if isinstance(v, float):
        return f"the number {node.text}"
    return f"the string '{clip(v)}'"


def clip(text: str, width: int = 40) -> str:
    """``text``, or its start and its length when it is long (for messages)."""
    return text if len(text) <= width else f"{text[:width]}… ({len(text)} characters)"


def _resolve_plain(text: str) -> Scalar:
    if _NULL.match(text):
        return None
    if text in _BOOL:
        return _BOOL[text]
    if _INT10.match(text):
        return limits.decimal(text)  # a HugeInt past 64 bits: never converted
    if _INT8.match(text):
        return int(text[2:], 8)
    if _INT16.match(text):
        return int(text[2:], 16)
    if _FLOAT.match(text):
        if text.lower().endswith((".inf", ".nan")):  # YAML spells them .inf, -.Inf, .NaN
            return float(text.lower().replace(".", "", 1))
        return float(text)
    return text


class _Builder:
    def __init__(self, src: _Source, diags: Diagnostics) -> None:
        self.src = src
        self.diags = diags

    def loc(self, node: yaml.Node) -> SourceLoc:
        return SourceLoc(self.src.file, node.start_mark.line + 1, node.start_mark.column + 1)

    def build(self, node: yaml.Node) -> YNode:
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node)
        if isinstance(node, yaml.SequenceNode):
            return YSeq([self.build(item) for item in node.value], self.loc(node))
        assert isinstance(node, yaml.ScalarNode)
        text = str(node.value)
        start, end = node.start_mark.index, node.end_mark.index
        start, tag = self.skip_properties(start, end)
        loc = self.src.loc(start)
        value: Scalar = text
        if tag is not None and not tag.startswith("!!"):
            hint = "quote values that start with '!', e.g. \"!foo\""
            self.diags.error(self.loc(node), f"unsupported YAML tag '{tag}'", hint)
            text = f"{tag} {text}" if text else tag  # what the user probably meant
            value, loc, start = text, self.loc(node), node.start_mark.index
        elif node.style is None and tag != "!!str":
            value = _resolve_plain(text)
        return YScalar(value, text, loc, node.style, self.src, (start, end))

    def skip_properties(self, start: int, end: int) -> tuple[int, str | None]:
        """Step over a scalar's anchor (``&a``) and tag (``!!str``); return
        where its content starts and the tag as written."""
        text, tag = self.src.text, None
        while start < end and text[start] in "&!":
            stop = start
            while stop < end and not text[stop].isspace():
                stop += 1
            if text[start] == "!":
                tag = text[start:stop]
            start = stop
            while start < end and text[start].isspace():
                start += 1
        return start, tag

    def mapping(self, node: yaml.MappingNode) -> YMap:
        entries: dict[str, YEntry] = {}
        for key_node, value_node in node.value:
            key_loc = self.loc(key_node)
            value = self.build(value_node)
            if not isinstance(key_node, yaml.ScalarNode):
                self.diags.error(key_loc, "mapping keys must be plain strings")
                continue
            key = str(key_node.value)
            if key in entries:
                first = entries[key].key_loc
                self.diags.error(
                    key_loc, f"duplicate key '{key}' (first defined at line {first.line})"
                )
                continue
            entries[key] = YEntry(key, key_loc, value)
        return YMap(entries, self.loc(node))


def parse_yaml(text: str, file: str, diags: Diagnostics) -> YNode | None:
    """Parse one YAML document. Problems go to ``diags``; returns None when
    the text is not YAML at all (or is empty)."""
    src = _Source(file, text)
    try:
        node = _compose(text)
    except _LimitHit as exc:
        loc = SourceLoc(file, exc.line + 1, exc.column + 1)
        diags.error(loc, exc.message, exc.hint)
        return None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = SourceLoc(file, mark.line + 1, mark.column + 1) if mark else SourceLoc(file, 1, 1)
        problem = exc.problem or exc.context or "malformed YAML"
        hint = None
        if exc.context and exc.problem and exc.context_mark is not None:
            c = exc.context_mark
            hint = f"{exc.context} that starts at line {c.line + 1}, column {c.column + 1}"
        if "alias" in f"{exc.context} {exc.problem}":
            hint = "quote values that start with '*', e.g. \"*!malloc\""
        diags.error(loc, f"invalid YAML: {problem}", hint)
        return None
    except yaml.reader.ReaderError as exc:
        diags.error(src.loc(exc.position), f"invalid YAML: {exc.reason}")
        return None
    if node is None:
        diags.error(SourceLoc(file, 1, 1), "empty probe-set file", "start with 'version: 1'")
        return None
    return _Builder(src, diags).build(node)


def to_data(node: YNode) -> Any:
    """Plain Python data (dict/list/scalars) from a node tree, e.g. for JSON Schema."""
    if isinstance(node, YMap):
        return {k: to_data(e.value) for k, e in node.entries.items()}
    if isinstance(node, YSeq):
        return [to_data(item) for item in node.items]
    return node.value
