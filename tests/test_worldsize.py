"""Unit tests for the effective world size of a merged config."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pytest_autodeploy.merge import MergedConfig, merge_documents
from pytest_autodeploy.worldsize import WorldSize, WorldSizeError, effective_world_size
from pytest_autodeploy.yamlio import parse_yaml

DEFAULT = Path("configs/dashboard_default.yaml")
WORLD_SIZE = Path("configs/world_size_4.yaml")
MODEL = Path("configs/model.yaml")


def merged_from(*files: tuple[Path, str]) -> MergedConfig:
    return merge_documents([parse_yaml(textwrap.dedent(text), path) for path, text in files])


def world_size_errors(merged: MergedConfig) -> list[str]:
    with pytest.raises(WorldSizeError) as caught:
        effective_world_size(merged)
    return [diagnostic.format() for diagnostic in caught.value.diagnostics]


def test_world_size_default_one() -> None:
    merged = merged_from((DEFAULT, "runtime: trtllm\n"))

    assert effective_world_size(merged) == WorldSize(1, "default (no world_size or tensor_parallel_size set)")


def test_world_size_key() -> None:
    merged = merged_from((DEFAULT, "runtime: trtllm\n"), (WORLD_SIZE, "world_size: 4\n"))

    assert effective_world_size(merged) == WorldSize(4, "world_size")


def test_world_size_tensor_parallel_only() -> None:
    merged = merged_from((WORLD_SIZE, "tensor_parallel_size: 4\n"))

    assert effective_world_size(merged) == WorldSize(4, "tensor_parallel_size x pipeline_parallel_size")


def test_world_size_pipeline_parallel_only() -> None:
    merged = merged_from((MODEL, "pipeline_parallel_size: 2\n"))

    assert effective_world_size(merged) == WorldSize(2, "tensor_parallel_size x pipeline_parallel_size")


def test_world_size_tp_times_pp() -> None:
    merged = merged_from((MODEL, "tensor_parallel_size: 2\npipeline_parallel_size: 4\n"))

    assert effective_world_size(merged).value == 8


def test_world_size_agrees_with_tp_pp() -> None:
    merged = merged_from(
        (WORLD_SIZE, "world_size: 4\n"),
        (MODEL, "tensor_parallel_size: 2\npipeline_parallel_size: 2\n"),
    )

    assert effective_world_size(merged) == WorldSize(4, "world_size")


def test_world_size_later_file_wins() -> None:
    merged = merged_from(
        (Path("configs/world_size_2.yaml"), "world_size: 2\n"),
        (MODEL, "world_size: 4\n"),
    )

    assert effective_world_size(merged).value == 4


def test_world_size_disagrees_with_tp() -> None:
    merged = merged_from(
        (DEFAULT, "runtime: trtllm\n"),
        (WORLD_SIZE, "world_size: 4\n"),
        (MODEL, "# tensor parallel for the large model\ntensor_parallel_size: 8\n"),
    )

    assert world_size_errors(merged) == [
        "configs/world_size_4.yaml:1: error: world_size=4 (configs/world_size_4.yaml:1) disagrees with "
        "tensor_parallel_size=8 (configs/model.yaml:2) = 8; make them agree or remove one of them"
    ]


def test_world_size_disagrees_with_tp_pp() -> None:
    merged = merged_from(
        (WORLD_SIZE, "world_size: 4\n"),
        (MODEL, "tensor_parallel_size: 4\npipeline_parallel_size: 2\n"),
    )

    assert world_size_errors(merged) == [
        "configs/world_size_4.yaml:1: error: world_size=4 (configs/world_size_4.yaml:1) disagrees with "
        "tensor_parallel_size=4 (configs/model.yaml:1) x pipeline_parallel_size=2 (configs/model.yaml:2) = 8; "
        "make them agree or remove one of them"
    ]


INVALID_VALUES = [
    # (YAML text of the value, message after "<key> must be a positive integer, got ")
    ('"4"', "'4' (str); write a number such as {key}: 4"),
    ("4.5", "4.5 (float); write a number such as {key}: 4"),
    ("true", "True (bool); write a number such as {key}: 4"),
    ("1e0", "'1e0' (str); write a number such as {key}: 4"),
    ("[4]", "[4] (list); write a number such as {key}: 4"),
    ("null", "None (NoneType); write a number such as {key}: 4"),
    ("0", "0; use 1 or more"),
    ("-2", "-2; use 1 or more"),
]
KEYS = ["world_size", "tensor_parallel_size", "pipeline_parallel_size"]


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize(("value", "reason"), INVALID_VALUES, ids=[value for value, _ in INVALID_VALUES])
def test_world_size_invalid_value(key: str, value: str, reason: str) -> None:
    merged = merged_from((DEFAULT, "runtime: trtllm\n"), (MODEL, f"max_batch_size: 8\n{key}: {value}\n"))

    assert world_size_errors(merged) == [
        f"configs/model.yaml:2: error: {key} must be a positive integer, got {reason.format(key=key)}"
    ]


def test_world_size_invalid_values_all_reported() -> None:
    merged = merged_from(
        (WORLD_SIZE, 'world_size: "4"\n'),
        (MODEL, "tensor_parallel_size: 0\npipeline_parallel_size: 1.5\n"),
    )

    assert world_size_errors(merged) == [
        "configs/world_size_4.yaml:1: error: world_size must be a positive integer, got '4' (str); "
        "write a number such as world_size: 4",
        "configs/model.yaml:1: error: tensor_parallel_size must be a positive integer, got 0; use 1 or more",
        "configs/model.yaml:2: error: pipeline_parallel_size must be a positive integer, got 1.5 (float); "
        "write a number such as pipeline_parallel_size: 4",
    ]


def test_world_size_invalid_value_overridden() -> None:
    # Only the merged value counts, so a later file may repair an earlier one.
    merged = merged_from((DEFAULT, "world_size: '2'\n"), (WORLD_SIZE, "world_size: 4\n"))

    assert effective_world_size(merged).value == 4


def test_world_size_above_cap() -> None:
    merged = MergedConfig(data={"world_size": 10**400})

    with pytest.raises(WorldSizeError) as raised:
        effective_world_size(merged)

    assert "more than 65536 GPUs" in raised.value.diagnostics[0].message
