"""Errors a user can act on. The CLI prints ``str(err)`` and exits with ``err.exit_code``;
a traceback is shown only with ``--debug``."""

from __future__ import annotations

from dataclasses import dataclass


class InstrError(Exception):
    """Base class: a short message that says what is wrong and where."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


@dataclass(frozen=True)
class Diagnostic:
    """One problem in a probe set, with its location."""

    file: str
    line: int  # 1-based
    col: int  # 1-based
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        text = f"{self.file}:{self.line}:{self.col}: error: {self.message}"
        return f"{text}\n  hint: {self.hint}" if self.hint else text


class ProbeSetError(InstrError):
    """A probe set failed validation. Carries every diagnostic, not just the first."""

    exit_code = 2

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        super().__init__("\n".join(str(d) for d in diagnostics))
        self.diagnostics = diagnostics

    def __str__(self) -> str:
        return self.message


class UsageError(InstrError):
    """Bad command-line input (unknown set name, conflicting flags)."""

    exit_code = 2


class TargetError(InstrError):
    """The target cannot be spawned or attached (missing program, dead pid, permissions)."""


class DeviceError(InstrError):
    """The Frida device cannot be found or reached."""


class AgentError(InstrError):
    """The agent failed to load or answered with an error."""


class NothingArmedError(InstrError):
    """No probe could be armed."""
