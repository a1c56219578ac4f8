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


def test_deeply_nested_json(tmp_path: Path) -> None:
    schema = tmp_path / "config.schema.json"
    schema.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")

    with pytest.raises(SchemaFileError) as caught:
        validate_config(schema, config({"runtime": "trtllm"}, tmp_path), "org/a")

    assert caught.value.diagnostic.format() == f"{schema}: error: invalid schema file: nested too deeply; flatten the schema"


def test_deeply_nested_schema(tmp_path: Path) -> None:
    # Valid JSON that json.loads reads, but 300 levels of "properties" are too
    # deep for check_schema, which recurses several frames per level.
    text = '{"type": "object"}'
    for _ in range(300):
        text = '{"type": "object", "properties": {"a": ' + text + "}}"
    schema = tmp_path / "config.schema.json"
    schema.write_text(text, encoding="utf-8")

    with pytest.raises(SchemaFileError) as caught:
        validate_config(schema, config({"runtime": "trtllm"}, tmp_path), "org/a")

    assert caught.value.diagnostic.format() == f"{schema}: error: invalid schema file: nested too deeply; flatten the schema"


@pytest.mark.parametrize("url", ["https://example.com/my-draft", 5])
def test_unknown_schema_url(tmp_path: Path, url: object) -> None:
    schema = write_schema(tmp_path, {"$schema": url, "type": "object"})

    with pytest.raises(SchemaFileError) as caught:
        validate_config(schema, config({"runtime": "trtllm"}, tmp_path), "org/a")

    assert caught.value.diagnostic.format() == (
        f"{schema}: error: unknown $schema URL {json.dumps(url)}; use e.g. https://json-schema.org/draft/2020-12/schema"
    )


def test_known_schema_url(tmp_path: Path) -> None:
    schema = write_schema(tmp_path, {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"})

    assert validate_config(schema, config({"runtime": "trtllm"}, tmp_path), "org/a") == []


def test_schema_not_an_object(tmp_path: Path) -> None:
    schema = tmp_path / "config.schema.json"
    schema.write_text("5", encoding="utf-8")

    with pytest.raises(SchemaFileError, match="not a valid JSON Schema"):
        validate_config(schema, config({"runtime": "trtllm"}, tmp_path), "org/a")


def test_deeply_nested_config(tmp_path: Path) -> None:
    schema = write_schema(tmp_path, {"type": "object", "properties": {"a": {"$ref": "#"}}})
    data: dict[str, Any] = {}
    for _ in range(400):
        data = {"a": data}

    problems = validate_config(schema, config(data, tmp_path), "org/a")

    assert [problem.format() for problem in problems] == [
        f"{schema}: error: org/a: nested too deeply to check against config.schema.json; flatten the config or the schema"
    ]
