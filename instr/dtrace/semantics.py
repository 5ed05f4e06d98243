"""Checks of a clause's statements against its probe: what each action may do where."""

from __future__ import annotations

from instr.dtrace import ast as A
from instr.dtrace.destructive import DESTRUCTIVE
from instr.dtrace.errors import fail
from instr.dtrace.printf import convs, parse_format
from instr.dtrace.probes import ProbeSpec
from instr.dtrace.values import BUILTINS, check_builtin

# Valid D, outside the subset, by name.
UNSUPPORTED = {
    "speculation": "speculation is not supported",
    "speculate": "speculation is not supported",
    "commit": "speculation is not supported",
    "discard": "speculation is not supported",
    "stack": "stack() is a kernel stack: instr traces user space (use ustack())",
    "jstack": "jstack() is not supported",
    "copyinto": "copyinto() is not supported",
    "system": "system() is not supported: instr does not run commands",
    "panic": "panic() is not supported",
    "breakpoint": "breakpoint() is not supported",
    "chill": "chill() is not supported",
    "freopen": "freopen() is not supported",
    "ftruncate": "ftruncate() is not supported",
    "setopt": "setopt() is not supported",
    "print": "print() is not supported: use printf() or trace()",
    "alloca": "alloca() is not supported",
    "bcopy": "bcopy() is not supported",
    "strjoin": "strjoin() is not supported yet",
    "substr": "substr() is not supported yet",
    "basename": "basename() is not supported yet",
    "dirname": "dirname() is not supported yet",
    "index": "index() is not supported yet",
    "rand": "rand() is not supported",
    "usym": "usym() is not supported yet",
    "ufunc": "ufunc() is not supported yet",
    "umod": "umod() is not supported yet",
    "uaddr": "uaddr() is not supported yet",
    "func": "func() is a kernel function: not supported",
    "sym": "sym() is a kernel function: not supported",
    "mod": "mod() is a kernel function: not supported",
    "kstack": "kstack() is a kernel function: not supported",
    "ntop": "ntop() is not supported yet",
    "join": "join() is not supported",
    "cat": "cat() is not supported",
}
ACTIONS = ("printf", "printa", "trace", "tracemem", "exit", "clear", "trunc", "normalize",
           "denormalize", *DESTRUCTIVE)  # fmt: skip
FUNCTIONS = ("copyinstr", "str", "strlen", "ustack", "copyin", "stringof")
# Where copyin()'s bytes may go: (function, argument index)
_BYTES_TAKERS = (("printf", -1), ("tracemem", 0), ("stringof", 0))


def start(e: A.Expr) -> A.Loc:
    """Where an expression starts (a binary or ?: node's own location is its operator)."""
    while isinstance(e, A.Binary | A.Ternary):
        e = e.left if isinstance(e, A.Binary) else e.cond
    return e.loc


def check_clause(clause: A.Clause, spec: ProbeSpec, macros: dict[str, str]) -> None:
    from instr.dtrace.compiler import walk

    nodes = [n for st in clause.body for n in walk(st)]
    if clause.predicate is not None:
        nodes += walk(clause.predicate)
    agg_values = {
        id(st.value)
        for st in clause.body
        if isinstance(st, A.Assign) and isinstance(st.target, A.AggRef)
    }
    for n in nodes:
        if isinstance(n, A.Macro) and n.name not in macros:
            hint = (
                "macro arguments $1, $2... follow the program on the command line; "
                "$target needs -p PID or -c CMD"
                if n.name.isdigit() or n.name in ("target", "pid")
                else f"bpftrace's scratch variable ${n.name} is this->{n.name} in D"
            )
            raise fail(n.loc, f"macro ${n.name} is not defined", hint)
        if isinstance(n, A.Ident) and n.name in BUILTINS:
            check_builtin(n, spec)
    if spec.kind == "profile":
        from instr.dtrace.profiling import check_profile_clause

        check_profile_clause(clause, spec)
        return
    for st in clause.body:
        if isinstance(st, A.ExprStmt):
            e = st.expr
            if not isinstance(e, A.Call):
                raise fail(e.loc, "this statement does nothing",
                           "a statement is an action (printf, trace...) or an assignment")  # fmt: skip
            _check_action(e, spec)
        elif isinstance(st.target, A.AggRef):
            if spec.is_host:
                raise fail(st.loc, f"aggregations cannot be updated in {spec.text} clauses",
                           "update them in pid or syscall clauses")  # fmt: skip
        elif isinstance(st.target, A.Var) and st.target.scope == "this":
            pass
    keys = {
        id(k)
        for st in clause.body
        if isinstance(st, A.Assign) and isinstance(st.target, A.AggRef)
        for k in st.target.keys
    }
    keys |= {  # ustack() as an action: the stack printed
        id(st.expr)
        for st in clause.body
        if not isinstance(st, A.Assign) and isinstance(st.expr, A.Call) and st.expr.name == "ustack"
    }
    _check_bytes(nodes)
    for n in nodes:
        if isinstance(n, A.Call) and n.name == "ustack":
            if id(n) not in keys:
                raise fail(n.loc, "ustack() is supported as an action and as an aggregation "
                           "key only", "e.g. ustack(); or @[ustack()] = count()")  # fmt: skip
            if len(n.args) > 1 or (n.args and not isinstance(n.args[0], A.Int)):
                raise fail(n.loc, "ustack() takes an optional constant depth",
                           "e.g. ustack(5)")  # fmt: skip
            continue
        if isinstance(n, A.Call) and id(n) not in agg_values:
            if n.name in UNSUPPORTED:
                raise fail(n.loc, UNSUPPORTED[n.name])
            if n.name in ("count", "sum", "min", "max", "avg", "stddev", "quantize",
                          "lquantize", "llquantize"):  # fmt: skip
                continue
            if n.name not in ACTIONS and n.name not in FUNCTIONS:
                raise fail(n.loc, f"unknown function '{n.name}'")
        if isinstance(n, A.AggRef) and n.indexed and not _in_assign_target(clause, n):
            raise fail(n.loc, "an aggregation's value cannot be read in an expression",
                       "print it with printa()")  # fmt: skip


def _check_bytes(nodes: list[A.Expr]) -> None:
    """copyin()'s bytes are printed (printf's %s, tracemem()) or made a string (stringof())."""
    takers: set[int] = set()
    for n in nodes:
        if isinstance(n, A.Call):
            for name, i in _BYTES_TAKERS:
                if n.name == name and n.args:
                    takers.update(id(a) for a in (n.args[1:] if i < 0 else n.args[i : i + 1]))
    for n in nodes:
        if isinstance(n, A.Call) and n.name == "copyin" and id(n) not in takers:
            raise fail(n.loc, "copyin()'s bytes can only be printed or made a string here",
                       'use printf("%s", copyin(...)), tracemem(copyin(arg0, 16), 16) or '
                       "stringof(copyin(...))")  # fmt: skip


def _in_assign_target(clause: A.Clause, ref: A.AggRef) -> bool:
    return any(isinstance(st, A.Assign) and st.target is ref for st in clause.body)


def _check_action(e: A.Call, spec: ProbeSpec) -> None:
    if e.name in UNSUPPORTED:
        raise fail(e.loc, UNSUPPORTED[e.name])
    if e.name in ("count", "sum", "min", "max", "avg", "quantize", "lquantize", "llquantize",
                  "stddev"):  # fmt: skip
        raise fail(e.loc, f"{e.name}() is an aggregating function",
                   f"assign it to an aggregation: @name[keys] = {e.name}(...)")  # fmt: skip
    if e.name == "ustack":
        return  # printed from the entry's backtrace capture (checked with the other uses)
    if e.name not in ACTIONS:
        if e.name in FUNCTIONS:
            raise fail(e.loc, f"the value of {e.name}() is not used",
                       "use it in printf(), a predicate or an assignment")  # fmt: skip
        raise fail(e.loc, f"unknown action '{e.name}'",
                   "actions: printf, printa, trace, exit, clear, trunc")  # fmt: skip
    if e.name == "printf":
        if not e.args or not isinstance(e.args[0], A.Str):
            raise fail(e.loc, "printf() needs a format string first",
                       'e.g. printf("%d\\n", arg0)')  # fmt: skip
        _check_printf(e.args[0], e.args[1:])
    if e.name == "printa" and e.args and isinstance(e.args[0], A.Str):
        want = len(convs(parse_format(e.args[0].value, e.args[0].loc)))
        if want == 0:
            raise fail(e.args[0].loc, "printa()'s format has no conversion for the value")
    if e.name == "tracemem":
        if len(e.args) != 2:
            raise fail(e.loc, f"tracemem() takes 2 arguments, not {len(e.args)}",
                       "e.g. tracemem(copyin(arg0, 16), 16)")  # fmt: skip
        mem, n = e.args
        if not (isinstance(mem, A.Call) and mem.name == "copyin"):
            raise fail(mem.loc, "tracemem() dumps copyin()'s bytes",
                       "e.g. tracemem(copyin(arg0, 16), 16)")  # fmt: skip
        if not isinstance(n, A.Int) or not 0 < n.value <= 4096:
            raise fail(n.loc, "tracemem()'s size must be a constant from 1 to 4096")
    if e.name == "trace" and len(e.args) != 1:
        raise fail(e.loc, f"trace() takes 1 argument, not {len(e.args)}")
    if e.name == "exit" and len(e.args) != 1:
        raise fail(e.loc, f"exit() takes 1 argument (the exit status), not {len(e.args)}",
                   "e.g. exit(0)")  # fmt: skip
    if e.name in ("printa", "clear", "trunc", "normalize", "denormalize"):
        _check_agg_action(e, spec)


def _check_agg_action(e: A.Call, spec: ProbeSpec) -> None:
    if not spec.is_host:
        raise fail(e.loc, f"{e.name}() is supported in BEGIN, END and tick clauses only")
    args = list(e.args)
    if e.name == "printa" and args and isinstance(args[0], A.Str):
        args = args[1:]
    if e.name == "normalize":
        if len(args) != 2 or not isinstance(args[1], A.Int) or args[1].value <= 0:
            raise fail(e.loc, "normalize() takes an aggregation and a positive integer constant",
                       "e.g. normalize(@bytes, 1024)")  # fmt: skip
        args = args[:1]
    if e.name == "trunc":
        if not args or len(args) > 2:
            raise fail(e.loc, "trunc() takes an aggregation and an optional count")
        if len(args) == 2 and not isinstance(args[1], A.Int):
            raise fail(args[1].loc, "trunc()'s count must be an integer constant")
        args = args[:1]
    if not args:
        raise fail(e.loc, f"{e.name}() needs an aggregation", f"e.g. {e.name}(@counts)")
    for a in args:
        if not isinstance(a, A.AggRef) or a.indexed:
            raise fail(a.loc, f"{e.name}() takes aggregations (@name)")
    if e.name in ("clear", "denormalize") and len(args) != 1:
        raise fail(e.loc, f"{e.name}() takes one aggregation")


STRING_BUILTINS = ("probefunc", "probemod", "probename", "probeprov", "execname", "comm")


def kind_of(e: A.Expr) -> str:
    """ "str" or "int": D's two value kinds here."""
    if isinstance(e, A.Str):
        return "str"
    if isinstance(e, A.Ident) and e.name in STRING_BUILTINS:
        return "str"
    if isinstance(e, A.Call) and e.name in ("copyinstr", "str", "stringof"):
        return "str"
    if isinstance(e, A.Call) and e.name == "copyin":
        return "bytes"
    if isinstance(e, A.Ternary):
        return kind_of(e.then)
    if isinstance(e, A.Macro):
        return "int" if e.name in ("target", "pid") else "any"  # $1...: as given
    return "int"


def _check_printf(fmt: A.Str, args: tuple[A.Expr, ...]) -> None:
    cs = convs(parse_format(fmt.value, fmt.loc))
    if any(c.at for c in cs):
        raise fail(fmt.loc, "%@ is for printa() formats (the aggregation's value)")
    if len(cs) != len(args):
        loc = args[len(cs)].loc if len(args) > len(cs) else fmt.loc
        raise fail(loc, f"printf format has {len(cs)} conversion(s) but {len(args)} "
                   "argument(s) follow it")  # fmt: skip
    for c, a in zip(cs, args, strict=True):
        k = kind_of(a)
        if c.conv == "s" and k == "int" and not isinstance(a, A.Var | A.Ident):
            raise fail(a.loc, "%s needs a string, not an integer")
        if c.conv != "s" and k == "bytes":
            raise fail(a.loc, f"%{c.conv} needs an integer, not copyin()'s bytes",
                       "print them with %s or tracemem()")  # fmt: skip
        if c.conv != "s" and k == "str" and not isinstance(a, A.Macro):
            raise fail(a.loc, f"%{c.conv} needs an integer, not a string", "use %s")
