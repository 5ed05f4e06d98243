"""Events -> ``INSERT INTO events`` rows, grouped by statement (for ``sqlite.py``).

Each (probe, phase) gets a writer that turns a list of its events into rows.
The statement carries run id, probe id and phase as literals, and names only
the columns a row has a value for: Python's sqlite3 binds ``None`` through its
slow adapter lookup, so a NULL is left to the column default instead.

Integer-only layouts (the hot case) build rows with one list comprehension per
batch and ``args`` from a ``%`` template; anything unexpected in an event
(missing capture, ``args_status``, a non-integer) falls back to the generic
writer, which handles every capture kind and backtraces (deduplicated into
``stacks``).

A uniform batch of an integer-only layout (``decode.Block``, what a hot
native probe sends) skips ``Event`` objects and Python rows altogether:
``EventRows.blocks`` holds (statement, iterator) pairs whose rows are unpacked
from the batch's bytes while ``executemany`` binds them (``_block_writer``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from operator import attrgetter
from typing import Any, cast

from instr.collectors.decode import Block
from instr.collectors.jsonl import names_getter
from instr.collectors.layout import UNSIGNED64, Kind, Layout, LayoutCache
from instr.collectors.values import MAX_I64, address_json, int64, to_json
from instr.events import Event, RunContext
from instr.protocol import FLAG_NO_ENTRY, PHASE_NAMES

Row = tuple[Any, ...]
_Writer = Callable[[list[Event]], None]
_key = attrgetter("probe_id", "phase")
_NUMERIC_KINDS = frozenset({"int", "ptr", "caller"})
_TWO64 = 1 << 64
_BASE = ("seq", "pid", "tid", "ts_ns", "site")


class EventRows:
    """Pending rows of one run: ``pending`` (SQL -> rows) and ``new_stacks``."""

    def __init__(self, run_id: int, ctx: RunContext, layouts: LayoutCache) -> None:
        self.run_id = run_id
        self.ctx = ctx
        self.layouts = layouts
        self.pending: dict[str, list[Row]] = {}
        self.new_stacks: list[Row] = []
        # (statement, rows) of uniform batches, rows unpacked while SQLite binds them
        self.blocks: list[tuple[str, Iterator[Row]]] = []
        self._writers: dict[tuple[int, str], _Writer] = {}
        self._block_writers: dict[tuple[int, str], Callable[[Block], None]] = {}
        self._stacks: dict[tuple[int, ...], int] = {}

    def add(self, events: list[Event]) -> None:
        if not events:
            return
        keys = list(map(_key, events))
        first = keys[0]
        if keys.count(first) == len(keys):  # one probe and phase: the common hot case
            self._writer(first)(events)
            return
        groups: dict[tuple[int, str], list[Event]] = {}
        for k, e in zip(keys, events, strict=True):
            group = groups.get(k)
            if group is None:
                group = groups[k] = []
            group.append(e)
        for k, group in groups.items():
            self._writer(k)(group)

    def add_block(self, block: Block) -> bool:
        """Rows straight from columns; False when this layout needs per-event handling."""
        key = (block.probe_id, block.phase)
        self._writer(key)  # builds the block writer too, for integer-only layouts
        w = self._block_writers.get(key)
        if w is None:
            return False
        w(block)
        return True

    # -- statements -------------------------------------------------------------

    def _rows(self, probe_id: int, phase: str, columns: tuple[str, ...]) -> list[Row]:
        if phase not in PHASE_NAMES:  # only literals we know go into SQL text
            raise ValueError(f"unknown phase {phase!r}")
        sql = (
            f"INSERT INTO events (run_id, probe_id, phase, {', '.join(columns)})"
            f" VALUES ({int(self.run_id)}, {int(probe_id)}, '{phase}', {', '.join('?' * len(columns))})"
        )
        rows = self.pending.get(sql)
        if rows is None:
            rows = self.pending[sql] = []
        return rows

    def _writer(self, key: tuple[int, str]) -> _Writer:
        w = self._writers.get(key)
        if w is None:
            probe_id, phase = key
            lay = self.layouts.get(probe_id, phase) if phase in PHASE_NAMES else None
            if phase not in PHASE_NAMES:
                w = _ignore
            elif (
                lay is not None
                and lay.fixed
                and all(s.kind in _NUMERIC_KINDS for s in lay.arg_slots)
            ):
                w = self._numeric_writer(lay)
            else:
                w = self._generic_writer(probe_id, phase, lay)
            self._writers[key] = w
        return w

    # -- integer-only layouts -----------------------------------------------------

    def _numeric_writer(self, lay: Layout) -> _Writer:
        names = tuple(s.name for s in lay.arg_slots)
        n = len(names)
        tpl = "{" + ",".join(f"{to_json(k).replace('%', '%%')}:%d" for k in names) + "}"
        get = names_getter(names)
        has_ret = lay.retval is not None
        wide = lay.retval is not None and lay.retval.type in UNSIGNED64
        has_dur = lay.duration is not None
        ret = ("retval",) if has_ret else ()
        short = self._rows(lay.probe_id, lay.phase, (*_BASE, *ret, "args"))
        full = self._rows(lay.probe_id, lay.phase, (*_BASE, *ret, "duration_ns", "args"))
        generic = self._generic_writer(lay.probe_id, lay.phase, lay)

        self._block_writers[(lay.probe_id, lay.phase)] = self._block_writer(lay)

        def entry_rows(evs: list[Event]) -> list[Row]:
            return [(e.seq, e.pid or None, e.tid, e.ts_ns, e.site, tpl % get(e.args)) for e in evs]

        def ret_rows(evs: list[Event]) -> list[Row]:
            rets = [e.retval for e in evs]
            if None in rets:
                raise TypeError("exit event without its retval")
            vals = cast(list[int], rets)
            if wide:  # u64/ptr above 2^63-1: SQLite keeps the i64 bit pattern
                vals = [r - _TWO64 if r > MAX_I64 else r for r in vals]
            return [
                (e.seq, e.pid or None, e.tid, e.ts_ns, e.site, r)
                for e, r in zip(evs, vals, strict=True)
            ]

        def write(evs: list[Event]) -> None:
            odd = [e for e in evs if e.args_status is not None or len(e.args) != n]
            if odd:
                generic(odd)
                evs = [e for e in evs if e.args_status is None and len(e.args) == n]
            try:
                if not has_ret and not has_dur:
                    short.extend(entry_rows(evs))
                    return
                heads = (
                    ret_rows(evs)
                    if has_ret
                    else [(e.seq, e.pid or None, e.tid, e.ts_ns, e.site) for e in evs]
                )
                args = [tpl % get(e.args) for e in evs]
            except (KeyError, TypeError):  # not what the layout promises: take the slow path
                generic(evs)
                return
            if not has_dur:
                short.extend([(*h, a) for h, a in zip(heads, args, strict=True)])
                return
            durs = [e.duration_ns for e in evs]
            for h, d, a in zip(heads, durs, args, strict=True):
                if d is None:  # FLAG_NO_ENTRY: leave duration_ns NULL
                    short.append((*h, a))
                else:
                    full.append((*h, d, a))

        return write

    def _block_writer(self, lay: Layout) -> Callable[[Block], None]:
        """A uniform batch straight from its bytes: ``Block.numbered`` puts each
        record's seq in its first word, one ``iter_unpack`` yields whole rows
        (seq, site, tid, ts, slots...) that ``executemany`` binds as they come,
        and SQLite's ``printf`` writes ``args`` (same text as ``tpl % args``).
        No Python object is built per record beyond the tuple SQLite binds.

        64-bit unsigned slots are read as signed (SQLite's integers are) and
        printed with ``%u``; a retval keeps the i64 bit pattern, as elsewhere.
        The batch's pid (one process sends a batch) is a literal, like run,
        probe and phase: one statement per process, nothing more per row.
        """
        if lay.phase not in PHASE_NAMES:  # only literals we know go into SQL text
            raise ValueError(f"unknown phase {lay.phase!r}")

        def statement(duration: bool, pid: int) -> tuple[str, struct.Struct]:
            cols = {"seq": "?1", "site": "?2", "tid": "?3", "ts_ns": "?4"}
            cols["pid"] = str(int(pid)) if pid else "NULL"
            fmt = ["<Q", "IIQ"]  # the header's first word holds the seq (Block.numbered)
            keys: list[str] = []
            params: list[str] = []
            n = 4  # values per row so far
            for s in lay.slots:
                wide = s.fmt == "Q"
                if s.role == "duration" and not duration:
                    fmt.append("8x")
                    continue
                fmt.append("q" if wide else s.fmt)
                n += 1
                if s.role == "arg":
                    keys.append(f"{to_json(s.name).replace('%', '%%')}:{'%u' if wide else '%d'}")
                    params.append(f"?{n}")
                else:
                    cols["retval" if s.role == "retval" else "duration_ns"] = f"?{n}"
            if keys:
                tpl = ("{" + ",".join(keys) + "}").replace("'", "''")
                cols["args"] = f"printf('{tpl}', {', '.join(params)})"
            else:
                cols["args"] = "'{}'"
            sql = (
                f"INSERT INTO events (run_id, probe_id, phase, {', '.join(cols)})"
                f" VALUES ({int(self.run_id)}, {int(lay.probe_id)}, '{lay.phase}',"
                f" {', '.join(cols.values())})"
            )
            return sql, struct.Struct("".join(fmt))

        # a record without its entry (FLAG_NO_ENTRY) leaves duration_ns NULL
        statements: dict[tuple[bool, int], tuple[str, struct.Struct]] = {}
        blocks = self.blocks

        def write(b: Block) -> None:
            key = (not b.flags & FLAG_NO_ENTRY, b.pid)
            made = statements.get(key)
            if made is None:
                made = statements[key] = statement(*key)
            sql, rec = made
            blocks.append((sql, rec.iter_unpack(b.numbered())))

        return write

    # -- everything else ----------------------------------------------------------

    def _generic_writer(self, probe_id: int, phase: str, lay: Layout | None) -> _Writer:
        kinds: dict[str, Kind] = lay.kinds if lay is not None else {}
        by_columns: dict[tuple[str, ...], list[Row]] = {}

        def write(evs: list[Event]) -> None:
            for e in evs:
                cols: list[str] = list(_BASE)
                row: list[Any] = [e.seq, e.pid or None, e.tid, e.ts_ns, e.site]
                if e.retval is not None:
                    cols.append("retval")
                    row.append(int64(int(e.retval)))
                if e.duration_ns is not None:
                    cols.append("duration_ns")
                    row.append(e.duration_ns)
                args, stack = self._args_json(e, kinds)
                cols.append("args")
                row.append(args)
                if stack is not None:
                    cols.append("stack_id")
                    row.append(stack)
                if e.args_status:
                    cols.append("args_status")
                    row.append(to_json(e.args_status))
                key = tuple(cols)
                rows = by_columns.get(key)
                if rows is None:
                    rows = by_columns[key] = self._rows(probe_id, phase, key)
                rows.append(tuple(row))

        return write

    def _args_json(self, e: Event, kinds: dict[str, Kind]) -> tuple[str, int | None]:
        out: dict[str, Any] = {}
        stack: int | None = None
        for name, value in e.args.items():
            kind = kinds.get(name, "int")
            if value is None:
                out[name] = None
            elif kind == "bytes":
                out[name] = bytes(value).hex()
            elif kind == "backtrace":
                sid = self._stack_id(value)
                if stack is None:
                    stack = sid  # the first backtrace goes to events.stack_id
                else:
                    out[name] = sid
            else:
                out[name] = value
        return to_json(out), stack

    def _stack_id(self, frames: list[int]) -> int:
        key = tuple(frames)
        sid = self._stacks.get(key)
        if sid is None:
            sid = self._stacks[key] = len(self._stacks) + 1
            text = to_json([address_json(self.ctx, a) for a in frames])
            self.new_stacks.append((self.run_id, sid, text))
        return sid


def _ignore(evs: list[Event]) -> None:
    pass
