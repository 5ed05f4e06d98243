"""Build an agent's C (a CModule) on the host, with the system's C compiler.

CModule offers two ways to build C in the target, and both cost something:

- TinyCC, inside the agent, makes unoptimised code: the syscall monitor's
  per-call path took about 30 ns more than with gcc -O2 (docs/syscalls.md).
- Its "external" toolchain runs gcc by forking the target. A fork of a process
  full of Frida's threads sometimes hung before its exec, and arming never
  returned (1 session in about 90 under load; once in CI).

Here the host compiles the same source into a shared object, against the
headers and defines of the agent's own Frida (``CModule.builtins``), and the
agent maps it with ``new CModule(bytes, symbols)``. That needs a host that can
build the target's code: the local device, Linux (ELF), and the same
architecture. Anywhere else (a remote or USB device, a 32-bit target on a
64-bit host), the caller falls back to TinyCC.

Objects are cached by content (source, headers, defines, compiler, flags) in
``$INSTR_CACHE_DIR`` or ``$XDG_CACHE_HOME/instr``, so only the first run after
a change pays for the compiler (about 3 s for the syscall monitor here).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from instr.errors import InstrError

# The device options of DeviceSpec kinds, for messages.
_FLAG = {"usb": "U", "remote": "R", "host": "H", "id": "D"}

# Frida's Process.arch for this host's machine name.
_ARCH = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}

FLAGS = (
    "-shared",
    "-fPIC",
    "-O2",
    "-nostdlib",
    # Nothing the loader cannot resolve: no canary (__stack_chk_fail), no
    # unwind tables, no CET notes.
    "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables",
    "-fcf-protection=none",
    "-Wl,--build-id=none",
)


class BuildError(InstrError):
    """The host could not build the C; the message says why."""


@dataclass(frozen=True)
class Source:
    """What the agent reports for one of its CModules (``cmoduleSource`` RPC)."""

    name: str
    source: str
    headers: dict[str, str]
    defines: dict[str, Any]
    arch: str
    platform: str

    @classmethod
    def from_agent(cls, name: str, raw: dict[str, Any]) -> Source:
        return cls(
            name=name,
            source=str(raw["source"]),
            headers={str(k): str(v) for k, v in raw["headers"].items()},
            defines=dict(raw["defines"]),
            arch=str(raw["arch"]),
            platform=str(raw["platform"]),
        )


def compiler() -> str | None:
    """The host's C compiler: ``$CC`` (its first word) or gcc, if on PATH."""
    cc = os.environ.get("CC", "").split()
    return shutil.which(cc[0] if cc else "gcc")


def _device_refusal(device_kind: str) -> str | None:
    if device_kind != "local":
        return f"the target is not on the local device (-{_FLAG.get(device_kind, device_kind)})"
    return None


def refusal(src: Source, device_kind: str) -> str | None:
    """Why the host cannot build SRC for the target, or None if it can."""
    why = _device_refusal(device_kind)
    if why is not None:
        return why
    if src.platform != "linux" or sys.platform != "linux":
        return f"host builds are for Linux targets (this one: {src.platform})"
    host = _ARCH.get(platform.machine().lower())
    if host != src.arch:
        return f"the target is {src.arch}, the host {host or platform.machine()}"
    if compiler() is None:
        return "no C compiler on PATH (gcc, or $CC)"
    return None


def cache_dir() -> Path:
    explicit = os.environ.get("INSTR_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "instr"


def _define_args(defines: dict[str, Any]) -> list[str]:
    args = []
    for key, value in sorted(defines.items()):
        args.append(f"-D{key}" if value is True else f"-D{key}={value}")
    return args


def build(src: Source) -> bytes:
    """The shared object for SRC: from the cache, else compiled (and cached)."""
    cc = compiler()
    if cc is None:
        raise BuildError("no C compiler on PATH (gcc, or $CC)")
    version = _version(cc)
    key = hashlib.sha256(
        json.dumps(
            [src.source, src.headers, src.defines, src.arch, cc, version, FLAGS],
            sort_keys=True,
        ).encode()
    ).hexdigest()[:32]
    cached = cache_dir() / "cmodule" / f"{src.name}-{key}.so"
    try:
        return cached.read_bytes()
    except OSError:
        pass
    blob = _compile(cc, src)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        # Atomic: two instr runs may build the same object at once.
        fd, tmp = tempfile.mkstemp(dir=cached.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        os.replace(tmp, cached)
    except OSError:
        pass  # a read-only cache only costs the next run a compile
    return blob


@functools.cache
def _version(cc: str) -> str:
    """The compiler's first --version line, asked once per process (part of
    the cache key; every cache hit would otherwise run the compiler)."""
    try:
        done = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        raise BuildError(f"{cc} --version: {e}") from None
    return done.stdout.splitlines()[0] if done.stdout else ""


def _compile(cc: str, src: Source) -> bytes:
    with tempfile.TemporaryDirectory(prefix="instr-cc-") as tmp:
        root = Path(tmp)
        inc = root / "include"
        for name, text in src.headers.items():
            path = (inc / name).resolve()
            if not path.is_relative_to(inc.resolve()):
                raise BuildError(f"the agent sent a header outside the include tree: {name}")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        (root / "module.c").write_text(src.source)
        argv = [
            cc,
            *FLAGS,
            "-isystem",
            str(inc),
            "-isystem",
            str(inc / "capstone"),
            *_define_args(src.defines),
            "module.c",
            "-o",
            "module.so",
        ]
        try:
            done = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as e:
            raise BuildError(f"{cc}: {e}") from None
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            raise BuildError(f"{cc} failed on the {src.name} C: " + " / ".join(lines[:6]))
        return (root / "module.so").read_bytes()


def object_for(
    script: Any, name: str, device_kind: str, choice: str = "auto"
) -> tuple[bytes | None, str | None]:
    """The host-built object of the agent's module NAME (``script`` is its
    loaded agent), or None and why not. CHOICE: ``auto`` (the host when it can,
    else TinyCC), ``system`` (the host, or BuildError), ``tinycc``."""
    if choice == "tinycc":
        return None, "TinyCC was asked for"
    # Checked before asking the agent for its C and headers (~140 kB): a
    # remote agent would send them over the network for nothing.
    why = _device_refusal(device_kind)
    if why is None:
        src = Source.from_agent(name, script.exports_sync.cmodule_source(name))
        why = refusal(src, device_kind)
    if why is None:
        try:
            return build(src), None
        except BuildError as e:
            why = str(e)
    if choice == "system":
        raise BuildError(f"cannot build the {name} hooks with the host's C compiler: {why}")
    return None, why
