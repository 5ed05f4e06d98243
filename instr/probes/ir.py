"""The probe IR: what every front end (YAML, quick CLI flags) compiles to.

``AgentPlan`` is the JSON sent to the agent (ids and layouts only, no names).
``ProbeTable`` stays on the host: it maps ids back to names, capture names and
types, and source locations, and is what the decoder and collectors use.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

IntType = Literal["i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "ptr", "bool"]
INT_TYPES: tuple[str, ...] = ("i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "ptr", "bool")
VAR_TYPES: tuple[str, ...] = ("cstr", "bytes")
Phase = Literal["entry", "exit"]
Tier = Literal["auto", "native", "js"]


@dataclass(frozen=True)
class SourceLoc:
    file: str
    line: int  # 1-based
    col: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Capture:
    """One named value captured at one phase.

    ``src`` is ``arg``, ``retval``, ``caller``, ``backtrace`` or ``duration``.
    ``type`` is an int type, ``cstr`` or ``bytes`` for ``arg``/``retval``;
    ``ptr`` for ``caller``; ``backtrace`` and ``duration`` for those sources.
    """

    name: str
    src: Literal["arg", "retval", "caller", "backtrace", "duration"]
    type: str
    index: int = 0  # argument index, for src == "arg"
    max: int = 0  # cstr/bytes: max bytes kept
    len_const: int | None = None  # bytes: fixed length
    len_arg: int | None = None  # bytes: length taken from this argument
    depth: int = 0  # backtrace depth

    def to_plan(self) -> dict[str, Any]:
        d: dict[str, Any] = {"src": self.src}
        if self.src in ("arg", "retval"):
            d["type"] = self.type
        if self.src == "arg":
            d["index"] = self.index
        if self.type == "cstr":
            d["max"] = self.max
        if self.type == "bytes":
            d["max"] = self.max
            d["len"] = (
                {"const": self.len_const} if self.len_const is not None else {"arg": self.len_arg}
            )
        if self.src == "backtrace":
            d["depth"] = self.depth
        return d


@dataclass(frozen=True)
class FunctionPoint:
    module: str | None  # glob; None means any module
    symbol: str  # glob
    exclude: tuple[tuple[str | None, str], ...] = ()

    def to_plan(self) -> dict[str, Any]:
        return {
            "kind": "function",
            "module": self.module,
            "symbol": self.symbol,
            "exclude": [{"module": m, "symbol": s} for m, s in self.exclude],
        }

    def __str__(self) -> str:
        return f"{self.module or '*'}!{self.symbol}"


@dataclass(frozen=True)
class AddressPoint:
    address: int

    def to_plan(self) -> dict[str, Any]:
        return {"kind": "address", "address": hex(self.address)}

    def __str__(self) -> str:
        return hex(self.address)


@dataclass(frozen=True)
class OffsetPoint:
    module: str
    offset: int

    def to_plan(self) -> dict[str, Any]:
        return {"kind": "offset", "module": self.module, "offset": self.offset}

    def __str__(self) -> str:
        return f"{self.module}+{self.offset:#x}"


@dataclass(frozen=True)
class SysCapture:
    """One capture of a syscall point, taken on the host from the call's record:
    ``source`` is an argument name, ``argN``, ``retval``, ``errno``, ``duration``
    or ``syscall``; ``form`` is how it is decoded (``instr.syscalls.points``)."""

    name: str
    source: str
    form: str  # "int", "str" (strace's text), "path" (what an fd is), "peer", "raw"


@dataclass(frozen=True)
class SyscallPoint:
    """System calls by name or strace category (``syscall: [read, "%net"]``).

    Not armed by the probe agent: the syscall monitor (``agents/src/syscalls/syscalls.ts``)
    hooks libc's wrappers and streams records; the host turns them into events
    and aggregations (``instr.syscalls.points``)."""

    items: tuple[str, ...]  # as written: names, %categories, "all"
    names: tuple[str, ...] = ()  # the syscalls they select (sorted)
    captures: tuple[SysCapture, ...] = ()  # filled in by the compiler

    def to_plan(self) -> dict[str, Any]:
        return {"kind": "syscall", "names": list(self.names)}

    def __str__(self) -> str:
        return "syscall:" + ",".join(self.items)


@dataclass(frozen=True)
class ProfilePoint:
    """Samples of every thread's stack, ``hz`` a second of the thread's CPU time
    (DTrace's ``profile-N``, bpftrace's ``profile:hz:N``).

    Not armed by the probe agent: the sampler of ``instr profile``
    (``agents/src/profile/``) takes the samples; the host unwinds them and
    counts them into the probe's aggregations (``instr.profile.probes``)."""

    hz: int

    def to_plan(self) -> dict[str, Any]:
        return {"kind": "profile", "hz": self.hz}

    def __str__(self) -> str:
        return f"profile-{self.hz}"


Point = FunctionPoint | AddressPoint | OffsetPoint | SyscallPoint | ProfilePoint

KeySrc = Literal["capture", "tid", "pid", "execname", "probefunc", "module", "syscall", "backtrace"]
AggTier = Literal["fast", "js", "host"]


@dataclass(frozen=True)
class AggKey:
    name: str  # as shown in reports: a capture name or a built-in
    src: KeySrc
    capture: str | None = None  # the capture's name, for src == "capture"
    depth: int = 0  # src == "backtrace" (profile probes): the most frames kept


@dataclass(frozen=True)
class Aggregation:
    """One aggregation of one probe (DTrace's ``@name[keys] = func(arg)``)."""

    name: str  # unique within its set
    func: str  # count sum min max avg stddev quantize lquantize llquantize
    arg: str | None  # the aggregated capture's name; None for count()
    keys: tuple[AggKey, ...]
    phase: Phase  # updated at entry, or at exit (uses exit values)
    max_keys: int
    lquantize: tuple[int, int, int] | None = None  # (low, high, step)
    llquantize: tuple[int, int, int, int] | None = None  # (factor, low, high, steps)
    source: str = ""  # the spec as written, for reports
    loc: SourceLoc | None = None
    id: int = 0  # numbered across the table by compile_sets (1, 2, ...)

    def value_words(self) -> int:
        """64-bit words per table row after the keys (the C runtime's layout)."""
        if self.func == "count":
            return 1
        if self.func == "stddev":
            return 4
        if self.func == "quantize":
            return 1 + QUANTIZE_BUCKETS
        if self.func == "lquantize":
            assert self.lquantize is not None
            return 1 + lquantize_buckets(self.lquantize)
        if self.func == "llquantize":
            from instr.aggregate import llq

            assert self.llquantize is not None
            return 1 + llq.count(self.llquantize)
        return 2  # count and the sum / min / max


QUANTIZE_BUCKETS = 129  # 64 negative, zero, 64 positive (powers of two)


def lquantize_buckets(lq: tuple[int, int, int]) -> int:
    """Underflow, one per step between low and high, overflow."""
    low, high, step = lq
    return (high - low + step - 1) // step + 2


@dataclass(frozen=True)
class Predicate:
    source: str  # the expression as written
    phase: Phase  # evaluated at entry (uses entry captures only) or exit
    expr: dict[str, Any]  # the Expr tree, as in agents/src/protocol.ts


PatchKind = Literal[
    "ret", "skip", "replace_c", "replace_js", "args", "bytes", "nop", "signal", "copyout"
]
PATCH_KINDS: tuple[PatchKind, ...] = (
    "ret", "skip", "replace_c", "replace_js", "args", "bytes", "nop", "signal", "copyout"
)  # fmt: skip
# NativeFunction types a JavaScript replacement may declare.
JS_TYPES: tuple[str, ...] = (
    "void", "pointer", "int", "uint", "long", "ulong", "char", "uchar", "size_t", "ssize_t",
    "float", "double", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "bool",
)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class PatchParams:
    """What a patch does, by kind (shared by a probe's ``PatchAction`` and ``PatchSpec``)."""

    value: int | None = None  # ret, skip; signal: the signal; copyout: the argument's index
    code: str | None = None  # replace_c (C source), replace_js (a function body)
    fn: str | None = None  # replace_c: the replacement's name
    returns: str | None = None  # replace_js
    params: tuple[str, ...] = ()  # replace_js
    args: tuple[tuple[int, int | str], ...] = ()  # args: (index, new value)
    expect: bytes | None = None  # bytes (required), nop (optional)
    data: bytes | None = None  # bytes, copyout
    instructions: int | None = None  # nop

    def patch_params(self) -> dict[str, Any]:
        """Only the parameters, to build another ``PatchParams`` from these."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(PatchParams)}


@dataclass(frozen=True, kw_only=True)
class PatchAction(PatchParams):
    """A probe's ``patch:`` action, checked; ``instr.patch.probes`` turns it into a PatchSpec."""

    kind: PatchKind
    loc: SourceLoc


@dataclass(frozen=True)
class Probe:
    id: int
    name: str  # "set/probe-name"
    point: Point
    entry: tuple[Capture, ...] | None  # None: no entry hook
    exit: tuple[Capture, ...] | None  # None: no exit hook
    where: Predicate | None = None
    actions: tuple[dict[str, Any], ...] = ({"kind": "emit"},)
    tier: Tier = "auto"
    max_sites: int = 5000
    loc: SourceLoc | None = None
    aggregations: tuple[Aggregation, ...] = ()
    emit: bool = True  # write events (False: the probe only aggregates)
    agg_tier: AggTier | None = None  # where the aggregations run; None without any
    agg_tier_why: str = ""  # why not the fast tier, for `instr check --explain`
    patch: PatchAction | None = None  # applied by the agent's patcher, not armed for tracing

    @property
    def is_syscall(self) -> bool:
        return isinstance(self.point, SyscallPoint)

    @property
    def is_profile(self) -> bool:
        return isinstance(self.point, ProfilePoint)

    def captures(self, phase: Phase) -> tuple[Capture, ...]:
        caps = self.entry if phase == "entry" else self.exit
        return caps or ()

    def capture_ref(self, name: str) -> tuple[Phase, int, Capture]:
        """Where capture ``name`` is: its phase, its index there, and itself."""
        for phase in ("entry", "exit"):
            for i, c in enumerate(self.captures(phase)):
                if c.name == name:
                    return phase, i, c
        raise KeyError(name)

    def agg_plan(self, agg: Aggregation) -> dict[str, Any]:
        def ref(name: str) -> dict[str, Any]:
            phase, index, cap = self.capture_ref(name)
            return {"phase": phase, "index": index, "type": cap.type, "csrc": cap.src}

        return {
            "id": agg.id,
            "func": agg.func,
            "phase": agg.phase,
            "arg": None if agg.arg is None else ref(agg.arg),
            "keys": [
                {"src": k.src, **(ref(k.capture) if k.capture is not None else {})}
                for k in agg.keys
            ],
            "lq": list(agg.lquantize) if agg.lquantize is not None else None,
            "llq": list(agg.llquantize) if agg.llquantize is not None else None,
            "max_keys": agg.max_keys,
            "nvals": agg.value_words(),
        }

    def where_plan(self) -> dict[str, Any]:
        from instr.ctier.wherevm import native_where

        assert self.where is not None
        native, _ = native_where(self)
        return {"phase": self.where.phase, "expr": self.where.expr, "native": native}

    def to_plan(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "emit": self.emit,
            "aggs": [self.agg_plan(a) for a in self.aggregations],
            "agg_tier": self.agg_tier,
            "point": self.point.to_plan(),
            "entry": None if self.entry is None else [c.to_plan() for c in self.entry],
            "exit": None if self.exit is None else [c.to_plan() for c in self.exit],
            "where": None if self.where is None else self.where_plan(),
            "actions": list(self.actions),
            "tier": self.tier,
            "max_sites": self.max_sites,
        }


@dataclass(frozen=True)
class PlanOptions:
    flush_interval_ms: int = 50
    buffer_bytes: int = 8 << 20
    on_full: Literal["block", "drop"] = "block"
    follow: bool = False  # children followed (-F): listeners only (docs/follow.md)

    def to_plan(self) -> dict[str, Any]:
        plan: dict[str, Any] = {
            "flush_interval_ms": self.flush_interval_ms,
            "buffer_bytes": self.buffer_bytes,
            "on_full": self.on_full,
        }
        if self.follow:
            plan["follow"] = True
        return plan


@dataclass
class ProbeTable:
    """Host-only view of a compiled probe set: id -> probe."""

    probes: dict[int, Probe] = field(default_factory=dict)
    options: PlanOptions = field(default_factory=PlanOptions)

    def add(self, probe: Probe) -> None:
        self.probes[probe.id] = probe

    def __iter__(self) -> Iterator[Probe]:
        return iter(self.probes.values())

    def __len__(self) -> int:
        return len(self.probes)

    def plan(self) -> dict[str, Any]:
        """The agent's plan. Syscall and profile points are not in it: the host
        arms the syscall monitor (``instr.syscalls.points``) and the sampler
        (``instr.profile.probes``) for them."""
        from instr.protocol import PROTOCOL_VERSION

        agent = ProbeTable(
            {
                i: p
                for i, p in self.probes.items()
                if not p.is_syscall and not p.is_profile and p.patch is None
            },
            self.options,
        )
        return {
            "protocol": PROTOCOL_VERSION,
            "options": self.options.to_plan(),
            "probes": [p.to_plan() for p in agent.probes.values()],
            "fast_c": agent.fast_source(),
        }

    def patch_probes(self) -> list[Probe]:
        return [p for p in self.probes.values() if p.patch is not None]

    def syscall_probes(self) -> list[Probe]:
        return [p for p in self.probes.values() if p.is_syscall]

    def profile_probes(self) -> list[Probe]:
        return [p for p in self.probes.values() if p.is_profile]

    def aggregations(self) -> Iterator[tuple[Probe, Aggregation]]:
        for p in self.probes.values():
            for a in p.aggregations:
                yield p, a

    def fast_source(self) -> dict[str, Any] | None:
        """The C of the fast tier for this table (None when no probe uses it)."""
        from instr.ctier.emit import table_source

        return table_source(self)
