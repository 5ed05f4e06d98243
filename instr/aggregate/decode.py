"""Agent ``aggs`` messages -> ``AggSnapshot``.

The message lists, per aggregation, how many rows follow in the binary data;
each row is ``nkeys + nvals`` little-endian u64 words: the keys, then the
values laid out as ``instr/ctier/runtime.c`` describes. Keys are turned into
what a reader wants: typed ints, symbolised callers, interned strings and
backtraces, function and module names for sites, the process name. Rows
whose keys become equal that way (two sites in one module) are merged.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from instr.aggregate import llq
from instr.aggregate.model import HISTOGRAMS, AggRow, AggSnapshot, AggTable, Bucket, KeyValue
from instr.events import RunContext
from instr.probes.ir import (
    QUANTIZE_BUCKETS,
    Aggregation,
    Probe,
    ProbeTable,
)

_SIGNED_BITS = {"i8": 8, "i16": 16, "i32": 32, "i64": 64}
_UNSIGNED_BITS = {"u8": 8, "u16": 16, "u32": 32}


def _signed(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def quantize_bucket(i: int) -> Bucket:
    """Bucket ``i`` of the 129 quantize buckets, as ``lo <= v < hi``."""
    if i == 64:
        return Bucket(0, 1, 0)
    if i > 64:
        j = i - 65
        return Bucket(1 << j, None if j == 63 else 1 << (j + 1), 0)
    j = 63 - i  # |v| in [2^j, 2^(j+1))
    return Bucket(-(1 << (j + 1)) + 1, -(1 << j) + 1, 0)


def lquantize_bucket(i: int, lq: tuple[int, int, int]) -> Bucket:
    low, high, step = lq
    n = (high - low + step - 1) // step
    if i == 0:
        return Bucket(None, low, 0)
    if i == n + 1:
        return Bucket(high, None, 0)
    lo = low + (i - 1) * step
    return Bucket(lo, min(lo + step, high), 0)


class AggDecoder:
    """Decodes the snapshots of one run (keeps the interned strings between them)."""

    def __init__(self, table: ProbeTable, ctx: RunContext) -> None:
        self.table = table
        self.ctx = ctx
        self.strings: dict[int, str] = {}
        self.stacks: dict[int, list[int]] = {}
        self.aggs: dict[int, tuple[Probe, Aggregation]] = {
            a.id: (p, a) for p, a in table.aggregations()
        }

    def decode(self, env: dict[str, Any], data: bytes | None) -> AggSnapshot:
        for k, v in (env.get("strings") or {}).items():
            self.strings[int(k)] = str(v)
        for k, v in (env.get("stacks") or {}).items():
            self.stacks[int(k)] = [int(a, 0) for a in v]
        execname = str(env.get("execname") or "?")
        buf = data or b""
        off = 0
        tables: list[AggTable] = []
        for t in env.get("tables", ()):
            probe, agg = self.aggs[int(t["id"])]
            stride = len(agg.keys) + agg.value_words()
            n = int(t["rows"])
            words = struct.unpack_from(f"<{n * stride}Q", buf, off) if n else ()
            off += 8 * n * stride
            rows = [
                self._row(probe, agg, words[r * stride : (r + 1) * stride], execname)
                for r in range(n)
            ]
            tables.append(
                AggTable(
                    name=f"{probe.name.split('/')[0]}/{agg.name}",
                    probe=probe.name,
                    func=agg.func,  # type: ignore[arg-type]
                    arg=agg.arg,
                    key_names=tuple(k.name for k in agg.keys),
                    rows=tuple(merge_rows(rows, agg.func)),
                    overflow=int(t.get("overflow", 0)),
                    max_keys=agg.max_keys,
                    lquantize=agg.lquantize,
                    tier=probe.agg_tier or "",
                    llquantize=agg.llquantize,
                )
            )
        return AggSnapshot(
            ts_ns=int(env.get("ts", 0)),
            seq=int(env.get("seq", 0)),
            final=bool(env.get("final")),
            tables=tuple(tables),
        )

    def _key(self, probe: Probe, agg: Aggregation, i: int, w: int, execname: str) -> KeyValue:
        k = agg.keys[i]
        if k.src == "execname":
            return execname
        if k.src in ("tid", "pid"):
            return w
        if k.src in ("probefunc", "module"):
            site = self.ctx.site(probe.id, w)
            if site is None:
                return f"site {w}"
            if k.src == "module":
                return site.module or "?"
            return site.symbol or f"{site.address:#x}"
        assert k.capture is not None
        _, _, cap = probe.capture_ref(k.capture)
        if cap.src == "caller":
            return self.ctx.symbolize(w)
        if cap.src == "backtrace":
            return tuple(self.ctx.symbolize(a) for a in self.stacks.get(w, []))
        if cap.type in ("cstr", "bytes"):
            s = self.strings.get(w, "?")
            return "(null)" if s == "\0null" else s
        return _typed(cap.type, w)

    def _row(self, probe: Probe, agg: Aggregation, words: tuple[int, ...], execname: str) -> AggRow:
        nk = len(agg.keys)
        keys = tuple(self._key(probe, agg, i, words[i], execname) for i in range(nk))
        v = words[nk:]
        count = v[0]
        signed = _is_signed(probe, agg)

        def val(x: int) -> int:
            return _signed(x, 64) if signed else x

        if agg.func in ("sum", "avg"):
            return AggRow(keys, count, total=val(v[1]))
        if agg.func == "min":  # an untouched row holds the start value: no minimum yet
            return AggRow(keys, count, min=val(v[1]) if count else None)
        if agg.func == "max":
            return AggRow(keys, count, max=val(v[1]) if count else None)
        if agg.func == "stddev":
            return AggRow(keys, count, total=val(v[1]), sumsq=v[2] | (v[3] << 64))
        if agg.func in HISTOGRAMS:
            make: Callable[[int], Bucket]
            if agg.func == "quantize":
                make, nb = quantize_bucket, QUANTIZE_BUCKETS
            elif agg.func == "llquantize":
                params = agg.llquantize
                assert params is not None

                def make(i: int) -> Bucket:
                    return llq.bucket(i, params)

                nb = len(v) - 1
            else:
                lq = agg.lquantize
                assert lq is not None

                def make(i: int) -> Bucket:
                    return lquantize_bucket(i, lq)

                nb = len(v) - 1
            buckets = tuple(
                Bucket(b.lo, b.hi, v[1 + i]) for i in range(nb) if v[1 + i] for b in [make(i)]
            )
            return AggRow(keys, sum(b.count for b in buckets), buckets=buckets)
        return AggRow(keys, count)


def _is_signed(probe: Probe, agg: Aggregation) -> bool:
    if agg.arg is None:
        return False
    _, _, cap = probe.capture_ref(agg.arg)
    return cap.src == "duration" or cap.type in _SIGNED_BITS


def _typed(t: str, w: int) -> int:
    if t in _SIGNED_BITS:
        return _signed(w, _SIGNED_BITS[t])
    if t in _UNSIGNED_BITS:
        return w & ((1 << _UNSIGNED_BITS[t]) - 1)
    if t == "bool":
        return 1 if w & 0xFF else 0
    return w


def merge_rows(rows: list[AggRow], func: str) -> list[AggRow]:
    """Merge rows with equal keys (sites that name the same module or function;
    the same keys in two processes: instr.aggregate.merge)."""
    out: dict[tuple[KeyValue, ...], AggRow] = {}
    for r in rows:
        prev = out.get(r.keys)
        if prev is None:
            out[r.keys] = r
            continue
        buckets: dict[tuple[int | None, int | None], int] = {}
        for b in (*prev.buckets, *r.buckets):
            buckets[(b.lo, b.hi)] = buckets.get((b.lo, b.hi), 0) + b.count
        out[r.keys] = AggRow(
            r.keys,
            prev.count + r.count,
            total=prev.total + r.total,
            min=_pick(min, prev.min, r.min),
            max=_pick(max, prev.max, r.max),
            sumsq=prev.sumsq + r.sumsq,
            buckets=tuple(
                Bucket(lo, hi, n)
                for (lo, hi), n in sorted(buckets.items(), key=lambda kv: _order(kv[0]))
            ),
        )
    return list(out.values())


def _order(b: tuple[int | None, int | None]) -> int:
    lo, _hi = b
    if lo is None:
        return -(2**65)
    return lo


def _pick(fn: Callable[[int, int], int], a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return fn(a, b)
