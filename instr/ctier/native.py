"""Which probes' events the native tier (a CModule listener writing binary
records, agents/src/ctier/) can run, and why not; the agent decides the same
way (``nativeIneligible`` in agents/src/core/layout.ts).

Native: integer captures, ``caller``, ``duration``, C strings and bytes (a
fault-safe bounded copy, x86_64), backtraces where the hooked function's
module keeps frame pointers (decided by the agent when it arms: elsewhere the
probe runs in JS, with Frida's unwinder), and a ``where`` that ``wherevm``
compiles. JavaScript: predicates C cannot decide exactly.
"""

from __future__ import annotations

from instr.ctier.wherevm import native_where
from instr.probes.captures import record_size
from instr.probes.ir import Probe
from instr.protocol import HEADER_SIZE

MAX_CAPTURES = 16  # per phase (C MAXC)
MAX_ARG = 255  # argument indices are a u8 in the descriptor
MAX_BODY = 2048  # the record body C builds on the hooked thread's stack (BODY_MAX)


def event_blockers(probe: Probe) -> list[str]:
    """Why the probe's events cannot run in the native tier ([] if they can)."""
    out: list[str] = []
    for phase in ("entry", "exit"):
        caps = probe.captures(phase)
        lens = sum(1 for c in caps if c.type == "bytes" and c.len_arg is not None)
        if len(caps) + lens > MAX_CAPTURES:
            out.append(f"more than {MAX_CAPTURES} {phase} values (captures and bytes lengths)")
        out += [
            f"argument {c.index} of '{c.name}' (the native tier names arguments 0..{MAX_ARG})"
            for c in caps
            if c.src == "arg" and c.index > MAX_ARG
        ]
        if record_size(caps) - HEADER_SIZE > MAX_BODY:
            out.append(f"an {phase} record that can exceed {MAX_BODY} bytes")
    _, why = native_where(probe)
    if why:
        out.append(why)
    return out
