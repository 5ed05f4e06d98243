"""A real server: Debian's nginx with a master and 2 workers on a loopback
port, traced as a whole (docs/all.md). ``instr trace --all -n nginx`` on a
running nginx, and ``-F`` on a master instr starts, count
``ngx_http_process_request`` (called once per request, in the worker that
serves it) by pid under a bounded loop of requests: the per-worker totals
cover both workers and sum to the requests in nginx's own access log."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import start_instr
from jsonl import read_jsonl

from instr.attach_all import AllSpec, scan

pytestmark = pytest.mark.frida

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
REQUESTS = 200
PROBE = "nginx!ngx_http_process_request"
BOUND_S = 30.0  # how long nginx may take to start, or to log a request


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _conf(tmp_path: Path, port: int) -> Path:
    """nginx.conf with everything under tmp_path; `reuseport` gives each
    worker its own listening socket, so the kernel spreads the connections
    over both (by their source ports)."""
    conf = tmp_path / "nginx.conf"
    t = tmp_path
    conf.write_text(f"""
worker_processes 2;
master_process on;
daemon off;
pid {t}/nginx.pid;
error_log {t}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log {t}/access.log;
    client_body_temp_path {t}/body;
    proxy_temp_path {t}/proxy;
    fastcgi_temp_path {t}/fastcgi;
    uwsgi_temp_path {t}/uwsgi;
    scgi_temp_path {t}/scgi;
    server {{
        listen 127.0.0.1:{port} reuseport;
        location / {{ return 200 "ok\\n"; }}
    }}
}}
""")
    return conf


def _argv(tmp_path: Path, conf: Path) -> list[str]:
    return [NGINX, "-c", str(conf), "-p", str(tmp_path), "-e", str(tmp_path / "error.log")]


def _children(pid: int) -> list[int]:
    try:
        return sorted(map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split()))
    except OSError:
        return []


def _until(what: str, check: object, tmp_path: Path) -> None:
    """Poll ``check()`` (bounded): nginx gives no other sign that it is up."""
    deadline = time.monotonic() + BOUND_S
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            log = tmp_path / "error.log"
            raise AssertionError(f"{what}; error.log: {log.read_text() if log.exists() else ''}")
        time.sleep(0.05)


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _requests(port: int, n: int) -> None:
    for _ in range(n):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=BOUND_S) as r:
            assert r.status == 200 and r.read() == b"ok\n"


def _logged(tmp_path: Path) -> int:
    log = tmp_path / "access.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def _counts(path: Path) -> dict[int, int]:
    rows = {}
    for line in path.read_text().splitlines():
        obj = json.loads(line)
        if obj["type"] == "aggregation" and obj["final"] and obj["name"] == "cli/n":
            rows[obj["keys"]["pid"]] = obj["value"]
    return rows


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def nginx_ok() -> Iterator[None]:
    if not os.path.exists(NGINX):
        pytest.skip("nginx is not installed (.ci/run installs it)")
    others = [p.pid for p in scan(AllSpec(name="nginx"))]  # as instr sees them (no zombies)
    assert not others, f"another nginx runs here (pids {others}): -n would see it"
    yield


def test_all_n_nginx_counts_every_worker(nginx_ok: None, tmp_path: Path) -> None:
    port = _free_port()
    conf = _conf(tmp_path, port)
    master = subprocess.Popen(_argv(tmp_path, conf), stdin=subprocess.DEVNULL)
    workers: list[int] = []
    out = tmp_path / "run.jsonl"
    tracer = None
    try:
        _until("nginx's two workers did not start", lambda: len(_children(master.pid)) == 2,
               tmp_path)  # fmt: skip
        _until("nginx does not accept", lambda: _accepts(port), tmp_path)
        workers = _children(master.pid)
        tracer = start_instr("trace", "--all", "-n", "nginx", "-i", PROBE,
                             "--agg", "n=count() by pid", "-o", out)  # fmt: skip
        armed = tracer.wait_armed(60)
        pids = sorted([master.pid, *workers])
        assert f"in 3 processes (pids {', '.join(map(str, pids))})" in armed, armed
        _requests(port, REQUESTS)
        _until("nginx did not log every request", lambda: _logged(tmp_path) == REQUESTS, tmp_path)
        tracer.interrupt()
        done = tracer.finish()
        assert done.returncode == 0, done.err
        counts = _counts(out)
        assert sorted(counts) == workers, (counts, workers)  # the master serves none
        assert all(n > 0 for n in counts.values()), counts
        assert sum(counts.values()) == _logged(tmp_path) == REQUESTS
        for pid in pids:
            assert f"pid {pid} (attached): detached; the target keeps running" in done.err
        # left in order: the same workers serve on, and nginx quits cleanly
        assert master.poll() is None and _children(master.pid) == workers
        _requests(port, 10)
        master.send_signal(signal.SIGQUIT)
        assert master.wait(BOUND_S) == 0
        assert _logged(tmp_path) == REQUESTS + 10
    finally:
        if tracer is not None:
            tracer.kill_all()
        _kill([*workers, master.pid])
        master.wait(BOUND_S)


def test_follow_a_fresh_nginx_master(nginx_ok: None, tmp_path: Path) -> None:
    """-F on a master instr starts: its workers, forked at its start, are
    held until armed; Ctrl-C then stops the whole tree instr started."""
    port = _free_port()
    conf = _conf(tmp_path, port)
    out = tmp_path / "run.jsonl"
    tracer = start_instr("trace", "-F", "-i", PROBE, "--agg", "n=count() by pid", "-o", out,
                         "--", *_argv(tmp_path, conf))  # fmt: skip
    workers: list[int] = []
    master = 0
    try:
        tracer.wait_armed(60)
        _until("nginx does not accept", lambda: _accepts(port), tmp_path)
        master = int((tmp_path / "nginx.pid").read_text())
        _until("nginx's two workers did not start", lambda: len(_children(master)) == 2,
               tmp_path)  # fmt: skip
        workers = _children(master)
        _requests(port, REQUESTS)
        _until("nginx did not log every request", lambda: _logged(tmp_path) == REQUESTS, tmp_path)
        tracer.interrupt()
        done = tracer.finish()
        assert done.returncode == 0, done.err
        counts = _counts(out)
        assert sorted(counts) == workers, (counts, workers)
        assert all(n > 0 for n in counts.values()), counts
        assert sum(counts.values()) == _logged(tmp_path) == REQUESTS
        _events, summary = read_jsonl(out)
        forked = sorted(p["pid"] for p in summary["processes"] if p["origin"] == "fork")
        assert forked == workers and summary["errors"] == [], summary
    finally:
        tracer.kill_all()
        _kill([*workers, master] if master else workers)


@pytest.mark.parametrize("watch", [False, True], ids=["F", "F-watch"])
def test_all_with_follow_sees_the_workers_of_a_reload(
    nginx_ok: None, tmp_path: Path, watch: bool
) -> None:
    """--all -n nginx -F: a reload's new workers, forked by the traced master,
    are followed from their start; the old ones' exits are said as they
    happen, and the run goes on. Both generations' counts sum to the log.
    With --watch too, the watch leaves the new workers to -F (their parent
    is traced), and does not attach to them a second time."""
    port = _free_port()
    conf = _conf(tmp_path, port)
    master = subprocess.Popen(_argv(tmp_path, conf), stdin=subprocess.DEVNULL)
    old: list[int] = []
    new: list[int] = []
    out = tmp_path / "run.jsonl"
    tracer = None
    try:
        _until("nginx's two workers did not start", lambda: len(_children(master.pid)) == 2,
               tmp_path)  # fmt: skip
        _until("nginx does not accept", lambda: _accepts(port), tmp_path)
        old = _children(master.pid)
        tracer = start_instr("trace", "--all", "-n", "nginx", "-F", *(["--watch"] if watch else []),
                             "-i", PROBE, "--agg", "n=count() by pid", "-o", out)  # fmt: skip
        tracer.wait_armed(60)
        _requests(port, REQUESTS)
        _until("nginx did not log every request", lambda: _logged(tmp_path) == REQUESTS, tmp_path)
        reload = subprocess.run([*_argv(tmp_path, conf), "-s", "reload"], capture_output=True)
        assert reload.returncode == 0, reload.stderr

        def renewed() -> bool:
            kids = _children(master.pid)
            return len(kids) == 2 and not set(kids) & set(old)

        _until("the reload did not replace both workers", renewed, tmp_path)
        new = _children(master.pid)
        said = re.compile(r"pid (\d+) \(attached\): exited with status 0; the run goes on")
        ended = {int(said.search(tracer.err.expect(said))[1]) for _ in old}  # type: ignore[index]
        assert ended == set(old)
        _requests(port, REQUESTS)
        _until("nginx did not log every request", lambda: _logged(tmp_path) == 2 * REQUESTS,
               tmp_path)  # fmt: skip
        tracer.interrupt()
        done = tracer.finish()
        assert done.returncode == 0, done.err
        counts = _counts(out)
        assert sorted(counts) == sorted(old + new), (counts, old, new)
        assert sum(counts[p] for p in old) == sum(counts[p] for p in new) == REQUESTS
        assert sum(counts.values()) == _logged(tmp_path)
        _events, summary = read_jsonl(out)
        origins = {p["pid"]: (p["origin"], p["parent"]) for p in summary["processes"]}
        assert all(origins[p] == ("fork", master.pid) for p in new), origins
        assert all(origins[p] == ("attach", master.pid) for p in old), origins
        assert summary["errors"] == []
        assert "attached to pid" not in "\n".join(tracer.err.seen) + done.err
        master.send_signal(signal.SIGQUIT)
        assert master.wait(BOUND_S) == 0
    finally:
        if tracer is not None:
            tracer.kill_all()
        _kill([*old, *new, master.pid])
        master.wait(BOUND_S)


def test_watch_without_follow_attaches_to_a_reload_s_workers(
    nginx_ok: None, tmp_path: Path
) -> None:
    """--all -n nginx --watch, no -F: a reload's new workers are found by the
    poll and attached to (Frida takes seconds with a child that inherited its
    agent: the run says so, and says -F); the requests served once both are
    attached are counted exactly, in the new workers."""
    port = _free_port()
    conf = _conf(tmp_path, port)
    master = subprocess.Popen(_argv(tmp_path, conf), stdin=subprocess.DEVNULL)
    old: list[int] = []
    new: list[int] = []
    out = tmp_path / "run.jsonl"
    tracer = None
    try:
        _until("nginx's two workers did not start", lambda: len(_children(master.pid)) == 2,
               tmp_path)  # fmt: skip
        _until("nginx does not accept", lambda: _accepts(port), tmp_path)
        old = _children(master.pid)
        tracer = start_instr("trace", "--all", "-n", "nginx", "--watch", "-i", PROBE,
                             "--agg", "n=count() by pid", "-o", out)  # fmt: skip
        tracer.wait_armed(60)
        reload = subprocess.run([*_argv(tmp_path, conf), "-s", "reload"], capture_output=True)
        assert reload.returncode == 0, reload.stderr
        hint = tracer.err.expect("which this run traces", 60)
        assert "-F would arm it at its fork" in hint, hint
        attached = re.compile(r"attached to pid (\d+) \(nginx: worker process\)")
        lines = [tracer.err.expect(attached, 90) for _ in old]  # seconds each (docs/all.md)
        new = sorted(int(m[1]) for m in map(attached.search, lines) if m is not None)
        assert new == _children(master.pid) and not set(new) & set(old)
        _requests(port, REQUESTS)
        _until("nginx did not log every request", lambda: _logged(tmp_path) == REQUESTS, tmp_path)
        tracer.interrupt()
        done = tracer.finish()
        assert done.returncode == 0, done.err
        counts = _counts(out)
        assert sorted(counts) == new, (counts, new)
        assert sum(counts.values()) == _logged(tmp_path) == REQUESTS
        master.send_signal(signal.SIGQUIT)
        assert master.wait(BOUND_S) == 0
    finally:
        if tracer is not None:
            tracer.kill_all()
        _kill([*old, *new, master.pid])
        master.wait(BOUND_S)
