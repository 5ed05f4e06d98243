"""Aggregation snapshots in Prometheus' text exposition format (version 0.0.4).

Pure: ``exposition`` turns a snapshot and a few run figures into the text a
``GET /metrics`` returns (``instr.metrics`` serves it).  The mapping is
documented in docs/metrics.md:

* a table ``set/name`` becomes the metric ``instr_set_name`` (names cut to
  ``[a-zA-Z_:][a-zA-Z0-9_:]*``; a name taken twice gets ``_2``, ``_3``, ...);
* its key names become labels, its key values label values (a backtrace is
  its frames joined by ``;``, innermost first); every series also has the
  run's ``pid`` unless a key is itself called ``pid`` (``by pid``, ``-F``);
* ``count`` is a counter (``_total``); ``sum``, ``min``, ``max``, ``avg`` and
  ``stddev`` are gauges (a sum can go down: its values may be negative);
* ``quantize``, ``lquantize`` and ``llquantize`` are histograms: a bucket
  ``[lo, hi)`` of integer values is ``le="hi-1"`` exactly, counts cumulative,
  the open top bucket in ``+Inf``; every row of a table has the same bounds
  (the union over its rows). There is no ``_sum``: the target keeps no sum
  for histograms, and a made-up one would be wrong;
* the run: ``instr_run_info{pid,command}`` (1), ``instr_events_total``,
  ``instr_drops_total``, ``instr_aggregation_overflow_total{aggregation}``,
  ``instr_snapshot_seq`` and ``instr_snapshot_age_seconds``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from instr.aggregate.export import has_value
from instr.aggregate.model import HISTOGRAMS, AggRow, AggTable, KeyValue

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "instr_"
_BAD_NAME = re.compile(r"[^a-zA-Z0-9_:]+")
_BAD_LABEL = re.compile(r"[^a-zA-Z0-9_]+")
# labels a histogram's own samples use, and the run's: a key by one of these names is renamed
_RESERVED_LABELS = ("le",)


@dataclass(frozen=True)
class RunFigures:
    """What the exposition says about the run besides its aggregations."""

    pid: int | None
    command: str
    events: int = 0
    drops: int = 0
    seq: int | None = None  # of the snapshot shown; None before the first
    age_s: float | None = None  # how old that snapshot is


def metric_name(name: str) -> str:
    """``cli/bytes`` -> ``instr_cli_bytes``: a valid metric name with the instr prefix."""
    body = _BAD_NAME.sub("_", name).strip("_")
    return PREFIX + (body or "agg")


def label_name(name: str) -> str:
    """A key name as a label name: ``[a-zA-Z_][a-zA-Z0-9_]*``, never ``__...`` (reserved)."""
    body = _BAD_LABEL.sub("_", name).strip("_")
    if not body:
        return "key"
    if body[0].isdigit():
        body = "key_" + body
    return body


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def number(value: int | float) -> str:
    """A sample value: integers exactly, floats in Python's shortest round-trip form."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def key_text(value: KeyValue) -> str:
    if isinstance(value, tuple):
        return ";".join(value)
    return str(value)


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    body = ",".join(f'{k}="{escape_label(v)}"' for k, v in pairs)
    return "{" + body + "}" if body else ""


class _Names:
    """Hands out unique names (metric names, or one series' label names)."""

    def __init__(self, taken: Iterable[str] = ()) -> None:
        self.taken = set(taken)

    def unique(self, name: str) -> str:
        out, n = name, 1
        while out in self.taken:
            n += 1
            out = f"{name}_{n}"
        self.taken.add(out)
        return out


def key_labels(table: AggTable) -> list[str]:
    """The label names of a table's keys: sanitised, distinct, never ``le``."""
    names = _Names(_RESERVED_LABELS)
    out = []
    for key in table.key_names:
        name = label_name(key)
        out.append(names.unique(name if name != "le" else "key_le"))
    return out


def _describe(table: AggTable) -> str:
    what = f"{table.func}({table.arg})" if table.arg else f"{table.func}()"
    return f"{what} of probe {table.probe}, aggregation {table.name}"


def _bounds(rows: Sequence[AggRow]) -> list[int]:
    """Every finite upper bound (``le``) of a table's non-empty buckets, ascending."""
    return sorted({b.hi - 1 for r in rows for b in r.buckets if b.hi is not None})


def _histogram(name: str, table: AggTable, series: list[list[tuple[str, str]]]) -> list[str]:
    lines = []
    bounds = _bounds(table.rows)
    for row, labels in zip(table.rows, series, strict=True):
        for le in bounds:
            below = sum(b.count for b in row.buckets if b.hi is not None and b.hi - 1 <= le)
            lines.append(f"{name}_bucket{_labels([*labels, ('le', str(le))])} {below}")
        lines.append(f"{name}_bucket{_labels([*labels, ('le', '+Inf')])} {row.count}")
        lines.append(f"{name}_count{_labels(labels)} {row.count}")
    return lines


def table_lines(table: AggTable, name: str, pid: int | None) -> list[str]:
    """One table as a metric family: HELP, TYPE and one sample (or histogram) per row."""
    labels = key_labels(table)
    run_pid = [] if pid is None or "pid" in labels else [("pid", str(pid))]
    series = [[*zip(labels, map(key_text, row.keys), strict=True), *run_pid] for row in table.rows]
    if table.func in HISTOGRAMS:
        kind, sample = "histogram", name
    elif table.func == "count":
        kind, sample = "counter", name + "_total"
    else:
        kind, sample = "gauge", name
    lines = [f"# HELP {sample} {escape_help(_describe(table))}", f"# TYPE {sample} {kind}"]
    if kind == "histogram":
        return lines + _histogram(name, table, series)
    for row, pairs in zip(table.rows, series, strict=True):
        if has_value(row, table.func):
            lines.append(f"{sample}{_labels(pairs)} {number(row.value(table.func))}")
    return lines


def _family(name: str, kind: str, help_text: str, samples: list[str]) -> list[str]:
    return [f"# HELP {name} {escape_help(help_text)}", f"# TYPE {name} {kind}", *samples]


def run_lines(run: RunFigures, tables: Sequence[AggTable]) -> list[str]:
    pid = [] if run.pid is None else [("pid", str(run.pid))]
    info = _labels([*pid, ("command", run.command)])
    lines = _family(
        "instr_run_info", "gauge", "The instr run: its target", [f"instr_run_info{info} 1"]
    )
    lines += _family(
        "instr_events_total",
        "counter",
        "Events decoded from the target so far",
        [f"instr_events_total{_labels(pid)} {run.events}"],
    )
    lines += _family(
        "instr_drops_total",
        "counter",
        "Records dropped in the target because its buffer was full",
        [f"instr_drops_total{_labels(pid)} {run.drops}"],
    )
    overflow = [
        f"instr_aggregation_overflow_total{_labels([('aggregation', t.name), *pid])} {t.overflow}"
        for t in tables
    ]
    if overflow:
        lines += _family(
            "instr_aggregation_overflow_total",
            "counter",
            "Updates an aggregation dropped because it held max_keys distinct keys",
            overflow,
        )
    if run.seq is not None:
        lines += _family(
            "instr_snapshot_seq",
            "gauge",
            "Sequence number of the aggregation snapshot shown",
            [f"instr_snapshot_seq{_labels(pid)} {run.seq}"],
        )
    if run.age_s is not None:
        lines += _family(
            "instr_snapshot_age_seconds",
            "gauge",
            "Age of the aggregation snapshot shown, at the scrape",
            [f"instr_snapshot_age_seconds{_labels(pid)} {number(round(run.age_s, 6))}"],
        )
    return lines


SUFFIXES = ("", "_total", "_bucket", "_count", "_sum")


def _claim(taken: set[str], base: str) -> str:
    """``base``, or ``base_2``, ``base_3``...: the first whose sample names
    (NAME, NAME_total, NAME_bucket, ...) no other family uses; those are then taken."""
    name, n = base, 1
    while any(name + s in taken for s in SUFFIXES):
        n += 1
        name = f"{base}_{n}"
    taken.update(name + s for s in SUFFIXES)
    return name


RUN_METRICS = (
    "instr_run_info",
    "instr_events_total",
    "instr_drops_total",
    "instr_aggregation_overflow_total",
    "instr_snapshot_seq",
    "instr_snapshot_age_seconds",
)


def exposition(tables: Sequence[AggTable], run: RunFigures) -> str:
    """The whole ``/metrics`` body: the run's figures, then one family per table."""
    lines = run_lines(run, tables)
    taken = set(RUN_METRICS)
    for table in tables:
        name = _claim(taken, metric_name(table.name))
        lines += table_lines(table, name, run.pid)
    return "\n".join(lines) + "\n"
