"""Tests for the best-practice warnings of a loaded registry."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pytest_autodeploy.lints import guideline_world_sizes, parameter_count_billions
from pytest_autodeploy.registry import Registry, load_registry

HEADER = "version: '2.0'\nmodels:\n"

CONFIGS = {
    "dashboard_default.yaml": "runtime: trtllm\n",
    "world_size_1.yaml": "world_size: 1\n",
    "world_size_2.yaml": "world_size: 2\n",
    "world_size_4.yaml": "world_size: 4\n",
    "world_size_8.yaml": "world_size: 8\n",
}

# One entry per world-size file, so that none of CONFIGS is unused.
USE_ALL = (
    "- {name: org/uses-ws1, yaml_extra: [dashboard_default.yaml, world_size_1.yaml]}\n"
    "- {name: org/uses-ws2, yaml_extra: [dashboard_default.yaml, world_size_2.yaml]}\n"
    "- {name: org/uses-ws4, yaml_extra: [dashboard_default.yaml, world_size_4.yaml]}\n"
    "- {name: org/uses-ws8, yaml_extra: [dashboard_default.yaml, world_size_8.yaml]}\n"
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path.resolve() / "registry"


def load(root: Path, entries: str, configs: dict[str, str] | None = None) -> Registry:
    (root / "configs").mkdir(parents=True, exist_ok=True)
    (root / "models.yaml").write_text(HEADER + textwrap.dedent(entries) + USE_ALL)
    for name, text in {**CONFIGS, **(configs or {})}.items():
        (root / "configs" / name).write_text(text)
    return load_registry(root)


def warnings(registry: Registry) -> list[str]:
    return [diagnostic.format() for diagnostic in registry.warnings]


def test_lint_clean_registry(root: Path) -> None:
    registry = load(root, "")

    assert registry.diagnostics == []


def test_lint_baseline_not_first(root: Path) -> None:
    registry = load(root, "- name: org/a\n  yaml_extra: [world_size_1.yaml, dashboard_default.yaml]\n")

    assert warnings(registry) == [
        f"{root / 'models.yaml'}:3: warning: org/a: dashboard_default.yaml is not first in yaml_extra; "
        "list it first so it sets the baseline"
    ]
    assert registry.errors == []


def test_lint_baseline_missing(root: Path) -> None:
    registry = load(root, "- name: org/a\n  yaml_extra: [world_size_1.yaml]\n")

    assert warnings(registry) == [
        f"{root / 'models.yaml'}:3: warning: org/a: dashboard_default.yaml is not first in yaml_extra; "
        "list it first so it sets the baseline"
    ]


def test_lint_no_world_size_file(root: Path) -> None:
    registry = load(root, "- name: org/a\n  yaml_extra: [dashboard_default.yaml]\n")

    assert warnings(registry) == [
        f"{root / 'models.yaml'}:3: warning: org/a: no world_size_N.yaml in yaml_extra; "
        "add the one for its GPU count"
    ]


def test_lint_world_size_file_disagrees(root: Path) -> None:
    registry = load(
        root,
        "- name: org/a\n  yaml_extra: [dashboard_default.yaml, world_size_2.yaml, big.yaml]\n",
        {"big.yaml": "world_size: 4\n"},
    )

    assert warnings(registry) == [
        f"{root / 'models.yaml'}:3: warning: org/a: lists world_size_2.yaml but its effective world size "
        "is 4 (from world_size); list world_size_4.yaml instead"
    ]


def test_lint_world_size_file_tp(root: Path) -> None:
    registry = load(
        root,
        "- name: org/a\n  yaml_extra: [dashboard_default.yaml, world_size_8.yaml]\n",
        {"world_size_8.yaml": "tensor_parallel_size: 4\n"},
    )

    assert warnings(registry) == [
        f"{root / 'models.yaml'}:3: warning: org/a: lists world_size_8.yaml but its effective world size "
        "is 4 (from tensor_parallel_size x pipeline_parallel_size); list world_size_4.yaml instead",
        f"{root / 'models.yaml'}:8: warning: org/uses-ws8: lists world_size_8.yaml but its effective world size "
        "is 4 (from tensor_parallel_size x pipeline_parallel_size); list world_size_4.yaml instead",
    ]


def test_lint_unused_config(root: Path) -> None:
    registry = load(root, "", {"leftover.yaml": "max_batch_size: 4\n"})

    assert warnings(registry) == [
        f"{root / 'configs' / 'leftover.yaml'}:1: warning: config file is not used by any entry; use it or delete it"
    ]


def test_lint_config_of_broken_entry_used(root: Path) -> None:
    # The entry fails on its missing file, but it still names tuned.yaml.
    registry = load(
        root,
        "- name: org/a\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml, tuned.yaml, missing.yaml]\n",
        {"tuned.yaml": "max_batch_size: 4\n"},
    )

    assert len(registry.errors) == 1
    assert warnings(registry) == []


def test_lint_warnings_severity(root: Path) -> None:
    registry = load(root, "- name: org/a\n  yaml_extra: [world_size_2.yaml]\n", {"leftover.yaml": "{}\n"})

    assert len(registry.warnings) == 2
    assert {diagnostic.severity for diagnostic in registry.diagnostics} == {"warning"}
    assert registry.errors == []


def test_lint_size_guideline(root: Path) -> None:
    registry = load(root, "- name: meta-llama/Llama-3.1-8B-Instruct\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]\n")

    assert warnings(registry) == [
        f"{root / 'models.yaml'}:3: warning: meta-llama/Llama-3.1-8B-Instruct: world size 1 does not follow "
        "the size guideline for about 8B parameters (expected 2)"
    ]


def test_lint_size_guideline_small(root: Path) -> None:
    registry = load(root, "- name: Qwen/Qwen2.5-0.5B-Instruct\n  yaml_extra: [dashboard_default.yaml, world_size_2.yaml]\n")

    assert warnings(registry) == [
        f"{root / 'models.yaml'}:3: warning: Qwen/Qwen2.5-0.5B-Instruct: world size 2 does not follow "
        "the size guideline for about 0.5B parameters (expected 1)"
    ]


def test_lint_size_guideline_uses_test_id(root: Path) -> None:
    registry = load(
        root,
        "- {name: org/Model-70B, config_id: ws4, yaml_extra: [dashboard_default.yaml, world_size_4.yaml]}\n"
        "- {name: org/Model-70B, config_id: ws8, yaml_extra: [dashboard_default.yaml, world_size_8.yaml]}\n",
    )

    assert warnings(registry) == [
        f"{root / 'models.yaml'}:4: warning: org/Model-70B[ws8]: world size 8 does not follow "
        "the size guideline for about 70B parameters (expected 4)"
    ]


@pytest.mark.parametrize(
    "name",
    [
        "org/model-without-size",
        "Qwen/Qwen3-A3B",
        "Qwen/Qwen3-Coder-A22B-Instruct",
        "google/gemma-3n-E2B-it",
        "google/gemma-3n-E4B-it",
        "meta-llama/Llama-4-Scout-17B-16E-Instruct",
        "meta-llama/Llama-4-Maverick-17B-128E-Instruct",
        "microsoft/Phi-4-mini-instruct",
    ],
)
def test_lint_size_unreadable_not_flagged(root: Path, name: str) -> None:
    registry = load(root, f"- name: {name}\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]\n")

    assert registry.diagnostics == []


@pytest.mark.parametrize(
    ("name", "billions"),
    [
        ("meta-llama/Llama-3.1-8B-Instruct", 8.0),
        ("meta-llama/Llama-3.3-70B-Instruct", 70.0),
        ("TinyLlama/TinyLlama-1.1B-Chat-v1.0", 1.1),
        ("Qwen/Qwen2.5-0.5B-Instruct", 0.5),
        ("Qwen/Qwen3-235B-A22B", 235.0),
        ("Qwen/Qwen3-30B-A3B", 30.0),
        ("mistralai/Mixtral-8x7B-Instruct-v0.1", 56.0),
        ("mistralai/Mixtral-8x22B-v0.1", 176.0),
        ("HuggingFaceTB/SmolLM-135M", 0.135),
        ("apple/OpenELM-270M-Instruct", 0.27),
        ("ibm-granite/granite-3.1-2b-instruct", 2.0),
        ("openai/gpt-oss-20b", 20.0),
        ("TinyLlama/TinyLlama_v1_1B", 1.0),
        ("nvidia/Llama-3_1-Nemotron-Ultra-253B-v1", 253.0),
        ("org/model-1_5B", 1.5),
    ],
)
def test_parameter_count_read(name: str, billions: float) -> None:
    assert parameter_count_billions(name) == pytest.approx(billions)


@pytest.mark.parametrize(
    "name",
    [
        "deepseek-ai/DeepSeek-V3",
        "Qwen/Qwen1.5-MoE-A2.7B",
        "google/gemma-3n-E2B-it",
        "meta-llama/Llama-4-Scout-17B-16E-Instruct",
        "meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8",
        "stepfun-ai/Step-3.7-Flash",
        "microsoft/Phi-4-mini-instruct",
        "org/model-4k-context",
    ],
)
def test_parameter_count_none(name: str) -> None:
    assert parameter_count_billions(name) is None


def test_parameter_count_ignores_org() -> None:
    assert parameter_count_billions("org-7B/model") is None


@pytest.mark.parametrize(
    ("billions", "sizes"),
    [
        (0.135, (1,)),
        (1.9, (1,)),
        (2.0, (2,)),
        (8.0, (2,)),
        (15.0, (2,)),
        (17.0, (2, 4)),
        (20.0, (4,)),
        (70.0, (4,)),
        (80.0, (4, 8)),
        (81.0, (8,)),
        (671.0, (8,)),
    ],
)
def test_guideline_world_sizes(billions: float, sizes: tuple[int, ...]) -> None:
    assert guideline_world_sizes(billions) == sizes


@pytest.mark.parametrize(
    "models",
    [
        pytest.param("version: '2.0'\nmodels: [\n", id="invalid-yaml"),
        pytest.param("version: '2.0'\n", id="no-models-list"),
    ],
)
def test_lint_unused_skipped_without_entries(root: Path, models: str) -> None:
    (root / "configs").mkdir(parents=True)
    (root / "models.yaml").write_text(models)
    for name, text in CONFIGS.items():
        (root / "configs" / name).write_text(text)

    registry = load_registry(root)

    assert len(registry.errors) == 1
    assert warnings(registry) == []


def test_lint_unused_skipped_unreadable_models(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    load(root, "")
    models = root / "models.yaml"
    original = Path.read_bytes

    def read_bytes(path: Path) -> bytes:
        if path == models:
            raise PermissionError(13, "Permission denied", str(path))
        return original(path)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)

    registry = load_registry(root)

    assert [diagnostic.format() for diagnostic in registry.errors] == [
        f"{models}: error: cannot read file: Permission denied"
    ]
    assert warnings(registry) == []


def test_lint_config_used_through_parent_path(root: Path) -> None:
    registry = load(
        root,
        "- name: org/a\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml, sub/../tuned.yaml]\n",
        {"tuned.yaml": "max_batch_size: 4\n"},
    )

    assert registry.errors == []
    assert warnings(registry) == []


def test_lint_config_used_through_symlink(root: Path) -> None:
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "tuned.yaml").write_text("max_batch_size: 4\n")
    (root / "configs" / "tuned_alias.yaml").symlink_to(root / "configs" / "tuned.yaml")

    registry = load(
        root,
        "- name: org/a\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml, tuned_alias.yaml]\n",
    )

    assert registry.errors == []
    assert warnings(registry) == []


def test_lint_unreadable_baseline(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (root / "configs").mkdir(parents=True)
    baseline = root / "configs" / "dashboard_default.yaml"
    original = Path.is_file

    def is_file(path: Path) -> bool:
        if path == baseline:
            raise PermissionError(13, "Permission denied", str(path))
        return original(path)

    monkeypatch.setattr(Path, "is_file", is_file)

    registry = load(root, "")

    assert [diagnostic.format() for diagnostic in registry.errors] == [
        f"{root / 'models.yaml'}:{line}: error: cannot access config file 'dashboard_default.yaml' of "
        f"org/uses-ws{size}: Permission denied"
        for line, size in [(3, 1), (4, 2), (5, 4), (6, 8)]
    ]
    assert warnings(registry) == []
