"""What a clause's expressions need from a probe: captures, and where they can run.

A ``Needs`` collects the captures of one probe (``a0: arg0:i64``,
``s1: arg1:cstr(256)``, ``rv: retval:i64``...) and translates D expressions
into the probe-set predicate language (evaluated in the target) when they
can run there. Anything the target cannot evaluate raises ``HostOnly``; the
compiler then evaluates the predicate on the host from the probe's events,
or reports an error where that is not possible (aggregations).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from instr.dtrace import ast as A
from instr.dtrace.errors import Loc, fail
from instr.dtrace.probes import ProbeSpec

ARGS = tuple(f"arg{i}" for i in range(10))
BUILTINS = (
    *ARGS, "retval", "errno", "probefunc", "probemod", "probename", "probeprov", "execname",
    "pid", "tid", "timestamp", "walltimestamp", "uid", "gid", "ppid", "cpu", "curthread",
    "vtimestamp", "caller", "ucaller", "comm", "nsecs", "elapsed", "arg",
)  # fmt: skip
STR_FUNCS = ("copyinstr", "str")
COPYIN_MAX = 4096  # copyin(): most bytes read
_NOT_HERE = {
    "vtimestamp": "vtimestamp is not supported",
    "cpu": "cpu is not supported: instr does not know which CPU a call ran on",
    "curthread": "curthread is a kernel pointer; it is not supported",
    "uid": "uid is not supported yet",
    "gid": "gid is not supported yet",
    "ppid": "ppid is not supported yet",
}
_BT_ALIASES = {"comm": "execname", "nsecs": "timestamp", "caller": "ucaller"}


class HostOnly(Exception):
    """This expression cannot be evaluated in the target."""

    def __init__(self, loc: Loc, why: str) -> None:
        super().__init__(why)
        self.loc = loc
        self.why = why


def canonical(name: str) -> str:
    return _BT_ALIASES.get(name, name)


def check_builtin(e: A.Ident, spec: ProbeSpec | None) -> str:
    """The built-in's canonical name, or an error when this probe cannot give it."""
    name = canonical(e.name)
    if name in _NOT_HERE:
        raise fail(e.loc, _NOT_HERE[name])
    if spec is None:
        return name
    if spec.is_host and (name in ARGS or name in ("retval", "errno")):
        raise fail(e.loc, f"{name} has no value in a {spec.text} probe",
                   "arguments exist in pid and syscall probes")  # fmt: skip
    if name == "ucaller" and (spec.kind != "pid" or spec.name != "entry"):
        raise fail(e.loc, f"{e.name} has a value in pid :entry probes only",
                   "the return address is read at the function's entry")  # fmt: skip
    if spec.offset is not None and (name in ARGS or name in ("retval", "errno", "ucaller")):
        raise fail(e.loc, f"{e.name} has no value at an instruction probe ({spec.text})",
                   "read arguments at :entry and the result at :return")  # fmt: skip
    if spec.kind == "pid":
        if name == "errno":
            raise fail(e.loc, "errno is not supported in pid probes", "use a syscall probe")
        if name == "retval" and spec.name != "return":
            raise fail(e.loc, "retval has a value only in :return probes",
                       "trace the function's return: ...:return")  # fmt: skip
        if name in ARGS and spec.name == "return" and name != "arg1":
            raise fail(e.loc, f"in a :return probe {name} is not an argument "
                       "(arg0 is the return offset, arg1 the return value)",
                       "use retval, or save the argument at entry: self->x = arg0")  # fmt: skip
    if spec.kind == "syscall" and name in ARGS and int(name[3:]) > 5:
        raise fail(e.loc, f"system calls have at most 6 arguments: {name} has no value")
    if spec.kind == "syscall" and name in ("retval", "errno") and spec.name != "return":
        raise fail(e.loc, f"{name} has a value only in syscall :return probes")
    return name


@dataclass
class Needs:
    """The captures of one probe, by capture name -> spec, in order."""

    spec: ProbeSpec
    captures: dict[str, str] = field(default_factory=dict)
    strsize: int = 256  # copyinstr()'s size when none is given

    def cap(self, e: A.Expr) -> str:
        """The capture that holds the value of ``e`` (a built-in or a string read)."""
        s = self.spec
        if isinstance(e, A.Elapsed):
            return self._add("dur", "duration")
        if isinstance(e, A.Entry):
            inner = e.expr
            if s.kind == "syscall":  # the call's record holds its arguments: as at entry
                if isinstance(inner, A.Call):
                    arg = inner.args[0]
                    assert isinstance(arg, A.Ident)
                    i = int(canonical(arg.name)[3:])
                    return self._add(f"s{i}", f"arg{i}")
                return self.cap(inner)
            if isinstance(inner, A.Ident):
                i = int(canonical(inner.name)[3:])
                return self._add(f"e{i}", f"arg{i}:i64")
            assert isinstance(inner, A.Call)
            arg = inner.args[0]
            assert isinstance(arg, A.Ident)
            i = int(canonical(arg.name)[3:])
            n = inner.args[1] if len(inner.args) == 2 else None
            size = n.value if isinstance(n, A.Int) else self.strsize
            return self._add(f"es{i}", f"arg{i}:cstr({size})")
        if isinstance(e, A.Ident):
            name = check_builtin(e, s)
            if name in ARGS or name == "retval":
                if s.kind == "pid" and s.name == "return":
                    return self._add("rv", "retval:i64")
                if name == "retval":
                    return self._add("rv", "retval" if s.kind == "syscall" else "retval:i64")
                i = int(name[3:])
                return self._add(f"a{i}", f"arg{i}:int" if s.kind == "syscall" else f"arg{i}:i64")
            if name == "errno":
                return self._add("err", "errno")
            if name == "probefunc" and s.kind == "syscall":
                return self._add("pf", "syscall")
            if name == "ucaller":
                return self._add("caller", "caller")
            raise HostOnly(e.loc, f"{e.name} is not a capture")
        if isinstance(e, A.Call) and e.name == "ustack":
            if s.kind != "pid" or s.name != "entry":
                raise fail(e.loc, "ustack() is supported in pid :entry probes only",
                           "the stack is read at the function's entry")  # fmt: skip
            depth = e.args[0].value if e.args and isinstance(e.args[0], A.Int) else 16
            if not 1 <= depth <= 64:
                raise fail(e.args[0].loc, "ustack()'s depth must be from 1 to 64")
            return self._add(f"stack{depth}", f"backtrace({depth})")
        if isinstance(e, A.Call) and e.name in STR_FUNCS:
            return self.string(e)
        if isinstance(e, A.Call) and e.name == "copyin":
            return self.copyin(e)
        raise HostOnly(e.loc, "not a capture")

    def string(self, e: A.Call) -> str:
        if not e.args or len(e.args) > 2:
            raise fail(e.loc, f"{e.name}() takes an address and an optional length",
                       f"e.g. {e.name}(arg0)")  # fmt: skip
        arg = e.args[0]
        if not (isinstance(arg, A.Ident) and canonical(arg.name) in ARGS):
            raise fail(arg.loc, f"{e.name}() reads an argument here: arg0..arg9",
                       f"e.g. {e.name}(arg1)")  # fmt: skip
        check_builtin(arg, self.spec)
        i = int(canonical(arg.name)[3:])
        if self.spec.name == "return":
            raise fail(e.loc, f"{e.name}() of an argument is not supported in :return probes",
                       "read it at entry")  # fmt: skip
        size = self.strsize
        if len(e.args) == 2:
            n = e.args[1]
            if not isinstance(n, A.Int) or not 0 < n.value <= 4096:
                raise fail(n.loc, f"{e.name}()'s length must be a constant from 1 to 4096")
            size = n.value
        if self.spec.kind == "syscall":
            return self._add(f"s{i}", f"arg{i}")
        return self._add(f"s{i}_{size}" if len(e.args) == 2 else f"s{i}", f"arg{i}:cstr({size})")

    def copyin(self, e: A.Call) -> str:
        """``copyin(argN, SIZE)``: SIZE bytes at an argument, read at the function's entry
        (SIZE a constant, or another argument: at most COPYIN_MAX bytes are kept)."""
        if len(e.args) != 2:
            raise fail(e.loc, f"copyin() takes an address and a size, not {len(e.args)} "
                       "argument(s)", "e.g. copyin(arg1, 16)")  # fmt: skip
        if self.spec.kind != "pid" or self.spec.name != "entry":
            raise fail(e.loc, "copyin() is supported in pid :entry probes only",
                       "the bytes are read at the function's entry")  # fmt: skip
        arg, size = e.args
        if not (isinstance(arg, A.Ident) and canonical(arg.name) in ARGS):
            raise fail(arg.loc, "copyin() reads at an argument here: arg0..arg9",
                       "e.g. copyin(arg1, 16)")  # fmt: skip
        check_builtin(arg, self.spec)
        i = int(canonical(arg.name)[3:])
        if isinstance(size, A.Ident) and canonical(size.name) in ARGS:
            check_builtin(size, self.spec)
            j = int(canonical(size.name)[3:])
            return self._add(f"m{i}_a{j}", f"arg{i}:bytes(arg{j}, {COPYIN_MAX})")
        if not isinstance(size, A.Int) or not 0 < size.value <= COPYIN_MAX:
            raise fail(size.loc, f"copyin()'s size must be a constant from 1 to {COPYIN_MAX} "
                       "or an argument", "e.g. copyin(arg1, 16) or copyin(arg1, arg2)")  # fmt: skip
        return self._add(f"m{i}_{size.value}", f"arg{i}:bytes({size.value})")

    def _add(self, name: str, spec: str) -> str:
        self.captures.setdefault(name, spec)
        return name

    # -- predicates in the target ------------------------------------------------

    def predicate(self, e: A.Expr, consts: dict[str, object]) -> str:
        """``e`` in the probe-set predicate language (Python syntax), or HostOnly."""
        return _Py(self, consts).expr(e)


_PY_OPS = {"&&": "and", "||": "or", "/": "//"}


@dataclass
class _Py:
    needs: Needs
    consts: dict[str, object]  # built-ins with a value known when compiling (probefunc...)

    def expr(self, e: A.Expr) -> str:
        if isinstance(e, A.Int):
            return str(e.value)
        if isinstance(e, A.Str):
            return json.dumps(e.value)
        if isinstance(e, A.Ident):
            name = canonical(e.name)
            if name in self.consts:
                v = self.consts[name]
                return json.dumps(v) if isinstance(v, str) else str(v)
            if name == "tid":
                return "tid"
            if (
                name in ARGS
                or name in ("retval", "errno")
                or (name == "probefunc" and self.needs.spec.kind == "syscall")
            ):
                return self.needs.cap(e)
            if name in BUILTINS:
                check_builtin(e, self.needs.spec)
                raise HostOnly(e.loc, f"{e.name} is not known in the target here")
            raise HostOnly(e.loc, f"{e.name} is a variable")
        if isinstance(e, A.Entry | A.Elapsed):
            return self.needs.cap(e)
        if isinstance(e, A.Var):
            why = f"{e.scope}->{e.name} is kept on the host"
            if e.scope == "self":
                why += (
                    "; it is paired in the target only when one clause without a predicate "
                    "sets it at this function's entry and only its return reads it"
                )
            raise HostOnly(e.loc, why)
        if isinstance(e, A.Call):
            if e.name in STR_FUNCS:
                return self.needs.string(e)
            if e.name == "strlen" and len(e.args) == 1:
                return f"len({self.expr(e.args[0])})"
            raise HostOnly(e.loc, f"{e.name}() runs on the host")
        if isinstance(e, A.Unary):
            inner = self.expr(e.arg)
            return f"(not {inner})" if e.op == "!" else f"({e.op}{inner})"
        if isinstance(e, A.Macro):
            v = self.consts.get(f"${e.name}")
            if v is None:
                raise HostOnly(e.loc, f"${e.name} is known once the target runs")
            return json.dumps(v) if isinstance(v, str) else str(v)
        if isinstance(e, A.Binary):
            if e.op in ("==", "!=") and _is_pid(e.left) and _is_pid(e.right):
                return "True" if e.op == "==" else "False"  # one process: pid is $target
            if e.op in ("<", "<=", ">", ">=") and (_is_str(e.left) or _is_str(e.right)):
                raise HostOnly(e.loc, "strings are ordered on the host")
            left, right = self.expr(e.left), self.expr(e.right)
            if e.op == "^^":
                return f"(({left}) != 0) != (({right}) != 0)"
            if e.op in ("/", "%"):
                raise HostOnly(e.loc, f"'{e.op}' rounds as in C only on the host")
            return f"({left} {_PY_OPS.get(e.op, e.op)} {right})"
        raise HostOnly(e.loc, "runs on the host")


def is_identifier(name: str) -> bool:
    return re.fullmatch(r"[A-Za-z_][A-Za-z_0-9]*", name) is not None


def _is_pid(e: A.Expr) -> bool:
    """``pid`` or ``$target``/``$pid``: the traced process, the only one instr sees."""
    if isinstance(e, A.Ident):
        return e.name == "pid"
    return isinstance(e, A.Macro) and e.name in ("target", "pid")


def _is_str(e: A.Expr) -> bool:
    if isinstance(e, A.Str):
        return True
    if isinstance(e, A.Call):
        return e.name in STR_FUNCS
    if isinstance(e, A.Entry):
        return _is_str(e.expr)
    return isinstance(e, A.Ident) and canonical(e.name) in (
        "probefunc", "probemod", "probename", "probeprov", "execname",
    )  # fmt: skip
