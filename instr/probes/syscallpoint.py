"""Compile a probe whose point is ``syscall:`` (names, %categories or ``all``).

A syscall probe's values are decoded on the host from the syscall monitor's
records (``instr.syscalls.points``), so its captures have their own small
grammar::

    spec   := source [":" form]
    source := ARGUMENT-NAME | "arg" N | "retval" | "errno" | "duration" | "syscall"
    form   := "int" | "str" | "path" | "peer" | "raw"

An argument name is one from the signature table (``fd``, ``filename``,
``flags``, ``buf``, ``count``, ``uservaddr`` ...). Without a form, paths are
strings, sockaddrs the peer (``127.0.0.1:8080``), buffers bytes, the rest
integers; ``:str`` is strace's text for the value (``O_RDONLY|O_CLOEXEC``,
``ENOENT``, ``3</etc/hosts>``); ``:path`` is what an fd is (a path, a peer,
``pipe:[…]``), ``:peer`` the same for sockets only (``""`` otherwise).

Everything is taken at exit: one event per call, after it returns.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

from instr.probes.aggresolve import AggResolver
from instr.probes.aggspec import AggSpecError, parse_agg
from instr.probes.captures import check_name
from instr.probes.diag import Diagnostics, did_you_mean, one_of
from instr.probes.ir import Aggregation, Capture, Phase, Probe, SyscallPoint, SysCapture
from instr.probes.loader import YScalar
from instr.probes.predicate import CapInfo, compile_predicate
from instr.probes.schema import ProbeSpec
from instr.syscalls.table import SIGNATURES

FIXED = ("retval", "errno", "duration", "syscall")
FORMS = ("int", "str", "path", "peer", "raw")
FD_KINDS = ("fd", "dirfd")
FD_RESULTS = ("open", "openat", "creat", "socket", "accept", "accept4", "dup", "dup2", "dup3")
_ARG = re.compile(r"^arg([0-5])$")
MAX_TEXT = 4096


def arg_kinds(names: tuple[str, ...], source: str) -> set[str]:
    """The table's kinds of argument ``source`` across the selected syscalls."""
    m = _ARG.match(source)
    out: set[str] = set()
    for n in names:
        sig = SIGNATURES.get(n, ((), ()))[1]
        for i, (aname, _ctype, kind) in enumerate(sig[:6]):
            if aname == source or (m is not None and i == int(m.group(1))):
                out.add(kind)
    return out


def default_form(source: str, kinds: set[str]) -> str:
    if source == "syscall":
        return "str"
    if kinds & {"path"}:
        return "str"
    if kinds & {"sockaddr", "sockaddr_out"}:
        return "peer"
    if kinds & {"buf_in", "buf_out"}:
        return "raw"
    return "int"


def ir_capture(c: SysCapture) -> Capture:
    """How collectors and predicates see a syscall capture (its layout type)."""
    if c.form in ("str", "path", "peer"):
        return Capture(c.name, "arg", "cstr", max=MAX_TEXT)
    if c.form == "raw":
        return Capture(c.name, "arg", "bytes", max=MAX_TEXT, len_const=MAX_TEXT)
    if c.source == "retval":
        return Capture(c.name, "retval", "i64")
    if c.source == "duration":
        return Capture(c.name, "duration", "duration")
    return Capture(c.name, "arg", "i64")


class SyscallProbeBuilder:
    def __init__(self, set_name: str, diags: Diagnostics) -> None:
        self.set_name = set_name
        self.d = diags

    def parse(self, point: SyscallPoint, name: str, spec: YScalar) -> SysCapture | None:
        text = spec.text
        loc = spec.pos(len(text) - len(text.lstrip()))
        source, colon, form = (t.strip() for t in text.strip().partition(":"))
        form_loc = (
            spec.pos(
                text.index(":")
                + 1
                + len(text.partition(":")[2])
                - len(text.partition(":")[2].lstrip())
            )
            if colon
            else loc
        )
        args = sorted({a for n in point.names for a, _t, _k in SIGNATURES.get(n, ((), ()))[1]})
        kinds: set[str] = set()
        if source not in FIXED:
            kinds = arg_kinds(point.names, source)
            if not kinds:
                options = [*args, *FIXED, "arg0"]
                self.d.error(
                    loc,
                    f"'{source}' is not an argument of {self.what(point)}",
                    did_you_mean(source, options)
                    or f"arguments: {', '.join(args[:12]) or 'none'}; or {one_of(FIXED)}",
                )
                return None
        if colon and form not in FORMS:
            self.d.error(
                form_loc,
                f"unknown form '{form}' for a syscall capture",
                did_you_mean(form, FORMS) or f"use {one_of(FORMS)}",
            )
            return None
        form = form if colon else default_form(source, kinds)
        sock = {"sockaddr", "sockaddr_out"}
        if form in ("path", "peer") and not (
            kinds & set(FD_KINDS)
            or (form == "peer" and kinds & sock)
            or (source == "retval" and set(point.names) & set(FD_RESULTS))
        ):
            self.d.error(form_loc, f"':{form}' needs an fd argument (or the fd a call returns)")
            return None
        if form == "raw" and not kinds & {"buf_in", "buf_out", "path", "sockaddr", "sockaddr_out"}:
            self.d.error(form_loc, f"':raw' needs a memory argument; '{source}' is a number")
            return None
        return SysCapture(name, source, form)

    @staticmethod
    def what(point: SyscallPoint) -> str:
        return point.names[0] if len(point.names) == 1 else f"any of {', '.join(point.items)}"

    def build(
        self, spec: ProbeSpec, name: str, agg_check: Callable[[list[Aggregation]], None]
    ) -> Probe | None:
        point = spec.point
        assert isinstance(point, SyscallPoint)
        errors = len(self.d)
        caps: list[SysCapture] = []
        broken: list[str] = []
        for src in spec.captures:
            bad = check_name(src.name)
            if bad is not None:
                self.d.error(src.name_loc, *bad)
                continue
            c = self.parse(point, src.name, src.spec)
            if c is None:
                broken.append(src.name)
            else:
                caps.append(c)
        if spec.on is not None and "entry" in spec.on and spec.on_loc is not None:
            self.d.error(
                spec.on_loc,
                "syscall points have one event per call, at exit",
                "remove 'on', or write 'on: exit'",
            )
        if spec.tier_loc is not None:
            self.d.error(spec.tier_loc, "'tier' does not apply to syscall points")
        # Argument names used by aggregations without a capture are captured implicitly.
        declared = {c.name for c in caps} | set(broken)
        for a in spec.aggregates:
            try:
                refs = parse_agg(a.spec.text)
            except AggSpecError:
                continue  # reported by the resolver
            for ref in [refs.value, *refs.keys]:
                if ref is None or ref.name in declared or ref.text != ref.name:
                    continue
                if ref.name in ("syscall",) or not arg_kinds(point.names, ref.name):
                    continue
                kinds = arg_kinds(point.names, ref.name)
                caps.append(SysCapture(ref.name, ref.name, default_form(ref.name, kinds)))
                declared.add(ref.name)
        exit_phase: Phase = "exit"
        parsed = [(ir_capture(c), exit_phase, spec.loc) for c in caps]
        resolved = AggResolver(parsed, broken, spec.max_keys, self.d).resolve(spec.aggregates)
        for cap, _phase, loc in resolved.implicit:
            if cap.src == "arg":
                caps.append(SysCapture(cap.name, f"arg{cap.index}", "int"))
            elif cap.src in ("retval", "duration"):
                caps.append(SysCapture(cap.name, cap.src, "int"))
            else:
                self.d.error(loc, f"'{cap.src}' is not available at syscall points")
        agg_check(resolved.aggregations)
        ircaps = tuple(ir_capture(c) for c in caps)
        env = {n: CapInfo("entry", -1, "") for n in broken}
        for i, ic in enumerate(ircaps):
            env[ic.name] = CapInfo("exit", i, ic.type)
        where = None
        if spec.where is not None:
            where, perrs = compile_predicate(spec.where.text, env, entry_hook=False)
            for e in perrs:
                self.d.error(spec.where.pos(e.offset), e.message, e.hint)
        if len(self.d) > errors:
            return None
        aggs = tuple(dataclasses.replace(a, phase="exit") for a in resolved.aggregations)
        emit = spec.emit if spec.emit is not None else not aggs
        return Probe(
            id=0,
            name=f"{self.set_name}/{name}",
            point=dataclasses.replace(point, captures=tuple(caps)),
            entry=None,
            exit=ircaps,
            where=where,
            loc=spec.loc,
            aggregations=aggs,
            emit=emit,
            agg_tier="host" if aggs else None,
            agg_tier_why="syscall points aggregate on the host, from the monitor's records",
        )
