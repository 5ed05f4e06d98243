"""Live patching: the ledger model, the quick ``--ret/--skip/--bytes/--nop`` specs,
and a controller that applies, lists, persists and reverts patches in a target.
See ``docs/patching.md``."""

from instr.patch.control import PatchController
from instr.patch.model import LedgerEntry, PatchError, PatchSpec, RevertResult, require_destructive
from instr.patch.quick import parse_quick

__all__ = [
    "LedgerEntry",
    "PatchController",
    "PatchError",
    "PatchSpec",
    "RevertResult",
    "parse_quick",
    "require_destructive",
]
