"""Patch actions in probe sets (``patch: {ret: V}`` / ``{skip: V}``) with ``instr run -w``:
the output of a running program changes while instr runs, a ``where`` gates the patch,
and instr's exit reverts it with the code bytes restored."""

from __future__ import annotations

import re

import pytest
from helpers import run_instr
from patching import ORIGINAL, PATCHED, start_patchme

pytestmark = pytest.mark.frida

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
        r"reverted patch #1 patchme!target_value: reverted; \d+ bytes equal the original", done.err
    ), done.err
    assert t.code(t.value_addr) == before
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
    assert done.err.count("bytes equal the original") == 2, done.err
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
