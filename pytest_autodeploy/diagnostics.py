"""Errors and warnings about a registry, each tied to a file and line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in a registry, in the ``FILE:LINE: severity: message`` form."""

    message: str
    path: Path | None = None
    line: int | None = None  # 1-based, as editors count
    column: int | None = None  # 1-based
    severity: Severity = "error"
    # The test id of the entry the problem belongs to, when it belongs to one.
    entry: str | None = None

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def location(self) -> str:
        if self.path is None:
            return "<registry>"
        text = str(self.path)
        if self.line is not None:
            text += f":{self.line}"
            if self.column is not None:
                text += f":{self.column}"
        return text

    def format(self) -> str:
        return f"{self.location()}: {self.severity}: {self.message}"

    def sort_key(self) -> tuple[str, int, int, str]:
        return (str(self.path or ""), self.line or 0, self.column or 0, self.message)


class RegistryError(Exception):
    """Raised when a registry has errors; carries every error found, not just the first."""

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics = sorted(diagnostics, key=Diagnostic.sort_key)
        super().__init__(self.format())

    def format(self) -> str:
        count = len(self.diagnostics)
        noun = "error" if count == 1 else "errors"
        lines = [f"invalid model registry: {count} {noun}"]
        lines.extend(diagnostic.format() for diagnostic in self.diagnostics)
        return "\n".join(lines)


def errors_only(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    return [diagnostic for diagnostic in diagnostics if diagnostic.is_error]


def warnings_only(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    return [diagnostic for diagnostic in diagnostics if not diagnostic.is_error]
