"""Live patching with ``instr patch``: the output of a running program changes
without a restart, revert restores it and the code bytes, patches persist
across controllers, and bad input gets a clear error."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from helpers import run_instr
from patching import MOV_EAX_42, MOV_EAX_1234, ORIGINAL, PATCHED, start_patchme

pytestmark = pytest.mark.frida


def test_ret_changes_output_live_and_revert_restores(targets, pie, launch, instr_bg):
    t = start_patchme(launch, targets.path("patchme", pie))
    t.wait_values(ORIGINAL, ORIGINAL)
    before = t.code(t.value_addr)

    ctl = instr_bg("patch", "-p", t.pid, "--ret", f"patchme!target_value={PATCHED}", "-w")
    ctl.err.expect("patched 1 site ")
    assert t.code(t.value_addr) != before
    t.wait_values(PATCHED, ORIGINAL)

    ctl.interrupt()
    done = ctl.finish()
    assert done.returncode == 0, done.err
    assert re.search(
        r"reverted patch #1 patchme!target_value: reverted; \d+ bytes equal the original", done.err
    )
    assert t.code(t.value_addr) == before
    t.wait_values(ORIGINAL, ORIGINAL)


def test_bytes_patch_and_revert_byte_for_byte(targets, launch, instr_bg):
    t = start_patchme(launch, targets.path("patchme"))
    t.wait_values(ORIGINAL, ORIGINAL)
    off = t.const_offset()
    before = t.code(t.const_addr)

    spec = f"patchme+{off:#x}:{MOV_EAX_42.hex()}:{MOV_EAX_1234.hex()}"
    ctl = instr_bg("patch", "-p", t.pid, "--bytes", spec, "-w")
    ctl.err.expect("patched 1 site ")
    t.wait_values(ORIGINAL, PATCHED)
    assert t.code(t.const_addr) == before.replace(MOV_EAX_42, MOV_EAX_1234)

    ctl.interrupt()
    done = ctl.finish()
    assert done.returncode == 0, done.err
    assert "5 bytes equal the original" in done.err
    assert t.code(t.const_addr) == before
    t.wait_values(ORIGINAL, ORIGINAL)


def test_persist_then_list_and_revert_from_new_controllers(targets, launch):
    t = start_patchme(launch, targets.path("patchme"))
    t.wait_values(ORIGINAL, ORIGINAL)
    value_before, const_before = t.code(t.value_addr), t.code(t.const_addr)
    off = t.const_offset()
    threads_before = sorted(os.listdir(f"/proc/{t.pid}/task"))

    r = run_instr(
        "patch", "-p", t.pid, "-w", "--persist",
        "--skip", f"patchme!target_value={PATCHED}",
        "--bytes", f"patchme+{off:#x}:{MOV_EAX_42.hex()}:{MOV_EAX_1234.hex()}",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "persistent (#1, #2)" in r.stderr
    t.wait_values(PATCHED, PATCHED)  # the controller has exited; the patches stay
    # Code writes need nothing of the agent: it has left (instr waited for its
    # image to be gone), and only the stubs' page and the ledger stay.
    assert "agent stays" not in r.stderr
    maps = Path(f"/proc/{t.pid}/maps").read_text()
    assert "frida" not in maps, maps
    assert "instr-patch-ledger" in maps
    assert sorted(os.listdir(f"/proc/{t.pid}/task")) == threads_before

    listed = run_instr("patch", "-p", t.pid, "--list", "--json")
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)
    assert [(e["id"], e["kind"], e["where"], e["persist"]) for e in entries] == [
        (1, "skip", "patchme!target_value", True),
        (2, "bytes", f"patchme+{off:#x}", True),
    ]
    assert value_before.hex().startswith(entries[0]["original"])  # the bytes the hook replaced
    assert entries[0]["detail"] == f"skip, return {PATCHED}"
    assert entries[1]["original"] == MOV_EAX_42.hex()
    assert entries[1]["patched"] == MOV_EAX_1234.hex()
    assert t.code(t.value_addr).hex().startswith(entries[0]["patched"])

    table = run_instr("patch", "-p", t.pid, "--list")
    assert table.stdout.splitlines()[0].split()[:3] == ["ID", "KIND", "WHERE"]
    assert len(table.stdout.splitlines()) == 3

    reverted = run_instr("patch", "-p", t.pid, "--revert", "all")
    assert reverted.returncode == 0, reverted.stderr
    assert re.search(
        r"reverted patch #1 patchme!target_value: reverted; \d+ bytes equal", reverted.stderr
    )
    assert (
        f"reverted patch #2 patchme+{off:#x}: reverted; 5 bytes equal the original"
        in reverted.stderr
    )
    assert t.code(t.value_addr) == value_before
    assert t.code(t.const_addr) == const_before
    t.wait_values(ORIGINAL, ORIGINAL)

    empty = run_instr("patch", "-p", t.pid, "--list")
    assert empty.stdout.strip() == "no patches"


QUIESCE_SIGNAL = 61  # agents/src/patch/patch_quiesce.ts


def signal_disposition(pid: int, sig: int) -> str:
    """'ignored', 'caught' or 'default', from /proc/PID/status."""
    fields = dict(
        line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    bit = 1 << (sig - 1)
    if int(fields["SigIgn"], 16) & bit:
        return "ignored"
    return "caught" if int(fields["SigCgt"], 16) & bit else "default"


@pytest.mark.parametrize("kind", ["ret", "skip"])
def test_concurrent_calls_while_patching_and_unpatching(targets, launch, kind):
    """4 threads call target_value while it is patched and unpatched 1,000 times:
    no crash, every result is the old or the new value, the code is restored, the
    stop signal's disposition is the target's own again, and the target exits
    cleanly right after instr has left."""
    from instr.patch import PatchController, parse_quick
    from instr.target import TargetSpec
    from instr.unload import agent_images

    t = start_patchme(launch, targets.path("patchme"), "threads")
    before = t.code(t.value_addr)
    spec = parse_quick(**{kind: (f"patchme!target_value={PATCHED}",)})
    with PatchController(TargetSpec(pid=t.pid)) as ctl:
        assert agent_images(t.pid), "Frida's agent is not in the target's maps"
        for _ in range(1000):
            (entry,) = ctl.apply(spec)
            (result,) = ctl.revert([entry.id])
            assert result.ok and result.verified, result
    # close() returns once Frida's agent has left (exiting before that hangs
    # or crashes the target in Frida's exit hook: docs/patching.md).
    assert ctl.agent_left is True
    assert agent_images(t.pid) == frozenset()
    assert t.code(t.value_addr) == before
    assert signal_disposition(t.pid, QUIESCE_SIGNAL) == "default"
    t.proc.send("stop")
    line = t.proc.readline()
    assert line is not None, f"the target ended: {t.proc.finish().returncode}"
    counts = dict(kv.split("=") for kv in line.split())
    assert t.proc.readline() == "other_values="
    assert counts["other"] == "0"
    assert int(counts["old"]) > 0 and int(counts["new"]) > 0
    assert int(counts["old"]) + int(counts["new"]) == int(counts["calls"])
    assert t.proc.finish().returncode == 0


BAD_INPUT = [
    pytest.param(
        lambda t: ("--bytes", f"patchme+{t.const_offset():#x}:b801000000:b802000000", "-w"),
        1,
        "the bytes at {const} are not the expected ones: expected b801000000, found b82a000000; nothing written",
        id="expected-bytes-mismatch",
    ),
    pytest.param(
        lambda t: ("--bytes", f"{t.data_addr:#x}:2a00000000000000:0100000000000000", "-w"),
        1,
        "{data} is not in a code range (it is rw- data in",
        id="outside-code",
    ),
    pytest.param(
        lambda t: ("--ret", "patchme!target_value=1"),
        2,
        "patching changes the target's code; refusing without -w/--destructive",
        id="missing-w",
    ),
    pytest.param(
        lambda t: ("--ret", "patchme!target_valu=1", "-w"),
        1,
        "no function matches 'patchme!target_valu'",
        id="symbol-not-found",
    ),
]


BROKEN_C = """\
extern long original(long);
long replacement(long x) { return original(x) + undefined_name; }
"""


def test_replace_c_that_does_not_compile_shows_the_compiler_message(targets, launch, tmp_path):
    t = start_patchme(launch, targets.path("patchme"))
    before = t.code(t.value_addr)
    src = tmp_path / "broken.c"
    src.write_text(BROKEN_C)
    r = run_instr("patch", "-p", t.pid, "--replace-c", f"patchme!target_value={src}", "-w")
    assert r.returncode == 1, r.stderr
    assert "the C replacement does not compile" in r.stderr
    assert "module.c:2: error: 'undefined_name' undeclared" in r.stderr
    assert "Traceback" not in r.stderr
    assert t.code(t.value_addr) == before


def test_replace_c_calls_the_original(targets, launch, instr_bg, tmp_path):
    t = start_patchme(launch, targets.path("patchme"))
    src = tmp_path / "plus.c"
    src.write_text(
        "extern long original(long);\nlong plus(long x) { return original(x) + 1000; }\n"
    )
    ctl = instr_bg("patch", "-p", t.pid, "--replace-c", f"patchme!target_value={src}:plus", "-w")
    ctl.err.expect("patched 1 site ")
    t.wait_values(1042, ORIGINAL)
    ctl.interrupt()
    assert ctl.finish().returncode == 0
    t.wait_values(ORIGINAL, ORIGINAL)


@pytest.mark.parametrize(("args", "code", "message"), BAD_INPUT)
def test_bad_input(targets, launch, args, code, message):
    t = start_patchme(launch, targets.path("patchme"))
    value_before, const_before = t.code(t.value_addr), t.code(t.const_addr)
    r = run_instr("patch", "-p", t.pid, *args(t))
    assert r.returncode == code, r.stderr
    expected = message.format(const=hex(t.const_addr), data=hex(t.data_addr))
    assert expected in r.stderr
    assert r.stderr.startswith("instr: error: ")
    assert "Traceback" not in r.stderr
    assert t.code(t.value_addr) == value_before and t.code(t.const_addr) == const_before
    t.wait_values(ORIGINAL, ORIGINAL)


def test_nop_one_instruction_and_revert(targets, launch, instr_bg):
    t = start_patchme(launch, targets.path("patchme"))
    t.wait_values(ORIGINAL, ORIGINAL)
    before = t.code(t.value_addr)
    add = before.find(bytes.fromhex("4801c0"))  # add rax, rax: x*3*2 becomes x*3
    assert add > 0, before.hex()
    off = t.value_addr + add - t.base()
    ctl = instr_bg("patch", "-p", t.pid, "--nop", f"patchme+{off:#x}:1", "-w")
    ctl.err.expect("patched 1 site ")
    t.wait_values(21, ORIGINAL)
    assert t.code(t.value_addr)[add : add + 3] == b"\x90\x90\x90"
    ctl.interrupt()
    done = ctl.finish()
    assert done.returncode == 0, done.err
    assert "reverted; 3 bytes equal the original" in done.err
    assert t.code(t.value_addr) == before
    t.wait_values(ORIGINAL, ORIGINAL)
