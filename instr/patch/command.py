"""``instr patch``: what the command does, as a function (the CLI only parses flags)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TextIO

from instr.errors import UsageError
from instr.patch.control import PatchController
from instr.patch.model import PatchSpec, RevertResult, format_table, require_destructive
from instr.signals import sigterm_as_interrupt
from instr.target import DeviceSpec, TargetSpec


@dataclass(frozen=True)
class PatchCommand:
    target: TargetSpec
    device: DeviceSpec
    specs: tuple[PatchSpec, ...] = ()
    destructive: bool = False
    persist: bool = False
    list_: bool = False
    revert: tuple[int, ...] | Literal["all"] | None = None
    as_json: bool = False
    duration_s: float | None = None
    quiet: bool = False


def parse_revert(text: str | None) -> tuple[int, ...] | Literal["all"] | None:
    """``--revert ID[,ID...]`` or ``--revert all``."""
    if text is None:
        return None
    if text.strip() == "all":
        return "all"
    ids: list[int] = []
    for part in text.split(","):
        p = part.strip().lstrip("#")
        if not p.isdigit() or int(p) <= 0:
            raise UsageError(
                f"--revert: '{part.strip()}' is not a patch id",
                hint="give an id from --list, or 'all'",
            )
        ids.append(int(p))
    return tuple(ids)


def check(cmd: PatchCommand) -> None:
    modes = sum((bool(cmd.specs), cmd.list_, cmd.revert is not None))
    if modes == 0:
        raise UsageError(
            "nothing to do",
            hint="give --ret, --skip, --bytes, --nop, --replace-c or -P FILE -s SET to patch, "
            "or --list, or --revert",
        )
    if modes > 1:
        raise UsageError("patch, --list and --revert are separate runs; give one of them")
    if cmd.specs:
        require_destructive(cmd.destructive, "patching")
    elif cmd.persist:
        raise UsageError("--persist applies to patches (--ret, --skip, ..., or -P FILE -s SET)")
    if (cmd.list_ or cmd.revert is not None) and cmd.target.spawns:
        raise UsageError("--list and --revert need a running process: give -p PID or -n NAME")


def run_patch(cmd: PatchCommand, out: TextIO | None = None, status: TextIO | None = None) -> int:
    """Run one ``instr patch``; returns the exit status."""
    stdout = out if out is not None else sys.stdout
    stderr = status if status is not None else sys.stderr

    def say(text: str) -> None:
        if not cmd.quiet:
            print(f"instr: {text}", file=stderr, flush=True)

    check(cmd)
    ctl = PatchController(cmd.target, cmd.device, exclusive=not cmd.list_)
    ctl.open()
    try:
        if cmd.list_:
            entries = ctl.ledger()
            if cmd.as_json:
                print(json.dumps([e.to_json() for e in entries], indent=None), file=stdout)
            else:
                print(format_table(entries), file=stdout)
            return 0
        if cmd.revert is not None:
            results = ctl.revert(cmd.revert)
            _report_reverts(results, say if not cmd.as_json else lambda _t: None)
            if cmd.as_json:
                print(json.dumps([r.__dict__ for r in results]), file=stdout)
            if not results:
                say("no patches to revert")
            return 0 if all(r.good for r in results) else 1
        entries = ctl.apply(cmd.specs)
        for e in entries:
            say(e.describe())
        if cmd.persist:
            ctl.persist()
            ctl.resume()
            ids = ", ".join(f"#{e.id}" for e in entries)
            say(
                f"patched {_sites(len(entries))} in pid {ctl.pid}; persistent ({ids}): "
                f"'instr patch -p {ctl.pid} --list' shows them, '--revert all' removes them"
            )
            if ctl.agent_stays:
                say(
                    "instr's agent stays in the process to keep the hooks "
                    "(Frida's image and threads, about 13 MB) until they are reverted"
                )
            return 0
        say(f"patched {_sites(len(entries))} in pid {ctl.pid}; Ctrl-C reverts them")
        try:
            with sigterm_as_interrupt():
                ctl.resume()
                _wait(ctl, cmd.duration_s)
        except KeyboardInterrupt:
            say("stopping")
        if ctl.ended:
            say(f"pid {ctl.pid} ended")
            return 0
    finally:
        results = ctl.close()
    _report_reverts(results, say)
    return 0 if all(r.good for r in results) else 1


def _sites(n: int) -> str:
    return f"{n} site{'s' if n != 1 else ''}"


def _report_reverts(results: Sequence[RevertResult], say: Callable[[str], None]) -> None:
    for r in results:
        say(r.describe())


def _wait(ctl: PatchController, duration_s: float | None) -> None:
    deadline = None if duration_s is None else time.monotonic() + duration_s
    while not ctl.wait(0.25):
        if deadline is not None and time.monotonic() >= deadline:
            return
