"""Host-side names from a module's ELF file (instr.profile.elfsyms), checked
against binutils' nm and readelf on targets gcc built and on this host's libc."""

from __future__ import annotations

import ctypes.util
import re
import subprocess
from pathlib import Path

import pytest

from instr.profile.elfsyms import HostSymbols, read_file_symbols


def _nm(path: Path, *flags: str) -> dict[str, tuple[int, int]]:
    out = subprocess.run(["nm", "-S", *flags, path], capture_output=True, text=True, check=True)
    syms = {}
    for line in out.stdout.splitlines():
        f = line.split()
        if len(f) == 4 and f[2] in "tTiW":
            syms[f[3].split("@")[0]] = (int(f[0], 16), int(f[1], 16))
    return syms


def _build_id(path: Path) -> str:
    out = subprocess.run(["readelf", "-n", path], capture_output=True, text=True, check=True)
    m = re.search(r"Build ID: ([0-9a-f]+)", out.stdout)
    assert m is not None, out.stdout
    return m.group(1)


@pytest.mark.parametrize("pie", [True, False], ids=["pie", "nopie"])
def test_every_function_of_a_target_is_named_at_its_start_middle_and_last_byte(
    targets, pie
) -> None:
    path = targets.path("profile_split", pie=pie)
    syms = read_file_symbols(str(path))
    assert syms is not None
    assert syms.build_id == _build_id(path)
    expected = _nm(path)
    for name in ("main", "hot_a", "hot_b", "leaf_work", "recurse", "parse_count"):
        start, size = expected[name]
        for off in (0, size // 2, size - 1):
            assert syms.lookup(start + off) == (name, off), (name, off)
        assert syms.lookup(start + size) != (name, size)  # one past the end is not in it


def test_a_module_is_named_at_its_load_base_only_when_the_build_id_matches(targets) -> None:
    path = targets.path("profile_split", pie=True)
    start, _ = _nm(path)["hot_b"]
    base = 0x5555_5555_4000
    host = HostSymbols()
    bid = _build_id(path)
    assert host.name(base + start + 3, base, str(path), 1 << 14, bid) == ("hot_b", 3)
    assert host.name(base + start + 3, base, str(path), 1 << 14, "00" * 20) is None  # another build
    nopie = targets.path("profile_split", pie=False)
    s2, _ = _nm(nopie)["hot_b"]  # link-time addresses from 0x400000: bias 0
    assert host.name(s2, 0x400000, str(nopie), 1 << 14, _build_id(nopie)) == ("hot_b", 0)


def test_libc_static_and_exported_functions() -> None:
    name = ctypes.util.find_library("c")
    assert name is not None
    libc = next(
        (p for d in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64")
         if (p := Path(d) / name).exists()),
        None,
    )  # fmt: skip
    if libc is None:
        pytest.skip(f"{name} not found in the usual library directories")
    syms = read_file_symbols(str(libc))
    assert syms is not None
    exported = _nm(libc, "-D")
    for fn in ("malloc", "fprintf", "nanosleep", "clock_nanosleep"):
        if fn in exported:
            start, size = exported[fn]
            got = syms.lookup(start + size // 2)
            assert got is not None and got[1] == size // 2, (fn, got)
            assert start in syms.starts


def test_not_an_elf_file_names_nothing(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x7fELF" + b"\x02\x01" + b"\0" * 10)  # a header and nothing after it
    assert read_file_symbols(str(junk)) is None
    assert read_file_symbols(str(tmp_path / "missing")) is None
    text = tmp_path / "text"
    text.write_text("hello")
    assert read_file_symbols(str(text)) is None


def test_after_the_agent_has_gone_the_sampler_names_frames_from_the_file(targets) -> None:
    """At the process's exit the agent answers no calls: the last batch's new
    frames are named from the file, and nothing asks the agent."""
    from instr.profile.session import AgentSampler
    from instr.profile.unwind import ModuleSpan, Unwinder

    path = targets.path("profile_split", pie=True)
    start, _ = _nm(path)["hot_a"]
    base = 0x5555_0000_0000

    def no_agent() -> object:
        raise AssertionError("the agent was asked after it had gone")

    sampler = AgentSampler(no_agent)
    span = ModuleSpan("profile_split", str(path), base, 1 << 14, _build_id(path))
    sampler.unwinder = Unwinder(lambda: [span], lambda b: None)
    sampler.ended.set()
    got = sampler.symbolize({base + start + 7, base + 0x10})
    assert got == {base + start + 7: ("profile_split", "hot_a", 7)}  # 0x10: the ELF header
