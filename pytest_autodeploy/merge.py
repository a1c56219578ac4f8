"""Deep merge of an entry's config files, remembering which file set each key.

The merge itself is mergedeep's REPLACE strategy into a fresh mapping:
mappings merge recursively, while lists and scalars from a later file replace
earlier ones. mergedeep deep-copies every value it takes from a source, so the
parsed files stay untouched and one model's result never depends on the order
in which models are merged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import mergedeep

from .diagnostics import Diagnostic
from .yamlio import KeyPath, YamlDocument


@dataclass(frozen=True)
class Origin:
    """The file and line that set one key."""

    path: Path
    line: int | None

    def format(self) -> str:
        return f"{self.path}:{self.line}" if self.line is not None else str(self.path)


@dataclass
class MergedConfig:
    """A merged config and, for every key path, the files that set it in merge order."""

    data: dict[str, Any]
    origins: dict[KeyPath, list[Origin]] = field(default_factory=dict)

    def origin(self, key_path: KeyPath) -> Origin | None:
        """Return the origin of the value that won at ``key_path``."""
        found = self.origins.get(key_path)
        return found[-1] if found else None

    def overridden(self, key_path: KeyPath) -> list[Origin]:
        """Return the earlier origins whose value at ``key_path`` a later file replaced."""
        return list(self.origins.get(key_path, [])[:-1])


class MergeConflictError(Exception):
    """Raised when one file has a mapping where another has a list or scalar."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        super().__init__("\n".join(diagnostic.format() for diagnostic in diagnostics))


def format_key_path(key_path: KeyPath) -> str:
    return ".".join(str(part) for part in key_path) or "<top level>"


def _kind(value: Any) -> str:
    return "mapping" if isinstance(value, Mapping) else "value"


def _describe(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"the value {value!r}"


def _record_origins(
    document: YamlDocument,
    value: Mapping[str, Any],
    key_path: KeyPath,
    merged: MergedConfig,
    earlier_values: dict[KeyPath, tuple[Any, Origin]],
    conflicts: list[Diagnostic],
) -> None:
    for key, child in value.items():
        child_path = key_path + (key,)
        origin = Origin(document.path, document.line_of(child_path))

        previous = earlier_values.get(child_path)
        if previous is not None and _kind(previous[0]) != _kind(child):
            earlier_value, earlier_origin = previous
            conflicts.append(
                Diagnostic(
                    f"merge conflict at '{format_key_path(child_path)}': "
                    f"{earlier_origin.format()} sets {_describe(earlier_value)} but "
                    f"{origin.format()} sets {_describe(child)}; use the same kind "
                    "of value in both files",
                    path=document.path,
                    line=origin.line,
                )
            )

        merged.origins.setdefault(child_path, []).append(origin)
        earlier_values[child_path] = (child, origin)
        if isinstance(child, Mapping):
            _record_origins(document, child, child_path, merged, earlier_values, conflicts)


def merge_documents(documents: Sequence[YamlDocument]) -> MergedConfig:
    """Merge config documents in order; raise :class:`MergeConflictError` on conflicts.

    Every document's data must be a mapping; the registry loader checks this first.
    """
    merged = MergedConfig(data={})
    conflicts: list[Diagnostic] = []
    earlier_values: dict[KeyPath, tuple[Any, Origin]] = {}

    for document in documents:
        _record_origins(document, document.data, (), merged, earlier_values, conflicts)

    if conflicts:
        raise MergeConflictError(conflicts)

    mergedeep.merge(
        merged.data,
        *(document.data for document in documents),
        strategy=mergedeep.Strategy.REPLACE,
    )
    return merged
