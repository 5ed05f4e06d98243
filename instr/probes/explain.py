"""``instr check --explain``: which tier each probe gets, and why.

Events: the native tier (a CModule listener writing binary records) unless
something needs JavaScript (``instr.ctier.native.event_blockers`` says what). Aggregations: the fast tier (generated C) unless
something C cannot express; the fast tier replaces the function outright
(``Interceptor.replaceFast``) when its signature is known to be integer-only.
"""

from __future__ import annotations

from pathlib import Path

from instr.ctier.native import event_blockers
from instr.ctier.signatures import INT_SIGNATURES, MAX_REPLACE_ARGS, replace_ok
from instr.probes.ir import FunctionPoint, Probe


def event_tier(probe: Probe) -> tuple[str, str]:
    """(tier, why) for the probe's events, as the agent will choose."""
    if probe.is_profile:
        return "none", "a profile probe counts samples into its aggregations"
    if not probe.emit:
        return "none", "emit: false"
    if probe.is_syscall:
        return "syscall", "libc's wrappers record each call (CModule); the host decodes"
    if probe.tier == "js":
        return "js", "'tier: js' was asked"
    why = event_blockers(probe)
    if why:
        return "js", "not in C: " + "; ".join(why)
    caps = [*probe.captures("entry"), *probe.captures("exit")]
    parts = ["a CModule listener writes binary records"]
    if probe.exit is None and not probe.aggregations:
        parts[0] = (
            "C writes binary records; entry only, so with no listener at all (a replaceFast "
            "stub) where no other probe can hook the function, it is outside libc and ld.so, "
            "and its first 16 bytes are straight-line code (else a CModule listener; the "
            "run's probe table says which)"
        )
    memory = [c.name for c in caps if c.type in ("cstr", "bytes")]
    if memory:
        parts.append(
            f"C strings and bytes ({', '.join(memory)}) by a bounded copy that records a bad "
            "pointer as unreadable (x86_64; JavaScript elsewhere)"
        )
    if probe.where is not None:
        parts.append(f"'where' runs in C at {probe.where.phase}")
    stacks = [c.name for c in caps if c.src == "backtrace"]
    if stacks:
        parts.append(
            f"backtraces ({', '.join(stacks)}) by a frame-pointer walk in C where the hooked "
            "function's module keeps frame pointers; where it does not, the probe runs in "
            "JavaScript with Frida's unwinder (decided when armed: the run's probe table "
            "shows the tier)"
        )
    return "native", "; ".join(parts)


def _hook(probe: Probe) -> str:
    if replace_ok(probe):
        assert isinstance(probe.point, FunctionPoint)
        n = INT_SIGNATURES[probe.point.symbol]
        return (
            f"Interceptor.replaceFast on the first site ({probe.point.symbol} takes {n} integer "
            "argument(s)), native Interceptor.attach on others, when another probe hooks it, "
            "or where the function's first instructions leave no room for replaceFast's jump "
            "(known when armed: the run's probe table says so)"
        )
    point = probe.point
    if isinstance(point, FunctionPoint) and point.symbol in INT_SIGNATURES:
        if INT_SIGNATURES[point.symbol] > MAX_REPLACE_ARGS:
            return "native Interceptor.attach (more integer arguments than every ABI passes in registers)"
        return "native Interceptor.attach (a captured argument is beyond the signature)"
    return "native Interceptor.attach (signature not known to be integer-only, so no replaceFast)"


def explain_probe(probe: Probe) -> list[str]:
    lines = [f"{probe.name}  ({probe.point})"]
    tier, why = event_tier(probe)
    lines.append(f"  events: {tier}: {why}")
    if probe.aggregations:
        if probe.agg_tier == "fast":
            lines.append(f"  aggregations: fast (compiled C): {_hook(probe)}")
        elif probe.agg_tier == "host":
            lines.append(f"  aggregations: host: {probe.agg_tier_why}")
        else:
            lines.append(f"  aggregations: js: {probe.agg_tier_why}")
        for a in probe.aggregations:
            lines.append(
                f"    {a.name} = {a.source}  [updated at {a.phase}, max {a.max_keys} keys]"
            )
    return lines


def explain_file(path: str | Path) -> list[str]:
    from instr.probes.compiler import load_file

    psf = load_file(path)
    out: list[str] = []
    for info in psf.sets.values():
        for probe in info.probes:
            out += explain_probe(probe)
    return out
