"""Patch actions in probe sets (``patch: {ret: V}`` / ``{skip: V}``) with ``instr run -w``:
the output of a running program changes while instr runs, a ``where`` gates the patch,
and instr's exit reverts it with the code bytes restored."""

from __future__ import annotations

import json
import re

import pytest
from helpers import run_instr
from patching import ORIGINAL, PATCHED, start_patchme

from instr.unload import agent_images

pytestmark = pytest.mark.frida
VERIFIED = re.compile(r"reverted; (?:1 byte equals|\d+ bytes equal) the original")

SETS = f"""
version: 1
sets:
  fix:
    probes:
      - name: value
        function: "patchme!target_value"
        capture: {{x: arg0}}
        where: "x == 7"
        patch: {{ret: {PATCHED}}}
  gated:
    probes:
      - name: value
        function: "patchme!target_value"
        capture: {{x: arg0}}
        where: "x == 8"
        patch: {{ret: {PATCHED}}}
      - name: const
        function: "patchme!target_const"
        patch: {{skip: 77}}
"""


def test_ret_patch_changes_output_and_exit_reverts_bytes(targets, launch, instr_bg, probe_file):
    t = start_patchme(launch, targets.path("patchme"))
    t.wait_values(ORIGINAL, ORIGINAL)
    before = t.code(t.value_addr)

    ctl = instr_bg("run", "-P", probe_file(SETS), "-s", "fix", "-p", t.pid, "-w")
    ctl.err.expect("armed 1 of 1 probes (1 sites)")
    assert t.code(t.value_addr) != before
    t.wait_values(PATCHED, ORIGINAL)

    ctl.interrupt()
    done = ctl.finish()
    assert done.returncode == 0, done.err
    assert re.search(
        r"reverted patch #1 patchme!target_value: reverted; \d+ bytes? equals? the original",
        done.err,
    ), done.err
    assert t.code(t.value_addr) == before
    assert agent_images(t.pid) == frozenset()  # instr exits after Frida's agent has left
    t.wait_values(ORIGINAL, ORIGINAL)


def test_where_gates_the_ret_patch(targets, launch, instr_bg, probe_file):
    t = start_patchme(launch, targets.path("patchme"))
    t.wait_values(ORIGINAL, ORIGINAL)
    ctl = instr_bg("run", "-P", probe_file(SETS), "-s", "gated", "-p", t.pid, "-w")
    ctl.err.expect("armed 2 of 2 probes (2 sites)")
    # target_value(7) does not match `x == 8`: unchanged; the skip shows the set is live
    t.wait_values(ORIGINAL, 77)
    ctl.interrupt()
    done = ctl.finish()
    assert done.returncode == 0, done.err
    assert len(VERIFIED.findall(done.err)) == 2, done.err
    t.wait_values(ORIGINAL, ORIGINAL)


def test_patch_set_without_w_is_refused(targets, launch, probe_file):
    t = start_patchme(launch, targets.path("patchme"))
    before = t.code(t.value_addr)
    r = run_instr("run", "-P", probe_file(SETS), "-s", "fix", "-p", t.pid)
    assert r.returncode == 2, r.stderr
    assert "refusing without -w/--destructive" in r.stderr
    assert "Traceback" not in r.stderr
    assert t.code(t.value_addr) == before


def test_bad_patch_value_is_a_located_error(probe_file):
    path = probe_file(
        """
        version: 1
        sets:
          s:
            probes:
              - function: "patchme!target_value"
                patch: {ret: "abc"}
        """
    )
    r = run_instr("run", "-P", path, "-s", "s", "-w", "--", "true")
    assert r.returncode == 2, r.stderr
    assert f"{path}:6:22: error: 'patch: ret' must be an integer, not the string 'abc'" in r.stderr


def _kinds_sets(t) -> str:
    """Sets using every other kind of patch action, against this patchme process."""
    mov = t.const_offset()
    add = t.code(t.value_addr).find(bytes.fromhex("4801c0"))  # add rax, rax (x*3*2)
    assert add > 0, t.code(t.value_addr).hex()
    return f"""
version: 1
sets:
  js-and-bytes:
    probes:
      - name: double
        function: "patchme!target_value"
        patch:
          replace_js: "return original(a0) * 2;"
          returns: long
          params: [long]
      - name: const
        offset: "patchme+{mov:#x}"
        patch: {{bytes: {{expect: "b82a000000", new: "b8d2040000"}}}}
  c-and-args:
    probes:
      - name: arg
        function: "patchme!target_value"
        capture: {{x: arg0}}
        where: "x == 7"
        patch: {{args: {{arg0: 100}}}}
      - name: plus-one
        function: "patchme!target_const"
        patch:
          replace_c: |
            extern int original (void);
            int plus_one (void) {{ return original () + 1; }}
          fn: plus_one
  nop:
    probes:
      - name: half
        offset: "patchme+{t.value_addr + add - t.base():#x}"
        patch: {{nop: 1, expect: "4801c0"}}
  broken:
    probes:
      - name: ok
        function: "patchme!target_value"
        patch: {{ret: 5}}
      - name: mismatch
        offset: "patchme+{mov:#x}"
        patch: {{bytes: {{expect: "b82b000000", new: "b8d2040000"}}}}
  no-compile:
    probes:
      - name: bad
        function: "patchme!target_const"
        patch: {{replace_c: "int replacement(void) {{ return nope; }}"}}
"""


@pytest.mark.parametrize(
    ("set_name", "value", "const", "reverted"),
    [("js-and-bytes", 84, PATCHED, 2), ("c-and-args", 600, 43, 2), ("nop", 21, ORIGINAL, 1)],
)
def test_each_kind_patches_live_and_exit_restores_the_bytes(
    targets, launch, instr_bg, probe_file, set_name, value, const, reverted
):
    t = start_patchme(launch, targets.path("patchme"))
    t.wait_values(ORIGINAL, ORIGINAL)
    before = t.code(t.value_addr, 64), t.code(t.const_addr, 64)
    ctl = instr_bg("run", "-P", probe_file(_kinds_sets(t)), "-s", set_name, "-p", t.pid, "-w")
    ctl.err.expect(f"armed {reverted} of {reverted} probes")
    t.wait_values(value, const)
    listed = run_instr("patch", "-p", t.pid, "--list", "--json")
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)
    assert sorted(e["source"].rsplit("/", 1)[1] for e in entries) == sorted(
        {"js-and-bytes": ["double", "const"], "c-and-args": ["arg", "plus-one"], "nop": ["half"]}[
            set_name
        ]
    )
    ctl.interrupt()
    done = ctl.finish()
    assert done.returncode == 0, done.err
    assert len(VERIFIED.findall(done.err)) == reverted, done.err
    assert (t.code(t.value_addr, 64), t.code(t.const_addr, 64)) == before
    t.wait_values(ORIGINAL, ORIGINAL)


@pytest.mark.parametrize(
    ("set_name", "message"),
    [
        (
            "broken",
            "the bytes at 0x{mov:x} are not the expected ones: expected b82b000000, "
            "found b82a000000; nothing written",
        ),
        ("no-compile", "the C replacement does not compile"),
    ],
)
def test_a_failing_action_patches_nothing(targets, launch, probe_file, set_name, message):
    t = start_patchme(launch, targets.path("patchme"))
    t.wait_values(ORIGINAL, ORIGINAL)
    before = t.code(t.value_addr, 64), t.code(t.const_addr, 64)
    r = run_instr("run", "-P", probe_file(_kinds_sets(t)), "-s", set_name, "-p", t.pid, "-w")
    assert r.returncode == 1, r.stderr
    assert message.format(mov=t.base() + t.const_offset()) in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert (t.code(t.value_addr, 64), t.code(t.const_addr, 64)) == before
    t.wait_values(ORIGINAL, ORIGINAL)


def test_instr_patch_persists_a_sets_patches_until_reverted(targets, launch, probe_file):
    t = start_patchme(launch, targets.path("patchme"))
    t.wait_values(ORIGINAL, ORIGINAL)
    before = t.code(t.value_addr, 64), t.code(t.const_addr, 64)
    sets = probe_file(_kinds_sets(t))
    r = run_instr("patch", "-p", t.pid, "-P", sets, "-s", "js-and-bytes", "-w", "--persist")
    assert r.returncode == 0, r.stderr
    assert "persistent (#1, #2)" in r.stderr, r.stderr
    assert "instr's agent stays in the process to keep the hooks" in r.stderr  # replace_js
    t.wait_values(84, PATCHED)  # instr has exited; the patches stay
    listed = run_instr("patch", "-p", t.pid, "--list", "--json")
    assert [(e["id"], e["kind"], e["persist"]) for e in json.loads(listed.stdout)] == [
        (1, "replace_js", True),
        (2, "bytes", True),
    ]
    rev = run_instr("patch", "-p", t.pid, "--revert", "all")
    assert rev.returncode == 0, rev.stderr
    assert len(VERIFIED.findall(rev.stderr)) == 2, rev.stderr
    assert (t.code(t.value_addr, 64), t.code(t.const_addr, 64)) == before
    t.wait_values(ORIGINAL, ORIGINAL)


def test_instr_patch_refuses_sets_that_trace(targets, probe_file):
    path = probe_file(
        """
        version: 1
        sets:
          mixed:
            probes:
              - name: fix
                function: "patchme!target_const"
                patch: {skip: 1}
              - name: watch
                function: "patchme!target_value"
        """
    )
    r = run_instr("patch", "-P", path, "-s", "mixed", "-w", "--", str(targets.path("patchme")))
    assert r.returncode == 2, r.stderr
    assert "mixed/watch does not patch; instr patch applies only patch probes" in r.stderr


MIXED = """
version: 1
sets:
  mixed:
    probes:
      - name: watch
        function: "patchme!target_value"
        capture: {x: arg0}
      - name: fix
        function: "patchme!target_value"
        patch: {ret: 5}
"""


def test_patch_and_trace_on_one_function(targets, launch, instr_bg, probe_file, tmp_path):
    """The tracing probe hooks the function first; the patch then shares its hook."""
    t = start_patchme(launch, targets.path("patchme"))
    t.wait_values(ORIGINAL, ORIGINAL)
    before = t.code(t.value_addr, 64)
    out = tmp_path / "mixed.jsonl"
    ctl = instr_bg("run", "-P", probe_file(MIXED), "-s", "mixed", "-p", t.pid, "-w", "-o", out)
    ctl.err.expect("armed 2 of 2 probes (2 sites)")
    t.wait_values(5, ORIGINAL)
    ctl.interrupt()
    done = ctl.finish()
    assert done.returncode == 0, done.err
    assert (
        "reverted patch #1 patchme!target_value: reverted; 1 byte equals the original" in done.err
    ), done.err
    assert t.code(t.value_addr, 64) == before
    t.wait_values(ORIGINAL, ORIGINAL)
    events = [json.loads(line) for line in out.read_text().splitlines()]
    calls = [e for e in events if e["type"] == "event" and e["probe"] == "mixed/watch"]
    assert len(calls) >= 6 and all(e["args"] == {"x": 7} for e in calls)
