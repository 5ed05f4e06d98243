"""Test helpers: build the C targets, drive processes line by line, expected values.

Nothing here sleeps. Processes are synchronised on their output: every target
prints ``ready`` and blocks on stdin (see tests/targets/target.h); ``instr``
prints a status line containing ``armed`` on stderr once its probes are armed.
Reads wait on a queue with a deadline, so a hung process fails the test with
the lines seen so far instead of hanging the session.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
TARGETS_SRC = REPO / "tests" / "targets"
DEFAULT_TIMEOUT = 60.0

CFLAGS = ("-O1", "-g", "-Wall", "-Wextra", "-pthread")
PIE_FLAGS = {True: ("-fPIE", "-pie"), False: ("-fno-pie", "-no-pie")}
SHARED_LIBS = {"libplugin": "libinstrplugin.so"}  # source stem -> library file name
EXTRA_LIBS = {"dlopen_main": ("-ldl",)}
# instr mem walks stacks through frame pointers: leaks.c keeps them (docs/memory.md).
EXTRA_FLAGS = {"leaks": ("-fno-omit-frame-pointer",), "frames": ("-fno-omit-frame-pointer",)}


def variant(pie: bool) -> str:
    return "pie" if pie else "nopie"


# --------------------------------------------------------------------------- build


class BuildError(RuntimeError):
    pass


@dataclass(frozen=True)
class Targets:
    """The compiled targets: ``root/pie/NAME`` and ``root/nopie/NAME``.

    Both variants keep the bare name, so ``calls!target_add`` names the main
    module either way; each variant directory also holds ``libinstrplugin.so``.
    """

    root: Path
    names: tuple[str, ...]  # executables, e.g. ("attach", "bench", "calls", ...)
    warnings: dict[str, str]  # "calls[pie]" -> gcc's stderr ("" when clean)

    def dir(self, pie: bool = True) -> Path:
        return self.root / variant(pie)

    def path(self, name: str, pie: bool = True) -> Path:
        if name not in self.names:
            raise KeyError(f"no target {name!r}; have {', '.join(self.names)}")
        return self.dir(pie) / name

    def plugin(self, pie: bool = True) -> Path:
        return self.dir(pie) / SHARED_LIBS["libplugin"]


def compile_c(
    src: Path, out: Path, *, pie: bool = True, shared: bool = False, cc: str = "gcc"
) -> str:
    """Compile one C file; return gcc's diagnostics; raise BuildError on failure."""
    flags = ("-shared", "-fPIC") if shared else PIE_FLAGS[pie]
    extra = EXTRA_FLAGS.get(src.stem, ())
    cmd = [cc, *CFLAGS, *extra, *flags, "-o", str(out), str(src), *EXTRA_LIBS.get(src.stem, ())]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if res.returncode != 0:
        raise BuildError(f"{' '.join(cmd)} failed:\n{res.stderr}")
    return res.stderr


def build_targets(out_dir: Path, src_dir: Path = TARGETS_SRC, cc: str = "gcc") -> Targets:
    """Compile every ``src_dir/*.c`` as PIE and non-PIE (libraries once per variant dir)."""
    jobs: list[tuple[str, Path, Path, bool, bool]] = []
    names = []
    for src in sorted(src_dir.glob("*.c")):
        shared = src.stem in SHARED_LIBS
        if not shared:
            names.append(src.stem)
        for pie in (True, False):
            d = out_dir / variant(pie)
            d.mkdir(parents=True, exist_ok=True)
            out = d / SHARED_LIBS[src.stem] if shared else d / src.stem
            jobs.append((f"{src.stem}[{variant(pie)}]", src, out, pie, shared))
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        futures = {
            key: pool.submit(compile_c, src, out, pie=pie, shared=shared, cc=cc)
            for key, src, out, pie, shared in jobs
        }
        warnings = {key: f.result() for key, f in futures.items()}
    return Targets(root=out_dir, names=tuple(names), warnings=warnings)


# --------------------------------------------------------------------------- processes


class LineReader:
    """Reads a text stream on a daemon thread; lines wait in a queue."""

    def __init__(self, stream: IO[str]) -> None:
        self.seen: list[str] = []  # every line returned so far, for diagnostics
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._eof = False
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                self._queue.put(line.rstrip("\n"))
        except ValueError:  # stream closed under us
            pass
        finally:
            self._queue.put(None)

    def readline(self, timeout: float = DEFAULT_TIMEOUT) -> str | None:
        """The next line without its newline; None at EOF; TimeoutError after ``timeout``."""
        if self._eof:
            return None
        try:
            line = self._queue.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            raise TimeoutError(
                f"no line within {timeout:.0f}s; seen so far: {self.seen[-20:]}"
            ) from None
        if line is None:
            self._eof = True
            return None
        self.seen.append(line)
        return line

    def expect(self, pattern: str | re.Pattern[str], timeout: float = DEFAULT_TIMEOUT) -> str:
        """Read until a line contains ``pattern`` (a substring, or a regex searched)."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.readline(deadline - time.monotonic())
            if line is None:
                raise AssertionError(f"EOF before a line matching {pattern!r}; seen: {self.seen}")
            if isinstance(pattern, re.Pattern):
                if pattern.search(line):
                    return line
            elif pattern in line:
                return line

    def rest(self, timeout: float = DEFAULT_TIMEOUT) -> list[str]:
        """All remaining lines up to EOF."""
        deadline = time.monotonic() + timeout
        lines = []
        while (line := self.readline(deadline - time.monotonic())) is not None:
            lines.append(line)
        return lines


@dataclass(frozen=True)
class Finished:
    returncode: int  # negative: killed by that signal (subprocess convention)
    stdout: list[str]  # lines not yet consumed through readline()/expect()
    stderr: list[str]

    @property
    def out(self) -> str:
        return "\n".join(self.stdout)

    @property
    def err(self) -> str:
        return "\n".join(self.stderr)


class Proc:
    """A child with piped stdin/stdout/stderr, read line by line without sleeping."""

    def __init__(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        cwd: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
        pass_fds: Sequence[int] = (),
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            cwd=cwd,
            env=env,
            pass_fds=pass_fds,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.out = LineReader(self.proc.stdout)
        self.err = LineReader(self.proc.stderr)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, line: str = "") -> None:
        """Write one line to the child's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def readline(self, timeout: float = DEFAULT_TIMEOUT) -> str | None:
        return self.out.readline(timeout)

    def close_stdin(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()

    def interrupt(self) -> None:
        """SIGINT, as Ctrl-C would."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)

    def finish(self, timeout: float = DEFAULT_TIMEOUT) -> Finished:
        """Close stdin, wait for exit, and collect what is left of stdout and stderr."""
        self.close_stdin()
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TimeoutError(f"{self.argv} still running after {timeout:.0f}s") from None
        return Finished(code, self.out.rest(timeout), self.err.rest(timeout))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(DEFAULT_TIMEOUT)
        self.close_stdin()

    def __enter__(self) -> Proc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


class TargetProcess(Proc):
    """A test target: ``go()`` releases it once probes are armed."""

    def wait_ready(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        line = self.out.readline(timeout)
        if line != "ready":
            rest = self.err.rest(5) if line is None else []
            raise AssertionError(f"{self.argv}: expected 'ready', got {line!r}; stderr: {rest}")

    def go(self) -> None:
        self.send("")


def start_target(
    path: str | os.PathLike[str], *args: object, timeout: float = DEFAULT_TIMEOUT, **kw: Any
) -> TargetProcess:
    """Start a target and return once it prints ``ready`` (it is then blocked on stdin)."""
    t = TargetProcess([path, *(str(a) for a in args)], **kw)
    try:
        t.wait_ready(timeout)
    except BaseException:
        t.kill()
        raise
    return t


def instr_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for ``python -m instr``: this checkout first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("INSTR_DEBUG", None)
    env.update(extra or {})
    return env


def instr_argv(*args: object) -> list[str]:
    return [sys.executable, "-m", "instr", *(str(a) for a in args)]


class InstrProcess(Proc):
    """``instr`` running in the background (e.g. attached with ``-p``)."""

    def wait_armed(self, timeout: float = DEFAULT_TIMEOUT) -> str:
        """Wait for the stderr status line that says probes are armed; return it."""
        return self.err.expect(re.compile(r"\barmed\b"), timeout)

    def worker(self) -> int | None:
        """The pid of the worker that this instr (its guard: instr.guard) forked;
        None once it has ended."""
        pid = self.proc.pid
        try:
            kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return None
        return int(kids[0]) if kids else None

    def kill_all(self) -> None:
        """SIGKILL the worker too (a kill of instr's guard alone lets the worker
        leave in order): a test's cleanup, or a worker that dies with its
        host's agent in the program (Frida's own unload)."""
        worker = self.worker()
        if worker is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker, signal.SIGKILL)
        self.kill()


def start_instr(
    *args: object,
    cwd: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    pass_fds: Sequence[int] = (),
) -> InstrProcess:
    return InstrProcess(instr_argv(*args), cwd=cwd, env=instr_env(env), pass_fds=pass_fds)


def run_instr(
    *args: object,
    input: str | None = "",
    timeout: float = 120.0,
    cwd: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m instr ARGS`` to completion; stdin gets ``input`` (default: EOF)."""
    return subprocess.run(
        instr_argv(*args),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=instr_env(env),
        check=False,
    )


# --------------------------------------------------------------------------- masking

_MASKS = (
    (re.compile(r"\b(pid|tid)([=: ]+)\d+"), r"\1\2<\1>"),
    (re.compile(r"0x[0-9a-fA-F]+"), "<addr>"),
    (re.compile(r"\b\d+(\.\d+)?\s*(ns|us|µs|ms|s)\b"), "<time>"),
)


def mask(text: str) -> str:
    """Mask pids, tids, addresses and durations (uftrace-style) for comparing output."""
    for rx, repl in _MASKS:
        text = rx.sub(repl, text)
    return text


# --------------------------------------------------------------------------- expected values
# These mirror the header comments of tests/targets/*.c.


def add_args(i: int) -> tuple[int, int]:
    """calls add: the i-th call is target_add(i, 2*i)."""
    return i, 2 * i


def add_sum(n: int) -> int:
    return 3 * n * (n - 1) // 2


def mix_args(i: int) -> tuple[int, int, int, int]:
    """calls mix: (int8 a, uint16 b, int32 c, uint64 d) of the i-th call."""
    return (i % 256) - 128, 65535 - i % 65536, -(2**31) + i % 2**31, 2**64 - 1 - i


def mix_ret(i: int) -> int:
    a, b, _, _ = mix_args(i)
    return a + b


def str_arg(i: int) -> str:
    return f"item-{i}"


def long_str(length: int) -> str:
    return "".join(chr(ord("a") + j % 26) for j in range(length))


def buf_arg(i: int) -> bytes:
    return bytes((i + j) & 0xFF for j in range(i % 17))


def work_ret(t: int, k: int) -> int:
    """threads: target_work(t, k) returns t * 1_000_000 + k."""
    return t * 1_000_000 + k


def plugin_ret(i: int) -> int:
    return 3 * i + 1


def attach_sum(n: int) -> int:
    """attach: the answer to line "N"."""
    return n * (n + 1) // 2
