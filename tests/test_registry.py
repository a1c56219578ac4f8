"""Tests for loading and validating a v2.0 registry: models.yaml plus configs/."""

from __future__ import annotations

import os
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from pytest_autodeploy import registry as registry_module
from pytest_autodeploy.diagnostics import Diagnostic, RegistryError
from pytest_autodeploy.registry import Registry, load_registry, resolve_registry_path

HEADER = "version: '2.0'\nmodels:\n"

BASE_CONFIGS = {
    "dashboard_default.yaml": "runtime: trtllm\ncuda_graph_config:\n  enable_padding: true\n",
    "world_size_1.yaml": "world_size: 1\n",
    "world_size_2.yaml": "world_size: 2\n",
    "world_size_4.yaml": "world_size: 4\n",
}


def write_registry(root: Path, models: str, configs: dict[str, str] | None = None) -> Path:
    """Write models.yaml and configs/ under ``root``; ``configs`` adds to or replaces BASE_CONFIGS."""
    (root / "configs").mkdir(parents=True, exist_ok=True)
    (root / "models.yaml").write_text(textwrap.dedent(models))
    for name, text in {**BASE_CONFIGS, **(configs or {})}.items():
        path = root / "configs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path.resolve() / "registry"


def load(root: Path, models: str, configs: dict[str, str] | None = None) -> Registry:
    return load_registry(write_registry(root, models, configs))


def errors(registry: Registry) -> list[str]:
    return [diagnostic.format() for diagnostic in registry.errors]


def models_file(root: Path) -> str:
    return str(root / "models.yaml")


def config_file(root: Path, name: str) -> str:
    return str(root / "configs" / name)


# --- a valid registry --------------------------------------------------------


def test_valid_registry_loads(root: Path) -> None:
    registry = load(
        root,
        HEADER
        + "- name: org/small-1B\n"
        + "  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]\n"
        + "- name: org/medium-7B\n"
        + "  yaml_extra: [dashboard_default.yaml, world_size_2.yaml]\n"
        + "- name: org/large-70B\n"
        + "  yaml_extra: [dashboard_default.yaml, world_size_4.yaml]\n",
    )

    assert registry.diagnostics == []
    assert [model.test_id for model in registry.models] == ["org/small-1B", "org/medium-7B", "org/large-70B"]
    assert [model.world_size for model in registry.models] == [1, 2, 4]
    assert [model.entry.line for model in registry.models] == [3, 5, 7]
    assert registry.models[2].config == {
        "runtime": "trtllm",
        "cuda_graph_config": {"enable_padding": True},
        "world_size": 4,
    }
    assert registry.models[2].config_files == (
        root / "configs" / "dashboard_default.yaml",
        root / "configs" / "world_size_4.yaml",
    )
    assert all(model.is_valid for model in registry.models)


def test_registry_path_to_models_file(root: Path) -> None:
    write_registry(root, HEADER + "- {name: org/a-1B, yaml_extra: [dashboard_default.yaml, world_size_1.yaml]}\n")

    registry = load_registry(root / "models.yaml")

    assert registry.root == root
    assert [model.name for model in registry.models] == ["org/a-1B"]


def test_resolve_registry_path_missing(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"

    with pytest.raises(RegistryError) as caught:
        resolve_registry_path(missing)

    assert str(caught.value) == (
        "invalid model registry: 1 error\n"
        f"{missing}: error: registry not found; pass a registry folder or its models.yaml"
    )


def test_resolve_registry_path_no_models_file(tmp_path: Path) -> None:
    with pytest.raises(RegistryError) as caught:
        resolve_registry_path(tmp_path)

    assert [diagnostic.format() for diagnostic in caught.value.diagnostics] == [
        f"{tmp_path}: error: no models.yaml in registry folder; pass the folder that contains models.yaml"
    ]


# --- top level of models.yaml ------------------------------------------------


def test_version_missing(root: Path) -> None:
    registry = load(root, "models:\n- {name: org/a-1B, yaml_extra: [dashboard_default.yaml, world_size_1.yaml]}\n")

    assert errors(registry) == [f"{models_file(root)}:1: error: missing 'version'; add version: '2.0' at the top"]


def test_version_float(root: Path) -> None:
    registry = load(
        root,
        "description: test\nversion: 2.0\nmodels:\n"
        "- {name: org/a-1B, yaml_extra: [dashboard_default.yaml, world_size_1.yaml]}\n",
    )

    assert errors(registry) == [
        f"{models_file(root)}:2: error: version must be the string '2.0', got 2.0 (float); quote it: version: '2.0'"
    ]


def test_version_unsupported(root: Path) -> None:
    registry = load(
        root, "version: '1.0'\nmodels:\n- {name: org/a-1B, yaml_extra: [dashboard_default.yaml, world_size_1.yaml]}\n"
    )

    assert errors(registry) == [
        f"{models_file(root)}:1: error: unsupported registry version '1.0'; this plugin reads version '2.0'"
    ]


def test_models_missing(root: Path) -> None:
    registry = load(root, "version: '2.0'\ndescription: no models\n")

    assert errors(registry) == [
        f"{models_file(root)}:1: error: missing 'models' list; add models: with one entry per model"
    ]


def test_models_null(root: Path) -> None:
    registry = load(root, "version: '2.0'\nmodels:\n")

    assert errors(registry) == [f"{models_file(root)}:2: error: 'models' is empty; add at least one entry"]


def test_models_not_list(root: Path) -> None:
    registry = load(root, "version: '2.0'\nmodels:\n  name: org/a\n")

    assert errors(registry) == [f"{models_file(root)}:2: error: 'models' must be a list of entries, got a dict"]


def test_models_file_empty(root: Path) -> None:
    registry = load(root, "# nothing yet\n")

    assert errors(registry) == [
        f"{models_file(root)}:1: error: models.yaml is empty; it must be a mapping with "
        "version: '2.0' and a models: list"
    ]


def test_models_file_list(root: Path) -> None:
    registry = load(root, "- name: org/a\n")

    assert errors(registry) == [
        f"{models_file(root)}:1: error: models.yaml is a list; it must be a mapping with "
        "version: '2.0' and a models: list"
    ]


def test_unknown_top_level_key(root: Path) -> None:
    registry = load(root, "version: '2.0'\nmodles:\n- {name: org/a, yaml_extra: [dashboard_default.yaml]}\n")

    assert [diagnostic.format() for diagnostic in registry.warnings if diagnostic.path.name == "models.yaml"] == [
        f"{models_file(root)}:2: warning: unknown top-level key 'modles' is ignored; did you mean 'models'?"
    ]
    assert errors(registry) == [
        f"{models_file(root)}:1: error: missing 'models' list; add models: with one entry per model"
    ]


# --- entries ---------------------------------------------------------------


def test_entry_not_mapping(root: Path) -> None:
    registry = load(root, HEADER + "- org/just-a-name\n")

    assert errors(registry) == [
        f"{models_file(root)}:3: error: entry 1 must be a mapping with name and yaml_extra, got 'org/just-a-name'"
    ]


def test_entry_missing_name(root: Path) -> None:
    registry = load(
        root,
        HEADER
        + "- {name: org/a-1B, yaml_extra: [dashboard_default.yaml, world_size_1.yaml]}\n"
        + "- config_id: ws1\n"
        + "  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]\n",
    )

    assert errors(registry) == [
        f"{models_file(root)}:4: error: entry 2 is missing 'name'; add name: org/model with the model's Hugging Face id"
    ]


def test_entry_missing_yaml_extra(root: Path) -> None:
    registry = load(root, HEADER + "- name: org/a\n  config_id: ws1\n")

    assert errors(registry) == [f"{models_file(root)}:3: error: org/a is missing 'yaml_extra'; add yaml_extra: with the list of config files to merge"]


def test_entry_unknown_key_suggests(root: Path) -> None:
    registry = load(root, HEADER + "- name: org/a\n  yaml_extras: [dashboard_default.yaml]\n")

    assert errors(registry) == [
        f"{models_file(root)}:4: error: unknown key 'yaml_extras' in org/a; did you mean 'yaml_extra'? "
        "(allowed keys: name, yaml_extra, config_id, xfail, skip)",
        f"{models_file(root)}:3: error: org/a is missing 'yaml_extra'; add yaml_extra: with the list of config files to merge",
    ]


def test_entry_unknown_key_no_suggestion(root: Path) -> None:
    registry = load(
        root, HEADER + "- name: org/a\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]\n  gpus: 2\n"
    )

    assert errors(registry) == [
        f"{models_file(root)}:5: error: unknown key 'gpus' in org/a "
        "(allowed keys: name, yaml_extra, config_id, xfail, skip)"
    ]


def test_yaml_extra_string(root: Path) -> None:
    registry = load(root, HEADER + "- name: org/a\n  yaml_extra: dashboard_default.yaml\n")

    assert errors(registry) == [
        f"{models_file(root)}:4: error: yaml_extra of org/a must be a list, got the string "
        "'dashboard_default.yaml'; write yaml_extra: ['dashboard_default.yaml']"
    ]


def test_yaml_extra_mapping(root: Path) -> None:
    registry = load(root, HEADER + "- name: org/a\n  yaml_extra: {file: dashboard_default.yaml}\n")

    assert errors(registry) == [
        f"{models_file(root)}:4: error: yaml_extra of org/a must be a list of config file names, "
        "got {'file': 'dashboard_default.yaml'}"
    ]


def test_yaml_extra_item_not_string(root: Path) -> None:
    registry = load(root, HEADER + "- name: org/a\n  yaml_extra: [dashboard_default.yaml, 2]\n")

    assert errors(registry) == [
        f"{models_file(root)}:4: error: yaml_extra of org/a has 2; every item must be a config file name"
    ]


def test_config_id_invalid(root: Path) -> None:
    registry = load(
        root, HEADER + "- name: org/a\n  config_id: 'ws 1'\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]\n"
    )

    assert errors(registry) == [
        f"{models_file(root)}:4: error: config_id of org/a must be a string of letters, digits, "
        "'_', '.', '+' or '-', got 'ws 1'"
    ]


def test_config_id_trailing_newline(root: Path) -> None:
    registry = load(
        root,
        HEADER + '- name: org/a\n  config_id: "ws1\\n"\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]\n',
    )

    assert errors(registry) == [
        f"{models_file(root)}:4: error: config_id of org/a must be a string of letters, digits, "
        "'_', '.', '+' or '-', got 'ws1\\n'"
    ]


def test_config_id_not_string(root: Path) -> None:
    registry = load(
        root, HEADER + "- name: org/a\n  config_id: 1\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]\n"
    )

    assert errors(registry) == [
        f"{models_file(root)}:4: error: config_id of org/a must be a string of letters, digits, "
        "'_', '.', '+' or '-', got 1"
    ]


def test_xfail_reason_empty(root: Path) -> None:
    registry = load(
        root, HEADER + "- name: org/a\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]\n  xfail: ''\n"
    )

    assert errors(registry) == [
        f"{models_file(root)}:5: error: xfail of org/a must be a non-empty reason string, got ''; "
        'write e.g. xfail: "fails with CUDA OOM"'
    ]


def test_xfail_and_skip_both(root: Path) -> None:
    registry = load(
        root,
        HEADER
        + "- name: org/a\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]\n"
        + "  xfail: known bug\n  skip: no weights\n",
    )

    assert errors(registry) == [f"{models_file(root)}:6: error: org/a sets both xfail and skip; keep one"]


def test_xfail_reason_stored(root: Path) -> None:
    registry = load(
        root, HEADER + "- name: org/a\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]\n  xfail: ' OOM '\n"
    )

    assert registry.models[0].entry.xfail == "OOM"
    assert registry.models[0].entry.skip is None


# --- names and test ids ------------------------------------------------------


def test_name_with_space(root: Path) -> None:
    registry = load(root, HEADER + "- name: org/my model\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]\n")

    assert errors(registry) == [
        f"{models_file(root)}:3: error: name 'org/my model' contains ' ', which pytest -k cannot select; "
        "use only letters, digits and . _ - + / :"
    ]


def test_name_with_control_characters(root: Path) -> None:
    registry = load(
        root, HEADER + '- name: "org/a\\tb\\x07"\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]\n'
    )

    assert errors(registry) == [
        f"{models_file(root)}:3: error: name 'org/a\\tb\\x07' contains '\\t', '\\x07', "
        "which pytest -k cannot select; use only letters, digits and . _ - + / :"
    ]


def test_name_trailing_newline(root: Path) -> None:
    registry = load(root, HEADER + '- name: "org/a\\n"\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]\n')

    assert errors(registry) == [
        f"{models_file(root)}:3: error: name 'org/a\\n' contains '\\n', which pytest -k cannot select; "
        "use only letters, digits and . _ - + / :"
    ]


def test_name_empty(root: Path) -> None:
    registry = load(root, HEADER + "- name: ''\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]\n")

    assert errors(registry) == [
        f"{models_file(root)}:3: error: name must be a non-empty string such as org/model, got ''"
    ]


def test_name_not_string(root: Path) -> None:
    registry = load(root, HEADER + "- name: 42\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]\n")

    assert errors(registry) == [
        f"{models_file(root)}:3: error: name must be a non-empty string such as org/model, got 42"
    ]


def test_duplicate_entry(root: Path) -> None:
    registry = load(
        root,
        HEADER
        + "- name: org/a\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]\n"
        + "- name: org/b\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]\n"
        + "- name: org/a\n  yaml_extra: [dashboard_default.yaml, world_size_2.yaml]\n",
    )

    assert errors(registry) == [
        f"{models_file(root)}:7: error: duplicate entry org/a: lines 3 and 7; "
        "remove one or give them different config_id values"
    ]
    assert [model.test_id for model in registry.models] == ["org/a", "org/b"]


def test_duplicate_entry_config_id(root: Path) -> None:
    registry = load(
        root,
        HEADER
        + "- {name: org/a, config_id: ws1, yaml_extra: [dashboard_default.yaml, world_size_1.yaml]}\n"
        + "- {name: org/a, config_id: ws2, yaml_extra: [dashboard_default.yaml, world_size_2.yaml]}\n"
        + "- {name: org/a, config_id: ws1, yaml_extra: [dashboard_default.yaml, world_size_1.yaml]}\n",
    )

    assert errors(registry) == [
        f"{models_file(root)}:5: error: duplicate entry org/a with config_id 'ws1': lines 3 and 5; "
        "remove one or give them different config_id values"
    ]


def test_same_name_different_config_id(root: Path) -> None:
    registry = load(
        root,
        HEADER
        + "- {name: org/a, config_id: ws1, yaml_extra: [dashboard_default.yaml, world_size_1.yaml]}\n"
        + "- {name: org/b, config_id: ws1, yaml_extra: [dashboard_default.yaml, world_size_1.yaml]}\n"
        + "- {name: org/a, config_id: ws2, yaml_extra: [dashboard_default.yaml, world_size_2.yaml]}\n",
    )

    assert registry.errors == []
    assert [model.test_id for model in registry.models] == ["org/a[ws1]", "org/b", "org/a[ws2]"]
    assert [model.world_size for model in registry.models] == [1, 1, 2]
    assert [model.config_id for model in registry.find("org/a")] == ["ws1", "ws2"]
    assert [model.test_id for model in registry.find("org/a", "ws2")] == ["org/a[ws2]"]


# --- config files ------------------------------------------------------------


def test_config_missing_suggests_yaml(root: Path) -> None:
    registry = load(root, HEADER + "- name: org/a\n  yaml_extra: [dashboard_default.yaml, world_size_1.yml]\n")

    assert errors(registry) == [
        f"{models_file(root)}:4: error: config file 'world_size_1.yml' of org/a not found in "
        f"{root / 'configs'}; did you mean 'world_size_1.yaml'?"
    ]


def test_config_missing_suggests_yml(root: Path) -> None:
    registry = load(
        root,
        HEADER + "- name: org/a\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml, tuned.yaml]\n",
        {"tuned.yml": "max_batch_size: 4\n"},
    )

    assert errors(registry) == [
        f"{models_file(root)}:4: error: config file 'tuned.yaml' of org/a not found in "
        f"{root / 'configs'}; did you mean 'tuned.yml'?"
    ]


def test_config_missing_suggests_close_name(root: Path) -> None:
    registry = load(root, HEADER + "- name: org/a\n  yaml_extra: [dashbord_default.yaml, world_size_1.yaml]\n")

    assert errors(registry) == [
        f"{models_file(root)}:4: error: config file 'dashbord_default.yaml' of org/a not found in "
        f"{root / 'configs'}; did you mean 'dashboard_default.yaml'?"
    ]


def test_config_in_subfolder(root: Path) -> None:
    registry = load(
        root,
        HEADER + "- name: org/a\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml, models/a.yaml]\n",
        {"models/a.yaml": "max_batch_size: 4\n"},
    )

    assert registry.errors == []
    assert registry.models[0].config["max_batch_size"] == 4


def test_config_path_parent(root: Path) -> None:
    registry = load(root, HEADER + "- name: org/a\n  yaml_extra: [dashboard_default.yaml, ../x.yaml]\n")

    assert errors(registry) == [
        f"{models_file(root)}:4: error: config path '../x.yaml' in org/a leaves configs/; "
        f"use a file name relative to {root / 'configs'}"
    ]


def test_config_path_absolute(root: Path) -> None:
    write_registry(root, HEADER)
    outside = root / "outside.yaml"
    outside.write_text("world_size: 1\n")

    registry = load(root, HEADER + f"- name: org/a\n  yaml_extra: [dashboard_default.yaml, {outside}]\n")

    assert errors(registry) == [
        f"{models_file(root)}:4: error: config path '{outside}' in org/a leaves configs/; "
        f"use a file name relative to {root / 'configs'}"
    ]


def test_config_symlink_outside(root: Path) -> None:
    write_registry(root, HEADER)
    outside = root / "outside.yaml"
    outside.write_text("world_size: 1\n")
    (root / "configs" / "link.yaml").symlink_to(outside)

    registry = load(root, HEADER + "- name: org/a\n  yaml_extra: [dashboard_default.yaml, link.yaml]\n")

    assert errors(registry) == [
        f"{models_file(root)}:4: error: config path 'link.yaml' in org/a resolves outside configs/; "
        "config files must live in the registry's configs folder"
    ]


def test_config_symlink_inside_allowed(root: Path) -> None:
    write_registry(root, HEADER)
    (root / "configs" / "ws1_alias.yaml").symlink_to(root / "configs" / "world_size_1.yaml")

    registry = load(root, HEADER + "- name: org/a\n  yaml_extra: [dashboard_default.yaml, ws1_alias.yaml]\n")

    assert registry.errors == []
    assert registry.models[0].world_size == 1


def test_config_listed_twice(root: Path) -> None:
    registry = load(
        root,
        HEADER + "- name: org/a\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml, dashboard_default.yaml]\n",
    )

    assert errors(registry) == [
        f"{models_file(root)}:4: error: org/a lists 'dashboard_default.yaml' twice in yaml_extra; remove one"
    ]


def test_config_not_mapping_list(root: Path) -> None:
    registry = load(
        root,
        HEADER + "- name: org/a\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml, bad.yaml]\n",
        {"bad.yaml": "# settings\n- max_batch_size: 4\n"},
    )

    assert errors(registry) == [
        f"{config_file(root, 'bad.yaml')}:2: error: config file must be a mapping of settings, got a list; "
        "write key: value lines at the top level"
    ]
    assert registry.models[0].is_valid is False


def test_config_not_mapping_scalar(root: Path) -> None:
    registry = load(
        root,
        HEADER + "- name: org/a\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml, bad.yaml]\n",
        {"bad.yaml": "max_batch_size\n"},
    )

    assert errors(registry) == [
        f"{config_file(root, 'bad.yaml')}:1: error: config file must be a mapping of settings, got a str; "
        "write key: value lines at the top level"
    ]


@pytest.mark.parametrize("text", ["", "# only a comment\n"], ids=["empty", "comment-only"])
def test_config_empty_rejected(root: Path, text: str) -> None:
    registry = load(
        root,
        HEADER + "- name: org/a\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml, nothing.yaml]\n",
        {"nothing.yaml": text},
    )

    assert errors(registry) == [
        f"{config_file(root, 'nothing.yaml')}:1: error: config file is empty or only comments; "
        "add settings, or write {} if it deliberately sets nothing"
    ]


def test_config_empty_mapping_allowed(root: Path) -> None:
    registry = load(
        root,
        HEADER + "- name: org/a\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml, nothing.yaml]\n",
        {"nothing.yaml": "# deliberately sets nothing\n{}\n"},
    )

    assert registry.errors == []
    assert registry.models[0].config == {
        "runtime": "trtllm",
        "cuda_graph_config": {"enable_padding": True},
        "world_size": 1,
    }


def test_config_error_reported_once(root: Path) -> None:
    registry = load(
        root,
        HEADER
        + "- name: org/a\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml, dup.yaml]\n"
        + "- name: org/b\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml, dup.yaml]\n",
        {"dup.yaml": "max_batch_size: 4\nruntime: demollm\nmax_batch_size: 8\n"},
    )

    assert errors(registry) == [
        f"{config_file(root, 'dup.yaml')}:3:1: error: duplicate key 'max_batch_size' (first set on line 1); "
        "YAML keeps only the last value, so remove one of them"
    ]
    assert [model.is_valid for model in registry.models] == [False, False]


def test_duplicate_key_in_models_yaml(root: Path) -> None:
    registry = load(
        root,
        HEADER
        + "- name: org/a\n"
        + "  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]\n"
        + "  name: org/b\n",
    )

    assert errors(registry) == [
        f"{models_file(root)}:5:3: error: duplicate key 'name' (first set on line 3); "
        "YAML keeps only the last value, so remove one of them"
    ]


def test_invalid_yaml_models_file(root: Path) -> None:
    registry = load(root, HEADER + "- name: org/a\n  yaml_extra: [dashboard_default.yaml\n- name: org/b\n")

    assert errors(registry) == [
        f"{models_file(root)}:5:7: error: invalid YAML: did not find expected ',' or ']'; fix the syntax"
    ]


def test_invalid_yaml_config_file(root: Path) -> None:
    registry = load(
        root,
        HEADER + "- name: org/a\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml, broken.yaml]\n",
        {"broken.yaml": "runtime: trtllm\ncuda_graph_config:\n  enable_padding: true\n batch_sizes: [1]\n"},
    )

    assert errors(registry) == [
        f"{config_file(root, 'broken.yaml')}:4:2: error: invalid YAML: did not find expected key; fix the syntax"
    ]


def test_python_tag_in_config_not_executed(root: Path, tmp_path: Path) -> None:
    marker = tmp_path / "executed"

    registry = load(
        root,
        HEADER + "- name: org/a\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml, evil.yaml]\n",
        {"evil.yaml": f'max_batch_size: !!python/object/apply:os.system ["touch {marker}"]\n'},
    )

    assert not marker.exists()
    assert errors(registry) == [
        f"{config_file(root, 'evil.yaml')}:1:17: error: YAML tag "
        "'tag:yaml.org,2002:python/object/apply:os.system' is not allowed; use a plain list"
    ]


def test_python_tag_in_models_not_executed(root: Path, tmp_path: Path) -> None:
    marker = tmp_path / "executed"

    registry = load(root, HEADER + f'- !!python/object/apply:os.system ["touch {marker}"]\n')

    assert not marker.exists()
    assert errors(registry) == [
        f"{models_file(root)}:3:3: error: YAML tag "
        "'tag:yaml.org,2002:python/object/apply:os.system' is not allowed; use a plain list"
    ]


def test_config_parsed_once(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loads: Counter[str] = Counter()
    original = registry_module.load_yaml

    def counting_load_yaml(path: Path, cache_dir: Path | None = None):
        loads[path.name] += 1
        return original(path, cache_dir)

    monkeypatch.setattr(registry_module, "load_yaml", counting_load_yaml)
    entries = "".join(
        f"- {{name: org/m{index}, yaml_extra: [dashboard_default.yaml, world_size_{size}.yaml]}}\n"
        for index, size in enumerate([1, 2, 1, 4, 2, 1])
    )

    registry = load(root, HEADER + entries)

    assert registry.errors == []
    assert loads == {"models.yaml": 1, "dashboard_default.yaml": 1, "world_size_1.yaml": 1,
                     "world_size_2.yaml": 1, "world_size_4.yaml": 1}


def test_broken_config_parsed_once(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loads: Counter[str] = Counter()
    original = registry_module.load_yaml

    def counting_load_yaml(path: Path, cache_dir: Path | None = None):
        loads[path.name] += 1
        return original(path, cache_dir)

    monkeypatch.setattr(registry_module, "load_yaml", counting_load_yaml)

    load(
        root,
        HEADER
        + "- {name: org/a, yaml_extra: [dashboard_default.yaml, world_size_1.yaml, broken.yaml]}\n"
        + "- {name: org/b, yaml_extra: [dashboard_default.yaml, world_size_2.yaml, broken.yaml]}\n",
        {"broken.yaml": "a: [1\n"},
    )

    assert loads["broken.yaml"] == 1


# --- world size and merge through the loader ----------------------------------


def test_world_size_conflict_names_files(root: Path) -> None:
    registry = load(
        root,
        HEADER + "- name: org/a-70B\n  yaml_extra: [dashboard_default.yaml, world_size_4.yaml, tp8.yaml]\n",
        {"tp8.yaml": "max_batch_size: 8\ntensor_parallel_size: 8\n"},
    )

    ws4 = config_file(root, "world_size_4.yaml")
    tp8 = config_file(root, "tp8.yaml")
    assert errors(registry) == [
        f"{ws4}:1: error: world_size=4 ({ws4}:1) disagrees with tensor_parallel_size=8 ({tp8}:2) = 8; "
        "make them agree or remove one of them (in org/a-70B, models.yaml line 3)"
    ]
    assert registry.models[0].world_size is None


def test_world_size_conflict_each_entry(root: Path) -> None:
    registry = load(
        root,
        HEADER
        + "- {name: org/a, yaml_extra: [dashboard_default.yaml, world_size_4.yaml, tp8.yaml]}\n"
        + "- {name: org/b, yaml_extra: [dashboard_default.yaml, world_size_4.yaml, tp8.yaml]}\n",
        {"tp8.yaml": "tensor_parallel_size: 8\n"},
    )

    assert [diagnostic.message.rsplit(" (in ", 1)[1] for diagnostic in registry.errors] == [
        "org/a, models.yaml line 3)",
        "org/b, models.yaml line 4)",
    ]
    assert [diagnostic.entry for diagnostic in registry.errors] == ["org/a", "org/b"]


@pytest.mark.parametrize("key", ["world_size", "tensor_parallel_size", "pipeline_parallel_size"])
@pytest.mark.parametrize(
    ("value", "shown"),
    [('"4"', "'4' (str)"), ("4.5", "4.5 (float)"), ("true", "True (bool)"), ("1e0", "'1e0' (str)")],
    ids=["quoted", "float", "bool", "exponent"],
)
def test_world_size_not_integer(root: Path, key: str, value: str, shown: str) -> None:
    registry = load(
        root,
        HEADER + "- name: org/a\n  yaml_extra: [dashboard_default.yaml, gpus.yaml]\n",
        {"gpus.yaml": f"runtime: trtllm\n{key}: {value}\n"},
    )

    assert errors(registry) == [
        f"{config_file(root, 'gpus.yaml')}:2: error: {key} must be a positive integer, got {shown}; "
        f"write a number such as {key}: 4 (in org/a, models.yaml line 3)"
    ]


@pytest.mark.parametrize("key", ["world_size", "tensor_parallel_size", "pipeline_parallel_size"])
@pytest.mark.parametrize("value", ["0", "-2"])
def test_world_size_not_positive(root: Path, key: str, value: str) -> None:
    registry = load(
        root,
        HEADER + "- name: org/a\n  yaml_extra: [dashboard_default.yaml, gpus.yaml]\n",
        {"gpus.yaml": f"{key}: {value}\n"},
    )

    assert errors(registry) == [
        f"{config_file(root, 'gpus.yaml')}:1: error: {key} must be a positive integer, got {value}; "
        f"use 1 or more (in org/a, models.yaml line 3)"
    ]


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ("world_size: 4\ntensor_parallel_size: 2\npipeline_parallel_size: 2\n", 4),
        ("tensor_parallel_size: 4\n", 4),
        ("pipeline_parallel_size: 2\n", 2),
        ("max_batch_size: 8\n", 1),
    ],
    ids=["ws-tp-pp", "tp-only", "pp-only", "nothing"],
)
def test_world_size_effective(root: Path, settings: str, expected: int) -> None:
    registry = load(
        root,
        HEADER + "- name: org/a\n  yaml_extra: [dashboard_default.yaml, gpus.yaml]\n",
        {"gpus.yaml": settings},
    )

    assert registry.errors == []
    assert registry.models[0].world_size == expected


def test_merge_conflict_names_files(root: Path) -> None:
    registry = load(
        root,
        HEADER + "- name: org/a\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml, flat.yaml]\n",
        {"flat.yaml": "max_batch_size: 4\ncuda_graph_config: false\n"},
    )

    default = config_file(root, "dashboard_default.yaml")
    flat = config_file(root, "flat.yaml")
    assert errors(registry) == [
        f"{flat}:2: error: merge conflict at 'cuda_graph_config': {default}:2 sets a mapping but "
        f"{flat}:2 sets the value False; use the same kind of value in both files "
        "(in org/a, models.yaml line 3)"
    ]


def test_merge_conflict_reverse(root: Path) -> None:
    registry = load(
        root,
        HEADER + "- name: org/a\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml, nested.yaml]\n",
        {"nested.yaml": "runtime:\n  name: trtllm\n"},
    )

    default = config_file(root, "dashboard_default.yaml")
    nested = config_file(root, "nested.yaml")
    assert errors(registry) == [
        f"{nested}:1: error: merge conflict at 'runtime': {default}:1 sets the value 'trtllm' but "
        f"{nested}:1 sets a mapping; use the same kind of value in both files "
        "(in org/a, models.yaml line 3)"
    ]


def test_merge_conflict_dotted_path(root: Path) -> None:
    registry = load(
        root,
        HEADER + "- name: org/a\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml, deep.yaml]\n",
        {"deep.yaml": "cuda_graph_config:\n  enable_padding:\n    value: true\n"},
    )

    default = config_file(root, "dashboard_default.yaml")
    deep = config_file(root, "deep.yaml")
    assert errors(registry) == [
        f"{deep}:2: error: merge conflict at 'cuda_graph_config.enable_padding': {default}:3 sets "
        f"the value True but {deep}:2 sets a mapping; use the same kind of value in both files "
        "(in org/a, models.yaml line 3)"
    ]


# --- every error at once -------------------------------------------------------

BROKEN_MODELS = """\
version: '1.0'
models:
- name: org/unknown-key
  yaml_extras: [dashboard_default.yaml]
- name: org/string-extra
  yaml_extra: dashboard_default.yaml
- name: org/missing-file
  yaml_extra: [dashboard_default.yaml, world_size_2.yml]
- name: org/escape
  yaml_extra: [dashboard_default.yaml, ../outside.yaml]
- name: org/twice
  yaml_extra: [dashboard_default.yaml, world_size_1.yaml, world_size_1.yaml]
- name: org/my model
  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]
- name: org/dup
  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]
- name: org/dup
  yaml_extra: [dashboard_default.yaml, world_size_2.yaml]
- name: org/conflict
  yaml_extra: [dashboard_default.yaml, world_size_1.yaml, conflict.yaml]
- name: org/too-many-gpus
  yaml_extra: [dashboard_default.yaml, world_size_2.yaml, tp8.yaml]
- name: org/broken-config
  yaml_extra: [dashboard_default.yaml, world_size_1.yaml, broken.yaml]
- name: org/duplicate-key-config
  yaml_extra: [dashboard_default.yaml, world_size_1.yaml, dupkey.yaml]
- name: org/list-config
  yaml_extra: [dashboard_default.yaml, world_size_1.yaml, list.yaml]
- name: org/fine
  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]
"""

BROKEN_CONFIGS = {
    "conflict.yaml": "cuda_graph_config: false\n",
    "tp8.yaml": "tensor_parallel_size: 8\n",
    "broken.yaml": "max_batch_size: [1, 2\n",
    "dupkey.yaml": "runtime: trtllm\nruntime: demollm\n",
    "list.yaml": "- max_batch_size\n",
}


@pytest.fixture
def broken_registry(root: Path) -> Registry:
    return load(root, BROKEN_MODELS, BROKEN_CONFIGS)


def test_all_errors_count(broken_registry: Registry) -> None:
    assert len(broken_registry.errors) == 14


@pytest.mark.parametrize(
    ("file", "location", "message_start"),
    [
        pytest.param("models.yaml", "1", "unsupported registry version '1.0'", id="version"),
        pytest.param("models.yaml", "4", "unknown key 'yaml_extras' in org/unknown-key; did you mean 'yaml_extra'?", id="unknown-key"),
        pytest.param("models.yaml", "3", "org/unknown-key is missing 'yaml_extra'; add yaml_extra: with the list of config files to merge", id="missing-yaml-extra"),
        pytest.param("models.yaml", "6", "yaml_extra of org/string-extra must be a list, got the string", id="string-extra"),
        pytest.param("models.yaml", "8", "config file 'world_size_2.yml' of org/missing-file not found in", id="missing-file"),
        pytest.param("models.yaml", "10", "config path '../outside.yaml' in org/escape leaves configs/", id="escape"),
        pytest.param("models.yaml", "12", "org/twice lists 'world_size_1.yaml' twice in yaml_extra", id="twice"),
        pytest.param("models.yaml", "13", "name 'org/my model' contains ' '", id="name-space"),
        pytest.param("models.yaml", "17", "duplicate entry org/dup: lines 15 and 17", id="duplicate-entry"),
        pytest.param("configs/conflict.yaml", "1", "merge conflict at 'cuda_graph_config'", id="merge-conflict"),
        pytest.param("configs/world_size_2.yaml", "1", "world_size=2 ", id="world-size"),
        pytest.param("configs/broken.yaml", "2:1", "invalid YAML: ", id="invalid-yaml"),
        pytest.param("configs/dupkey.yaml", "2:1", "duplicate key 'runtime' (first set on line 1)", id="duplicate-key"),
        pytest.param("configs/list.yaml", "1", "config file must be a mapping of settings, got a list", id="list-config"),
    ],
)
def test_all_errors_reported(
    broken_registry: Registry, root: Path, file: str, location: str, message_start: str
) -> None:
    prefix = f"{root / file}:{location}: error: {message_start}"

    matches = [text for text in errors(broken_registry) if text.startswith(prefix)]

    assert len(matches) == 1, f"expected one error starting with {prefix!r} in:\n" + "\n".join(
        errors(broken_registry)
    )


def test_all_errors_keep_valid_entry(broken_registry: Registry) -> None:
    fine = broken_registry.find("org/fine")

    assert [model.world_size for model in fine] == [1]
    assert fine[0].is_valid


def test_registry_error_lists_all(broken_registry: Registry) -> None:
    with pytest.raises(RegistryError) as caught:
        broken_registry.raise_for_errors()

    lines = str(caught.value).splitlines()
    assert lines[0] == "invalid model registry: 14 errors"
    assert sorted(lines[1:]) == sorted(errors(broken_registry))


def test_registry_error_sorted_by_location() -> None:
    late = Diagnostic("late", path=Path("b.yaml"), line=2)
    early = Diagnostic("early", path=Path("a.yaml"), line=9)
    first = Diagnostic("first", path=Path("b.yaml"), line=1)

    error = RegistryError([late, early, first])

    assert str(error) == (
        "invalid model registry: 3 errors\n"
        "a.yaml:9: error: early\n"
        "b.yaml:1: error: first\n"
        "b.yaml:2: error: late"
    )


def test_raise_for_errors_ignores_warnings(root: Path) -> None:
    registry = load(root, HEADER + "- name: org/a\n  yaml_extra: [world_size_1.yaml]\n")

    assert registry.errors == []
    assert registry.warnings != []
    registry.raise_for_errors()


# --- diagnostic format -------------------------------------------------------


def test_diagnostic_format_error() -> None:
    diagnostic = Diagnostic("missing 'name'", path=Path("models.yaml"), line=12)

    assert diagnostic.format() == "models.yaml:12: error: missing 'name'"


def test_diagnostic_format_warning_column() -> None:
    diagnostic = Diagnostic("unused", path=Path("configs/a.yaml"), line=3, column=5, severity="warning")

    assert diagnostic.format() == "configs/a.yaml:3:5: warning: unused"


def test_diagnostic_format_no_path() -> None:
    assert Diagnostic("no file").format() == "<registry>: error: no file"


def test_models_empty_list(root: Path) -> None:
    registry = load(root, "version: '2.0'\nmodels: []\n")

    assert errors(registry) == [f"{models_file(root)}:2: error: 'models' is empty; add at least one entry"]


def test_duplicate_key_does_not_hide_entry_errors(root: Path) -> None:
    registry = load(
        root,
        HEADER
        + "- name: org/a\n  name: org/b\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]\n"
        + "- name: org/c\n  yaml_extras: [dashboard_default.yaml]\n",
    )

    messages = sorted(errors(registry))
    assert len(messages) == 3
    assert messages[0].startswith(f"{models_file(root)}:4:3: error: duplicate key 'name' (first set on line 3)")
    assert messages[1] == f"{models_file(root)}:6: error: org/c is missing 'yaml_extra'; add yaml_extra: with the list of config files to merge"
    assert messages[2].startswith(f"{models_file(root)}:7: error: unknown key 'yaml_extras' in org/c; did you mean 'yaml_extra'?")


# --- hostile and unusual input -------------------------------------------------


def alias_bomb(levels: int) -> str:
    """Return YAML whose anchors each repeat the previous one nine times: 9**levels values."""
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


ALIAS_ERROR = (
    "error: YAML aliases expand to more than 100,000 values, because aliases inside anchored data "
    "multiply it; write the repeated data out or nest fewer aliases"
)


def test_alias_bomb_in_config(root: Path) -> None:
    start = time.monotonic()

    registry = load(
        root,
        HEADER + "- name: org/a\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml, bomb.yaml]\n",
        {"bomb.yaml": alias_bomb(7)},
    )

    assert time.monotonic() - start < 2
    assert errors(registry) == [f"{config_file(root, 'bomb.yaml')}:1:5: {ALIAS_ERROR}"]


def test_alias_bomb_in_models_yaml(root: Path) -> None:
    start = time.monotonic()

    registry = load(root, HEADER + "- name: org/a\n  yaml_extra: [world_size_1.yaml]\n" + alias_bomb(7))

    assert time.monotonic() - start < 2
    assert errors(registry) == [f"{models_file(root)}:5:5: {ALIAS_ERROR}"]


def test_aliases_and_merge_keys_in_registry(root: Path) -> None:
    registry = load(
        root,
        "version: '2.0'\n"
        "x-files: &files [dashboard_default.yaml, world_size_1.yaml]\n"
        "x-entry: &entry {yaml_extra: *files}\n"
        "models:\n"
        "- <<: *entry\n"
        "  name: org/a-1B\n"
        "- <<: *entry\n"
        "  name: org/b-1B\n",
    )

    assert registry.errors == []
    assert [model.test_id for model in registry.models] == ["org/a-1B", "org/b-1B"]
    assert [model.world_size for model in registry.models] == [1, 1]


def test_nul_character_in_models_yaml(root: Path) -> None:
    registry = load(root, HEADER + "- name: org/a\x00\n  yaml_extra: [world_size_1.yaml]\n")

    assert errors(registry) == [
        f"{models_file(root)}:3:14: error: invalid YAML: character U+0000 is not allowed in a YAML file; "
        'remove it, or write it as the escape "\\u0000" inside a double-quoted string'
    ]


def test_config_path_through_subfolder_parent(root: Path) -> None:
    registry = load(
        root,
        HEADER + "- name: org/a\n  yaml_extra: [dashboard_default.yaml, sub/../world_size_1.yaml]\n",
        {"sub/other.yaml": "{}\n"},
    )

    assert errors(registry) == []
    assert registry.models[0].world_size == 1
    assert registry.models[0].config_files[1] == root / "configs" / "world_size_1.yaml"


def test_config_path_parent_after_subfolder(root: Path) -> None:
    registry = load(root, HEADER + "- name: org/a\n  yaml_extra: [dashboard_default.yaml, sub/../../x.yaml]\n")

    assert errors(registry) == [
        f"{models_file(root)}:4: error: config path 'sub/../../x.yaml' in org/a leaves configs/; "
        f"use a file name relative to {root / 'configs'}"
    ]


def test_config_path_is_folder(root: Path) -> None:
    registry = load(
        root,
        HEADER + "- name: org/a\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml, sub]\n",
        {"sub/other.yaml": "{}\n"},
    )

    assert errors(registry) == [
        f"{models_file(root)}:4: error: config path 'sub' of org/a is a folder, not a file; name a YAML file"
    ]


def test_config_permission_denied(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # chmod 000 does not stop root, so the check of the file itself fails instead.
    write_registry(root, HEADER)
    configs = root / "configs"
    original = Path.is_file

    def is_file(path: Path) -> bool:
        if path.parent == configs:
            raise PermissionError(13, "Permission denied", str(path))
        return original(path)

    monkeypatch.setattr(Path, "is_file", is_file)

    registry = load(root, HEADER + "- name: org/a\n  yaml_extra: [world_size_1.yaml]\n")

    assert errors(registry) == [
        f"{models_file(root)}:4: error: cannot access config file 'world_size_1.yaml' of org/a: Permission denied"
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads folders whatever their mode")
def test_configs_folder_unreadable(root: Path) -> None:
    write_registry(root, HEADER)
    configs = root / "configs"
    (root / "models.yaml").write_text(HEADER + "- name: org/a\n  yaml_extra: [world_size_1.yaml]\n")
    configs.chmod(0)
    try:
        registry = load_registry(root)
    finally:
        configs.chmod(0o755)

    assert errors(registry) == [
        f"{models_file(root)}:4: error: cannot access config file 'world_size_1.yaml' of org/a: Permission denied"
    ]


def test_config_listed_twice_through_symlink(root: Path) -> None:
    write_registry(root, HEADER)
    (root / "configs" / "ws1_alias.yaml").symlink_to(root / "configs" / "world_size_1.yaml")

    registry = load(
        root, HEADER + "- name: org/a\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml, ws1_alias.yaml]\n"
    )

    assert errors(registry) == [
        f"{models_file(root)}:4: error: org/a lists 'ws1_alias.yaml' twice in yaml_extra; remove one"
    ]


def test_config_listed_twice_through_dot(root: Path) -> None:
    registry = load(
        root, HEADER + "- name: org/a\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml, ./world_size_1.yaml]\n"
    )

    assert errors(registry) == [
        f"{models_file(root)}:4: error: org/a lists './world_size_1.yaml' twice in yaml_extra; remove one"
    ]


def test_name_too_long(root: Path) -> None:
    name = "org/" + "m" * 197

    registry = load(root, HEADER + f"- name: {name}\n  yaml_extra: [world_size_1.yaml]\n")

    assert errors(registry) == [
        f"{models_file(root)}:3: error: name {name[:40]!r}... is 201 characters long; use at most 200, "
        "because file names built from it must fit the file system's limit"
    ]


def test_name_at_length_limit(root: Path) -> None:
    registry = load(root, HEADER + f"- name: org/{'m' * 196}\n  yaml_extra: [world_size_1.yaml]\n")

    assert registry.errors == []


def test_name_starts_with_dash(root: Path) -> None:
    registry = load(root, HEADER + "- name: --collect-only\n  yaml_extra: [world_size_1.yaml]\n")

    assert errors(registry) == [
        f"{models_file(root)}:3: error: name '--collect-only' starts with '-', so a command would read it "
        "as an option; start it with a letter or digit"
    ]


def test_registry_path_not_yaml(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# models\n")

    with pytest.raises(RegistryError) as caught:
        resolve_registry_path(readme)

    assert [diagnostic.format() for diagnostic in caught.value.diagnostics] == [
        f"{readme}: error: not a models.yaml file; pass a registry folder or its models.yaml"
    ]


def test_registry_models_yaml_is_folder(tmp_path: Path) -> None:
    (tmp_path / "models.yaml").mkdir()

    with pytest.raises(RegistryError) as caught:
        resolve_registry_path(tmp_path)

    assert [diagnostic.format() for diagnostic in caught.value.diagnostics] == [
        f"{tmp_path / 'models.yaml'}: error: models.yaml is a folder, not a file; it must be the registry's YAML file"
    ]


def test_registry_path_yaml_folder(tmp_path: Path) -> None:
    folder = tmp_path / "models.yaml"
    folder.mkdir()

    with pytest.raises(RegistryError) as caught:
        resolve_registry_path(folder)

    assert [diagnostic.format() for diagnostic in caught.value.diagnostics] == [
        f"{folder}: error: is a folder, not a YAML file; pass a registry folder or its models.yaml"
    ]


def test_registry_path_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def is_dir(path: Path) -> bool:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Path, "is_dir", is_dir)

    with pytest.raises(RegistryError) as caught:
        resolve_registry_path(tmp_path / "registry")

    assert [diagnostic.format() for diagnostic in caught.value.diagnostics] == [
        f"{tmp_path / 'registry'}: error: cannot access the registry: Permission denied"
    ]


def test_name_with_double_colon(root: Path) -> None:
    registry = load(root, HEADER + "- name: org::a-1b\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]\n")

    assert errors(registry) == [
        f"{models_file(root)}:3: error: name 'org::a-1b' contains '::', which pytest reads as a node id "
        "separator; use a single ':' or '/'"
    ]


def test_config_id_starting_with_dash(root: Path) -> None:
    registry = load(
        root, HEADER + "- name: org/a-1b\n  config_id: --help\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]\n"
    )

    assert errors(registry) == [
        f"{models_file(root)}:4: error: config_id '--help' of org/a-1b starts with '-', so a command would read "
        "it as an option; start it with a letter or digit"
    ]


def test_configs_folder_symlinked_outside(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "creds.yaml").write_text("api_token: secret\n")
    root = tmp_path / "registry"
    root.mkdir()
    (root / "configs").symlink_to(outside)
    (root / "models.yaml").write_text(HEADER + "- name: org/a-1b\n  yaml_extra: [creds.yaml]\n")

    registry = load_registry(root)

    assert [diagnostic.message for diagnostic in registry.errors] == [
        "config path 'creds.yaml' in org/a-1b resolves outside configs/; config files must live in the "
        "registry's configs folder"
    ]


def test_merged_values_budget(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    (root / "configs").mkdir(parents=True)
    # Each file expands to 10 x 10 x 10 x 7 = 7,000 values through aliases.
    (root / "configs" / "big.yaml").write_text(
        "a: &a [" + ",".join(["x"] * 10) + "]\n"
        "b: &b [" + ",".join(["*a"] * 10) + "]\n"
        "c: &c [" + ",".join(["*b"] * 10) + "]\n"
        "d: [" + ",".join(["*c"] * 7) + "]\n"
    )
    entries = ""
    for index in range(400):
        (root / "configs" / f"f{index}.yaml").write_text(f"k{index}: 1\n")
        entries += f"- name: org/m{index}-1b\n  yaml_extra: [big.yaml, f{index}.yaml]\n"
    (root / "models.yaml").write_text(HEADER + entries)

    registry = load_registry(root)

    assert registry.errors
    assert "hold more than 2,000,000 values" in registry.errors[0].message
    assert len([model for model in registry.models if model.merged is not None]) < 400
