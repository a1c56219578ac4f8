"""Checks of the registry that ships with the plugin, and of a published real one."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import mergedeep
import pytest
import yaml

from pytest_autodeploy.registry import Registry, load_registry
from pytest_autodeploy.schema import validate_config

BUNDLED_ROOT = Path(__file__).resolve().parents[1] / "model_registry"
REAL_ROOT = Path("/work/shared/real-registries/tensorrt-llm")

# The config files that the v2.0 format description lists by name.
DOCUMENTED_CONFIGS = [
    "dashboard_default.yaml",
    "world_size_1.yaml",
    "world_size_2.yaml",
    "world_size_4.yaml",
    "world_size_8.yaml",
    "multimodal.yaml",
    "demollm_triton.yaml",
    "simple_shard_only.yaml",
    "llama-3.3-70b.yaml",
    "nano_v3.yaml",
    "llama-4-scout.yaml",
    "openelm.yaml",
    "gemma3_1b.yaml",
    "deepseek_v3_lite.yaml",
    "llama4_maverick_lite.yaml",
]


@pytest.fixture(scope="module")
def bundled() -> Registry:
    return load_registry(BUNDLED_ROOT)


def test_bundled_no_errors(bundled: Registry) -> None:
    assert [diagnostic.format() for diagnostic in bundled.errors] == []


def test_bundled_no_warnings(bundled: Registry) -> None:
    assert [diagnostic.format() for diagnostic in bundled.warnings] == []


def test_bundled_entry_count(bundled: Registry) -> None:
    assert len(bundled.models) >= 60


def test_bundled_every_model_valid(bundled: Registry) -> None:
    assert [model.test_id for model in bundled.models if not model.is_valid] == []


@pytest.mark.parametrize("name", DOCUMENTED_CONFIGS)
def test_bundled_config_exists(name: str) -> None:
    assert (BUNDLED_ROOT / "configs" / name).is_file()


@pytest.mark.parametrize("name", DOCUMENTED_CONFIGS)
def test_bundled_config_used(bundled: Registry, name: str) -> None:
    users = [model.test_id for model in bundled.models if name in model.entry.yaml_extra]

    assert users != []


def test_bundled_world_sizes(bundled: Registry) -> None:
    assert {model.world_size for model in bundled.models} == {1, 2, 4, 8}


def test_bundled_name_with_two_config_ids(bundled: Registry) -> None:
    config_ids: dict[str, set[str | None]] = {}
    for model in bundled.models:
        config_ids.setdefault(model.name, set()).add(model.config_id)

    assert [name for name, ids in config_ids.items() if len(ids) >= 2] != []


def test_bundled_test_ids_unique(bundled: Registry) -> None:
    counts = Counter(model.test_id for model in bundled.models)

    assert [test_id for test_id, count in counts.items() if count > 1] == []


def test_bundled_configs_match_schema(bundled: Registry) -> None:
    assert bundled.schema_path is not None

    problems = [
        diagnostic.format()
        for model in bundled.models
        for diagnostic in validate_config(bundled.schema_path, model.merged, model.test_id)
    ]

    assert problems == []


# --- the published TensorRT-LLM registry ---------------------------------------

needs_real_registry = pytest.mark.skipif(
    not (REAL_ROOT / "models.yaml").is_file(),
    reason=f"no TensorRT-LLM registry copy at {REAL_ROOT}",
)


@pytest.fixture(scope="module")
def real() -> Registry:
    return load_registry(REAL_ROOT)


def world_size_by_plain_merge(root: Path) -> list[int]:
    """Merge every entry with yaml.safe_load and mergedeep, independently of the plugin."""
    models = yaml.safe_load((root / "models.yaml").read_text())["models"]
    sizes = []
    for entry in models:
        merged: dict = {}
        for name in entry["yaml_extra"]:
            config = yaml.safe_load((root / "configs" / name).read_text())
            mergedeep.merge(merged, config, strategy=mergedeep.Strategy.REPLACE)
        if "world_size" in merged:
            sizes.append(merged["world_size"])
        else:
            sizes.append(merged.get("tensor_parallel_size", 1) * merged.get("pipeline_parallel_size", 1))
    return sizes


@needs_real_registry
def test_real_model_count(real: Registry) -> None:
    assert len(real.models) == 138


@needs_real_registry
def test_real_no_errors(real: Registry) -> None:
    assert [diagnostic.format() for diagnostic in real.errors] == []


@needs_real_registry
@pytest.mark.parametrize(
    ("name", "world_size"),
    [
        ("nvidia/Gemma-4-31B-IT-NVFP4", 4),
        ("stepfun-ai/Step-3.7-Flash", 8),
        ("stepfun-ai/Step-3.7-Flash-FP8", 8),
        ("stepfun-ai/Step-3.7-Flash-NVFP4", 8),
        ("zai-org/GLM-4.7-Flash", 1),
    ],
)
def test_real_world_size(real: Registry, name: str, world_size: int) -> None:
    models = real.find(name)

    assert models != []
    assert {model.world_size for model in models} == {world_size}


@needs_real_registry
def test_real_step_flash_entries(real: Registry) -> None:
    step = [model for model in real.models if model.name.startswith("stepfun-ai/Step-3.7-Flash")]

    assert len(step) == 3
    assert [model.world_size for model in step] == [8, 8, 8]


@needs_real_registry
def test_real_world_size_8_count(real: Registry) -> None:
    expected = Counter(world_size_by_plain_merge(REAL_ROOT))[8]

    assert sum(1 for model in real.models if model.world_size == 8) == expected


@needs_real_registry
def test_real_world_sizes_match_plain_merge(real: Registry) -> None:
    assert [model.world_size for model in real.models] == world_size_by_plain_merge(REAL_ROOT)
