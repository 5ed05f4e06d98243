"""Destructive actions, allowed with ``-w`` (or ``#pragma D option destructive``).

Each one becomes a patch probe of the generated probe set, applied in the target
by instr's patch tier (as ``instr run -w`` applies a set's ``patch:`` probes) at
the probe's hook, gated by the clause's predicate, and reverted when instr
leaves:

    raise(SIG), signal(SIG)        patch: {signal: SIG}      to the calling thread, as the call starts
    stop()                         patch: {signal: SIGSTOP}  the process stops (SIGCONT resumes it)
    copyout(BUF, argN, SIZE)       patch: {copyout: ...}     SIZE bytes of BUF where argN points
    copyoutstr(STR, argN, MAX)     patch: {copyout: ...}     STR and its NUL, at most MAX bytes
    override(V) in an :entry       patch: {skip: V}          the function does not run; returns V
    override(V) in a :return       patch: {ret: V}           the function runs; it returns V

``signal()`` and ``override()`` are bpftrace's spellings (``--unsafe``). The
values are constants: the patch is configured once, as data.
"""

from __future__ import annotations

import signal

from instr.dtrace import ast as A
from instr.dtrace.errors import Loc, fail
from instr.dtrace.probes import ProbeSpec
from instr.dtrace.values import ARGS, HostOnly, Needs, canonical

DESTRUCTIVE = ("raise", "signal", "stop", "copyout", "copyoutstr", "override")
NEEDS_W = "instr dtrace -w (or #pragma D option destructive) allows actions that change the target"
_ARITY = {"raise": 1, "signal": 1, "stop": 0, "copyout": 3, "copyoutstr": 3, "override": 1}
_USAGE = {
    "raise": "raise(SIGUSR1)",
    "signal": 'signal("SIGUSR1")',
    "stop": "stop()",
    "copyout": 'copyout("text", arg0, 4)',
    "copyoutstr": 'copyoutstr("text", arg0, 16)',
    "override": "override(-1)",
}
MAX_COPY = 4096


def is_destructive(st: A.Stmt) -> bool:
    return (
        isinstance(st, A.ExprStmt) and isinstance(st.expr, A.Call) and st.expr.name in DESTRUCTIVE
    )


def patch_probes(
    clause: A.Clause,
    spec: ProbeSpec,
    macros: dict[str, str],
    consts: dict[str, object],
    destructive: bool,
) -> list[tuple[dict[str, object], Loc]]:
    """The clause's destructive actions as patch probes (without names), each with the
    location of its action."""
    out: list[tuple[dict[str, object], Loc]] = []
    for st in clause.body:
        if not is_destructive(st):
            continue
        assert isinstance(st, A.ExprStmt) and isinstance(st.expr, A.Call)
        e = st.expr
        if not destructive:
            raise fail(e.loc, f"destructive action {e.name}() needs -w", NEEDS_W)
        if spec.kind != "pid":
            raise fail(e.loc, f"{e.name}() is supported in pid probes only",
                       "it runs in the target, at the function's hook")  # fmt: skip
        if len(e.args) != _ARITY[e.name]:
            n = _ARITY[e.name]
            raise fail(e.loc, f"{e.name}() takes {n} argument{'' if n == 1 else 's'}, "
                       f"not {len(e.args)}", f"e.g. {_USAGE[e.name]}")  # fmt: skip
        if e.name == "override" and spec.offset is not None:
            raise fail(e.loc, "override() is supported in pid :entry and :return clauses",
                       "an instruction probe is inside the function")  # fmt: skip
        if e.name != "override" and spec.name != "entry":
            raise fail(e.loc, f"{e.name}() is supported in pid :entry clauses only",
                       "it runs as the call starts")  # fmt: skip
        needs = Needs(spec)
        probe: dict[str, object] = {
            "function": f"{spec.module or '*'}!{spec.func}",
            "patch": _patch(e, spec, macros),
        }
        if clause.predicate is not None:
            try:
                probe["where"] = needs.predicate(clause.predicate, consts)
            except HostOnly as why:
                raise fail(why.loc, f"this predicate runs on the host ({why.why}), so it "
                           f"cannot decide {e.name}() in the target",
                           "use arguments, retval, tid and constants here") from None  # fmt: skip
            probe["capture"] = dict(needs.captures)
        out.append((probe, e.loc))
    return out


def _patch(e: A.Call, spec: ProbeSpec, macros: dict[str, str]) -> dict[str, object]:
    if e.name in ("raise", "signal"):
        return {"signal": _signal(e.args[0], macros)}
    if e.name == "stop":
        return {"signal": int(signal.SIGSTOP)}
    if e.name == "override":
        return {"ret" if spec.name == "return" else "skip": _int(e.args[0], macros, e.name)}
    buf, addr, size = e.args
    if not (isinstance(addr, A.Ident) and canonical(addr.name) in ARGS):
        raise fail(addr.loc, f"{e.name}() writes where an argument points here: arg0..arg9",
                   f"e.g. {_USAGE[e.name]}")  # fmt: skip
    n = _int(size, macros, e.name)
    if not 0 < n <= MAX_COPY:
        raise fail(size.loc, f"{e.name}()'s size must be from 1 to {MAX_COPY}")
    text = _str(buf, macros, e.name).encode()
    # copyoutstr: the string and its NUL; copyout: SIZE bytes, zeros after the string
    data = (text + b"\0")[:n] if e.name == "copyoutstr" else text[:n].ljust(n, b"\0")
    return {"copyout": {"arg": int(canonical(addr.name)[3:]), "data": data.hex()}}


def _signal(e: A.Expr, macros: dict[str, str]) -> int:
    name = ""
    if isinstance(e, A.Ident):
        name = e.name
    elif isinstance(e, A.Str):  # bpftrace: signal("SIGUSR1"), signal("USR1")
        name = e.value if e.value.startswith("SIG") else f"SIG{e.value}"
    else:
        n = _int(e, macros, "raise")
        if not 0 < n <= 64:
            raise fail(e.loc, f"there is no signal {n}", "signals are 1 to 64, e.g. SIGUSR1")
        return n
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise fail(e.loc, f"unknown signal '{name}'", "e.g. SIGUSR1, SIGTERM") from None


def _int(e: A.Expr, macros: dict[str, str], func: str) -> int:
    if isinstance(e, A.Int):
        return e.value
    if isinstance(e, A.Macro) and macros.get(e.name, "").lstrip("-").isdigit():
        return int(macros[e.name])
    raise fail(e.loc, f"{func}()'s value must be an integer constant",
               "the target applies it without asking the host")  # fmt: skip


def _str(e: A.Expr, macros: dict[str, str], func: str) -> str:
    if isinstance(e, A.Str):
        return e.value
    if isinstance(e, A.Macro) and e.name in macros and e.name not in ("target", "pid"):
        return macros[e.name]
    raise fail(e.loc, f"{func}() writes a string constant here",
               f"e.g. {_USAGE[func]}")  # fmt: skip
