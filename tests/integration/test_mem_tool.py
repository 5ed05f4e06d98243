"""instr mem measures the program, not the tool (tests/targets/mem_exact.c).

- Calls made on Frida's threads and instr's agent thread (symbol lookups that
  allocate, Frida's heap growing by mmap) are left out: a program that makes
  exactly 7 mallocs and 3 frees, attached while idle, shows exactly those,
  no free(NULL) and no mmap; ``--include-tool`` shows the tool's calls too.
- Every figure of a report is read at one instant: taken while a thread
  allocates, the calls line, the heap line, the call sites, the stacks, the
  histogram and the live blocks agree with each other.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any

from helpers import run_instr

# mem_exact.c, "blocks": make_blocks mallocs these sizes; free_some frees the 1st, 3rd, 5th.
SIZES = (24, 100, 1000, 4000, 32, 64, 128)
FREED = (24, 1000, 32)


def function(frame: str) -> str | None:
    """'mem_exact!make_blocks+0x27' -> 'make_blocks'."""
    m = re.match(r"^[^!]*!([^+]+)", frame)
    return m.group(1) if m else None


def module(frame: str) -> str:
    return frame.split("!")[0].split("+")[0]


def bucket(size: int) -> int:
    """The histogram's bucket_min for SIZE (powers of two, DTrace's quantize)."""
    return 1 << (size.bit_length() - 1)


def attach_and_make_blocks(
    targets: Any, launch: Any, instr_bg: Any, tmp_path: Path, *flags: str
) -> tuple[dict[str, Any], str]:
    """Attach to the idle program, have it make its blocks, detach: the final report."""
    target = launch(targets.path("mem_exact"))
    out = tmp_path / "report.json"
    instr = instr_bg("mem", "-p", target.pid, "-o", out, "--top", "50", *flags)
    instr.wait_armed()
    target.send("blocks")
    assert target.readline() == "blocks done"
    instr.proc.send_signal(signal.SIGTERM)
    done = instr.finish()
    assert done.returncode == 0, done.err
    assert "agent error" not in done.err, done.err
    assert target.finish().returncode == 0
    return json.loads(out.read_text()), done.out


def program_site(report: dict[str, Any]) -> dict[str, Any]:
    (site,) = [x for x in report["sites"] if function(x["site"]) == "make_blocks"]
    return site


def test_attached_idle_counts_exactly_the_programs_calls(
    targets: Any, launch: Any, instr_bg: Any, tmp_path: Path
) -> None:
    report, text = attach_and_make_blocks(targets, launch, instr_bg, tmp_path)
    c = report["counters"]
    assert report["mode"] == "attach" and report["reason"] == "detach"
    assert report["tool_excluded"] is True
    # The tool did make calls meanwhile (Frida's symbol lookups allocate), left out:
    assert c["tool_calls"] > 0, c
    # ... and the program's are exactly these.
    assert report["calls"] == {"malloc": {"calls": len(SIZES), "bytes": sum(SIZES)}}
    assert (c["allocs"], c["bytes_allocated"]) == (len(SIZES), sum(SIZES))
    assert (c["frees"], c["bytes_freed"], c["unknown_frees"]) == (len(FREED), sum(FREED), 0)
    assert c["free_null"] == 0
    assert (c["live_blocks"], c["live_bytes"]) == (4, sum(SIZES) - sum(FREED))
    assert c["peak_bytes"] == sum(SIZES)
    # no mmap at all: Frida's heap and thread stacks are not the program's
    assert (c["mmap_calls"], c["munmap_calls"], c["mapped_regions"], c["mapped_bytes_total"]) == (
        0,
        0,
        0,
        0,
    )
    hist = {h["bucket_min"]: h["count"] for h in report["histogram"]}
    want: dict[int, int] = {}
    for size in SIZES:
        want[bucket(size)] = want.get(bucket(size), 0) + 1
    assert hist == want
    # one call site, one stack, all in the program
    assert program_site(report) == {
        "site": program_site(report)["site"],
        "kind": "malloc",
        "allocs": len(SIZES),
        "bytes": sum(SIZES),
        "live_bytes": sum(SIZES) - sum(FREED),
        "stacks": 1,
    }
    assert len(report["sites"]) == 1, report["sites"]
    assert [module(s["frames"][0]) for s in report["stacks"]] == ["mem_exact"], report["stacks"]
    # the console says the same, and what it covers
    assert "  calls      malloc 7; free 3 (+0 free(NULL))" in text
    assert (
        "  heap       5,348 bytes in 7 allocations, 1,056 freed; live 4,292 bytes in 4 blocks"
        in text
    )
    assert "mmap " not in text
    m = re.search(
        r"^  covers     every call since instr attached, all figures read at one instant; "
        r"([\d,]+) calls on instr's and Frida's threads left out",
        text,
        re.M,
    )
    assert m and int(m.group(1).replace(",", "")) == c["tool_calls"], text


def test_include_tool_counts_the_tools_calls_too(
    targets: Any, launch: Any, instr_bg: Any, tmp_path: Path
) -> None:
    report, text = attach_and_make_blocks(targets, launch, instr_bg, tmp_path, "--include-tool")
    c = report["counters"]
    assert report["tool_excluded"] is False and c["tool_calls"] == 0
    # the program's calls, exactly as without the flag
    site = program_site(report)
    assert (site["allocs"], site["bytes"], site["stacks"]) == (len(SIZES), sum(SIZES), 1)
    # and the tool's: calls from outside the program (how many is not fixed)
    tools = [s for s in report["stacks"] if module(s["frames"][0]) != "mem_exact"]
    assert tools, report["stacks"]
    tool_calls = (c["allocs"] - len(SIZES)) + c["free_null"] + c["mmap_calls"]
    assert tool_calls > 0, c
    assert "calls on instr's and Frida's threads included (--include-tool)" in text


def test_spawned_program_counts_exactly(targets: Any, tmp_path: Path) -> None:
    """Spawned (hooks in before main): the same exact figures, from the exit report."""
    out = tmp_path / "spawn.json"
    res = run_instr(
        "mem", "-o", out, "--", targets.path("mem_exact"), input="blocks\n", cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    c = report["counters"]
    assert report["reason"] == "exit 0" and report["scanned"]
    assert report["calls"] == {"malloc": {"calls": len(SIZES), "bytes": sum(SIZES)}}
    assert (c["frees"], c["free_null"], c["mmap_calls"]) == (len(FREED), 0, 0)
    assert report["leaks"]["bytes"] == 0 and c["live_bytes"] == sum(SIZES) - sum(FREED)
    assert c["tool_calls"] > 0


# --------------------------------------------------------------------------- one instant

N = r"([\d,]+)"


def num(s: str) -> int:
    return int(s.replace(",", ""))


def check_text_report(block: list[str]) -> int:
    """One console report: its figures agree. Returns its heap allocations."""
    text = "\n".join(block)
    calls = re.search(rf"^  calls      (.*); free {N} \(\+{N} free\(NULL\)\)$", text, re.M)
    heap = re.search(
        rf"^  heap       {N} bytes in {N} allocations, {N} freed; live {N} bytes in {N} blocks;",
        text,
        re.M,
    )
    assert calls and heap, text
    kinds = dict(re.findall(rf"(\S+(?: new(?:\[\])?)?) {N}", calls.group(1)))
    frees, nulls = num(calls.group(2)), num(calls.group(3))
    nbytes, allocs, _freed, live_bytes, live = (num(x) for x in heap.groups())
    assert nulls == 1, text  # the churning thread's first free(held), held NULL
    assert sum(num(v) for v in kinds.values()) == allocs, text
    assert allocs - frees == live, text
    # every heap call site (--top is large enough to list them all)
    sites = re.findall(rf"^\s+{N} bytes\s+{N} calls  (\S+) from \S+", text, re.M)
    heap_sites = [(num(b), num(c), k) for b, c, k in sites if k != "mmap"]
    for kind, n in kinds.items():
        assert sum(c for _, c, k in heap_sites if k == kind) == num(n), (kind, text)
    assert sum(b for b, _, _ in heap_sites) == nbytes, text
    # the live blocks by stack, from the live table copied at the same instant
    lives = re.findall(rf"^    {N} bytes in {N} blocks.*, [^,]+:$", text, re.M)
    assert sum(num(b) for b, _ in lives) == live_bytes, text
    assert sum(num(n) for _, n in lives) == live, text
    # the histogram
    counts = re.findall(r"^\s+\d+ \|@* +(\d+)$", text, re.M)
    assert sum(int(x) for x in counts) == allocs, text
    return allocs


def test_figures_agree_while_a_thread_allocates(
    targets: Any, launch: Any, instr_bg: Any, tmp_path: Path
) -> None:
    """Reports taken while a thread makes malloc/free pairs (interval, SIGUSR1, the one
    at detach): the calls and heap lines, the call sites, the live blocks by stack and
    the histogram are one snapshot (they used to be read at different moments, so a
    site showed more calls than the summary's total)."""
    target = launch(targets.path("mem_exact"))
    out = tmp_path / "churn.json"
    instr = instr_bg(
        "mem", "-p", target.pid, "--interval", "0.2", "--top", "1000", "--oldest", "0", "-o", out
    )
    instr.wait_armed()
    target.send("churn")
    assert target.readline() == "churning"
    for _ in range(3):
        instr.out.expect("interval report")
    instr.proc.send_signal(signal.SIGUSR1)
    instr.out.expect("report on request")
    instr.proc.send_signal(signal.SIGTERM)
    done = instr.finish()
    assert done.returncode == 0, done.err
    target.send("stop")
    stopped = target.readline()
    assert stopped is not None and stopped.startswith("stopped pairs="), stopped
    assert target.finish().returncode == 0
    lines = instr.out.seen
    starts = [i for i, line in enumerate(lines) if line.startswith("== instr mem: ")]
    blocks = [lines[a:b] for a, b in zip(starts, [*starts[1:], len(lines)], strict=True)]
    assert len(blocks) >= 5 and "at detach" in blocks[-1][0], lines[:3]
    allocs = [check_text_report(b) for b in blocks]
    assert allocs[-1] > 4096 and allocs == sorted(allocs), allocs
    # the JSON report (the one at detach) agrees with itself too
    report = json.loads(out.read_text())
    c = report["counters"]
    for kind, calls in report["calls"].items():
        assert sum(x["allocs"] for x in report["sites"] if x["kind"] == kind) == calls["calls"]
        assert sum(s["allocs"] for s in report["stacks"] if s["kind"] == kind) == calls["calls"]
        assert sum(s["bytes"] for s in report["stacks"] if s["kind"] == kind) == calls["bytes"]
    assert c["allocs"] == sum(x["calls"] for x in report["calls"].values())
    assert c["allocs"] == sum(h["count"] for h in report["histogram"])
    assert sum(s["live_blocks"] for s in report["stacks"]) == c["live_blocks"]
    assert sum(s["live_bytes"] for s in report["stacks"]) == c["live_bytes"]
    assert c["allocs"] - c["frees"] == c["live_blocks"]
    assert c["free_null"] == 1
    assert (c["mmap_calls"], c["mapped_regions"]) == (
        sum(s["allocs"] for s in report["stacks"] if s["kind"] == "mmap"),
        sum(s["mapped_regions"] for s in report["stacks"]),
    )
