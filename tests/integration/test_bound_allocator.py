"""The allocator the program calls, and modules named through a symlink.

A bare function name (``malloc``) is the definition the dynamic linker binds
calls to: the first in link map order. own_malloc defines its own malloc,
calloc, realloc and free (a bump allocator); Debian's redis-server links
jemalloc, whose malloc comes before libc's. probes.yaml's malloc set must
count those (it named ``libc.so*!malloc`` and was empty there); a probe on
libc's says where the calls go. A module name that is a symlink beside the
module's file (``redis-server`` -> ``redis-check-rdb``) names that module.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from helpers import REPO, Proc, run_instr
from jsonl import read_jsonl

pytestmark = pytest.mark.frida

N = 1000
OWN_COUNTS = re.compile(
    r"^own malloc=(\d+) calloc=(\d+) realloc=(\d+) free=(\d+) free_null=(\d+)$", re.M
)


def agg_counts(out: str) -> dict[str, int]:
    """``cli/n.K = count(): V`` lines -> {"n.K": V} (``n`` alone for one include)."""
    return {
        m[1]: int(m[2]) for m in re.finditer(r"^cli/(n(?:\.\d+)?) = count\(\): (\d+)$", out, re.M)
    }


def statuses(out: str) -> dict[str, str]:
    """The closing table's probe rows: name -> the rest of the row."""
    rows = {}
    for line in out.splitlines():
        m = re.match(r"^  (cli/\S+)\s+(.*)$", line)
        if m:
            rows[m[1]] = m[2]
    return rows


def test_builtin_malloc_set_counts_the_programs_own_malloc(targets, pie, tmp_path: Path):
    """probes.yaml's malloc set on a program with its own malloc and free:
    every call of the program's rounds lands on own_malloc!malloc / !free,
    exactly (free's where leaves out the N free(NULL))."""
    out = tmp_path / "m.jsonl"
    prog = targets.path("own_malloc", pie=pie)
    res = run_instr("run", "-q", "-P", REPO / "probes.yaml", "-s", "malloc", "-o", out, "--", prog,
                    input=f"{N}\n")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "rounds done" in res.stdout
    own = OWN_COUNTS.search(res.stdout)
    assert own is not None, res.stdout
    # The program counts Frida's calls too (its agent's loader binds to this malloc).
    assert int(own[1]) >= N and int(own[5]) >= N, own[0]
    events, summary = read_jsonl(out)
    phases = Counter((e["probe"], e["phase"], e["function"]) for e in events)
    assert phases == {
        ("malloc/malloc", "entry", "own_malloc!malloc"): N,
        ("malloc/malloc", "exit", "own_malloc!malloc"): N,
        ("malloc/free", "entry", "own_malloc!free"): 2 * N,
    }, phases
    sizes = [
        e["args"]["size"] for e in events if e["probe"] == "malloc/malloc" and e["phase"] == "entry"
    ]
    assert sizes == [100 + i % 50 for i in range(N)]
    assert all(p["state"] == "armed" and p["reason"] is None for p in summary["probes"]), summary[
        "probes"
    ]


def test_agg_on_malloc_counts_the_bound_one_and_libc_says_where_calls_go(targets, pie):
    """--agg on `malloc`, on the program's by module, and on libc's: the first
    two count every call, libc's none, and its status names the one called."""
    prog = targets.path("own_malloc", pie=pie)
    res = run_instr("trace", "-i", "malloc", "-i", "own_malloc!malloc", "-i", "libc.so*!malloc",
                    "-i", "free", "--agg", "n=count()", "--", prog, input=f"{N}\n")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert agg_counts(res.stdout) == {"n.1": N, "n.2": N, "n.3": 0, "n.4": 3 * N}, res.stdout
    rows = statuses(res.stdout)
    assert rows["cli/libc.so*!malloc"].endswith(
        "calls to malloc bind to own_malloc!malloc, which comes first in link map order,"
        " not to libc.so.6's: write 'malloc' for the one the program calls"
    ), rows
    assert rows["cli/malloc"].split()[:3] == ["armed", "fast", "1"], rows


def test_agg_on_a_function_that_jumps_into_its_first_bytes(targets, pie):
    """own_malloc's malloc_usable_size jumps back to its instruction 5 bytes
    in: replaceFast's 18 bytes would be jumped into (the program died of
    SIGSEGV at malloc_usable_size+0x5). It is aggregated through listeners."""
    prog = targets.path("own_malloc", pie=pie)
    res = run_instr("trace", "-i", "own_malloc!malloc_usable_size", "--agg", "n=count()", "--", prog,
                    input=f"usable {N}\n")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert f"usable sum={40 * N}" in res.stdout
    assert "ending: target exited with status 0" in res.stdout, res.stdout
    assert agg_counts(res.stdout) == {"n": 2 * N}, res.stdout
    assert (
        "aggregated through listeners" in statuses(res.stdout)["cli/own_malloc!malloc_usable_size"]
    )


def test_a_name_nothing_defines_says_where_it_was_looked_for(targets):
    res = run_instr("trace", "-i", "no_such_allocator", "--", targets.path("own_malloc"), input="")
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert (
        "no function matches '*!no_such_allocator': no loaded module exports it"
        " or names it in a symbol table" in res.stderr
    ), res.stderr


def test_a_module_named_through_its_symlink(targets, tmp_path: Path):
    """A copy of own_malloc run through a symlink of another name: the module
    is the file's name; the symlink's name names it too, in an exact or a glob include."""
    real = tmp_path / "alloc-real"
    shutil.copy(targets.path("own_malloc"), real)
    link = tmp_path / "alloc-link"
    link.symlink_to(real.name)
    res = run_instr("trace", "-i", "alloc-link!rounds", "-i", "alloc-link![mc]alloc",
                    "--agg", "n=count()", "--", link, input="3\n4\n")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert agg_counts(res.stdout) == {"n.1": 2, "n.2": 14}, res.stdout
    rows = statuses(res.stdout)
    note = "module 'alloc-link' is loaded as alloc-real (a symlink to it)"
    assert rows["cli/alloc-link!rounds"].endswith(note), rows
    assert rows["cli/alloc-link![mc]alloc"].endswith(note), rows
    # So does an offset point.
    nm = subprocess.run(["nm", real], capture_output=True, text=True, check=True).stdout
    (offset,) = [int(line.split()[0], 16) for line in nm.splitlines() if line.endswith(" T rounds")]
    res = run_instr("trace", "-i", f"alloc-link+0x{offset:x}", "--agg", "n=count()", "--", link,
                    input="3\n4\n")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert agg_counts(res.stdout) == {"n": 2}, res.stdout
    assert statuses(res.stdout)[f"cli/alloc-link+0x{offset:x}"].endswith(note), res.stdout
    # An exclude names it through the symlink too.
    res = run_instr("trace", "-i", "alloc-real![mc]alloc", "-x", "alloc-link!calloc",
                    "--agg", "n=count()", "--", link, input="3\n")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert agg_counts(res.stdout) == {"n": 3}, res.stdout
    # A name that is no symlink to a loaded module is still pending, as before.
    res = run_instr(
        "trace", "-i", "alloc-other!rounds", "--agg", "n=count()", "--", link, input="1\n"
    )
    assert "no loaded module matches 'alloc-other' (armed if one loads)" in res.stderr, res.stderr


# --------------------------------------------------------------------------- redis-server

REDIS_TOOLS = ("redis-server", "redis-cli")
needs_redis = pytest.mark.skipif(
    any(shutil.which(t) is None for t in REDIS_TOOLS),
    reason="redis-server and redis-cli are not installed (Debian: apt-get install redis-server)",
)
SETS = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_cli(port: int, *args: str) -> str:
    res = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
                         capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert res.returncode == 0, res
    return res.stdout.strip()


def start_redis(tmp_path: Path) -> tuple[Proc, int]:
    port = free_port()
    redis = Proc(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                  "--appendonly", "no", "--daemonize", "no", "--dir", str(tmp_path)])  # fmt: skip
    redis.out.expect("Ready to accept connections", timeout=30)
    return redis, port


def stop_redis(redis: Proc, port: int) -> None:
    if redis.proc.poll() is None:
        subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), "shutdown", "nosave"],
                       capture_output=True, timeout=30, check=False)  # fmt: skip
    try:
        redis.proc.wait(30)
    except subprocess.TimeoutExpired:
        redis.kill()


def allocator_of(pid: int) -> str:
    """The module whose malloc redis-server calls: jemalloc's file, by its maps."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    names = {os.path.basename(line.split()[-1]) for line in maps.splitlines() if "jemalloc" in line}
    assert len(names) == 1, names
    return names.pop()


@needs_redis
def test_redis_builtin_malloc_set_lands_on_jemalloc(instr_bg, tmp_path: Path):
    """Debian's redis-server: probes.yaml's malloc set (empty when it named
    libc's malloc) records jemalloc's malloc and free while redis serves SETs."""
    redis, port = start_redis(tmp_path)
    try:
        jemalloc = allocator_of(redis.pid)
        out = tmp_path / "m.jsonl"
        instr = instr_bg(
            "run", "-P", REPO / "probes.yaml", "-s", "malloc", "-p", redis.pid, "-o", out
        )
        instr.wait_armed(timeout=120)
        for i in range(SETS):
            assert redis_cli(port, "set", f"k{i}", "v" * 100) == "OK"
        instr.proc.send_signal(signal.SIGINT)
        done = instr.finish(timeout=60)
        assert done.returncode == 0, done.err
        events, _ = read_jsonl(out)
        functions = Counter((e["probe"], e["function"]) for e in events if e["phase"] == "entry")
        assert set(functions) == {
            ("malloc/malloc", f"{jemalloc}!malloc"),
            ("malloc/free", f"{jemalloc}!free"),
        }, functions
        assert functions["malloc/malloc", f"{jemalloc}!malloc"] >= SETS, functions
        assert redis.proc.poll() is None
    finally:
        stop_redis(redis, port)


@needs_redis
def test_redis_agg_on_malloc_equals_jemalloc_by_module_and_symlink_names_the_main(
    instr_bg, tmp_path: Path
):
    """One session on redis-server: `malloc` counts what `libjemalloc…!malloc`
    counts (more than 0), libc's malloc nothing (its status says where calls
    go), and `redis-server!processCommand` (redis-server is a symlink to
    redis-check-rdb) one per command."""
    redis, port = start_redis(tmp_path)
    try:
        jemalloc = allocator_of(redis.pid)
        instr = instr_bg("trace", "-p", redis.pid, "-i", "malloc", "-i", "libjemalloc.so*!malloc",
                         "-i", "libc.so*!malloc", "-i", "redis-server!processCommand",
                         "--agg", "n=count()")  # fmt: skip
        instr.wait_armed(timeout=120)
        for i in range(SETS):
            assert redis_cli(port, "set", f"k{i}", "v" * 100) == "OK"
        instr.proc.send_signal(signal.SIGINT)
        done = instr.finish(timeout=60)
        assert done.returncode == 0, done.err
        counts = agg_counts(done.out)
        assert counts["n.1"] == counts["n.2"] and counts["n.1"] >= SETS, done.out
        assert counts["n.3"] == 0 and counts["n.4"] == SETS, done.out
        rows = statuses(done.out)
        assert f"calls to malloc bind to {jemalloc}!malloc" in rows["cli/libc.so*!malloc"], rows
        real = os.path.basename(os.path.realpath(shutil.which("redis-server") or ""))
        assert rows["cli/redis-server!processCommand"].endswith(
            f"module 'redis-server' is loaded as {real} (a symlink to it)"
        ), rows
        assert redis.proc.poll() is None
    finally:
        stop_redis(redis, port)


@needs_redis
def test_redis_mem_tracks_jemalloc_without_hook_errors(instr_bg, tmp_path: Path):
    """instr mem on redis-server hooks jemalloc's functions (the ones calls bind
    to). jemalloc's operator new[] is a jump to operator new, and its delete
    and delete[] jump to one PLT entry: they count as hooked through the
    first, with no 'cannot hook' line."""
    redis, port = start_redis(tmp_path)
    try:
        instr = instr_bg("mem", "-p", redis.pid, "--no-mmap")
        instr.wait_armed(timeout=120)
        for i in range(SETS):
            assert redis_cli(port, "set", f"k{i}", "v" * 100) == "OK"
        instr.proc.send_signal(signal.SIGINT)
        done = instr.finish(timeout=60)
        assert done.returncode == 0, done.err
        assert "cannot hook" not in done.err, done.err
        calls = re.search(r"^  calls      malloc ([\d,]+),", done.out, re.M)
        assert calls is not None and int(calls[1].replace(",", "")) >= SETS, done.out
        assert redis.proc.poll() is None
    finally:
        stop_redis(redis, port)
