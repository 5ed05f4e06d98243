"""--metrics HOST:PORT on real runs (docs/metrics.md): scraped over HTTP while
the target runs, read with the official Prometheus client's parser; values are
the calls the program made, exactly, and grow with its next calls."""

from __future__ import annotations

import re
import socket
import urllib.request

from helpers import run_instr
from prometheus_client.parser import text_string_to_metric_families

URL = re.compile(r"^instr: metrics on (http://127\.0\.0\.1:\d+/metrics)$")


def scrape(url: str) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    with urllib.request.urlopen(url, timeout=30) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = r.read().decode()
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    return text, values


def start(instr_bg, *args: object, armed: str = r"^instr: armed ") -> tuple[object, str]:
    """instr ARGS; once its probes are armed and the program is ready: it and the URL."""
    proc = instr_bg(*args)
    url = URL.match(proc.err.expect(URL))
    assert url is not None
    proc.err.expect(re.compile(armed))
    assert proc.out.expect("ready") == "ready"
    return proc, url.group(1)


def sums(proc, n: int) -> None:
    """sleeper calls target_add(i, 1) for i in [0, n) and says the sum."""
    proc.send(f"{n} sum")
    assert proc.out.expect("sum=") == f"sum={n * (n + 1) // 2}"


def buckets(values, name: str, pid: str) -> list[tuple[str, int]]:
    got = [(dict(k[1])["le"], int(v)) for k, v in values.items() if k[0] == name + "_bucket"]
    assert all(dict(k[1]).get("pid") == pid for k in values if k[0] == name + "_bucket")
    return sorted(got, key=lambda b: float(b[0]))


def test_trace_aggregations_scraped_live(targets, instr_bg):
    proc, url = start(
        instr_bg,
        "trace",
        "-i",
        "sleeper!target_add",
        "--agg",
        "calls=count() by tid",
        "--agg",
        "args=quantize(arg0:i64)",
        "--agg",
        "top=max(arg0:i64)",
        "--metrics",
        "127.0.0.1:0",
        "--",
        targets.path("sleeper"),
    )
    sums(proc, 5)
    _, v = scrape(url)
    info = [k for k in v if k[0] == "instr_run_info"]
    assert len(info) == 1 and dict(info[0][1])["command"] == "sleeper"
    pid = dict(info[0][1])["pid"]
    assert v[("instr_cli_calls_total", (("pid", pid), ("tid", pid)))] == 5
    assert v[("instr_cli_top", (("pid", pid),))] == 4
    # arg0 = 0..4: quantize buckets [0,1) [1,2) [2,4) [4,8) -> le 0, 1, 3, 7
    assert buckets(v, "instr_cli_args", pid) == [
        ("0", 1),
        ("1", 2),
        ("3", 4),
        ("7", 5),
        ("+Inf", 5),
    ]
    assert v[("instr_cli_args_count", (("pid", pid),))] == 5
    assert v[("instr_drops_total", (("pid", pid),))] == 0
    assert (
        v[("instr_aggregation_overflow_total", (("aggregation", "cli/calls"), ("pid", pid)))] == 0
    )
    first_seq = v[("instr_snapshot_seq", (("pid", pid),))]

    sums(proc, 3)  # arg0 = 0, 1, 2 more
    _, v = scrape(url)
    assert v[("instr_cli_calls_total", (("pid", pid), ("tid", pid)))] == 8
    assert v[("instr_cli_top", (("pid", pid),))] == 4
    assert buckets(v, "instr_cli_args", pid) == [
        ("0", 2),
        ("1", 4),
        ("3", 7),
        ("7", 8),
        ("+Inf", 8),
    ]
    assert v[("instr_snapshot_seq", (("pid", pid),))] > first_seq

    done = proc.finish()
    assert done.returncode == 0, done.err
    # the scrapes' snapshots are theirs: the console reports only the final one
    assert sum(line.startswith("=== aggregations") for line in done.stdout) == 1, done.out
    assert "cli/calls = count() by tid" in done.stdout


def test_dtrace_aggregations_scraped_live(targets, instr_bg):
    prog = "pid$target::target_add:entry { @calls[probefunc] = count(); @q = lquantize(arg0, 0, 10, 2); }"
    proc, url = start(
        instr_bg,
        "dtrace",
        "--metrics",
        ":0",
        "-n",
        prog,
        "-c",
        targets.path("sleeper"),
        armed=r"^instr: matched 1 probe site",
    )
    sums(proc, 5)
    _, v = scrape(url)
    pid = dict(next(k for k in v if k[0] == "instr_run_info")[1])["pid"]
    assert v[("instr_calls_total", (("pid", pid), ("probefunc", "target_add")))] == 5
    # lquantize(0, 10, 2): [0,2) [2,4) [4,6) -> le 1, 3, 5
    assert buckets(v, "instr_q", pid) == [("1", 2), ("3", 4), ("5", 5), ("+Inf", 5)]
    sums(proc, 7)  # 0..6 more
    _, v = scrape(url)
    assert v[("instr_calls_total", (("pid", pid), ("probefunc", "target_add")))] == 12
    assert buckets(v, "instr_q", pid) == [
        ("1", 4),
        ("3", 8),
        ("5", 11),
        ("7", 12),  # 6 is the first value in [6, 8)
        ("+Inf", 12),
    ]
    done = proc.finish()
    assert done.returncode == 0, done.err


def test_a_port_in_use_stops_the_run_before_the_target_starts(targets):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        res = run_instr(
            "trace", "-i", "sleeper!target_add", "--agg", "n=count()",
            "--metrics", f"127.0.0.1:{port}", "--", targets.path("sleeper"),
        )  # fmt: skip
    assert res.returncode == 1, res.stderr
    assert (
        res.stderr
        == f"instr: error: cannot serve metrics on 127.0.0.1:{port}: Address already in use\n"
    )
    assert res.stdout == ""  # sleeper never ran: it would have said "ready"


def test_a_bad_address_is_a_usage_error(targets):
    res = run_instr("trace", "-i", "x", "--metrics", "host:99999", "--", targets.path("sleeper"))
    assert res.returncode == 2
    assert "Invalid value for '--metrics'" in res.stderr
    assert "PORT 0 to 65535" in res.stderr
    assert "Traceback" not in res.stderr


SET = """
version: 1
sets:
  adds:
    probes:
      - function: "sleeper!target_add"
        capture: {a: "arg0:i64"}
        aggregate:
          calls: count() by pid
          total: sum(a)
          spread: lquantize(a, 0, 4, 1)
"""


def test_run_aggregations_scraped_live(targets, instr_bg, probe_file):
    probes = probe_file(SET)
    proc, url = start(
        instr_bg, "run", "-P", probes, "-s", "adds", "--metrics", "0", "--", targets.path("sleeper")
    )
    sums(proc, 6)  # a = 0..5
    _, v = scrape(url)
    pid = dict(next(k for k in v if k[0] == "instr_run_info")[1])["pid"]
    assert v[("instr_adds_calls_total", (("pid", pid),))] == 6  # the key's pid: the same
    assert v[("instr_adds_total", (("pid", pid),))] == 15
    # lquantize(0, 4, 1): [0,1) [1,2) [2,3) [3,4), then 4 and 5 in the overflow
    assert buckets(v, "instr_adds_spread", pid) == [
        ("0", 1),
        ("1", 2),
        ("2", 3),
        ("3", 4),
        ("+Inf", 6),
    ]
    sums(proc, 2)
    _, v = scrape(url)
    assert v[("instr_adds_calls_total", (("pid", pid),))] == 8
    assert v[("instr_adds_total", (("pid", pid),))] == 16
    done = proc.finish()
    assert done.returncode == 0, done.err
    assert sum(line.startswith("=== aggregations") for line in done.stdout) == 1, done.out
