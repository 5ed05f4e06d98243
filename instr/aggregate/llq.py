"""llquantize: DTrace's log-linear histogram, ``llquantize(value, factor, low, high, steps)``.

Bucket 0 holds the values below ``factor**low``. Each order of magnitude
``m`` from ``low`` to ``high`` (values in ``[factor**m, factor**(m+1))``) is
cut into linear steps of ``factor**(m+1) // steps`` (1 while
``factor**(m+1) <= steps``); the last bucket holds ``factor**(high+1)`` and
up. ``llquantize(x, 10, 0, 2, 10)`` has buckets ``< 1``, 1..9, 10, 20..90,
100, 200..900 and ``>= 1000``.

One description serves every place a bucket is computed or drawn: the C
runtime (``instr/ctier/runtime.c``, ``agg_llqbucket``, DTrace's algorithm)
and the host tier and the decoder here (``edges``, whose result is the same;
``tests/unit/test_llquantize.py`` checks both against DTrace's kernel code).
"""

from __future__ import annotations

from bisect import bisect_right
from functools import lru_cache

from instr.aggregate.model import Bucket

Llq = tuple[int, int, int, int]  # (factor, low magnitude, high magnitude, steps)
MAX_BUCKETS = 4096
_ARG_MAX = 0xFFFF  # DTrace keeps each parameter in 16 bits
_I64_MAX = (1 << 63) - 1


def check(llq: Llq) -> tuple[int, str, str] | None:
    """Why these parameters are refused: (argument 1..4, message, hint), or None."""
    factor, low, high, steps = llq
    for i, (name, v) in enumerate(
        (("factor", factor), ("low magnitude", low), ("high magnitude", high), ("steps", steps)),
        1,
    ):
        if not 0 <= v <= _ARG_MAX:
            return i, f"llquantize()'s {name} must be 0 to {_ARG_MAX}, not {v}", ""
    if factor < 2:
        return 1, f"llquantize()'s factor must be 2 or more, not {factor}", "e.g. 10"
    if high <= low:
        return 3, (f"llquantize()'s high magnitude ({high}) must be greater than its "
                   f"low magnitude ({low})"), "e.g. llquantize(x, 10, 0, 6, 20)"  # fmt: skip
    if steps < factor or steps % factor:
        return 4, (f"llquantize()'s steps ({steps}) must be a multiple of its factor "
                   f"({factor})"), f"e.g. {factor}, {factor * 2} or {factor * factor}"  # fmt: skip
    power = factor
    while power < steps:
        power *= factor
    if power % steps:
        return 4, (f"llquantize()'s steps ({steps}) must divide a power of its factor "
                   f"({factor})"), f"e.g. {factor} or {factor * factor}"  # fmt: skip
    if factor ** (high + 1) > _I64_MAX:
        return 3, (f"llquantize(): {factor} to the power {high + 1} does not fit in 64 "
                   "bits"), "lower the high magnitude"  # fmt: skip
    n = count(llq)
    if n > MAX_BUCKETS:
        return (
            4,
            f"llquantize() would have {n} buckets, more than {MAX_BUCKETS}",
            ("fewer steps or magnitudes"),
        )
    return None


@lru_cache(maxsize=64)
def edges(llq: Llq) -> tuple[int, ...]:
    """The lower bound of each bucket after the first, in order (the last: factor**(high+1))."""
    factor, low, high, steps = llq
    out: list[int] = []
    value = factor**low
    for _ in range(low, high + 1):
        nxt = value * factor
        step = nxt // steps if nxt > steps else 1
        while value < nxt:
            out.append(value)
            value += step
            if len(out) > MAX_BUCKETS:
                return tuple(out)
    out.append(value)
    return tuple(out)


def count(llq: Llq) -> int:
    """Every bucket: below, the magnitudes' steps, above."""
    return len(edges(llq)) + 1


def index(value: int, llq: Llq) -> int:
    """The bucket of a (signed) value."""
    return bisect_right(edges(llq), value)


def bucket(i: int, llq: Llq) -> Bucket:
    """Bucket ``i`` as ``lo <= v < hi`` (0: below factor**low; the last: from the top up)."""
    e = edges(llq)
    if i == 0:
        return Bucket(None, e[0], 0)
    if i >= len(e):
        return Bucket(e[-1], None, 0)
    return Bucket(e[i - 1], e[i], 0)


def neighbour(span: tuple[int | None, int | None], llq: Llq, after: bool) -> tuple[
    int | None, int | None
] | None:  # fmt: skip
    """The bucket just after (or before) the one ``span`` covers, None past the ends."""
    lo = span[0]
    i = 0 if lo is None else index(lo, llq)
    j = i + 1 if after else i - 1
    if not 0 <= j < count(llq):
        return None
    b = bucket(j, llq)
    return (b.lo, b.hi)
