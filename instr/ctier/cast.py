"""A small C syntax tree: the emitter builds these, ``render`` prints C.

Only what the fast tier generates: integer expressions, declarations,
assignments, calls, ``if`` and functions. Rendering adds the parentheses C's
precedence needs and no more, so generated code reads like written code.
"""

from __future__ import annotations

from dataclasses import dataclass

# C precedence, higher binds tighter.
_PREC: dict[str, int] = {
    "||": 3,
    "&&": 4,
    "|": 5,
    "^": 6,
    "&": 7,
    "==": 8,
    "!=": 8,
    "<": 9,
    "<=": 9,
    ">": 9,
    ">=": 9,
    "<<": 10,
    ">>": 10,
    "+": 11,
    "-": 11,
    "*": 12,
    "/": 12,
    "%": 12,
}
_UNARY_PREC = 14
_POSTFIX_PREC = 15
INDENT = "  "


class Expr:
    prec = _POSTFIX_PREC

    def render(self) -> str:
        raise NotImplementedError

    def wrap(self, outer: int, right: bool = False) -> str:
        """This expression as an operand of an operator of precedence ``outer``."""
        inner = self.render()
        if self.prec < outer or (right and self.prec == outer):
            return f"({inner})"
        return inner


@dataclass(frozen=True)
class Int(Expr):
    value: int
    unsigned: bool = False

    @property
    def prec(self) -> int:  # type: ignore[override]
        return _UNARY_PREC if self.value < 0 else _POSTFIX_PREC

    def render(self) -> str:
        if self.value == -(2**63):
            return "(-9223372036854775807LL - 1)"  # the literal itself would overflow
        if -(2**31) < self.value < 2**31:
            return f"{self.value}U" if self.unsigned else str(self.value)
        suffix = "ULL" if self.unsigned or self.value >= 2**63 else "LL"
        return f"{self.value}{suffix}"


@dataclass(frozen=True)
class Var(Expr):
    name: str

    def render(self) -> str:
        return self.name


@dataclass(frozen=True)
class Cast(Expr):
    ctype: str
    arg: Expr
    prec = _UNARY_PREC

    def render(self) -> str:
        return f"({self.ctype}) {self.arg.wrap(_UNARY_PREC)}"


@dataclass(frozen=True)
class Unary(Expr):
    op: str  # - ~ ! & *
    arg: Expr
    prec = _UNARY_PREC

    def render(self) -> str:
        inner = self.arg.wrap(_UNARY_PREC)
        if inner[:1] in ("-", "+", "&") and inner[:1] == self.op[-1:]:
            inner = f"({inner})"  # "- -x" must not become the operator "--"
        return f"{self.op}{inner}"


@dataclass(frozen=True)
class Bin(Expr):
    op: str
    left: Expr
    right: Expr

    @property
    def prec(self) -> int:  # type: ignore[override]
        return _PREC[self.op]

    def render(self) -> str:
        p = _PREC[self.op]
        return f"{self.left.wrap(p)} {self.op} {self.right.wrap(p, right=True)}"


@dataclass(frozen=True)
class Call(Expr):
    fn: str
    args: tuple[Expr, ...] = ()

    def render(self) -> str:
        return f"{self.fn} ({', '.join(a.render() for a in self.args)})"


@dataclass(frozen=True)
class Index(Expr):
    base: Expr
    index: Expr

    def render(self) -> str:
        return f"{self.base.wrap(_POSTFIX_PREC)}[{self.index.render()}]"


@dataclass(frozen=True)
class Field(Expr):
    base: Expr
    name: str
    arrow: bool = True

    def render(self) -> str:
        return f"{self.base.wrap(_POSTFIX_PREC)}{'->' if self.arrow else '.'}{self.name}"


def addr(e: Expr) -> Expr:
    return Unary("&", e)


# ---------------------------------------------------------------- statements


class Stmt:
    def lines(self, depth: int) -> list[str]:
        raise NotImplementedError


@dataclass(frozen=True)
class Decl(Stmt):
    ctype: str
    name: str
    init: Expr | None = None
    count: int | None = None  # an array of this many elements

    def lines(self, depth: int) -> list[str]:
        arr = f"[{self.count}]" if self.count is not None else ""
        sep = "" if self.ctype.endswith("*") else " "
        init = f" = {self.init.render()}" if self.init is not None else ""
        return [f"{INDENT * depth}{self.ctype}{sep}{self.name}{arr}{init};"]


@dataclass(frozen=True)
class Assign(Stmt):
    target: Expr
    value: Expr

    def lines(self, depth: int) -> list[str]:
        return [f"{INDENT * depth}{self.target.render()} = {self.value.render()};"]


@dataclass(frozen=True)
class Do(Stmt):
    """An expression statement (a call, a macro)."""

    expr: Expr

    def lines(self, depth: int) -> list[str]:
        return [f"{INDENT * depth}{self.expr.render()};"]


@dataclass(frozen=True)
class Return(Stmt):
    value: Expr | None = None

    def lines(self, depth: int) -> list[str]:
        v = f" {self.value.render()}" if self.value is not None else ""
        return [f"{INDENT * depth}return{v};"]


@dataclass(frozen=True)
class If(Stmt):
    cond: Expr
    then: tuple[Stmt, ...]
    orelse: tuple[Stmt, ...] = ()

    def lines(self, depth: int) -> list[str]:
        pad = INDENT * depth
        out = [f"{pad}if ({self.cond.render()})", f"{pad}{{"]
        for s in self.then:
            out += s.lines(depth + 1)
        out.append(f"{pad}}}")
        if self.orelse:
            out += [f"{pad}else", f"{pad}{{"]
            for s in self.orelse:
                out += s.lines(depth + 1)
            out.append(f"{pad}}}")
        return out


@dataclass(frozen=True)
class Func:
    ret: str
    name: str
    params: tuple[str, ...]  # each "type name", or one macro
    body: tuple[Stmt, ...]

    def render(self) -> str:
        out = [self.ret, f"{self.name} ({', '.join(self.params) or 'void'})", "{"]
        for s in self.body:
            out += s.lines(1)
        out.append("}")
        return "\n".join(out)


@dataclass(frozen=True)
class Extern:
    """A symbol the agent binds to memory it allocated (``extern T name;``)."""

    ctype: str
    name: str

    def render(self) -> str:
        return f"extern {self.ctype} {self.name};"


@dataclass(frozen=True)
class Struct:
    """``typedef struct { fields } name;``; each field is (type, name)."""

    name: str
    fields: tuple[tuple[str, str], ...]

    def render(self) -> str:
        body = [f"{INDENT}{t} {n};" for t, n in self.fields] or [f"{INDENT}guint64 unused;"]
        return "\n".join(["typedef struct", "{", *body, f"}} {self.name};"])


TopLevel = Func | Extern | Struct


def unit(items: list[TopLevel]) -> str:
    return "\n\n".join(i.render() for i in items) + "\n"
