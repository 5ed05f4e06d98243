"""Probe descriptions, DTrace's and bpftrace's spellings, resolved to what instr arms.

pid$target:MOD:FUNC:entry|return     uprobe:LIB:FUNC  uretprobe:LIB:FUNC
pid$target:MOD:FUNC:OFFSET           (the instruction at hex OFFSET in FUNC)
syscall::NAME:entry|return           tracepoint:syscalls:sys_enter_NAME / sys_exit_NAME
BEGIN  END  tick-N[ns|us|ms|s|m|h|hz]  interval:s:N  interval:ms:N
profile-N[hz|ns|us|ms|s]             profile:hz:N  profile:s:N  profile:ms:N  profile:us:N
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Literal

from instr.dtrace.errors import Loc, fail

Kind = Literal["pid", "syscall", "begin", "end", "tick", "profile"]
_HEX = re.compile(r"(?:0[xX])?[0-9a-fA-F]+")  # DTrace's instruction offsets are hex
_MAX_OFFSET = 1 << 24

_UNITS_NS = {"ns": 1, "nsec": 1, "us": 1000, "usec": 1000, "ms": 10**6, "msec": 10**6,
             "s": 10**9, "sec": 10**9, "m": 60 * 10**9, "min": 60 * 10**9,
             "h": 3600 * 10**9, "hour": 3600 * 10**9}  # fmt: skip
_KERNEL = {
    "fbt": "the fbt provider traces kernel functions",
    "kprobe": "kprobes trace kernel functions",
    "kretprobe": "kretprobes trace kernel functions",
    "kfunc": "kfuncs trace kernel functions",
    "fentry": "fentry probes trace kernel functions",
    "fexit": "fexit probes trace kernel functions",
    "sched": "the sched provider is a kernel provider",
    "io": "the io provider is a kernel provider",
    "proc": "the proc provider is a kernel provider",
    "lockstat": "the lockstat provider is a kernel provider",
    "sysinfo": "the sysinfo provider is a kernel provider",
    "vminfo": "the vminfo provider is a kernel provider",
    "hardware": "hardware events need the kernel's perf counters",
    "software": "software events need the kernel's perf counters",
}
_LATER = {
    "usdt": "USDT probes are not supported",
    "sdt": "USDT probes are not supported",
    "watchpoint": "watchpoints are not supported",
    "rawtracepoint": "raw tracepoints are not supported",
}


@dataclass(frozen=True)
class ProbeSpec:
    loc: Loc
    text: str  # as written (after macro expansion)
    kind: Kind
    module: str | None = None  # glob; None: any module
    func: str = ""  # glob: a function, or syscall names
    name: str = ""  # "entry" | "return" | "" (BEGIN/END/tick)
    period_ns: int = 0  # tick
    hz: int = 0  # profile: samples a second of each thread's CPU time
    offset: int | None = None  # pid$target:MOD:FUNC:OFFSET (name: the offset as written)

    @property
    def phase(self) -> Literal["entry", "exit"]:
        return "exit" if self.name == "return" else "entry"

    @property
    def is_host(self) -> bool:
        return self.kind in ("begin", "end", "tick")


def expand_macros(text: str, loc: Loc, macros: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in macros:
            raise fail(loc, f"macro ${name} is not defined", _macro_hint(name))
        return macros[name]

    return re.sub(r"\$([A-Za-z_0-9]+)", sub, text)


def _macro_hint(name: str) -> str:
    if name in ("target", "pid"):
        return "$target needs a process: give -p PID or -c CMD"
    return "macro arguments $1, $2... come after the program: instr dtrace -n PROG ARG1 ARG2"


def parse_probe(loc: Loc, raw: str, macros: dict[str, str], main_module: str | None) -> ProbeSpec:
    text = expand_macros(raw, loc, macros)
    if text in ("BEGIN", "END"):
        return ProbeSpec(loc, text, "begin" if text == "BEGIN" else "end")
    if text.startswith("tick-") or text.startswith("profile-"):
        if text.startswith("profile-"):
            return _profile(loc, text, text[8:] or "?", "hz")
        return ProbeSpec(loc, text, "tick", period_ns=_period(loc, text[5:], "hz"))
    parts = text.split(":")
    provider = parts[0]
    if len(parts) > 1 and (provider in _KERNEL or provider in ("k", "kr", "f", "fr")):
        raise fail(loc, f"{_KERNEL.get(provider, 'kernel probes')}: instr traces user space "
                   "only", "use uprobe:LIBRARY:FUNCTION or tracepoint:syscalls:sys_enter_NAME")  # fmt: skip
    if len(parts) > 1 and provider in _LATER:
        raise fail(loc, _LATER[provider])
    bt = {"u": "uprobe", "ur": "uretprobe", "t": "tracepoint", "i": "interval"}
    provider = bt.get(provider, provider) if len(parts) > 1 else provider
    if provider in ("uprobe", "uretprobe"):
        return _uprobe(loc, text, parts, provider, main_module)
    if provider == "tracepoint":
        return _tracepoint(loc, text, parts)
    if provider == "profile" and len(parts) > 1:
        if len(parts) != 3:
            raise fail(loc, f"bad profile probe '{text}'",
                       "write profile:hz:N, profile:ms:N, profile:us:N or profile:s:N")  # fmt: skip
        return _profile(loc, text, parts[2] + parts[1], "hz")
    if provider == "interval":
        if len(parts) != 3:
            raise fail(loc, f"bad interval probe '{text}'", "write interval:s:N or interval:ms:N")
        return ProbeSpec(loc, text, "tick", period_ns=_period(loc, parts[2] + parts[1], "s"))
    if len(parts) > 4:
        raise fail(loc, f"probe description '{text}' has more than four fields",
                   "write provider:module:function:name")  # fmt: skip
    if len(parts) < 4 and (parts[0] == "syscall" or parts[0].startswith("pid")):
        raise fail(loc, f"probe description '{text}' needs four fields: "
                   "provider:module:function:name",
                   f"e.g. {parts[0]}::{parts[-1] or 'FUNC'}:entry")  # fmt: skip
    while len(parts) < 4:  # DTrace: fields given are the rightmost ones
        parts.insert(0, "")
    provider, module, func, name = parts
    return _dtrace(loc, text, provider, module, func, name, macros, main_module)


def _dtrace(
    loc: Loc,
    text: str,
    provider: str,
    module: str,
    func: str,
    name: str,
    macros: dict[str, str],
    main_module: str | None,
) -> ProbeSpec:
    base = "pid" if provider.startswith("pid") else re.sub(r"\d+$", "", provider)
    if base in _KERNEL or provider in _KERNEL:
        why = _KERNEL.get(base) or _KERNEL[provider]
        raise fail(loc, f"{why}: instr traces user space only",
                   "use pid$target::FUNC:entry or syscall::NAME:entry")  # fmt: skip
    if base in _LATER:
        raise fail(loc, _LATER[base])
    if provider == "syscall":
        if module:
            raise fail(loc, f"syscall probes have no module (found '{module}')",
                       "write syscall::NAME:entry")  # fmt: skip
        return ProbeSpec(loc, text, "syscall", None, func or "*", _name(loc, name, "syscall"))
    if base == "pid":
        pid = provider[3:]
        target = macros.get("target")
        if not pid:
            raise fail(loc, "the pid provider needs a process id", "write pid$target")
        if target is not None and pid != target:
            raise fail(loc, f"pid{pid} is not the traced process (pid {target})",
                       "write pid$target")  # fmt: skip
        if target is None:
            raise fail(loc, "the pid provider needs a process", "give -p PID or -c CMD")
        if not func:
            raise fail(loc, "a pid probe needs a function", "write pid$target::malloc:entry")
        mod = _module(module, main_module)
        if _HEX.fullmatch(name):
            if any(c in func for c in "*?["):
                raise fail(loc, "an instruction probe names one function, not a pattern",
                           f"name it, e.g. pid$target::main:{name}")  # fmt: skip
            off = int(name, 16)
            if off > _MAX_OFFSET:
                raise fail(loc, f"offset {name} is too large for an instruction probe")
            return ProbeSpec(loc, text, "pid", mod, func, name, offset=off)
        return ProbeSpec(loc, text, "pid", mod, func, _name(loc, name, "pid"))
    if not provider:
        raise fail(loc, f"probe description '{text}' has no provider",
                   "write pid$target::FUNC:entry, syscall::NAME:entry, BEGIN, END or tick-1s")  # fmt: skip
    raise fail(loc, f"unknown provider '{provider}'",
               "providers: pid, syscall, BEGIN, END, tick; bpftrace's uprobe, uretprobe, "
               "tracepoint:syscalls, interval")  # fmt: skip


def _name(loc: Loc, name: str, provider: str) -> str:
    if name in ("entry", "return"):
        return name
    if not name or name == "*":
        raise fail(loc, f"{provider} probes need a name: entry or return",
                   "add ':entry' or ':return'")  # fmt: skip
    raise fail(loc, f"unknown probe name '{name}' for the {provider} provider",
               "use entry or return" + (", or a hex offset" if provider == "pid" else ""))  # fmt: skip


def _module(module: str, main_module: str | None) -> str | None:
    if not module or module == "*":
        return None
    if module == "a.out":
        return main_module or None
    return os.path.basename(module) if "/" in module else module


def _uprobe(
    loc: Loc, text: str, parts: list[str], provider: str, main_module: str | None
) -> ProbeSpec:
    if len(parts) != 3 or not parts[2]:
        raise fail(loc, f"bad {provider} '{text}'", f"write {provider}:LIBRARY:FUNCTION")
    lib, func = parts[1], parts[2]
    name = "return" if provider == "uretprobe" else "entry"
    return ProbeSpec(loc, text, "pid", _module(lib, main_module), func, name)


def _tracepoint(loc: Loc, text: str, parts: list[str]) -> ProbeSpec:
    if len(parts) != 3 or parts[1] != "syscalls":
        raise fail(loc, f"tracepoint '{text}' is not supported",
                   "only tracepoint:syscalls:sys_enter_NAME and sys_exit_NAME")  # fmt: skip
    event = parts[2]
    for prefix, name in (("sys_enter_", "entry"), ("sys_exit_", "return")):
        if event.startswith(prefix) and event[len(prefix) :]:
            return ProbeSpec(loc, text, "syscall", None, event[len(prefix) :], name)
    if event in ("sys_enter_*", "sys_exit_*") or event == "*":
        return ProbeSpec(loc, text, "syscall", None, "*", "entry")
    raise fail(loc, f"unknown syscalls tracepoint '{event}'",
               "write sys_enter_NAME or sys_exit_NAME")  # fmt: skip


def _period(loc: Loc, spec: str, default_unit: str) -> int:
    m = re.fullmatch(r"(\d+)([a-z]*)", spec)
    if m is None or int(m.group(1)) == 0:
        raise fail(loc, f"bad period '{spec}'", "e.g. tick-1s, tick-100ms, tick-10hz")
    n, unit = int(m.group(1)), m.group(2) or default_unit
    if unit == "hz":
        return 10**9 // n
    if unit not in _UNITS_NS:
        raise fail(loc, f"unknown time unit '{unit}'", "use ns, us, ms, s, m, h or hz")
    return n * _UNITS_NS[unit]


def _profile(loc: Loc, text: str, spec: str, default_unit: str) -> ProbeSpec:
    """A sampling rate: profile-N is N Hz; profile-10ms is 100 Hz. One sampler runs at
    the highest rate of the program (instr.dtrace.profiling); its range is instr
    profile's -F range."""
    from instr.profile.limits import HZ_MAX, HZ_MIN

    m = re.fullmatch(r"(\d+)([a-z]*)", spec)
    if m is None or int(m.group(1)) == 0:
        raise fail(loc, f"bad sampling rate '{spec}'",
                   f"e.g. profile-99 (Hz), profile-997hz or profile-10ms; {HZ_MIN} to {HZ_MAX} Hz")  # fmt: skip
    unit = m.group(2) or default_unit
    if unit != "hz" and unit not in _UNITS_NS:
        raise fail(loc, f"unknown time unit '{unit}'", "use hz, ns, us, ms or s")
    period = _period(loc, spec if m.group(2) else spec + default_unit, default_unit)
    hz = int(m.group(1)) if unit == "hz" else round(10**9 / period)
    if not HZ_MIN <= hz <= HZ_MAX:
        raise fail(loc, f"sampling rate '{spec}' is out of range",
                   f"the sampler takes {HZ_MIN} to {HZ_MAX} samples a second of each "
                   "thread's CPU time: profile-1 to profile-5000, profile-1s to profile-200us")  # fmt: skip
    return ProbeSpec(loc, text, "profile", period_ns=period, hz=hz)
