"""Validation of merged configs against the registry's JSON Schema.

A registry may ship ``config.schema.json`` next to ``models.yaml``; every
merged config must then satisfy it. A registry without one skips this check.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import referencing
import referencing.exceptions

from .diagnostics import Diagnostic
from .merge import MergedConfig, format_key_path


class SchemaFileError(Exception):
    """Raised when the schema file itself is unreadable or not a valid schema."""

    def __init__(self, diagnostic: Diagnostic) -> None:
        self.diagnostic = diagnostic
        super().__init__(diagnostic.format())


@lru_cache(maxsize=8)
def _load_validator(path: Path, mtime_ns: int) -> Any:
    del mtime_ns  # part of the cache key only, so an edited schema is re-read
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise SchemaFileError(Diagnostic(f"cannot read schema: {error.strerror}", path=path)) from None
    except json.JSONDecodeError as error:
        raise SchemaFileError(
            Diagnostic(f"invalid JSON: {error.msg}; fix the schema file", path=path, line=error.lineno, column=error.colno)
        ) from None

    validator_class = jsonschema.validators.validator_for(schema)
    try:
        validator_class.check_schema(schema)
    except jsonschema.SchemaError as error:
        raise SchemaFileError(
            Diagnostic(f"not a valid JSON Schema: {error.message} at '{format_key_path(tuple(error.absolute_path))}'", path=path)
        ) from None
    # An empty registry retrieves nothing: jsonschema's default would fetch a
    # remote "$ref" (http://, file://) while tests run.
    return validator_class(schema, registry=referencing.Registry())


def _unresolvable_diagnostic(schema_path: Path, error: referencing.exceptions.Unresolvable) -> Diagnostic:
    """Return the diagnostic for a "$ref" that the schema file does not contain, at its line if found."""
    # jsonschema wraps the referencing error; the original is its cause.
    cause = error.__cause__ if isinstance(error.__cause__, referencing.exceptions.Unresolvable) else error
    ref = str(getattr(cause, "ref", "?"))
    # A JSON pointer that matches nothing comes without its leading "#".
    if isinstance(cause, referencing.exceptions.PointerToNowhere):
        ref = f"#{ref}"

    line = None
    try:
        text = schema_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        text = ""
    position = text.find(json.dumps(ref))
    if position >= 0:
        line = text.count("\n", 0, position) + 1

    if isinstance(cause, referencing.exceptions.PointerToNowhere):
        message = f"$ref {ref!r} points to nothing in the schema file; fix the pointer or add the definition it names"
    else:
        message = (
            f"cannot resolve $ref {ref!r}: only references inside the schema file are allowed, "
            "such as '#/$defs/NAME'; copy the referenced schema into this file"
        )
    return Diagnostic(message, path=schema_path, line=line)


def validate_config(schema_path: Path, merged: MergedConfig, test_id: str) -> list[Diagnostic]:
    """Return one diagnostic per schema violation, placed at the file that set the key.

    Raises :class:`SchemaFileError` when the schema itself is broken.
    """
    try:
        mtime_ns = schema_path.stat().st_mtime_ns
    except OSError as error:
        raise SchemaFileError(Diagnostic(f"cannot read schema: {error.strerror}", path=schema_path)) from None
    validator = _load_validator(schema_path, mtime_ns)

    try:
        errors = list(validator.iter_errors(merged.data))
    except referencing.exceptions.Unresolvable as error:
        raise SchemaFileError(_unresolvable_diagnostic(schema_path, error)) from None

    problems = []
    for error in sorted(errors, key=lambda error: list(map(str, error.absolute_path))):
        key_path = tuple(error.absolute_path)
        # Report the error at the deepest key whose origin is known.
        origin = None
        probe = key_path
        while probe and origin is None:
            origin = merged.origin(probe)
            probe = probe[:-1]
        problems.append(
            Diagnostic(
                f"{test_id}: '{format_key_path(key_path)}' fails {schema_path.name}: {error.message}",
                path=origin.path if origin else schema_path,
                line=origin.line if origin else None,
                entry=test_id,
            )
        )
    return problems
