"""The predicate language: a whitelisted subset of Python expressions.

``where: "size > 1024 and path.startswith('/etc')"`` is parsed with ``ast``
and compiled to the ``Expr`` JSON tree of ``agents/src/protocol.ts``. Allowed:
capture names, ``tid``, int/str/bool constants, ``and``/``or``/``not``,
comparisons (chained too), ``+ - * // % & | ^ << >>``, unary ``-``/``~``,
``in`` (substring, or membership in a literal tuple/list), ``s.startswith()``,
``s.endswith()`` and ``len(s)``. Everything else is a diagnostic.

Values have one of two kinds: integers (ints, pointers, bools, durations,
``tid``) and strings (``cstr`` captures and string constants).
"""

from __future__ import annotations

import ast
import io
import tokenize
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from instr.probes import limits
from instr.probes.diag import did_you_mean
from instr.probes.ir import Capture, Phase, Predicate

Kind = Literal["int", "str", "err"]
Expr = dict[str, Any]

# JSON numbers are exact up to 2**53-1 in the agent (JSON.parse); larger
# constants travel as decimal text in {"op": "int"}. Values are 64-bit.
MAX_CONST = 2**53 - 1
INT_RANGE = (-(2**63), 2**64 - 1)

_BINOPS: dict[type[ast.operator], str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.LShift: "<<",
    ast.RShift: ">>",
}
_CMPOPS: dict[type[ast.cmpop], str] = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
}
_UNSUPPORTED: dict[type[ast.AST], str] = {
    ast.Attribute: "attribute access",
    ast.Subscript: "subscripts",
    ast.Slice: "slices",
    ast.Lambda: "lambda expressions",
    ast.JoinedStr: "f-strings",
    ast.IfExp: "conditional expressions",
    ast.NamedExpr: "assignment expressions",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.Dict: "dict literals",
    ast.Set: "set literals",
    ast.List: "list literals",
    ast.Tuple: "tuples",
    ast.Starred: "starred expressions",
    ast.Await: "await expressions",
    ast.Yield: "yield expressions",
    ast.YieldFrom: "yield expressions",
}


@dataclass(frozen=True)
class CapInfo:
    """A capture as the predicate sees it."""

    phase: Phase
    index: int  # position in that phase's capture list; -1: the capture itself is in error
    type: str  # int type, "cstr", "bytes", "backtrace" or "duration"

    @property
    def kind(self) -> Kind | None:
        if self.index < 0:
            return "err"
        if self.type == "cstr":
            return "str"
        if self.type in ("bytes", "backtrace"):
            return None
        return "int"


@dataclass(frozen=True)
class PredicateError:
    offset: int  # character offset into the predicate source
    message: str
    hint: str | None = None


@dataclass
class _Compiler:
    source: str
    env: Mapping[str, CapInfo]
    errors: list[PredicateError] = field(default_factory=list)
    phases: set[Phase] = field(default_factory=set)

    def offset(self, node: ast.AST | int) -> int:
        col: int = node if isinstance(node, int) else getattr(node, "col_offset", 0)
        return len(self.source.encode()[:col].decode(errors="ignore"))

    def fail(self, node: ast.AST | int, message: str, hint: str | None = None) -> tuple[Expr, Kind]:
        self.errors.append(PredicateError(self.offset(node), message, hint))
        return {}, "err"

    def want(self, node: ast.AST, kind: Kind, got: Kind, what: str) -> None:
        if got != "err" and kind != got:
            word = "an integer" if kind == "int" else "a string"
            have = "a string" if got == "str" else "an integer"
            self.errors.append(
                PredicateError(self.offset(node), f"{what} needs {word}, not {have}")
            )

    def expr(self, node: ast.expr) -> tuple[Expr, Kind]:
        if isinstance(node, ast.Constant):
            return self.constant(node)
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.BoolOp):
            op = "and" if isinstance(node.op, ast.And) else "or"
            args = [self.operand(v, f"'{op}'") for v in node.values]
            return {"op": op, "args": args}, "int"
        if isinstance(node, ast.UnaryOp):
            return self.unary(node)
        if isinstance(node, ast.BinOp):
            return self.binop(node)
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        what = _UNSUPPORTED.get(type(node), f"'{type(node).__name__}' expressions")
        return self.fail(node, f"{what} cannot be used in predicates")

    def operand(self, node: ast.expr, what: str) -> Expr:
        e, kind = self.expr(node)
        if kind == "str":
            self.errors.append(
                PredicateError(
                    self.offset(node),
                    f"{what} needs a condition, not a string",
                    'compare the string, e.g. len(s) > 0 or s == "x"',
                )
            )
        return e

    def constant(self, node: ast.Constant) -> tuple[Expr, Kind]:
        v = node.value
        if isinstance(v, bool):
            return {"op": "const", "value": v}, "int"
        if isinstance(v, int):
            if not INT_RANGE[0] <= v <= INT_RANGE[1]:
                return self.fail(
                    node,
                    f"integer constant {v:#x} does not fit in 64 bits",
                    "predicate values are 64-bit integers",
                )
            if abs(v) > MAX_CONST:
                return {"op": "int", "value": str(v)}, "int"
            return {"op": "const", "value": v}, "int"
        if isinstance(v, str):
            return {"op": "const", "value": v}, "str"
        what = {float: "floating-point numbers", bytes: "bytes literals"}.get(type(v))
        if v is None:
            return self.fail(node, "None cannot be used in predicates")
        return self.fail(node, f"{what or 'this constant'} cannot be used in predicates")

    def name(self, node: ast.Name) -> tuple[Expr, Kind]:
        if node.id == "tid":
            return {"op": "tid"}, "int"
        info = self.env.get(node.id)
        if info is None:
            names = [*self.env, "tid"]
            hint = did_you_mean(node.id, names)
            if hint is None and not self.env:
                hint = "this probe captures nothing; add the value under 'capture:'"
            return self.fail(node, f"unknown name '{node.id}'", hint)
        kind = info.kind
        if kind is None:
            return self.fail(
                node, f"capture '{node.id}' ({info.type}) cannot be used in a predicate"
            )
        if kind == "err":
            return {}, "err"  # already reported where the capture is defined
        self.phases.add(info.phase)
        return {"op": "cap", "phase": info.phase, "index": info.index}, kind

    def unary(self, node: ast.UnaryOp) -> tuple[Expr, Kind]:
        if isinstance(node.op, ast.Not):
            return {"op": "not", "arg": self.operand(node.operand, "'not'")}, "int"
        if isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
            v = node.operand.value
            if isinstance(v, int) and not isinstance(v, bool):
                return self.constant(ast.Constant(-v, col_offset=node.col_offset))
        arg, kind = self.expr(node.operand)
        sym = {ast.USub: "-", ast.UAdd: "+", ast.Invert: "~"}[type(node.op)]
        self.want(node.operand, "int", kind, f"unary '{sym}'")
        if isinstance(node.op, ast.UAdd):
            return arg, "int"
        return {"op": "neg" if sym == "-" else "invert", "arg": arg}, "int"

    def binop(self, node: ast.BinOp) -> tuple[Expr, Kind]:
        op = _BINOPS.get(type(node.op))
        if op is None:
            hint = "use // for integer division" if isinstance(node.op, ast.Div) else None
            sym = {ast.Div: "/", ast.Pow: "**", ast.MatMult: "@"}.get(type(node.op), "?")
            return self.fail(node, f"operator '{sym}' cannot be used in predicates", hint)
        left, lk = self.expr(node.left)
        right, rk = self.expr(node.right)
        self.want(node.left, "int", lk, f"'{op}'")
        self.want(node.right, "int", rk, f"'{op}'")
        return {"op": op, "left": left, "right": right}, "int"

    def compare(self, node: ast.Compare) -> tuple[Expr, Kind]:
        if len(node.ops) > 1 and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
            return self.fail(node, "'in' cannot be chained with other comparisons")
        if isinstance(node.ops[0], (ast.In, ast.NotIn)):
            left, lk = self.expr(node.left)
            part = self.membership(left, lk, node.left, node.comparators[0])
            return (
                {"op": "not", "arg": part} if isinstance(node.ops[0], ast.NotIn) else part
            ), "int"
        parts: list[Expr] = []
        left_node = node.left
        left, lk = self.expr(left_node)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            sym = _CMPOPS.get(type(op))
            if sym is None:
                word = "is" if isinstance(op, ast.Is) else "is not"
                return self.fail(node, f"'{word}' cannot be used in predicates", "use '==' or '!='")
            right, rk = self.expr(right_node)
            if sym in ("==", "!="):
                if "err" not in (lk, rk) and lk != rk:
                    self.fail(right_node, f"cannot compare {_kind_name(lk)} with {_kind_name(rk)}")
            else:
                self.want(left_node, "int", lk, f"'{sym}'")
                self.want(right_node, "int", rk, f"'{sym}'")
            parts.append({"op": sym, "left": left, "right": right})
            left, lk, left_node = right, rk, right_node
        if len(parts) == 1:
            return parts[0], "int"
        return {"op": "and", "args": parts}, "int"

    def membership(self, needle: Expr, nk: Kind, needle_node: ast.expr, hay: ast.expr) -> Expr:
        if isinstance(hay, (ast.Tuple, ast.List)):
            options = [self.expr(item) for item in hay.elts]
            if not options:
                self.fail(hay, "'in' needs at least one value")
            for item, (_, kind) in zip(hay.elts, options, strict=True):
                if "err" not in (nk, kind) and kind != nk:
                    self.fail(item, f"cannot compare {_kind_name(nk)} with {_kind_name(kind)}")
            eqs: list[Expr] = [{"op": "==", "left": needle, "right": e} for e, _ in options]
            return eqs[0] if len(eqs) == 1 else {"op": "or", "args": eqs}
        haystack, hk = self.expr(hay)
        self.want(needle_node, "str", nk, "'in'")
        self.want(hay, "str", hk, "'in'")
        return {"op": "in", "needle": needle, "haystack": haystack}

    def call(self, node: ast.Call) -> tuple[Expr, Kind]:
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            return self.fail(node, "keyword and starred arguments cannot be used in predicates")
        func = node.func
        if isinstance(func, ast.Name):
            if func.id != "len":
                return self.fail(
                    func,
                    f"function '{func.id}' cannot be used in predicates",
                    "the only function is len()",
                )
            if len(node.args) != 1:
                return self.fail(node, "len() takes exactly one argument")
            arg, kind = self.expr(node.args[0])
            self.want(node.args[0], "str", kind, "len()")
            return {"op": "call", "fn": "len", "args": [arg]}, "int"
        if isinstance(func, ast.Attribute):
            if func.attr not in ("startswith", "endswith"):
                hint = did_you_mean(func.attr, ("startswith", "endswith"))
                at = (func.end_col_offset or 0) - len(func.attr.encode())
                return self.fail(
                    at,
                    f"method '{func.attr}' cannot be used in predicates",
                    hint or "the only methods are startswith() and endswith()",
                )
            if len(node.args) != 1:
                return self.fail(node, f"{func.attr}() takes exactly one argument")
            target, tk = self.expr(func.value)
            arg, ak = self.expr(node.args[0])
            self.want(func.value, "str", tk, f"{func.attr}()")
            self.want(node.args[0], "str", ak, f"{func.attr}()")
            return {"op": "call", "fn": func.attr, "args": [target, arg]}, "int"
        return self.fail(node, "only len(), startswith() and endswith() can be called")


def capture_env(
    entry: Sequence[Capture], exit_: Sequence[Capture], broken: Iterable[str] = ()
) -> dict[str, CapInfo]:
    """What a predicate over a probe's captures may name: each capture by its
    phase and position; ``broken`` ones (in error already) by name only."""
    env = {name: CapInfo("entry", -1, "") for name in broken}
    for phase, caps in (("entry", entry), ("exit", exit_)):
        for i, c in enumerate(caps):
            env[c.name] = CapInfo("entry" if phase == "entry" else "exit", i, c.type)
    return env


def _kind_name(kind: Kind) -> str:
    return "a string" if kind == "str" else "an integer"


def compile_predicate(
    source: str, env: Mapping[str, CapInfo], *, entry_hook: bool = True
) -> tuple[Predicate | None, list[PredicateError]]:
    """Compile ``source`` against the probe's captures.

    The phase is ``entry`` when the probe hooks entry and the predicate reads
    only entry captures (or ``tid`` and constants), else ``exit``.
    """
    text = source.replace("\r", " ").replace("\n", " ")
    if not text.strip():
        return None, [PredicateError(0, "empty predicate")]
    too_big = _oversized(text)
    if too_big is not None:
        return None, [too_big]
    try:
        with warnings.catch_warnings():  # "invalid decimal literal" and the like: not for users
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(text, mode="eval")
    except (RecursionError, MemoryError):
        return None, [_too_deep(0)]
    except ValueError as exc:  # a NUL character, on some Python versions
        return None, [PredicateError(0, f"invalid predicate: {exc}")]
    except SyntaxError as exc:
        offset = min(max((exc.offset or 1) - 1, 0), len(text))
        hint = None
        if text[offset : offset + 1] == "=" and text[offset + 1 : offset + 2] != "=":
            hint = "use '==' to compare"
        return None, [PredicateError(offset, f"invalid predicate: {exc.msg}", hint)]
    c = _Compiler(text, env)
    too_big = _measure(c, tree.body)
    if too_big is not None:
        return None, [too_big]
    expr, kind = c.expr(tree.body)
    if kind == "str":
        c.errors.append(
            PredicateError(
                c.offset(tree.body),
                "a predicate must be a condition, not a string",
                'compare the string, e.g. len(s) > 0 or s == "x"',
            )
        )
    if c.errors:
        return None, sorted(c.errors, key=lambda e: e.offset)
    phase: Phase = "entry" if entry_hook and "exit" not in c.phases else "exit"
    return Predicate(source, phase, expr), []


def _too_deep(offset: int) -> PredicateError:
    return PredicateError(
        offset,
        f"predicate nests deeper than {limits.MAX_PREDICATE_DEPTH} levels",
        "each operator nests one level (a + b + c nests two); split the condition",
    )


def _oversized(text: str) -> PredicateError | None:
    """The first limit the text breaks before it is parsed: its length, or a
    decimal constant longer than any 64-bit value (never converted)."""
    if len(text) > limits.MAX_PREDICATE_CHARS:
        return PredicateError(
            limits.MAX_PREDICATE_CHARS,
            f"predicate is longer than {limits.MAX_PREDICATE_CHARS} characters",
            "a predicate is one short condition; filter further after the run",
        )
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.NUMBER and limits.decimal_too_long(tok.string.replace("_", "")):
                return PredicateError(
                    tok.start[1],
                    f"integer constant of {len(tok.string)} digits does not fit in 64 bits",
                    "predicate values are 64-bit integers",
                )
    except (tokenize.TokenError, SyntaxError):
        pass  # the parser reports it, located
    return None


def _measure(c: _Compiler, root: ast.expr) -> PredicateError | None:
    """Count the terms and nesting of a parsed predicate without recursing
    (compiling it, and evaluating it in the agent, recurse)."""
    terms = 0
    stack: list[tuple[ast.AST, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limits.MAX_PREDICATE_DEPTH:
            return _too_deep(c.offset(node))
        if isinstance(node, (ast.Name, ast.Constant)):
            terms += 1
            if terms > limits.MAX_PREDICATE_TERMS:
                return PredicateError(
                    c.offset(node),
                    f"predicate has more than {limits.MAX_PREDICATE_TERMS} terms",
                    "names and constants count; split the condition",
                )
        nested = isinstance(node, (ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Compare, ast.Call))
        children = [n for n in ast.iter_child_nodes(node) if isinstance(n, ast.expr)]
        for child in reversed(children):  # left to right: the first term past the limit
            stack.append((child, depth + 1 if nested else depth))
    return None
