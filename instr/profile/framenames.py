"""Names of sampled frames, as aggregation keys show them (DTrace's ``ustack()``).

Shared by ``instr dtrace``'s profile clauses (``instr.dtrace.profiling``) and the
probe sets' profile probes (``instr.profile.probes``): a key holds addresses
while the run counts; they are named once, when first seen, and shown as
``module!symbol+0x…`` at the report.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Symbols = dict[int, tuple[str | None, str | None, int]]


class FrameNames:
    """Address -> (name, offset); keys of stacks (tuples of addresses, leaf first)
    and of leaf functions or modules (``("func" | "mod", pc)``) shown with them."""

    def __init__(self) -> None:
        self.names: dict[int, tuple[str, int]] = {}  # address -> (name, offset)

    def name_frames(
        self, addrs: set[int], symbols: Symbols, module_at: Callable[[int], Any]
    ) -> None:
        """Frame names: ``module!symbol`` and the offset (without a symbol ``module``
        and the module's offset; neither: the address)."""
        for a in addrs:
            m = module_at(a)
            mod, sym, off = symbols.get(a, (None, None, 0))
            mod = mod or (m.name if m is not None else None)
            if sym:
                self.names[a] = (f"{mod}!{sym}" if mod else sym, off)
            elif m is not None:
                self.names[a] = (m.name, a - m.base)
            else:
                self.names[a] = ("", a)

    def frame(self, a: int, bias: int = 0) -> str:
        """``bias`` 1: a caller's frame, whose walk address is its return address - 1:
        shown as the return address, as DTrace's ustack() shows it."""
        base, off = self.names.get(a, ("", a))
        off += bias
        if not base:
            return f"0x{off:x}"
        return f"{base}+0x{off:x}" if off else base

    def key(self, k: Any) -> Any:
        """A counted key as shown: stacks as frame names, ``func`` as
        ``module!symbol``, ``mod`` as the module; anything else as it is."""
        if isinstance(k, tuple) and len(k) == 2 and k[0] in ("func", "mod"):
            base = self.names.get(k[1], ("", k[1]))[0] or f"0x{k[1]:x}"
            return base.split("!", 1)[0] if k[0] == "mod" else base
        if isinstance(k, tuple):
            return tuple(self.frame(a, 1 if i else 0) for i, a in enumerate(k))
        return k
