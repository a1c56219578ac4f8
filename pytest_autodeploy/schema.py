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


# The draft to name in messages about "$schema".
_EXAMPLE_DRAFT = "https://json-schema.org/draft/2020-12/schema"


def _nested_too_deeply(path: Path) -> SchemaFileError:
    # json and jsonschema recurse once per nesting level, so a deep enough
    # schema exhausts the Python stack.
    return SchemaFileError(Diagnostic("invalid schema file: nested too deeply; flatten the schema", path=path))


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
    except RecursionError:
        raise _nested_too_deeply(path) from None

    validator_class = _validator_class(schema, path)
    try:
        validator_class.check_schema(schema)
    except jsonschema.SchemaError as error:
        raise SchemaFileError(
            Diagnostic(f"not a valid JSON Schema: {error.message} at '{format_key_path(tuple(error.absolute_path))}'", path=path)
        ) from None
    except RecursionError:
        raise _nested_too_deeply(path) from None
    # An empty registry retrieves nothing: jsonschema's default would fetch a
    # remote "$ref" (http://, file://) while tests run.
    return validator_class(schema, registry=referencing.Registry())


def _validator_class(schema: Any, path: Path) -> Any:
    """Return the validator class for the draft that ``$schema`` names, the latest draft without it.

    Raises SchemaFileError for a ``$schema`` that names no known draft.
    jsonschema would warn and fall back to the latest draft, and under
    ``-W error`` that warning would fail every model with a traceback.
    """
    if not isinstance(schema, dict) or "$schema" not in schema:
        # check_schema then rejects a schema that is not an object or a boolean.
        return jsonschema.validators.validator_for({})

    url = schema["$schema"]
    # With a default, validator_for returns it for an unknown URL and does not warn.
    validator_class = jsonschema.validators.validator_for(schema, default=None) if isinstance(url, str) else None
    if validator_class is None:
        raise SchemaFileError(
            Diagnostic(f"unknown $schema URL {json.dumps(url)}; use e.g. {_EXAMPLE_DRAFT}", path=path)
        )
    return validator_class


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
    # NOTE: "pattern" keywords run through Python's re without a time limit,
    # so a catastrophic pattern such as (a+)+$ can stall validation.
    try:
        mtime_ns = schema_path.stat().st_mtime_ns
    except OSError as error:
        raise SchemaFileError(Diagnostic(f"cannot read schema: {error.strerror}", path=schema_path)) from None
    validator = _load_validator(schema_path, mtime_ns)

    try:
        errors = list(validator.iter_errors(merged.data))
    except referencing.exceptions.Unresolvable as error:
        raise SchemaFileError(_unresolvable_diagnostic(schema_path, error)) from None
    except RecursionError:
        # The schema loaded, so the config's nesting, followed by a recursive
        # "$ref", went too deep: a problem of this model, not of the schema.
        message = f"{test_id}: nested too deeply to check against {schema_path.name}; flatten the config or the schema"
        return [Diagnostic(message, path=schema_path, entry=test_id)]

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
