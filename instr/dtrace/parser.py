"""Parser of the D subset: clauses ``probe[, probe...] [/predicate/] { statements }``.

Precedence follows C and D (lowest first): assignment, ``?:``, ``||``, ``^^``,
``&&``, ``|``, ``^``, ``&``, equality, relational, shifts, additive,
multiplicative, unary, postfix. Inside a predicate a bare ``/`` ends it
(write ``(a / b)`` to divide there), as in DTrace.
"""

from __future__ import annotations

from instr.dtrace import ast as A
from instr.dtrace.errors import Loc, Src, fail
from instr.dtrace.lexer import Lexer, Token

_BINARY: list[tuple[str, ...]] = [
    ("||",),
    ("^^",),
    ("&&",),
    ("|",),
    ("^",),
    ("&",),
    ("==", "!="),
    ("<", "<=", ">", ">="),
    ("<<", ">>"),
    ("+", "-"),
    ("*", "/", "%"),
]
_ASSIGN = ("=", "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "<<=", ">>=")
# Valid D outside the subset, reported by name.
_DECLARATIONS = {
    "inline": "inline declarations are not supported",
    "translator": "translators are not supported",
    "typedef": "typedef is not supported",
    "struct": "struct declarations are not supported",
    "union": "union declarations are not supported",
    "enum": "enum declarations are not supported",
    "int": "variable declarations are not supported",
    "string": "variable declarations are not supported",
    "uint64_t": "variable declarations are not supported",
    "int64_t": "variable declarations are not supported",
    "self": "thread-local variable declarations are not supported",
    "this": "clause-local variable declarations are not supported",
    "provider": "USDT provider definitions are not supported",
}
_TYPE_WORDS = {
    "int", "uint", "long", "short", "char", "unsigned", "signed", "string", "void",
    "int8_t", "int16_t", "int32_t", "int64_t", "uint8_t", "uint16_t", "uint32_t",
    "uint64_t", "uintptr_t", "size_t", "ssize_t", "struct", "union", "enum",
}  # fmt: skip


def parse(src: Src) -> A.Program:
    return _Parser(src).program()


class _Parser:
    def __init__(self, src: Src) -> None:
        self.lex = Lexer(src)
        self.tok: Token | None = None  # one token of look-ahead (ordinary tokens only)
        self.pred_depth: int | None = None  # paren depth inside a predicate

    # -- tokens ------------------------------------------------------------

    def peek(self) -> Token:
        if self.tok is None:
            self.tok = self.lex.next()
        return self.tok

    def take(self) -> Token:
        t = self.peek()
        self.tok = None
        return t

    def accept(self, text: str) -> Token | None:
        t = self.peek()
        if t.kind == "punct" and t.text == text:
            return self.take()
        return None

    def expect(self, text: str, what: str, hint: str | None = None) -> Token:
        t = self.peek()
        if t.kind == "punct" and t.text == text:
            return self.take()
        raise fail(t.loc, f"expected '{text}' {what}, found {_show(t)}", hint)

    # -- program -------------------------------------------------------------

    def program(self) -> A.Program:
        clauses: list[A.Clause] = []
        options: list[tuple[str, str | None, Loc]] = []
        while not self.lex.at_eof():
            if self.lex.text.startswith("#", self.lex.pos):
                options.append(self.pragma())
                continue
            word = self._word_ahead()
            if word in _DECLARATIONS and self._declaration_ahead(word):
                raise fail(self.lex.loc(), _DECLARATIONS[word], "write probe clauses only")
            clauses.append(self.clause())
        if not clauses:
            raise fail(self.lex.loc(), "the program has no probe clauses",
                       "e.g. instr dtrace -n 'BEGIN { printf(\"hello\\n\"); exit(0); }'")  # fmt: skip
        return A.Program(tuple(clauses), tuple(options))

    def _word_ahead(self) -> str:
        text, i = self.lex.text, self.lex.pos
        j = i
        while j < len(text) and (text[j].isalnum() or text[j] == "_"):
            j += 1
        return text[i:j]

    def _declaration_ahead(self, word: str) -> bool:
        """``self int x;``, ``inline int x = 1;``: a word then a space (not ``:``)."""
        rest = self.lex.text[self.lex.pos + len(word) :]
        return rest[:1] in (" ", "\t") or (word in ("self", "this") and rest.startswith("->"))

    def pragma(self) -> tuple[str, str | None, Loc]:
        loc, line = self.lex.rest_of_line()
        words = line.split()
        if words[:3] != ["#pragma", "D", "option"] or len(words) != 4:
            raise fail(loc, f"unsupported directive '{line.strip()}'",
                       "only '#pragma D option NAME[=VALUE]' is supported")  # fmt: skip
        name, _, value = words[3].partition("=")
        return name, value or None, loc

    def clause(self) -> A.Clause:
        start = self.lex.desc()
        probes = [A.ProbeDesc(start.loc, start.text)]
        self.lex.skip_space()
        while self.lex.text.startswith(",", self.lex.pos):
            self.lex.next()
            t = self.lex.desc()
            probes.append(A.ProbeDesc(t.loc, t.text))
            self.lex.skip_space()
        predicate = None
        if self.accept("/"):
            self.pred_depth = 0
            predicate = self.expr()
            self.pred_depth = None
            self.expect("/", "to end the predicate", "a predicate is written /condition/")
        t = self.peek()
        if t.kind == "eof":  # dtrace -n 'syscall::read:entry': the default action
            return A.Clause(start.loc, tuple(probes), predicate, ())
        if not t.is_("{"):
            raise fail(t.loc, f"expected '{{' to start the clause's actions, found {_show(t)}",
                       "write probe /predicate/ { actions }")  # fmt: skip
        self.take()
        body = self.statements()
        if self.tok is not None:  # the parser looked past '}' with ordinary rules: cannot be
            raise fail(self.tok.loc, "internal: look-ahead after a clause")
        return A.Clause(start.loc, tuple(probes), predicate, tuple(body))

    def statements(self) -> list[A.Stmt]:
        body: list[A.Stmt] = []
        while True:
            t = self.peek()
            if t.is_("}"):
                self.take()
                return body
            if t.kind == "eof":
                raise fail(t.loc, "the clause is not closed: expected '}'")
            if t.is_(";"):
                self.take()
                continue
            if t.kind == "ident" and t.text in ("if", "else", "for", "while", "unroll"):
                raise fail(t.loc, f"'{t.text}' statements are not supported",
                           "use a predicate /.../ or the ?: operator")  # fmt: skip
            body.append(self.statement())
            t = self.peek()
            if not (t.is_(";") or t.is_("}")):
                raise fail(t.loc, f"expected ';' or '}}' after a statement, found {_show(t)}")

    def statement(self) -> A.Stmt:
        start = self.peek().loc
        e = self.ternary()
        t = self.peek()
        if t.kind == "punct" and t.text in _ASSIGN:
            self.take()
            if isinstance(e, A.Macro) and not e.name.isdigit():
                raise fail(e.loc, f"${e.name} is a macro, not a variable",
                           f"bpftrace's scratch variable ${e.name} is this->{e.name} in D")  # fmt: skip
            if not isinstance(e, (A.AggRef, A.Var, A.Ident)):
                raise fail(t.loc, "only a variable or an aggregation can be assigned to")
            if isinstance(e, A.AggRef) and t.text != "=":
                raise fail(t.loc, f"aggregations are assigned with '=', not '{t.text}'",
                           "write @name[keys] = count()")  # fmt: skip
            return A.Assign(t.loc, e, t.text, self.expr())
        if t.kind == "punct" and t.text in ("++", "--"):
            raise fail(t.loc, f"'{t.text}' is not supported", "write x = x + 1")
        return A.ExprStmt(start, e)

    # -- expressions -----------------------------------------------------------

    def expr(self) -> A.Expr:
        e = self.ternary()
        t = self.peek()
        if t.kind == "punct" and t.text in _ASSIGN:
            raise fail(t.loc, "an assignment is a statement here, not a value",
                       "use '==' to compare")  # fmt: skip
        if t.is_(","):
            return e
        return e

    def ternary(self) -> A.Expr:
        cond = self.binary(0)
        t = self.peek()
        if t.is_("?"):
            self.take()
            then = self.ternary()
            self.expect(":", "in the ?: operator")
            other = self.ternary()
            return A.Ternary(t.loc, cond, then, other)
        return cond

    def binary(self, level: int) -> A.Expr:
        if level == len(_BINARY):
            return self.unary()
        left = self.binary(level + 1)
        while True:
            t = self.peek()
            if t.kind != "punct" or t.text not in _BINARY[level]:
                return left
            if t.text == "/" and self.pred_depth == 0:
                return left  # the end of a predicate
            self.take()
            right = self.binary(level + 1)
            left = A.Binary(t.loc, t.text, left, right)

    def unary(self) -> A.Expr:
        t = self.peek()
        if t.kind == "punct" and t.text in ("!", "~", "-", "+"):
            self.take()
            arg = self.unary()
            if t.text == "-" and isinstance(arg, A.Int):
                return A.Int(t.loc, -arg.value)
            return arg if t.text == "+" else A.Unary(t.loc, t.text, arg)
        if t.kind == "punct" and t.text in ("*", "&"):
            raise fail(t.loc, "pointer dereference is not supported" if t.text == "*"
                       else "taking an address is not supported",
                       "read memory with copyinstr() or str()")  # fmt: skip
        if t.kind == "punct" and t.text in ("++", "--"):
            raise fail(t.loc, f"'{t.text}' is not supported", "write x = x + 1")
        if t.is_("(") and self._cast_ahead():
            raise fail(t.loc, "casts are not supported", "values are 64-bit integers or strings")
        if t.kind == "ident" and t.text == "stringof":  # an operator: stringof x, stringof(x)
            self.take()
            return A.Call(t.loc, "stringof", (self.unary(),))
        if t.kind == "ident" and t.text in ("sizeof", "offsetof", "xlate"):
            raise fail(t.loc, f"{t.text} is not supported")
        return self.postfix(self.primary())

    def _cast_ahead(self) -> bool:
        text, i = self.lex.text, self.lex.pos
        while i < len(text) and text[i] in " \t":
            i += 1
        j = i
        while j < len(text) and (text[j].isalnum() or text[j] == "_"):
            j += 1
        return text[i:j] in _TYPE_WORDS

    def primary(self) -> A.Expr:
        t = self.take()
        if t.kind == "int":
            return A.Int(t.loc, t.value)
        if t.kind == "str":
            return A.Str(t.loc, t.text)
        if t.kind == "macro":
            return A.Macro(t.loc, t.text)
        if t.kind == "agg":
            if self.peek().is_("["):
                self.take()
                keys = self.arglist("]")
                return A.AggRef(t.loc, t.text, tuple(keys), True)
            return A.AggRef(t.loc, t.text)
        if t.kind == "ident":
            if t.text in ("self", "this"):
                self.expect("->", f"after '{t.text}'", f"write {t.text}->name")
                name = self.take()
                if name.kind != "ident":
                    raise fail(name.loc, f"expected a variable name after '{t.text}->'")
                return A.Var(t.loc, t.text, name.text)
            if self.peek().is_("("):
                self.take()
                return A.Call(t.loc, t.text, tuple(self.arglist(")")))
            return A.Ident(t.loc, t.text)
        if t.is_("("):
            saved, self.pred_depth = self.pred_depth, None
            e = self.expr()
            self.pred_depth = saved
            self.expect(")", "to close '('")
            return e
        raise fail(t.loc, f"expected an expression, found {_show(t)}")

    def arglist(self, close: str) -> list[A.Expr]:
        saved, self.pred_depth = self.pred_depth, None
        args: list[A.Expr] = []
        if not self.accept(close):
            while True:
                args.append(self.expr())
                if self.accept(close):
                    break
                self.expect(",", f"or '{close}' in the argument list")
        self.pred_depth = saved
        return args

    def postfix(self, e: A.Expr) -> A.Expr:
        t = self.peek()
        if t.is_("["):
            raise fail(t.loc, "arrays are not supported", "use an aggregation @name[key]")
        if t.is_("->") or t.is_("."):
            if isinstance(e, A.Ident) and e.name == "args":
                raise fail(e.loc, "args->NAME is bpftrace's; D has arg0, arg1...",
                           "e.g. tracepoint:syscalls:sys_enter_openat's args->filename "
                           "is copyinstr(arg1)")  # fmt: skip
            raise fail(t.loc, "struct member access is not supported")
        if t.is_("(") and not isinstance(e, A.Call):
            raise fail(t.loc, "only named functions can be called")
        return e


def _show(t: Token) -> str:
    if t.kind == "eof":
        return "the end of the program"
    if t.kind == "str":
        return "a string"
    if t.kind == "macro":
        return f"'${t.text}'"
    if t.kind == "agg":
        return f"'@{t.text}'"
    return f"'{t.text}'"
