"""What ``instr syscalls`` does, as a function (cli.py stays thin)."""

from __future__ import annotations

import errno
import sys
from typing import Any

from instr.errors import UsageError
from instr.signals import sigterm_as_interrupt
from instr.syscalls.monitor import SyscallRun
from instr.syscalls.summary import format_summary
from instr.syscalls.tofile import run_to_files, structured
from instr.target import DeviceSpec, TargetSpec


def run_syscalls(
    target: TargetSpec,
    device: DeviceSpec,
    trace_spec: str | None,
    summary: bool,
    follow: bool,
    kw: dict[str, Any],
) -> int:
    from instr.syscalls.static import run_static, wants_seccomp

    outputs = kw.get("outputs") or ()
    if structured(outputs):  # JSON Lines or SQLite: a probe set of syscall points
        if wants_seccomp(target, device, bool(kw.get("complete"))):
            raise UsageError(
                "a static program's system calls cannot be written as JSON Lines or SQLite yet",
                hint="write strace's text instead (-o FILE.txt, or the console)",
            )
        run_to_files(target, device, trace_spec, summary, follow, kw)
    if wants_seccomp(target, device, bool(kw.get("complete"))):  # Frida cannot inject there
        return run_static(target, trace_spec, summary, follow, kw)
    out = open(outputs[0], "w") if outputs and outputs[0] != "-" else sys.stdout  # noqa: SIM115

    closed: list[bool] = []  # the reader went away (instr syscalls ... | head)

    def line(text: str) -> None:
        if closed:
            return
        try:
            print(text, file=out, flush=False)
        except BrokenPipeError:
            closed.append(True)
            run.request_stop()  # leave as on Ctrl-C

    def say(text: str) -> None:
        if not kw.get("quiet"):
            print(f"instr: {text}", file=sys.stderr, flush=True)

    run = SyscallRun(
        target,
        device,
        trace_spec=trace_spec,
        follow=follow,
        stream=not summary,
        on_line=line,
        buffer_bytes=kw.get("buffer_size", 8 << 20),
        say=say,
        complete=bool(kw.get("complete")),
        compiler=str(kw.get("compiler") or "auto"),
        own_fds=kw.get("own_fds"),
    )
    with sigterm_as_interrupt():  # SIGTERM and SIGHUP stop it as Ctrl-C does
        result = run.run(timeout=kw.get("duration"))
    if closed:  # the CLI dies of SIGPIPE once Frida is closed
        raise BrokenPipeError(errno.EPIPE, "the reader of the lines went away")
    if summary:
        print(format_summary(result.counts), file=out)
    out.flush()
    for err in run.errors:
        say(f"error: {err}")
    for note in run.notes:
        say(note)
    if result.crash is not None:
        say(result.crash)
    if result.drops:
        say(f"dropped {result.drops} records when the in-target buffer was full")
    if out is not sys.stdout:
        out.close()
    if not target.spawns or result.exit_code is None:
        # No exit status of the program's to pass on: say whether something went wrong.
        return 1 if run.errors else 0
    return int(result.exit_code) & 0xFF
