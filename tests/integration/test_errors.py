"""Bad input gets a short, specific message and a non-zero exit code, never a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import instr_argv, instr_env, run_instr

GOOD = """
version: 1
sets:
  add:
    description: target_add calls
    probes:
      - function: "calls!target_add"
        capture: {a: "arg0:i64"}
"""


def fails(res: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert res.returncode == code, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr
    for needle in needles:
        assert needle in res.stderr, res.stderr


# -- probe sets (no Frida needed) -------------------------------------------------


def test_malformed_yaml(probe_file):
    path = probe_file("version: 1\nsets: [\n")
    fails(run_instr("check", path), 2, f"{path}:3:1: error: invalid YAML")


def test_unknown_key_wrong_type_and_capture_type_all_reported(probe_file):
    path = probe_file("""
        version: 1
        sets:
          a:
            probes:
              - function: "calls!target_add"
                capture: {a: "arg0:u63"}
                bogus: 1
                max_sites: many
        """)
    res = run_instr("check", path)
    fails(res, 2, f"{path}:6:28: error: unknown capture type 'u63'", "did you mean 'u64'?",
          f"{path}:7:9: error: unknown key 'bogus' in probe", f"{path}:8:20:")  # fmt: skip


def test_unparsable_and_unknown_names_in_predicate(probe_file):
    path = probe_file("""
        version: 1
        sets:
          a:
            probes:
              - function: "calls!target_add"
                capture: {size: "arg0:u64"}
                where: "szie > 3"
          b:
            probes:
              - function: "calls!target_add"
                where: "a >"
        """)
    fails(run_instr("check", path), 2, f"{path}:7:17:", "'szie'", "did you mean 'size'?",
          f"{path}:11:17: error: invalid predicate")  # fmt: skip


def test_unknown_set_name(probe_file):
    path = probe_file(GOOD)
    fails(run_instr("run", "-P", path, "-s", "ad", "--", "true"), 2,
          "unknown probe set 'ad'", "did you mean 'add'?")  # fmt: skip


def test_check_and_sets_on_a_good_file(probe_file):
    path = probe_file(GOOD)
    res = run_instr("check", path)
    assert res.returncode == 0 and "ok" in res.stdout
    res = run_instr("sets", path)
    assert res.returncode == 0 and res.stdout.split() == ["add", "target_add", "calls"]


def test_repo_probes_yaml_checks():
    repo = Path(__file__).resolve().parents[2]
    res = run_instr("check", repo / "probes.yaml")
    assert res.returncode == 0, res.stderr


# -- targets and devices ---------------------------------------------------------


@pytest.mark.frida
def test_glob_matching_nothing_names_close_matches(targets, probe_file):
    res = run_instr("trace", "-i", "calls!target_ad", "--", targets.path("calls"), "add", 10)
    fails(res, 1, "no probe could be armed", "no function matches 'calls!target_ad'",
          "target_add")  # fmt: skip


@pytest.mark.frida
def test_missing_and_non_executable_programs(probe_file, tmp_path: Path):
    path = probe_file(GOOD)
    fails(run_instr("run", "-P", path, "-s", "add", "--", tmp_path / "nope"), 1,
          "program not found")  # fmt: skip
    script = tmp_path / "plain.txt"
    script.write_text("hello\n")
    fails(run_instr("run", "-P", path, "-s", "add", "--", script), 1, "not executable")
    fails(run_instr("run", "-P", path, "-s", "add", "--", "no-such-program-xyz"), 1,
          "program not found: no-such-program-xyz")  # fmt: skip


@pytest.mark.frida
def test_dead_and_nonexistent_pids(probe_file):
    path = probe_file(GOOD)
    dead = subprocess.Popen(["true"])
    dead.wait()
    fails(run_instr("run", "-P", path, "-s", "add", "-p", dead.pid), 1,
          f"no process with pid {dead.pid}")  # fmt: skip
    fails(run_instr("run", "-P", path, "-s", "add", "-p", 0), 1, "invalid pid 0")


@pytest.mark.frida
def test_process_names_matching_none_or_several(targets, launch, probe_file):
    path = probe_file(GOOD)
    fails(run_instr("run", "-P", path, "-s", "add", "-n", "no-such-proc-xyz"), 1,
          "no process named 'no-such-proc-xyz'")  # fmt: skip
    a = launch(targets.path("attach"))
    b = launch(targets.path("attach", pie=False))
    res = run_instr("run", "-P", path, "-s", "add", "-n", "attach")
    fails(res, 1, "2 processes are named 'attach'", str(a.pid), str(b.pid), "-p PID")


@pytest.mark.frida
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) not installed")
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a target as another user")
def test_permission_denied_attaching(targets, launch, probe_file):
    # The target runs as nobody; instr keeps uid 0 but loses CAP_SYS_PTRACE.
    target = launch("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                    targets.path("attach"))  # fmt: skip
    pid = target.pid  # setpriv execs the target: same pid
    argv = ["setpriv", "--bounding-set=-sys_ptrace", "--inh-caps=-sys_ptrace",
            *instr_argv("run", "-P", probe_file(GOOD), "-s", "add", "-p", pid)]  # fmt: skip
    res = subprocess.run(argv, capture_output=True, text=True, env=instr_env(), timeout=60)
    fails(res, 1, f"permission denied attaching to pid {pid}")


@pytest.mark.frida
def test_device_not_found_or_unreachable(targets, probe_file):
    path = probe_file(GOOD)
    prog = targets.path("calls")
    fails(run_instr("run", "-P", path, "-s", "add", "-D", "no-such-device", "--", prog), 1,
          "device not found: no-such-device", "devices available")  # fmt: skip
    fails(run_instr("run", "-P", path, "-s", "add", "-H", "127.0.0.1:1", "--", prog), 1,
          "cannot reach frida-server on 127.0.0.1:1")  # fmt: skip
    fails(run_instr("run", "-P", path, "-s", "add", "-U", "-R", "--", prog), 2,
          "at most one of -D, -U, -R, -H")  # fmt: skip


@pytest.mark.frida
def test_exception_inside_the_agent_is_reported_with_its_probe(targets, probe_file, tmp_path):
    path = probe_file("""
        version: 1
        sets:
          div:
            probes:
              - name: divider
                function: "calls!target_add"
                capture: {a: "arg0:i64"}
                where: "100 // a > 1"
                on: [entry]
        """)
    res = run_instr("run", "-P", path, "-s", "div", "--", targets.path("calls"), "add", 10)
    assert "Traceback" not in res.stderr
    assert "probe div/divider: integer division by zero" in res.stderr


@pytest.mark.frida
def test_debug_shows_the_traceback(tmp_path: Path):
    res = run_instr("--debug", "check", tmp_path / "missing.yaml")
    assert res.returncode != 0
    res2 = run_instr("check", "--debug", tmp_path / "missing.yaml")
    assert "Traceback" in res2.stderr


@pytest.mark.frida
def test_functions_in_the_kernels_vdso_are_refused_and_the_program_lives(targets, launch):
    """glibc's gettimeofday resolves (through an IFUNC) to the kernel's vDSO,
    whose pages cannot be made writable: Gum aborted the program when its
    hook's write failed, under `trace` and under `patch` alike. instr now
    refuses such a function in its own words, arms the rest, and the
    program goes on."""
    target = launch(targets.path("sleeper"))  # blocked on stdin
    why = (
        "gettimeofday cannot be hooked: it runs in the kernel's vdso "
        "(linux-vdso.so.1!__vdso_gettimeofday), whose code cannot be made writable to hook"
    )
    r = run_instr("patch", "-p", target.pid, "-w", "--ret", "libc.so.6!gettimeofday=0")
    fails(r, 1, f"cannot patch (cli --ret libc.so.6!gettimeofday=0): {why}")
    r = run_instr(
        "trace", "-i", "libc.so.6!gettimeofday", "-i", "sleeper!target_add",
        "-p", target.pid, "--duration", "0.5",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"probe cli/libc.so.6!gettimeofday failed: {why}" in r.stderr
    assert "armed 1 of 2 probes" in r.stderr
    target.send("3 sum")
    assert target.readline() == "sum=6"
    assert target.finish().returncode == 0
