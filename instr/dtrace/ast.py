"""The D syntax tree. Every node carries the location of its first token."""

from __future__ import annotations

from dataclasses import dataclass

from instr.dtrace.errors import Loc

__all__ = ["Loc"]


@dataclass(frozen=True)
class Int:
    loc: Loc
    value: int


@dataclass(frozen=True)
class Str:
    loc: Loc
    value: str


@dataclass(frozen=True)
class Ident:
    """A built-in variable (``arg0``, ``execname``...) or a global variable."""

    loc: Loc
    name: str


@dataclass(frozen=True)
class Macro:
    """``$target``, ``$pid``, ``$1``..."""

    loc: Loc
    name: str


@dataclass(frozen=True)
class Var:
    """``self->x`` (scope "self"), ``this->x`` (scope "this")."""

    loc: Loc
    scope: str
    name: str


@dataclass(frozen=True)
class AggRef:
    """``@name`` or ``@name[keys]`` (``@`` alone: name "")."""

    loc: Loc
    name: str
    keys: tuple[Expr, ...] = ()
    indexed: bool = False


@dataclass(frozen=True)
class Unary:
    loc: Loc
    op: str
    arg: Expr


@dataclass(frozen=True)
class Binary:
    loc: Loc  # the operator's location
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Ternary:
    loc: Loc
    cond: Expr
    then: Expr
    other: Expr


@dataclass(frozen=True)
class Call:
    loc: Loc
    name: str
    args: tuple[Expr, ...]


@dataclass(frozen=True)
class Entry:
    """The value ``expr`` had at the entry of this call (written ``self->x`` after
    ``self->x = expr`` at entry; see instr.dtrace.pairing)."""

    loc: Loc
    expr: Expr


@dataclass(frozen=True)
class Elapsed:
    """``timestamp - self->ts`` after ``self->ts = timestamp`` at entry: the call's duration."""

    loc: Loc


Expr = Int | Str | Ident | Macro | Var | AggRef | Unary | Binary | Ternary | Call | Entry | Elapsed


@dataclass(frozen=True)
class Assign:
    loc: Loc  # the operator's location
    target: Expr  # AggRef, Var or Ident
    op: str  # "=", "+=", ...
    value: Expr


@dataclass(frozen=True)
class ExprStmt:
    loc: Loc
    expr: Expr


Stmt = Assign | ExprStmt


@dataclass(frozen=True)
class ProbeDesc:
    loc: Loc
    text: str


@dataclass(frozen=True)
class Clause:
    loc: Loc
    probes: tuple[ProbeDesc, ...]
    predicate: Expr | None
    body: tuple[Stmt, ...]


@dataclass(frozen=True)
class Program:
    clauses: tuple[Clause, ...]
    options: tuple[tuple[str, str | None, Loc], ...]  # #pragma D option NAME[=VALUE]
