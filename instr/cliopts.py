"""Checks for the command line's numeric flags.

Each refuses what it cannot use (negative, zero, ``nan``, ``inf``, out of
range) with click's usage error (exit 2) that names the valid range, so a
bad value never reaches a run. ``instr/cli.py`` stays flags only.
"""

from __future__ import annotations

import math
import re
from typing import Any

import click

YEAR_S = 365 * 24 * 3600
BUFFER_MIN = 128 << 10  # the agent's smallest ring (agents/src/core/buffer.ts)
BUFFER_MAX = 1 << 30  # and its largest (agents/src/ctier/native.ts)
_SIZE = re.compile(r"(-?[0-9]{1,12})\s*([KMG]?)(?:i?B)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def _seconds(low: float, low_open: bool, meaning: str) -> Any:
    """A click callback: a finite number of seconds above (or from) ``low``, at most a year."""
    lowest = f"more than {low:g}" if low_open else f"at least {low:g}"
    valid = f"give {lowest} and at most {YEAR_S} seconds ({meaning})"

    def check(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
        if value is None:
            return None
        try:
            seconds = float(value)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not a number of seconds: {valid}") from None
        too_low = seconds <= low if low_open else seconds < low
        if not math.isfinite(seconds) or too_low or seconds > YEAR_S:
            raise click.BadParameter(f"{value} is out of range: {valid}")
        return seconds

    return check


def _byte_size(ctx: click.Context, param: click.Parameter, value: str | int) -> int:
    """A click callback: bytes from BUFFER_MIN to BUFFER_MAX, with an optional K, M or G."""
    valid = f"give {BUFFER_MIN >> 10}K ({BUFFER_MIN}) to {BUFFER_MAX >> 20}M ({BUFFER_MAX}) bytes"
    if isinstance(value, int):
        n = value
    else:
        m = _SIZE.fullmatch(value.strip())
        if m is None:
            raise click.BadParameter(f"{value!r} is not a size: {valid}")
        n = int(m.group(1)) * _UNITS[m.group(2).lower()]
    if not BUFFER_MIN <= n <= BUFFER_MAX:
        raise click.BadParameter(f"{value} is out of range: {valid}")
    return n


DURATION = _seconds(0.0, True, "leave it out to run until the program ends or Ctrl-C")
INTERVAL = _seconds(0.1, False, "how often to report")
duration_option = click.option(
    "--duration", callback=DURATION, metavar="SECONDS", help="Stop after SECONDS."
)
buffer_size_option = click.option(
    "--buffer-size",
    default=str(8 << 20),
    callback=_byte_size,
    show_default=True,
    metavar="BYTES",
    help="In-target buffer bytes (128K to 1024M; K, M and G suffixes).",
)


def _metrics_address(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[str, int] | None:
    """A click callback: ``HOST:PORT``, ``:PORT`` or ``PORT`` (instr.metrics.parse_address)."""
    if value is None:
        return None
    from instr.metrics import parse_address

    try:
        return parse_address(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


metrics_option = click.option(
    "--metrics",
    callback=_metrics_address,
    metavar="HOST:PORT",
    help="Serve the aggregations for Prometheus at http://HOST:PORT/metrics "
    "(host 127.0.0.1 if left out; port 0: a free one). See docs/metrics.md.",
)
PID = click.IntRange(min=1)
POSITIVE = click.IntRange(min=1)
COUNT = click.IntRange(min=0)
