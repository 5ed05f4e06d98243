"""Numeric flags: bad values are refused by the command line with the valid
range and exit 2, before anything runs; good ones arrive converted."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from instr import cliopts
from instr.cli import main

DURATION_RANGE = (
    "give more than 0 and at most 31536000 seconds"
    " (leave it out to run until the program ends or Ctrl-C)"
)
BUFFER_RANGE = "give 128K (131072) to 1024M (1073741824) bytes"
INTERVAL_RANGE = "give at least 0.1 and at most 31536000 seconds (how often to report)"

COMMANDS = {
    "run": ["run", "-P", "probes.yaml", "-s", "calls"],
    "trace": ["trace", "-i", "malloc"],
    "syscalls": ["syscalls"],
    "patch": ["patch", "--ret", "f=1"],
}


def refused(args: list[str]) -> str:
    result = CliRunner().invoke(main, [*args, "--", "/bin/true"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return result.output.strip().splitlines()[-1]


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--duration", "-1", f"-1 is out of range: {DURATION_RANGE}"),
        ("--duration", "nan", f"nan is out of range: {DURATION_RANGE}"),
        ("--duration", "inf", f"inf is out of range: {DURATION_RANGE}"),
        ("--duration", "0", f"0 is out of range: {DURATION_RANGE}"),
        ("--duration", "1e300", f"1e300 is out of range: {DURATION_RANGE}"),
        ("--duration", "soon", f"'soon' is not a number of seconds: {DURATION_RANGE}"),
        ("--buffer-size", "0", f"0 is out of range: {BUFFER_RANGE}"),
        ("--buffer-size", "1", f"1 is out of range: {BUFFER_RANGE}"),
        ("--buffer-size", "-5", f"-5 is out of range: {BUFFER_RANGE}"),
        ("--buffer-size", "2G", f"2G is out of range: {BUFFER_RANGE}"),
        ("--buffer-size", "8 parsecs", f"'8 parsecs' is not a size: {BUFFER_RANGE}"),
        ("--interval", "nan", f"nan is out of range: {INTERVAL_RANGE}"),
        ("--interval", "0.05", f"0.05 is out of range: {INTERVAL_RANGE}"),
    ],
)
def test_refused(command: str, flag: str, value: str, message: str) -> None:
    line = refused([*COMMANDS[command], flag, value])
    assert line == f"Error: Invalid value for '{flag}': {message}"


def test_mem_and_pids() -> None:
    assert refused(["mem", "--duration", "-1"]) == (
        f"Error: Invalid value for '--duration': -1 is out of range: {DURATION_RANGE}"
    )
    assert refused(["mem", "--interval", "0"]) == (
        f"Error: Invalid value for '--interval': 0 is out of range: {INTERVAL_RANGE}"
    )
    assert refused(["mem", "--top", "-2"]) == (
        "Error: Invalid value for '--top': -2 is not in the range x>=1."
    )
    for command in (["trace", "-i", "malloc"], ["mem"], ["peek", "x:i32"]):
        line = refused([*command, "-p", "0"])
        assert line == "Error: Invalid value for '-p' / '--pid': 0 is not in the range x>=1."


def convert(callback: object, value: str | None) -> object:
    ctx = click.Context(main)
    param = click.Option(["--x"])
    assert callable(callback)
    return callback(ctx, param, value)


def test_accepted() -> None:
    assert convert(cliopts.DURATION, "1.5") == 1.5
    assert convert(cliopts.DURATION, "0.001") == 0.001
    assert convert(cliopts.DURATION, None) is None
    assert convert(cliopts.INTERVAL, "0.1") == 0.1
    assert convert(cliopts._byte_size, "8388608") == 8 << 20
    assert convert(cliopts._byte_size, "128K") == 128 << 10
    assert convert(cliopts._byte_size, "16M") == 16 << 20
    assert convert(cliopts._byte_size, "1g") == 1 << 30
    assert convert(cliopts._byte_size, "64MiB") == 64 << 20
