"""The ``-c`` table, in strace's layout (time is wall time in the wrapper)."""

from __future__ import annotations

from instr.syscalls.result import Count


def format_summary(counts: dict[str, Count]) -> str:
    rows = sorted(counts.items(), key=lambda kv: (-kv[1].ns, -kv[1].calls, kv[0]))
    total_ns = sum(c.ns for c in counts.values()) or 1
    lines = [
        "% time     seconds  usecs/call     calls    errors syscall",
        "------ ----------- ----------- --------- --------- ----------------",
    ]
    for name, c in rows:
        per = c.ns // 1000 // c.calls if c.calls else 0
        errors = str(c.errors) if c.errors else ""
        lines.append(
            f"{100 * c.ns / total_ns:6.2f} {c.ns / 1e9:11.6f} {per:11d} {c.calls:9d} {errors:>9} {name}"
        )
    calls = sum(c.calls for c in counts.values())
    errs = sum(c.errors for c in counts.values())
    lines.append("------ ----------- ----------- --------- --------- ----------------")
    per = sum(c.ns for c in counts.values()) // 1000 // calls if calls else 0
    lines.append(
        f"100.00 {sum(c.ns for c in counts.values()) / 1e9:11.6f} {per:11d} {calls:9d} {errs or '':>9} total"
    )
    return "\n".join(lines)
