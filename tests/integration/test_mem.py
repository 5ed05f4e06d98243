"""instr mem and instr peek against real targets (tests/targets/leaks.c, memattach.c,
globals.c): exact counts, bytes and leaked sites; valgrind's verdict on the same binary."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers import CFLAGS, TARGETS_SRC, run_instr

# leaks.c, THREADS=4: first function of each leaked stack -> (bytes, blocks, other functions).
LEAKS = {
    "leak_calloc": (1000, 1, ["main"]),
    "make_node": (128, 4, ["leak_list", "main"]),
    "leak_aligned": (128, 1, ["main"]),
    "leak_small": (72, 3, ["main"]),
    "leak_realloc": (50, 1, ["main"]),
    "thread_leak": (160, 4, ["thread_main"]),
}
LEAKED_BYTES = 1538
INDIRECT_BYTES = 96


def function(frame: str) -> str | None:
    """'leaks!make_node+0x16' -> 'make_node'."""
    m = re.match(r"^[^!]*!([^+]+)", frame)
    return m.group(1) if m else None


def functions(stack: dict[str, Any]) -> list[str | None]:
    return [function(f) for f in stack["frames"]]


def mem_report(target: Path, tmp_path: Path, *args: object) -> tuple[dict[str, Any], str]:
    out = tmp_path / "report.json"
    res = run_instr("mem", "-o", out, *args, "--", target, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    return json.loads(out.read_text()), res.stdout


def sites(report: dict[str, Any], kind: str | None = None) -> dict[str | None, dict[str, Any]]:
    """Stacks by their first function (the allocation's call site)."""
    out: dict[str | None, dict[str, Any]] = {}
    for s in report["stacks"]:
        if kind is not None and s["kind"] != kind:
            continue
        out.setdefault(function(s["frames"][0]), s)
    return out


def leak_stacks(report: dict[str, Any]) -> dict[str | None, dict[str, Any]]:
    return {function(s["frames"][0]): s for s in report["stacks"] if s["leaked_blocks"]}


def test_leak_report_exact(targets: Any, pie: bool, tmp_path: Path) -> None:
    report, text = mem_report(targets.path("leaks", pie), tmp_path)
    assert report["reason"] == "exit 0" and report["scanned"]
    assert report["leaks"]["bytes"] == LEAKED_BYTES
    assert report["leaks"]["blocks"] == 14
    assert report["leaks"]["indirect_bytes"] == INDIRECT_BYTES
    leaked = leak_stacks(report)
    assert set(leaked) == set(LEAKS)
    for name, (nbytes, blocks, callers) in LEAKS.items():
        s = leaked[name]
        assert (s["leaked_bytes"], s["leaked_blocks"]) == (nbytes, blocks), name
        fns = functions(s)
        for caller in callers:  # frame pointers: the whole chain is there
            assert caller in fns, (name, fns)
    assert leaked["make_node"]["indirect_bytes"] == 96
    assert leaked["leak_calloc"]["kind"] == "calloc"
    assert leaked["leak_aligned"]["kind"] == "memalign"
    # not leaked: freed, or still reachable through a global
    allocs = sites(report)
    assert allocs["keep_global"]["live_bytes"] == 500 and allocs["keep_global"]["leaked_bytes"] == 0
    mallocs = sites(report, "malloc")
    assert (mallocs["no_leaks"]["allocs"], mallocs["no_leaks"]["bytes"]) == (100, 6550)
    assert mallocs["no_leaks"]["live_blocks"] == 0
    # 4 threads x 1000 malloc/free pairs, counted exactly
    assert (mallocs["thread_main"]["allocs"], mallocs["thread_main"]["live_blocks"]) == (4000, 0)
    # the realloc chain NULL -> 16 -> 4096 -> 32 and its free: nothing left
    chain = [
        s
        for s in report["stacks"]
        if s["kind"] == "realloc" and function(s["frames"][0]) == "no_leaks"
    ]
    assert sorted(s["bytes"] for s in chain) == [16, 32, 4096]
    assert all(s["live_blocks"] == 0 for s in chain)
    # mmap 3 pages + munmap, mmap 2 pages kept: two call sites
    maps = [
        (s["allocs"], s["bytes"], s["mapped_regions"], s["mapped_bytes"])
        for s in report["stacks"]
        if s["kind"] == "mmap" and function(s["frames"][0]) == "map_regions"
    ]
    assert sorted(maps) == [(1, 2 * 4096, 1, 2 * 4096), (1, 3 * 4096, 0, 0)]
    per_site = {(function(x["site"]), x["kind"]): x for x in report["sites"]}
    assert per_site[("no_leaks", "malloc")]["allocs"] == 100
    assert per_site[("thread_main", "malloc")]["allocs"] == 4000
    nulls = sites(report, "free(NULL)")
    assert nulls["no_leaks"]["allocs"] == 5
    # the console report: leak list, quantize histogram, bytes by process name
    c = report["counters"]
    assert f"by process leaks: {c['bytes_allocated']:,} bytes allocated" in text
    assert f"LEAKED {LEAKED_BYTES:,} bytes in 14 blocks" in text
    assert "------------- Distribution ------------- count" in text
    assert c["allocs"] == sum(h["count"] for h in report["histogram"])


def test_valgrind_agrees(targets: Any, tmp_path: Path) -> None:
    """definitely + indirectly lost (valgrind) == leaked bytes (instr), same binary."""
    if shutil.which("valgrind") is None:
        pytest.skip("valgrind is not installed (apt-get install valgrind)")
    target = targets.path("leaks")
    vg = subprocess.run(
        ["valgrind", "--leak-check=full", str(target)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert vg.returncode == 0, vg.stderr

    def lost(kind: str) -> int:
        m = re.search(rf"{kind} lost: ([\d,]+) bytes", vg.stderr)
        assert m is not None, vg.stderr
        return int(m.group(1).replace(",", ""))

    assert lost("possibly") == 0  # instr counts interior-only blocks as leaked
    report, _ = mem_report(target, tmp_path)
    assert report["leaks"]["bytes"] == lost("definitely") + lost("indirectly")
    assert report["leaks"]["indirect_bytes"] == lost("indirectly")


def test_tinycc_hooks(targets: Any, tmp_path: Path) -> None:
    """The fallback when the host cannot build the hooks (a remote device, no
    compiler): same report."""
    report, _ = mem_report(targets.path("leaks"), tmp_path, "--cc", "tinycc")
    assert report["leaks"]["bytes"] == LEAKED_BYTES
    leaked = leak_stacks(report)
    assert {k: (s["leaked_bytes"], s["leaked_blocks"]) for k, s in leaked.items()} == {
        k: v[:2] for k, v in LEAKS.items()
    }
    assert "leak_list" in functions(leaked["make_node"])


def test_without_frame_pointers(targets: Any, tmp_path: Path) -> None:
    """Built as usual (-O1 omits frame pointers): same leaks, the call site still exact."""
    exe = tmp_path / "leaks"
    subprocess.run(
        ["gcc", *CFLAGS, "-fomit-frame-pointer", "-o", str(exe), str(TARGETS_SRC / "leaks.c")],
        check=True,
        capture_output=True,
    )
    report, _ = mem_report(exe, tmp_path)
    assert report["leaks"]["bytes"] == LEAKED_BYTES
    leaked = leak_stacks(report)
    assert {k: (s["leaked_bytes"], s["leaked_blocks"]) for k, s in leaked.items()} == {
        k: v[:2] for k, v in LEAKS.items()
    }


def test_late_attach(targets: Any, launch: Any, instr_bg: Any, tmp_path: Path) -> None:
    """Blocks from before the attach: their frees are 'unknown', and memory they point to
    is not leaked. Interval and SIGUSR1 reports while it runs; the leak report at exit."""
    target = launch(targets.path("memattach"))
    out = tmp_path / "late.json"
    instr = instr_bg("mem", "-p", target.pid, "--interval", "0.2", "-o", out)
    instr.wait_armed()
    instr.out.expect("interval report")
    instr.proc.send_signal(signal.SIGUSR1)
    instr.out.expect("report on request")
    target.go()
    assert target.readline() == "step"
    target.go()
    done = instr.finish()
    assert done.returncode == 0, done.err
    report = json.loads(out.read_text())
    assert report["mode"] == "attach" and report["reason"] == "exit 0"
    assert report["counters"]["unknown_frees"] == 5
    assert report["leaks"]["bytes"] == 77 and report["leaks"]["blocks"] == 1
    assert list(leak_stacks(report)) == ["late_leak"]
    grow = sites(report)["grow_list"]
    assert (grow["allocs"], grow["live_blocks"], grow["leaked_blocks"]) == (3, 3, 0)
    assert "frees of blocks allocated before tracking began" in done.out


def test_peek(targets: Any, launch: Any) -> None:
    target = launch(targets.path("globals"))
    specs = [
        "globals!global_counter:i64",
        "small:i16",
        "ratio:f64",
        "table:i32[4]",
        "message:cstr",
        "blob:hex[20]",
        "message_ptr:ptr",
    ]
    res = run_instr("peek", "-p", target.pid, *specs)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].endswith("(globals!global_counter) = 1234567890123")
    assert lines[1].endswith("= -42")
    assert lines[2].endswith("= 1.5")
    assert lines[3].endswith("= [10, 20, 30, 40]")
    assert lines[4].endswith("= 'hello, peek'")
    assert lines[6].split()[1:3] == ["00", "01"] and lines[6].endswith("|................|")
    assert lines[7].split()[1:5] == ["10", "11", "12", "13"]
    message_at = re.search(r"@ (0x[0-9a-f]+) \(globals!message\)", lines[4])
    assert message_at is not None
    assert lines[8].endswith(f"= {message_at.group(1)}")
    # by address, with an offset and a bound; the process keeps running
    res = run_instr("peek", "-p", target.pid, f"{message_at.group(1)}+7:cstr[3]")
    assert "= 'pee'" in res.stdout
    bad = run_instr("peek", "-p", target.pid, "globals!no_such_symbol:i32")
    assert bad.returncode == 1
    assert (
        bad.stderr.strip()
        == "instr: error: globals!no_such_symbol:i32: no symbol no_such_symbol in globals"
    )
    target.go()
    assert target.finish().returncode == 0


def test_cxx_operators(tmp_path: Path) -> None:
    """operator new/new[]/nothrow and delete/delete[] are hooked, with the caller's stack."""
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ is not installed: the C++ target cannot be built")
    exe = tmp_path / "cxxalloc"
    src = TARGETS_SRC / "cxxalloc.cc"
    subprocess.run(
        [gxx, "-O1", "-g", "-fno-omit-frame-pointer", "-o", str(exe), str(src)],
        check=True,
        capture_output=True,
    )
    report, _ = mem_report(exe, tmp_path)
    leaked = leak_stacks(report)
    assert {k: (s["kind"], s["leaked_bytes"]) for k, s in leaked.items()} == {
        "leak_one": ("operator new", 32),
        "leak_array": ("operator new[]", 40),
        "leak_nothrow": ("operator new[]", 24),
    }
    assert all("main" in functions(s) for s in leaked.values())
    churn = {s["kind"]: s for s in report["stacks"] if function(s["frames"][0]) == "churn"}
    assert (churn["operator new"]["allocs"], churn["operator new"]["live_blocks"]) == (100, 0)
    assert (churn["operator new[]"]["allocs"], churn["operator new[]"]["bytes"]) == (10, 320)
    assert report["leaks"]["bytes"] == 96


def test_detach_report_and_target_goes_on(targets: Any, launch: Any, instr_bg: Any) -> None:
    """SIGTERM to instr: a report of the live allocations, then the process runs on unhooked."""
    target = launch(targets.path("memattach"))
    instr = instr_bg("mem", "-p", target.pid, "--oldest", "3")
    instr.wait_armed()
    target.go()
    assert target.readline() == "step"  # its allocations are done, while tracked
    instr.proc.send_signal(signal.SIGTERM)
    done = instr.finish()
    assert done.returncode == 0, done.err
    assert "at detach" in done.out
    assert "live allocations by stack" in done.out
    assert "memattach!grow_list" in done.out and "memattach!late_leak" in done.out
    assert done.out.count("bytes  age ") == 3  # the 3 oldest live blocks
    target.go()
    assert target.finish().returncode == 0


def test_usage_errors(tmp_path: Path) -> None:
    res = run_instr("mem", cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.startswith("instr: error: give exactly one target")
    res = run_instr("peek", "counter:i64", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip() == "instr: error: peek needs a running process: -p PID or -n NAME"
    res = run_instr("peek", "-p", "1", "counter:x9", cwd=tmp_path)
    assert res.returncode == 2 and "unknown type 'x9'" in res.stderr
    res = run_instr("mem", "--interval", "0", "--", "/bin/true", cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.endswith(
        "Error: Invalid value for '--interval': 0 is out of range:"
        " give at least 0.1 and at most 31536000 seconds (how often to report)\n"
    )


def test_poke_writes_data_and_shows_before_and_after(targets: Any, launch: Any) -> None:
    target = launch(targets.path("globals"))
    writes = [
        "globals!global_counter:i64=-7",
        "small:i16=0x7fff",
        "ratio:f64=2.25",
        "table:i32[4]=1,2,3,4",
        "message:cstr=bye",
        "blob:hex=ff",
    ]
    refused = run_instr("poke", "-p", target.pid, *writes)
    assert refused.returncode == 2 and "refusing without -w/--destructive" in refused.stderr
    res = run_instr("poke", "-p", target.pid, "-w", *writes)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].endswith("(globals!global_counter): 1234567890123 -> -7"), lines
    assert lines[1].endswith(": -42 -> 32767")
    assert lines[2].endswith(": 1.5 -> 2.25")
    assert lines[3].endswith(": [10, 20, 30, 40] -> [1, 2, 3, 4]")
    assert lines[4].endswith(": 'hello, peek' -> 'bye'")
    assert lines[5].endswith(": 00 -> ff")
    # bad writes change nothing: too long a string, a value out of range, code, read-only data
    for spec, code, message in [
        ("message:cstr=a string longer than the old one", 2, "are longer than the string there"),
        ("small:i16=40000", 2, "40000 does not fit i16 (-32768 .. 32767)"),
        ("globals!main:u8=0", 1, "is code (r-x"),
        ("globals!answer:i32=1", 1, "is not writable (r-- in "),
        ("globals!no_such:u8=0", 1, "no symbol no_such in globals"),
    ]:
        bad = run_instr("poke", "-p", target.pid, "-w", spec)
        assert bad.returncode == code and message in bad.stderr, (spec, bad.stderr)
        assert "Traceback" not in bad.stderr
    target.go()
    assert target.readline() == (
        "counter=-7 small=32767 ratio=2.25 table=1,2,3,4 message=bye blob0=255 ptr_ok=1"
    )
    assert target.finish().returncode == 0


def test_who_builds_the_hooks_is_said(targets: Any, tmp_path: Path) -> None:
    """The host's compiler by default; TinyCC, and why, without one; an error
    with --cc system and no compiler."""
    exe = targets.path("leaks")
    res = run_instr("mem", "--", exe, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "(hooks built by the host's C compiler): armed" in res.stderr
    res = run_instr("mem", "--", exe, cwd=tmp_path, env={"CC": "/nonexistent/cc"})
    assert res.returncode == 0, res.stderr
    assert "(hooks built by TinyCC): armed" in res.stderr
    assert "TinyCC because no C compiler on PATH (gcc, or $CC)" in res.stderr
    res = run_instr("mem", "--cc", "system", "--", exe, cwd=tmp_path, env={"CC": "/nonexistent/cc"})
    assert res.returncode != 0
    assert "cannot build the mem hooks with the host's C compiler: no C compiler" in res.stderr
    assert "Traceback" not in res.stderr
