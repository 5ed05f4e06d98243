"""Text and JSON renderings of a ``MemReport``: DTrace-style histograms, leak lists."""

from __future__ import annotations

from typing import Any

from instr.mem.model import NOT_ALLOCATIONS, MemReport, StackStat

BAR = 40


def _n(v: int) -> str:
    return f"{v:,}"


def quantize(buckets: list[tuple[int, int]], title: str, use_bytes: bool = False) -> list[str]:
    """DTrace's ``quantize`` histogram: one row per power of two, '@' bars on counts."""
    values = [b if use_bytes else n for n, b in buckets]
    nz = [i for i, v in enumerate(values) if v]
    if not nz:
        return [f"  {title}: none"]
    lo, hi = max(0, nz[0] - 1), min(len(values) - 1, nz[-1] + 1)
    total = sum(values) or 1
    lines = [f"  {title}", f"  {'value':>16}  {'-' * 13} Distribution {'-' * 13} count"]
    for i in range(lo, hi + 1):
        value = 0 if i == 0 else 1 << (i - 1)
        bar = "@" * round(BAR * values[i] / total)
        lines.append(f"  {value:>16} |{bar:<{BAR}} {values[i]}")
    return lines


def _stack_lines(s: StackStat, indent: str = "      ") -> list[str]:
    frames = s.frames or ()
    if not frames:
        return [f"{indent}0x{a:x}" for a in s.addresses] or [f"{indent}(no stack)"]
    return [f"{indent}{f}" for f in frames]


def covers(r: MemReport) -> str:
    """What every figure of a report counts: one window, read at one instant, whose threads."""
    since = "the program started" if r.mode == "spawn" else "instr attached"
    if r.tool_excluded:
        n = r.counters.get("tool_calls", 0)
        who = f"{_n(n)} calls on instr's and Frida's threads left out (--include-tool counts them)"
    else:
        who = "calls on instr's and Frida's threads included (--include-tool)"
    return f"  covers     every call since {since}, all figures read at one instant; {who}"


def render_text(r: MemReport, top: int = 10) -> str:
    c = r.counters
    who = f"{r.process or '?'} (pid {r.pid})" if r.pid else (r.process or "?")
    title = {"interval": "interval report", "signal": "report on request", "detach": "at detach"}
    head = f"== instr mem: {who}, " + (
        f"at exit, status {r.exit_code}"
        if r.exit_code is not None
        else title.get(r.reason, r.reason)
    )
    out = [head, covers(r)]
    calls = ", ".join(f"{k} {_n(n)}" for k, (n, _b) in r.kinds.items())
    out.append(
        f"  calls      {calls or 'none'}; free {_n(c['frees'])} (+{_n(c['free_null'])} free(NULL))"
    )
    out.append(
        f"  heap       {_n(c['bytes_allocated'])} bytes in {_n(c['allocs'])} allocations, "
        f"{_n(c['bytes_freed'])} freed; live {_n(c['live_bytes'])} bytes in "
        f"{_n(c['live_blocks'])} blocks; peak {_n(c['peak_bytes'])} bytes"
    )
    # The DTrace walk-through: @bytes[execname] = sum(arg0) on malloc.
    out.append(f"  by process {r.process or '?'}: {_n(c['bytes_allocated'])} bytes allocated")
    if c["mmap_calls"]:
        out.append(
            f"  mmap       {_n(c['mmap_calls'])} calls, {_n(c['mapped_bytes_total'])} bytes mapped; "
            f"{_n(c['munmap_calls'])} munmap; live {_n(c['mapped_live_bytes'])} bytes in "
            f"{_n(c['mapped_regions'])} regions; peak {_n(c['mapped_peak_bytes'])}"
        )
    if c["unknown_frees"] or c["munmap_unknown"]:
        out.append(
            f"  unknown    {_n(c['unknown_frees'])} frees of blocks allocated before tracking began"
            + (
                f", {_n(c['munmap_unknown'])} munmaps of untracked regions"
                if c["munmap_unknown"]
                else ""
            )
        )
    if c["untracked"] or c["stack_overflow"] or c["guard_overflow"]:
        out.append(
            f"  limits     {_n(c['untracked'])} allocations not tracked (live table full), "
            f"{_n(c['stack_overflow'])} with no stack (stack table full), "
            f"{_n(c['guard_overflow'])} guard overflows"
        )
    out.append("")
    out += quantize(r.histogram, "allocation sizes (bytes): count")
    out.append("")
    all_sites = r.by_site()
    for heading, chosen in (
        ("call sites by bytes", [x for x in all_sites if x.kind != "mmap"][:top]),
        ("mmap call sites by bytes", [x for x in all_sites if x.kind == "mmap"][:top]),
    ):
        if not chosen:
            continue
        out.append(f"  top {len(chosen)} {heading}")
        for site in chosen:
            out.append(
                f"    {_n(site.bytes):>14} bytes {_n(site.allocs):>10} calls  {site.kind} "
                f"from {site.frame}" + (f" ({site.stacks} stacks)" if site.stacks > 1 else "")
            )
        out.append("")
    stacks = sorted(
        (s for s in r.stacks if s.allocs and s.kind not in (*NOT_ALLOCATIONS, "mmap")),
        key=lambda s: (-s.bytes, s.id),
    )[:top]
    if stacks:
        out.append(f"  top {len(stacks)} allocation stacks by bytes")
        for s in stacks:
            out.append(f"    {_n(s.bytes)} bytes in {_n(s.allocs)} calls, {s.kind}:")
            out += _stack_lines(s)
        out.append("")
    if r.scanned:
        out += _leak_lines(r, top)
    else:
        out += _live_lines(r, top)
    return "\n".join(out)


def _leak_lines(r: MemReport, top: int) -> list[str]:
    leaks = r.leaks
    reach = r.counters["live_bytes"] - r.leaked_bytes
    if not leaks:
        return [
            f"  no leaks: {_n(r.counters['live_blocks'])} live blocks ({_n(r.counters['live_bytes'])} bytes) "
            "are all still reachable"
        ]
    out = [
        f"  LEAKED {_n(r.leaked_bytes)} bytes in {_n(r.leaked_blocks)} blocks "
        f"({_n(r.leaked_bytes - r.indirect_bytes)} direct, {_n(r.indirect_bytes)} indirect) "
        f"from {len(leaks)} stacks; {_n(reach)} bytes still reachable"
    ]
    for s in leaks[:top]:
        ind = f" ({_n(s.indirect_bytes)} indirect)" if s.indirect_bytes else ""
        out.append(
            f"    {_n(s.leaked_bytes)} bytes{ind} in {_n(s.leaked_blocks)} blocks, {s.kind}:"
        )
        out += _stack_lines(s)
    if len(leaks) > top:
        out.append(f"    … {len(leaks) - top} more stacks (see -o report.json)")
    return out


def _live_lines(r: MemReport, top: int) -> list[str]:
    live = sorted((s for s in r.stacks if s.live_blocks), key=lambda s: (-s.live_bytes, s.id))
    out = [f"  live allocations by stack ({len(live)} stacks)"]
    for s in live[:top]:
        age = ""
        if s.oldest_seq is not None:
            age = f", oldest {(r.counters['ticks'] - s.oldest_tick) * r.tick_ms / 1000:.1f}s old"
        growth = r.extra.get("growth", {}).get(s.id)
        g = f", {growth:+,} bytes since last report" if growth else ""
        out.append(f"    {_n(s.live_bytes)} bytes in {_n(s.live_blocks)} blocks{age}{g}, {s.kind}:")
        out += _stack_lines(s)
    if r.oldest:
        out.append(f"  oldest {len(r.oldest)} live allocations")
        now = r.counters["ticks"]
        for b in r.oldest:
            where = "?"
            if b.stack < len(r.stacks) and r.stacks[b.stack].frames:
                where = str(r.stacks[b.stack].frames[0])
            age_s = (now - b.tick) * r.tick_ms / 1000
            out.append(
                f"    {_n(b.size):>10} bytes  age {age_s:.1f}s  at 0x{b.address:x}  from {where}"
            )
    return out


def to_json(r: MemReport) -> dict[str, Any]:
    shown = [s for s in r.stacks if s.allocs or s.live_blocks or s.map_blocks]
    return {
        "process": r.process,
        "pid": r.pid,
        "reason": r.reason,
        "exit_code": r.exit_code,
        "mode": r.mode,
        "scanned": r.scanned,
        "tool_excluded": r.tool_excluded,
        "counters": r.counters,
        "calls": {k: {"calls": n, "bytes": b} for k, (n, b) in r.kinds.items()},
        "histogram": [
            {"bucket_min": 0 if i == 0 else 1 << (i - 1), "count": n, "bytes": b}
            for i, (n, b) in enumerate(r.histogram)
            if n
        ],
        "by_process": {r.process or "?": r.counters["bytes_allocated"]},
        "leaks": {
            "bytes": r.leaked_bytes,
            "blocks": r.leaked_blocks,
            "indirect_bytes": r.indirect_bytes,
            "stacks": [s.id for s in r.leaks],
        }
        if r.scanned
        else None,
        "sites": [site.to_json() for site in r.by_site()],
        "stacks": [s.to_json() for s in shown],
        "oldest": [
            {"address": f"0x{b.address:x}", "size": b.size, "seq": b.seq, "stack": b.stack}
            for b in r.oldest
        ],
    }
