"""Tests for validating merged configs against a registry's config.schema.json."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from pytest_autodeploy.merge import MergedConfig, Origin
from pytest_autodeploy.schema import SchemaFileError, validate_config


def write_schema(tmp_path: Path, schema: dict[str, Any]) -> Path:
    path = tmp_path / "config.schema.json"
    path.write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")
    return path


def config(data: dict[str, Any], tmp_path: Path) -> MergedConfig:
    origin = Origin(tmp_path / "configs" / "a.yaml", 1)
    return MergedConfig(data, {(key,): [origin] for key in data})


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every attempt to open a connection or URL instead of making it."""
    attempts: list[str] = []

    def record_and_fail(target: Any, *args: Any, **kwargs: Any) -> Any:
        attempts.append(str(getattr(target, "full_url", target)))
        raise OSError("network access in a test")

    monkeypatch.setattr(socket, "create_connection", record_and_fail)
    monkeypatch.setattr(urllib.request, "urlopen", record_and_fail)
    return attempts


def test_internal_ref_validates(tmp_path: Path, connections: list[str]) -> None:
    schema = write_schema(
        tmp_path,
        {
            "type": "object",
            "properties": {"world_size": {"$ref": "#/$defs/size"}},
            "$defs": {"size": {"type": "integer"}},
        },
    )

    problems = validate_config(schema, config({"world_size": "two"}, tmp_path), "org/a")

    assert [problem.format() for problem in problems] == [
        f"{tmp_path / 'configs' / 'a.yaml'}:1: error: org/a: 'world_size' fails config.schema.json: "
        "'two' is not of type 'integer'"
    ]
    assert connections == []


@pytest.mark.parametrize("ref", ["http://127.0.0.1:9/x.json", "file:///etc/passwd"])
def test_remote_ref_not_fetched(tmp_path: Path, connections: list[str], ref: str) -> None:
    schema = write_schema(tmp_path, {"type": "object", "properties": {"runtime": {"$ref": ref}}})

    with pytest.raises(SchemaFileError) as caught:
        validate_config(schema, config({"runtime": "trtllm"}, tmp_path), "org/a")

    assert connections == []
    assert caught.value.diagnostic.format() == (
        f"{schema}:5: error: cannot resolve $ref '{ref}': only references inside the schema file "
        "are allowed, such as '#/$defs/NAME'; copy the referenced schema into this file"
    )


def test_missing_internal_ref(tmp_path: Path) -> None:
    schema = write_schema(tmp_path, {"properties": {"runtime": {"$ref": "#/$defs/missing"}}})

    with pytest.raises(SchemaFileError) as caught:
        validate_config(schema, config({"runtime": "trtllm"}, tmp_path), "org/a")

    assert caught.value.diagnostic.format() == (
        f"{schema}:4: error: $ref '#/$defs/missing' points to nothing in the schema file; "
        "fix the pointer or add the definition it names"
    )


def test_schema_removed_before_validation(tmp_path: Path) -> None:
    missing = tmp_path / "config.schema.json"

    with pytest.raises(SchemaFileError) as caught:
        validate_config(missing, config({"runtime": "trtllm"}, tmp_path), "org/a")

    assert caught.value.diagnostic.format() == f"{missing}: error: cannot read schema: No such file or directory"
