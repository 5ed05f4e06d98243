"""instr.demangle and the run context's demangled names (no Frida)."""

from __future__ import annotations

import shutil

import pytest

from instr.demangle import demangle, demangle_one, is_mangled
from instr.events import RunContext, Site, Symbol
from instr.probes.ir import ProbeTable

needs_cxxfilt = pytest.mark.skipif(
    shutil.which("c++filt") is None, reason="c++filt (binutils) is not installed"
)


def test_is_mangled() -> None:
    assert [is_mangled(n) for n in ("_ZN2ns1fEv", "_ZL4helpv", "_Z", "_Zx", "main", "Z")] == [
        True,
        True,
        False,
        True,
        False,
        False,
    ]


@needs_cxxfilt
def test_demangle_only_mangled_names() -> None:
    assert demangle(["_ZN2ns6Widget5twiceEi", "main", "_ZN2ns6Widget5twiceEi"]) == {
        "_ZN2ns6Widget5twiceEi": "ns::Widget::twice(int)"
    }
    assert demangle_one("_ZN3geo3BoxImE4spinEl") == "geo::Box<unsigned long>::spin(long)"
    assert demangle_one("main") == "main"


def test_without_cxxfilt_names_stay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert demangle(["_ZN9nocxxfilt1fEv"]) == {"_ZN9nocxxfilt1fEv": "_ZN9nocxxfilt1fEv"}


@needs_cxxfilt
def test_run_context_keeps_names_demangled() -> None:
    ctx = RunContext(ProbeTable())
    ctx.add_sites(
        [
            Site(1, 0, 0x1000, "cxx", "_ZN2ns6Widget5twiceEi"),
            Site(1, 1, 0x2000, "cxx", "main"),
        ]
    )
    assert [s.function for s in ctx.sites.values()] == ["cxx!ns::Widget::twice(int)", "cxx!main"]
    ctx.add_symbols(
        {0x1234: Symbol("cxx", "_ZN2ns6Widget5outerEi", 0xE), 0x99: Symbol(None, None, 0x99)}
    )
    assert ctx.symbolize(0x1234) == "cxx!ns::Widget::outer(int)+0xe"
    assert ctx.symbolize(0x99) == "0x99"


def test_site_without_symbol_is_named_from_its_module_base() -> None:
    assert Site(1, 0, 0x5641DD68F209, "calls", None, 0x1209).function == "calls+0x1209"
    assert Site(1, 0, 0x5641DD68F209, "calls", None).function == "0x5641dd68f209"
    assert Site(1, 0, 0x401000, None, None).function == "0x401000"


@needs_cxxfilt
def test_crash_site_is_demangled() -> None:
    from instr.events import Ending

    crash = {
        "reason": "crash",
        "signal": "SIGSEGV",
        "address": "0x10",
        "symbol": "cxx!_ZN2ns1fEv+0x5",
    }
    assert Ending.from_message(crash).symbol == "cxx!ns::f()+0x5"
    assert Ending.from_message({**crash, "symbol": "cxx!_ZN2ns1fEv"}).symbol == "cxx!ns::f()"
    assert Ending.from_message({**crash, "symbol": "cxx!main+0x5"}).symbol == "cxx!main+0x5"
