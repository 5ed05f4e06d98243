"""instr/cbuild.py: when the host may build an agent's C, and the build itself
(the system's gcc, for real; no Frida here)."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from instr import cbuild

HOST_ARCH = {"x86_64": "x64", "aarch64": "arm64"}.get(platform.machine(), "?")


def source(text: str, arch: str = HOST_ARCH, plat: str = "linux") -> cbuild.Source:
    return cbuild.Source.from_agent(
        "demo",
        {
            "source": text,
            "headers": {"demo/api.h": "#define DEMO_ADD(a, b) ((a) + (b))\n"},
            "defines": {"HAVE_DEMO": True, "DEMO_BASE": "40"},
            "arch": arch,
            "platform": plat,
        },
    )


ADD = """
#include <demo/api.h>
extern int counter;
int add (int x) { counter = DEMO_ADD (DEMO_BASE, x); return counter; }
#ifndef HAVE_DEMO
#error defines not passed
#endif
"""


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("INSTR_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_refusals_say_why() -> None:
    src = source(ADD)
    assert cbuild.refusal(src, "local") is None
    assert cbuild.refusal(src, "remote") == "the target is not on the local device (-R)"
    assert cbuild.refusal(source(ADD, arch="ia32"), "local") == (
        f"the target is ia32, the host {HOST_ARCH}"
    )
    assert cbuild.refusal(source(ADD, plat="darwin"), "local") == (
        "host builds are for Linux targets (this one: darwin)"
    )


def test_no_compiler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "/nonexistent/cc -O1")
    assert cbuild.compiler() is None
    assert cbuild.refusal(source(ADD), "local") == "no C compiler on PATH (gcc, or $CC)"
    with pytest.raises(cbuild.BuildError, match="no C compiler"):
        cbuild.build(source(ADD))


def test_build_makes_a_shared_object_with_the_headers_and_defines(cache: Path) -> None:
    blob = cbuild.build(source(ADD))
    assert blob[:4] == b"\x7fELF"
    assert blob[16:18] == (3).to_bytes(2, "little")  # ET_DYN
    cached = list((cache / "cmodule").glob("demo-*.so"))
    assert len(cached) == 1 and cached[0].read_bytes() == blob


def test_build_uses_the_cache_and_keys_it_by_content(cache: Path) -> None:
    first = cbuild.build(source(ADD))
    (path,) = (cache / "cmodule").glob("demo-*.so")
    path.write_bytes(b"from the cache")
    assert cbuild.build(source(ADD)) == b"from the cache"
    changed = cbuild.build(source(ADD + "int other (void) { return 1; }\n"))
    assert changed[:4] == b"\x7fELF" and changed != first
    assert len(list((cache / "cmodule").glob("demo-*.so"))) == 2


def test_compile_errors_are_reported_with_the_compiler_message() -> None:
    with pytest.raises(cbuild.BuildError) as e:
        cbuild.build(source("int broken (void) { return undeclared_thing; }\n"))
    assert "failed on the demo C" in str(e.value) and "undeclared_thing" in str(e.value)


def test_headers_may_not_escape_the_include_tree() -> None:
    bad = cbuild.Source("demo", ADD, {"../../etc/evil.h": ""}, {}, HOST_ARCH, "linux")
    with pytest.raises(cbuild.BuildError, match="outside the include tree"):
        cbuild.build(bad)


def test_choice_tinycc_never_asks_the_agent() -> None:
    class NoScript:
        @property
        def exports_sync(self) -> object:
            raise AssertionError("the agent was asked")

    assert cbuild.object_for(NoScript(), "syscalls", "local", "tinycc") == (
        None,
        "TinyCC was asked for",
    )


def test_remote_devices_are_refused_without_asking_the_agent() -> None:
    class NoScript:
        @property
        def exports_sync(self) -> object:
            raise AssertionError("the agent was asked for its C")

    assert cbuild.object_for(NoScript(), "syscalls", "host") == (
        None,
        "the target is not on the local device (-H)",
    )
    with pytest.raises(cbuild.BuildError, match=r"not on the local device \(-U\)"):
        cbuild.object_for(NoScript(), "mem", "usb", "system")
