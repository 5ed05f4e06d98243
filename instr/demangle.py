"""C++ names for people: Itanium-ABI mangled names (``_ZN2ns6Widget5twiceEi``)
demangled (``ns::Widget::twice(int)``) by binutils' ``c++filt``.

Every output that names functions gets its names through here: the run
context (``instr.events.RunContext``: sites and symbols, so the console, JSON
Lines, SQLite and the timeline), and profiles (``instr.profile``). One
``c++filt`` process demangles every new name of a call; results are kept for
the life of the process, so a name is demangled once. Without ``c++filt``
(binutils not installed) names stay as they are.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterable

_cache: dict[str, str] = {}
_lock = threading.Lock()


def is_mangled(name: str) -> bool:
    """An Itanium-ABI name: ``_Z`` then a letter (``_ZN``, ``_ZL``, ``_ZZ``, ...)."""
    return len(name) > 2 and name[0] == "_" and name[1] == "Z" and name[2].isalnum()


def demangle(names: Iterable[str]) -> dict[str, str]:
    """Demangled names by mangled name, for the mangled ones among ``names``
    (others are not in the result); without ``c++filt`` they map to themselves."""
    mangled = {n for n in names if is_mangled(n)}
    if not mangled:
        return {}
    with _lock:
        new = sorted(n for n in mangled if n not in _cache)
        if new:
            _cache.update(_run_cxxfilt(new))
        return {n: _cache[n] for n in mangled}


def demangle_one(name: str) -> str:
    """``name`` demangled, or as it is when it is not mangled."""
    if not is_mangled(name):
        return name
    return demangle((name,))[name]


def _run_cxxfilt(mangled: list[str]) -> dict[str, str]:
    out = {n: n for n in mangled}
    tool = shutil.which("c++filt")
    if tool is None:
        return out
    try:
        done = subprocess.run(
            [tool], input="\n".join(mangled) + "\n", capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return out
    lines = done.stdout.splitlines()
    if done.returncode == 0 and len(lines) == len(mangled):
        out.update(zip(mangled, lines, strict=True))
    return out
