"""Binary batches (``instr/protocol.py`` records) -> ``Event`` objects.

Per (probe, phase) the decoder builds a plan once: for a fixed layout (only
scalar slots) a few ``struct.Struct`` objects whose formats apply width and
sign per type, so one ``unpack_from`` yields finished Python values.  Two
paths use them:

* a batch made only of records of one fixed layout (one hot probe, the
  common case) is decoded with ``iter_unpack`` over the whole buffer;
* any other batch walks record by record: one header unpack, one unpack for
  the named values, one for retval/duration on exit records.

Variable-length slots (``cstr``, ``bytes``, ``backtrace``) are decoded slot by
slot.  Value representation (also in docs/outputs.md):

* integers: ``int`` (``i*`` sign-extended, ``u*`` masked to their width);
  ``ptr`` and ``caller``: ``int`` address; ``bool``: ``bool``;
* ``cstr``: ``str`` (UTF-8, ``errors="backslashreplace"``); ``bytes``: ``bytes``;
  a truncated capture keeps the prefix, a NULL pointer gives ``None``, an
  unreadable one the bytes read before the fault (``None`` when none were);
  ``Event.args_status[name]`` then says ``"truncated"``, ``"null"`` or
  ``"unreadable"``;
* ``backtrace``: ``list[int]`` of return addresses;
* ``duration``: ``Event.duration_ns``, ``None`` when ``FLAG_NO_ENTRY`` is set.

Problems never raise: a record of an unknown probe or with a size that does
not match its layout is skipped, a record that runs past the batch ends the
batch, and each kind of problem is counted in ``Decoder.problems``.
"""

from __future__ import annotations

import struct
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import chain, count, repeat
from typing import Any

from instr.collectors.layout import Layout, LayoutCache, Slot
from instr.events import Event, RunContext
from instr.protocol import (
    FLAG_NO_ENTRY,
    HEADER,
    HEADER_SIZE,
    PHASE_NAMES,
    STATUS_NULL,
    STATUS_OK,
    STATUS_TRUNCATED,
    STATUS_UNREADABLE,
    VAR_HEADER,
    pad8,
)

Buffer = bytes | bytearray | memoryview
_Unpack = Callable[[Buffer, int], tuple[Any, ...]]
_MakeArgs = Callable[[tuple[Any, ...]], dict[str, Any]]
# (size, probe id, probe name, phase, args maker, args unpack, retval/duration unpack, ri, di)
_Hot = tuple[int, int, str, str, _MakeArgs, _Unpack | None, _Unpack | None, int, int]

_HEADER = HEADER.unpack_from
_PEEK = struct.Struct("<HBBI").unpack_from
_VAR = VAR_HEADER.unpack_from
_SLOT_FIELDS = "<8xIIQ"  # site, tid, ts
STATUS_NAMES = {
    STATUS_TRUNCATED: "truncated",
    STATUS_NULL: "null",
    STATUS_UNREADABLE: "unreadable",
}


@dataclass(frozen=True, slots=True)
class _Plan:
    """Everything needed to decode one (probe, phase), built once."""

    layout: Layout
    hot: _Hot | None  # fixed layouts only
    head: struct.Struct | None  # fixed: (site, tid, ts) from a whole record
    args: struct.Struct | None  # fixed: the named values of a whole record
    ret: struct.Struct | None  # fixed: (retval,)
    dur: struct.Struct | None  # fixed: (duration,)
    scalars: tuple[_Unpack | None, ...]  # variable layouts: per slot (scalars), from its start


def args_maker(names: tuple[str, ...]) -> _MakeArgs:
    """``values -> {names[0]: values[0], ...}``.

    A dict display over unpacked locals is about twice as fast as
    ``dict(zip(names, values))``, which matters once per record.
    """
    if len(names) == 1:
        (k0,) = names

        def make1(v: tuple[Any, ...]) -> dict[str, Any]:
            return {k0: v[0]}

        return make1
    if len(names) == 2:
        k0, k1 = names

        def make2(v: tuple[Any, ...]) -> dict[str, Any]:
            a, b = v
            return {k0: a, k1: b}

        return make2
    if len(names) == 3:
        k0, k1, k2 = names

        def make3(v: tuple[Any, ...]) -> dict[str, Any]:
            a, b, c = v
            return {k0: a, k1: b, k2: c}

        return make3
    if len(names) == 4:
        k0, k1, k2, k3 = names

        def make4(v: tuple[Any, ...]) -> dict[str, Any]:
            a, b, c, d = v
            return {k0: a, k1: b, k2: c, k3: d}

        return make4

    def make(v: tuple[Any, ...]) -> dict[str, Any]:
        return dict(zip(names, v, strict=True))

    return make


def _build_plan(lay: Layout) -> _Plan:
    if not lay.fixed:
        scalars = tuple(
            struct.Struct("<" + s.fmt).unpack_from if s.scalar else None for s in lay.slots
        )
        return _Plan(lay, None, None, None, None, None, scalars)
    tail = f"{8 * len(lay.slots)}x" if lay.slots else ""
    names = tuple(s.name for s in lay.arg_slots)
    args = struct.Struct(lay.slot_format(("arg",))) if names else None
    special = struct.Struct(lay.slot_format(("retval", "duration")))
    roles = [s.role for s in lay.slots if s.role != "arg"]
    ri = roles.index("retval") if "retval" in roles else -1
    di = roles.index("duration") if "duration" in roles else -1
    phase = PHASE_NAMES.index(lay.phase)
    hot: _Hot = (
        lay.size,
        lay.probe_id,
        lay.probe,
        PHASE_NAMES[phase],
        args_maker(names),
        args.unpack_from if args is not None else None,
        special.unpack_from if roles else None,
        ri,
        di,
    )
    ret = struct.Struct(lay.slot_format(("retval",))) if ri >= 0 else None
    dur = struct.Struct(lay.slot_format(("duration",))) if di >= 0 else None
    return _Plan(lay, hot, struct.Struct(_SLOT_FIELDS + tail), args, ret, dur, ())


@dataclass(frozen=True, slots=True)
class Block:
    """A uniform batch: one probe and phase, a fixed layout, the same flags.

    Collectors that can write columns (``on_block``) skip building an ``Event``
    per record, which is most of the host's cost for a hot probe. Nothing is
    decoded until asked: ``heads``, ``args``, ``rets`` and ``durs`` unpack the
    columns, ``numbered`` gives the records with their sequence numbers in
    place of the header's first word (for a single ``iter_unpack`` of whole
    rows, see ``sqlite_rows``).
    """

    probe_id: int
    phase: str
    first_seq: int
    count: int
    flags: int
    data: Buffer  # the batch's records, ``count`` of ``layout.size`` bytes each
    layout: Layout
    plan: _Plan
    pid: int = 0  # the process that sent the batch (set by the dispatcher; 0: not known)

    @property
    def heads(self) -> list[tuple[int, int, int]]:
        """(site, tid, ts_ns) per record."""
        assert self.plan.head is not None
        return [h for h in self.plan.head.iter_unpack(self.data)]

    @property
    def args(self) -> list[tuple[Any, ...]]:
        """Argument values per record, in layout order; [] if the layout has none."""
        a = self.plan.args
        return list(a.iter_unpack(self.data)) if a is not None else []

    @property
    def rets(self) -> list[Any] | None:
        r = self.plan.ret
        return [v for (v,) in r.iter_unpack(self.data)] if r is not None else None

    @property
    def durs(self) -> list[Any] | None:
        """None when not captured, or for exits without their entry (``FLAG_NO_ENTRY``)."""
        d = self.plan.dur
        if d is None or self.flags & FLAG_NO_ENTRY:
            return None
        return [v for (v,) in d.iter_unpack(self.data)]

    def numbered(self) -> bytearray:
        """A copy of the records whose first 8 bytes (size, phase, flags, probe:
        the same in every record of a block) hold each record's sequence number."""
        buf = bytearray(self.data)
        words = memoryview(buf).cast("Q")
        first = self.first_seq
        words[:: self.layout.size >> 3] = array("Q", range(first, first + self.count))
        words.release()
        return buf


class Decoder:
    """Decodes batches for one run; not thread-safe (the dispatcher's worker owns it)."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.layouts = LayoutCache(ctx.table)
        self.problems: Counter[str] = Counter()  # problem -> how many times it happened
        self._hot: dict[int, _Hot] = {}  # probe << 8 | phase -> fixed plan, for the record loop
        self._plans: dict[int, _Plan | None] = {}  # None: unknown probe or phase
        self._frames: dict[int, struct.Struct] = {}

    def _plan(self, probe_id: int, phase: int) -> _Plan | None:
        key = probe_id << 8 | phase
        try:
            return self._plans[key]
        except KeyError:
            pass
        lay = self.layouts.get(probe_id, PHASE_NAMES[phase]) if phase < len(PHASE_NAMES) else None
        plan = _build_plan(lay) if lay is not None else None
        self._plans[key] = plan
        if plan is not None and plan.hot is not None:
            self._hot[key] = plan.hot
        return plan

    def decode(self, data: Buffer, first_seq: int) -> list[Event]:
        """Decode one batch; events get host sequence numbers from ``first_seq`` on."""
        uniform = self._uniform(data, first_seq)
        if uniform is not None:
            return uniform
        out: list[Event] = []
        app = out.append
        hot_get = self._hot.get
        n = len(data)
        off = 0
        seq = first_seq
        try:
            while off < n:
                size, phase, flags, probe, site, tid, ts = _HEADER(data, off)
                hot = hot_get(probe << 8 | phase)
                if hot is not None and hot[0] == size:
                    _, pid, name, ph, mk, au, su, ri, di = hot
                    args = mk(au(data, off)) if au is not None else {}
                    if su is None:
                        app(Event(seq, pid, name, ph, tid, ts, site, args, None, None, flags))
                    else:
                        sp = su(data, off)
                        ret = sp[ri] if ri >= 0 else None
                        dur = None if di < 0 or flags & FLAG_NO_ENTRY else sp[di]
                        app(Event(seq, pid, name, ph, tid, ts, site, args, ret, dur, flags))
                    seq += 1
                    off += size
                    continue
                if size < HEADER_SIZE or size & 7 or off + size > n:
                    self.problems["malformed record (bad size); rest of batch dropped"] += 1
                    break
                event = self._other(data, off, size, phase, flags, probe, site, tid, ts, seq)
                if event is not None:
                    app(event)
                    seq += 1
                off += size
        except struct.error:
            self.problems["record runs past the end of its batch; rest of batch dropped"] += 1
        return out

    def _uniform_plan(self, data: Buffer) -> tuple[_Plan, int, int] | None:
        """(plan, flags, records) when every record has the same fixed layout and flags."""
        n = len(data)
        if n < HEADER_SIZE:
            return None
        size, phase, flags, probe = _PEEK(data, 0)
        plan = self._plan(probe, phase)
        if plan is None or plan.hot is None or size != plan.hot[0] or n % size:
            return None
        records = n // size
        if records > 1:
            words = memoryview(data).cast("B").cast("Q")
            if words[:: size >> 3].tobytes() != bytes(words[:1]) * records:
                return None
        return plan, flags, records

    def block(self, data: Buffer, first_seq: int, pid: int = 0) -> Block | None:
        """The batch as columns, if it is uniform (see ``Block``); else None."""
        found = self._uniform_plan(data)
        if found is None:
            return None
        plan, flags, records = found
        assert plan.hot is not None
        return Block(
            plan.hot[1], plan.hot[3], first_seq, records, flags, data, plan.layout, plan, pid
        )

    def _uniform(self, data: Buffer, first_seq: int) -> list[Event] | None:
        """Whole-buffer decode when every record has the same fixed layout and flags."""
        if len(data) == 0:
            return []
        found = self._uniform_plan(data)
        if found is None:
            return None
        plan, flags, records = found
        assert plan.hot is not None
        _, pid, name, ph, mk, _au, _su, _ri, _di = plan.hot
        assert plan.head is not None
        heads = plan.head.iter_unpack(data)
        args: Iterable[dict[str, Any]]
        if plan.args is not None:
            args = map(mk, plan.args.iter_unpack(data))
        else:
            args = map(dict, repeat((), records))
        rets: Iterator[Any] = repeat(None)
        durs: Iterator[Any] = repeat(None)
        if plan.ret is not None:
            rets = chain.from_iterable(plan.ret.iter_unpack(data))
        if plan.dur is not None and not flags & FLAG_NO_ENTRY:
            durs = chain.from_iterable(plan.dur.iter_unpack(data))
        return [
            Event(s, pid, name, ph, tid, ts, site, a, r, d, flags)
            for s, (site, tid, ts), a, r, d in zip(count(first_seq), heads, args, rets, durs)
        ]

    def _other(
        self,
        data: Buffer,
        off: int,
        size: int,
        phase: int,
        flags: int,
        probe: int,
        site: int,
        tid: int,
        ts: int,
        seq: int,
    ) -> Event | None:
        """A record the fast loop did not take: first of its kind, variable, or bad."""
        plan = self._plan(probe, phase)
        if plan is None:
            self.problems[f"records of unknown probe id {probe} phase {phase} skipped"] += 1
            return None
        lay = plan.layout
        if plan.hot is not None:
            if size == lay.size:  # first record of this layout: the loop knows it from now on
                hot = plan.hot
                args = hot[4](hot[5](data, off)) if hot[5] is not None else {}
                sp = hot[6](data, off) if hot[6] is not None else ()
                ret = sp[hot[7]] if hot[7] >= 0 else None
                dur = None if hot[8] < 0 or flags & FLAG_NO_ENTRY else sp[hot[8]]
                return Event(
                    seq, lay.probe_id, lay.probe, lay.phase, tid, ts, site, args, ret, dur, flags
                )
            self.problems[
                f"{lay.probe} {lay.phase} records of {size} bytes, expected {lay.size}; skipped"
            ] += 1
            return None
        return self._variable(plan, data, off, size, flags, site, tid, ts, seq)

    def _variable(
        self,
        plan: _Plan,
        data: Buffer,
        off: int,
        size: int,
        flags: int,
        site: int,
        tid: int,
        ts: int,
        seq: int,
    ) -> Event | None:
        lay = plan.layout
        end = off + size
        pos = off + HEADER_SIZE
        args: dict[str, Any] = {}
        status: dict[str, str] | None = None
        ret: int | None = None
        dur: int | None = None
        for slot, unpack in zip(lay.slots, plan.scalars, strict=True):
            if pos + 8 > end:
                self._overrun(lay)
                return None
            if unpack is not None:
                value = unpack(data, pos)[0]
                pos += 8
                if slot.role == "retval":
                    ret = value
                elif slot.role == "duration":
                    dur = None if flags & FLAG_NO_ENTRY else value
                else:
                    args[slot.name] = value
                continue
            first, second = _VAR(data, pos)
            pos += 8
            if slot.kind == "backtrace":
                if pos + 8 * first > end:
                    self._overrun(lay)
                    return None
                args[slot.name] = list(self._frames_struct(first).unpack_from(data, pos))
                pos += 8 * first
                continue
            if pos + first > end:
                self._overrun(lay)
                return None
            raw = bytes(data[pos : pos + first])
            pos += pad8(first)
            args[slot.name] = _var_value(slot, raw, second)
            if second != STATUS_OK:
                status = status if status is not None else {}
                status[slot.name] = STATUS_NAMES.get(second, f"status {second}")
        return Event(
            seq, lay.probe_id, lay.probe, lay.phase, tid, ts, site, args, ret, dur, flags, status
        )

    def _overrun(self, lay: Layout) -> None:
        self.problems[f"{lay.probe} {lay.phase} record shorter than its captures; skipped"] += 1

    def _frames_struct(self, n: int) -> struct.Struct:
        s = self._frames.get(n)
        if s is None:
            s = self._frames[n] = struct.Struct(f"<{n}Q")
        return s


def _var_value(slot: Slot, raw: bytes, status: int) -> str | bytes | None:
    """The value of a cstr/bytes slot: None for NULL, and for unreadable with nothing read.

    An unreadable capture that faulted after some bytes keeps what was read, like
    the agent's own predicates see it.
    """
    if status == STATUS_NULL or (not raw and status != STATUS_OK and status != STATUS_TRUNCATED):
        return None
    if slot.kind == "cstr":
        return raw.decode("utf-8", "backslashreplace")
    return raw
