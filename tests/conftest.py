"""Shared fixtures: C targets built per session (PIE and non-PIE), process drivers.

Fixtures
  targets        session: every tests/targets/*.c compiled into a tmp dir
                 (skips when gcc is missing). ``targets.path("calls", pie=True)``
  pie            parametrized True/False, ids "pie"/"nopie"
  frida_ok       session: skips when Frida may not attach (ptrace forbidden)
  launch         launch(path, *args) -> TargetProcess, started and waiting at
                 "ready"; killed at teardown
  instr_bg       instr_bg(*args) -> InstrProcess (``python -m instr ARGS`` in the
                 background); killed at teardown
  probe_file     probe_file(yaml_text, name="probes.yaml") -> Path in tmp_path

Tests under tests/integration/, and tests marked ``frida``, are skipped with the
reason when Frida cannot attach here.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import helpers
from helpers import InstrProcess, TargetProcess, Targets

INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "frida: attaches with Frida; skipped when ptrace is forbidden here"
    )


# --------------------------------------------------------------------------- targets


@pytest.fixture(scope="session", autouse=True)
def cmodule_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Host-built agent C (instr/cbuild.py) is cached per test session, not in
    the user's cache: every session builds it once, from this checkout."""
    path = tmp_path_factory.mktemp("instr-cache")
    old = os.environ.get("INSTR_CACHE_DIR")
    os.environ["INSTR_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("INSTR_CACHE_DIR", None)
    else:
        os.environ["INSTR_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Targets:
    cc = os.environ.get("CC", "gcc")
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} not found on PATH: it is needed to build the C targets in tests/targets")
    return helpers.build_targets(tmp_path_factory.mktemp("targets"), cc=cc)


@pytest.fixture(params=[True, False], ids=["pie", "nopie"])
def pie(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


# --------------------------------------------------------------------------- ptrace / Frida


def _yama_problem() -> str | None:
    try:
        scope = int(Path("/proc/sys/kernel/yama/ptrace_scope").read_text().strip())
    except (OSError, ValueError):
        return None  # no Yama: classic ptrace rules apply
    if scope >= 3:
        return "ptrace is disabled (kernel.yama.ptrace_scope=3)"
    if scope == 2 and os.geteuid() != 0:
        return "ptrace needs CAP_SYS_PTRACE (kernel.yama.ptrace_scope=2) and we are not root"
    return None


@functools.cache
def attach_problem() -> str | None:
    """Why Frida cannot attach to our own child here, or None if it can (probed once)."""
    reason = _yama_problem()
    if reason is not None:
        return reason
    try:
        import frida
    except ImportError as e:
        return f"frida is not importable: {e}"
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; print('ready', flush=True); sys.stdin.readline()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        child.stdout.readline()
        session = frida.attach(child.pid)
        session.detach()
    except (
        frida.PermissionDeniedError,
        frida.ProcessNotRespondingError,
        frida.NotSupportedError,
        frida.TransportError,
        frida.TimedOutError,
        frida.InvalidOperationError,
    ) as e:
        return f"Frida cannot attach to a child process here ({type(e).__name__}): {e}"
    finally:
        child.kill()
        child.wait()
    return None


@pytest.fixture(scope="session")
def frida_ok() -> None:
    reason = attach_problem()
    if reason is not None:
        pytest.skip(reason)


def _needs_attach(item: pytest.Item) -> bool:
    return item.get_closest_marker("frida") is not None or item.path.is_relative_to(INTEGRATION_DIR)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if _needs_attach(item):
        reason = attach_problem()
        if reason is not None:
            pytest.skip(reason)


# --------------------------------------------------------------------------- processes


@pytest.fixture
def launch() -> Iterator[Callable[..., TargetProcess]]:
    started: list[TargetProcess] = []

    def _launch(path: str | os.PathLike[str], *args: object, **kw: Any) -> TargetProcess:
        proc = helpers.start_target(path, *args, **kw)
        started.append(proc)
        return proc

    yield _launch
    for proc in started:
        proc.kill()


@pytest.fixture
def instr_bg(tmp_path: Path) -> Iterator[Callable[..., InstrProcess]]:
    started: list[InstrProcess] = []

    def _start(*args: object, **kw: Any) -> InstrProcess:
        kw.setdefault("cwd", tmp_path)
        proc = helpers.start_instr(*args, **kw)
        started.append(proc)
        return proc

    yield _start
    for proc in started:
        proc.kill_all()


@pytest.fixture
def probe_file(tmp_path: Path) -> Callable[..., Path]:
    def _write(text: str, name: str = "probes.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    return _write
