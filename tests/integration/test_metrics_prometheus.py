"""Debian's Prometheus server scrapes ``instr trace --metrics`` on loopback
(docs/metrics.md): the target is healthy, and the values it stores are the
program's calls, exactly. .ci/run installs the ``prometheus`` package; where
it is missing the test is skipped and says so."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from test_metrics_live import start, sums

PROMETHEUS = shutil.which("prometheus")
WAIT_S = 60.0  # for the server's next scrape (it scrapes every second)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def api(base: str, path: str, **query: str) -> dict:  # type: ignore[type-arg]
    url = f"{base}/api/v1/{path}?{urllib.parse.urlencode(query)}"
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def until(what: str, probe) -> object:  # type: ignore[no-untyped-def]
    """``probe()`` until it returns something other than None (the server scrapes on its own clock)."""
    deadline = time.monotonic() + WAIT_S
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except OSError as e:  # the server is still starting
            last = e
        if last is not None and not isinstance(last, OSError):
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {WAIT_S:.0f}s (last: {last!r})")


def log_tail(log: Path) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-20:]) if log.exists() else ""


def value(base: str, query: str) -> str | None:
    res = api(base, "query", query=query)["data"]["result"]
    return res[0]["value"][1] if len(res) == 1 else None


def equals(base: str, query: str, want: str):  # type: ignore[no-untyped-def]
    return lambda: True if value(base, query) == want else None


@pytest.mark.skipif(PROMETHEUS is None, reason="no prometheus server (apt-get install prometheus)")
def test_prometheus_scrapes_instr(targets, instr_bg, tmp_path: Path):
    proc, url = start(
        instr_bg,
        "trace", "-i", "sleeper!target_add",
        "--agg", "calls=count()", "--agg", "args=quantize(arg0:i64)",
        "--metrics", "127.0.0.1:0", "--", targets.path("sleeper"),
    )  # fmt: skip
    scrape = urllib.parse.urlsplit(url)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: instr\n"
        f"    static_configs: [{{targets: ['{scrape.netloc}']}}]\n"
    )
    web = f"127.0.0.1:{free_port()}"
    log = tmp_path / "prometheus.log"  # a file: a pipe nobody reads would stall the server
    with log.open("w") as err:
        server = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address={web}"],
            stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    base = f"http://{web}"
    try:
        sums(proc, 5)
        assert server.poll() is None, log_tail(log)
        until("5 calls stored", equals(base, "instr_cli_calls_total", "5"))
        target = until(
            "the scrape's health",
            lambda: next(
                (t for t in api(base, "targets")["data"]["activeTargets"] if t["health"] == "up"),
                None,
            ),
        )
        assert target["lastError"] == "", target  # type: ignore[index]
        assert target["scrapeUrl"] == url  # type: ignore[index]
        assert value(base, 'instr_cli_args_bucket{le="3"}') == "4"  # arg0 0..4: 0, 1, 2, 3
        assert value(base, 'instr_cli_args_bucket{le="+Inf"}') == "5"
        assert value(base, "instr_run_info") == "1"
        sums(proc, 3)
        until("8 calls stored", equals(base, "instr_cli_calls_total", "8"))
        assert value(base, 'instr_cli_args_bucket{le="3"}') == "7"
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(30)
    done = proc.finish()
    assert done.returncode == 0, done.err
