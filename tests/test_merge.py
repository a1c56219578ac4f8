"""Golden tests for the deep merge of config files and its provenance."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path

import pytest

from pytest_autodeploy.merge import (
    MergeConflictError,
    Origin,
    format_key_path,
    merge_documents,
)
from pytest_autodeploy.registry import load_registry
from pytest_autodeploy.yamlio import YamlDocument, parse_yaml

DEFAULT = Path("configs/dashboard_default.yaml")
WORLD_SIZE = Path("configs/world_size_2.yaml")
MODEL = Path("configs/model.yaml")


def document(path: Path, text: str) -> YamlDocument:
    return parse_yaml(textwrap.dedent(text), path)


def three_documents() -> list[YamlDocument]:
    return [
        document(
            DEFAULT,
            """\
            runtime: trtllm
            benchmark_enabled: true
            max_batch_size: 8
            cuda_graph_config:
              enable_padding: true
              batch_sizes: [1, 2, 4, 8]
            kv_cache_config:
              free_gpu_memory_fraction: 0.8
              dtype: auto
            """,
        ),
        document(
            WORLD_SIZE,
            """\
            world_size: 2
            """,
        ),
        document(
            MODEL,
            """\
            benchmark_enabled: false
            tokenizer: meta-llama/Llama-2-7b-hf
            cuda_graph_config:
              batch_sizes: [16]
            kv_cache_config:
              free_gpu_memory_fraction: 0.9
            """,
        ),
    ]


def test_merge_golden() -> None:
    merged = merge_documents(three_documents())

    assert merged.data == {
        "runtime": "trtllm",
        "benchmark_enabled": False,
        "max_batch_size": 8,
        "cuda_graph_config": {"enable_padding": True, "batch_sizes": [16]},
        "kv_cache_config": {"free_gpu_memory_fraction": 0.9, "dtype": "auto"},
        "world_size": 2,
        "tokenizer": "meta-llama/Llama-2-7b-hf",
    }


def test_merge_keeps_first_file_key_order() -> None:
    merged = merge_documents(three_documents())

    assert list(merged.data) == [
        "runtime",
        "benchmark_enabled",
        "max_batch_size",
        "cuda_graph_config",
        "kv_cache_config",
        "world_size",
        "tokenizer",
    ]


def test_merge_mappings_recursive() -> None:
    merged = merge_documents(
        [
            document(DEFAULT, "a:\n  b:\n    c: 1\n    d: 2\n"),
            document(MODEL, "a:\n  b:\n    d: 3\n    e: 4\n  f: 5\n"),
        ]
    )

    assert merged.data == {"a": {"b": {"c": 1, "d": 3, "e": 4}, "f": 5}}


def test_merge_list_replaced() -> None:
    merged = merge_documents(
        [
            document(DEFAULT, "batch_sizes: [1, 2, 4]\n"),
            document(MODEL, "batch_sizes: [8]\n"),
        ]
    )

    assert merged.data == {"batch_sizes": [8]}


def test_merge_empty_list_replaces() -> None:
    merged = merge_documents(
        [
            document(DEFAULT, "batch_sizes: [1, 2, 4]\n"),
            document(MODEL, "batch_sizes: []\n"),
        ]
    )

    assert merged.data == {"batch_sizes": []}


def test_merge_scalar_replaced() -> None:
    merged = merge_documents(
        [
            document(DEFAULT, "runtime: trtllm\n"),
            document(MODEL, "runtime: demollm\n"),
        ]
    )

    assert merged.data == {"runtime": "demollm"}


def test_merge_list_and_scalar_replace() -> None:
    # Lists and scalars are both plain values, so one replaces the other.
    merged = merge_documents(
        [
            document(DEFAULT, "a: [1, 2]\nb: 3\n"),
            document(MODEL, "a: none\nb: [4]\n"),
        ]
    )

    assert merged.data == {"a": "none", "b": [4]}


def test_merge_empty_mapping_sets_nothing() -> None:
    merged = merge_documents(
        [
            document(DEFAULT, "runtime: trtllm\n"),
            document(MODEL, "{}\n"),
        ]
    )

    assert merged.data == {"runtime": "trtllm"}


def test_merge_no_documents() -> None:
    merged = merge_documents([])

    assert merged.data == {}
    assert merged.origins == {}


def test_merge_inputs_not_mutated() -> None:
    documents = three_documents()
    before = copy.deepcopy([doc.data for doc in documents])

    merge_documents(documents)

    assert [doc.data for doc in documents] == before


def test_merge_result_not_aliased() -> None:
    documents = three_documents()
    before = copy.deepcopy([doc.data for doc in documents])
    merged = merge_documents(documents)

    merged.data["cuda_graph_config"]["batch_sizes"].append(32)
    merged.data["kv_cache_config"]["dtype"] = "fp8"

    assert [doc.data for doc in documents] == before


def test_origin_of_winning_value() -> None:
    merged = merge_documents(three_documents())

    assert merged.origin(("benchmark_enabled",)) == Origin(MODEL, 1)
    assert merged.origin(("kv_cache_config", "free_gpu_memory_fraction")) == Origin(MODEL, 6)
    assert merged.origin(("kv_cache_config", "dtype")) == Origin(DEFAULT, 9)
    assert merged.origin(("world_size",)) == Origin(WORLD_SIZE, 1)


def test_overridden_lists_earlier_files() -> None:
    merged = merge_documents(three_documents())

    assert merged.overridden(("benchmark_enabled",)) == [Origin(DEFAULT, 2)]
    assert merged.overridden(("cuda_graph_config", "batch_sizes")) == [Origin(DEFAULT, 6)]
    assert merged.overridden(("runtime",)) == []


def test_origin_three_files() -> None:
    merged = merge_documents(
        [
            document(DEFAULT, "a:\n  b: 1\n"),
            document(WORLD_SIZE, "x: 0\na:\n  b: 2\n"),
            document(MODEL, "\n\na:\n  b: 3\n"),
        ]
    )

    assert merged.origin(("a", "b")) == Origin(MODEL, 4)
    assert merged.overridden(("a", "b")) == [Origin(DEFAULT, 2), Origin(WORLD_SIZE, 3)]


def test_origin_unknown_key() -> None:
    merged = merge_documents(three_documents())

    assert merged.origin(("no_such_key",)) is None
    assert merged.overridden(("no_such_key",)) == []


def test_origin_format() -> None:
    assert Origin(MODEL, 3).format() == "configs/model.yaml:3"
    assert Origin(MODEL, None).format() == "configs/model.yaml"


def test_format_key_path() -> None:
    assert format_key_path(("a", "b", "c")) == "a.b.c"
    assert format_key_path(()) == "<top level>"


def conflict_messages(*documents: YamlDocument) -> list[str]:
    with pytest.raises(MergeConflictError) as caught:
        merge_documents(list(documents))
    return [diagnostic.format() for diagnostic in caught.value.diagnostics]


def test_conflict_mapping_then_scalar() -> None:
    messages = conflict_messages(
        document(DEFAULT, "runtime: trtllm\ncuda_graph_config:\n  enable_padding: true\n"),
        document(MODEL, "cuda_graph_config: null\n"),
    )

    assert messages == [
        "configs/model.yaml:1: error: merge conflict at 'cuda_graph_config': "
        "configs/dashboard_default.yaml:2 sets a mapping but configs/model.yaml:1 sets "
        "the value None; use the same kind of value in both files"
    ]


def test_conflict_scalar_then_mapping() -> None:
    messages = conflict_messages(
        document(DEFAULT, "compile_backend: torch\n"),
        document(MODEL, "\ncompile_backend:\n  name: torch-cudagraph\n"),
    )

    assert messages == [
        "configs/model.yaml:2: error: merge conflict at 'compile_backend': "
        "configs/dashboard_default.yaml:1 sets the value 'torch' but configs/model.yaml:2 sets "
        "a mapping; use the same kind of value in both files"
    ]


def test_conflict_nested_dotted_path() -> None:
    messages = conflict_messages(
        document(DEFAULT, "a:\n  b:\n    c: [1, 2]\n"),
        document(WORLD_SIZE, "world_size: 2\n"),
        document(MODEL, "a:\n  b:\n    c:\n      d: 1\n"),
    )

    assert messages == [
        "configs/model.yaml:3: error: merge conflict at 'a.b.c': "
        "configs/dashboard_default.yaml:3 sets a list but configs/model.yaml:3 sets "
        "a mapping; use the same kind of value in both files"
    ]


def test_conflicts_all_reported() -> None:
    messages = conflict_messages(
        document(DEFAULT, "a: {x: 1}\nb: 2\n"),
        document(MODEL, "a: 1\nb: {y: 2}\n"),
    )

    assert len(messages) == 2
    assert messages[0].startswith("configs/model.yaml:1: error: merge conflict at 'a': ")
    assert messages[1].startswith("configs/model.yaml:2: error: merge conflict at 'b': ")


def write_registry(root: Path, models: str, configs: dict[str, str]) -> Path:
    (root / "configs").mkdir(parents=True)
    (root / "models.yaml").write_text(textwrap.dedent(models))
    for name, text in configs.items():
        (root / "configs" / name).write_text(textwrap.dedent(text))
    return root


CONFIGS = {
    "dashboard_default.yaml": "runtime: trtllm\ncuda_graph_config:\n  batch_sizes: [1, 2]\n  enable_padding: true\n",
    "world_size_1.yaml": "world_size: 1\n",
    "world_size_2.yaml": "world_size: 2\n",
    "small.yaml": "cuda_graph_config:\n  batch_sizes: [4]\nmax_seq_len: 512\n",
    "large.yaml": "cuda_graph_config:\n  enable_padding: false\nruntime: demollm\n",
}

ENTRIES = [
    "- {name: org/a, config_id: small, yaml_extra: [dashboard_default.yaml, world_size_1.yaml, small.yaml]}\n",
    "- {name: org/a, config_id: large, yaml_extra: [dashboard_default.yaml, world_size_2.yaml, large.yaml]}\n",
    "- {name: org/b, yaml_extra: [dashboard_default.yaml, world_size_2.yaml, small.yaml, large.yaml]}\n",
    "- {name: org/c, yaml_extra: [dashboard_default.yaml, world_size_1.yaml, large.yaml, small.yaml]}\n",
]

EXPECTED_CONFIGS = {
    "org/a[small]": {
        "runtime": "trtllm",
        "cuda_graph_config": {"batch_sizes": [4], "enable_padding": True},
        "world_size": 1,
        "max_seq_len": 512,
    },
    "org/a[large]": {
        "runtime": "demollm",
        "cuda_graph_config": {"batch_sizes": [1, 2], "enable_padding": False},
        "world_size": 2,
    },
    "org/b": {
        "runtime": "demollm",
        "cuda_graph_config": {"batch_sizes": [4], "enable_padding": False},
        "world_size": 2,
        "max_seq_len": 512,
    },
    "org/c": {
        "runtime": "demollm",
        "cuda_graph_config": {"batch_sizes": [4], "enable_padding": False},
        "world_size": 1,
        "max_seq_len": 512,
    },
}


def test_merge_independent_of_entry_order(tmp_path: Path) -> None:
    header = "version: '2.0'\nmodels:\n"
    forward = write_registry(tmp_path / "forward", header + "".join(ENTRIES), CONFIGS)
    backward = write_registry(tmp_path / "backward", header + "".join(reversed(ENTRIES)), CONFIGS)

    forward_configs = {model.test_id: model.config for model in load_registry(forward).models}
    backward_configs = {model.test_id: model.config for model in load_registry(backward).models}

    assert forward_configs == EXPECTED_CONFIGS
    assert backward_configs == EXPECTED_CONFIGS


def test_merge_leaves_parsed_files_unchanged(tmp_path: Path) -> None:
    root = write_registry(tmp_path, "version: '2.0'\nmodels:\n" + "".join(ENTRIES), CONFIGS)

    registry = load_registry(root)

    documents = {path.name: document.data for path, document in registry.config_documents.items()}
    assert documents["dashboard_default.yaml"] == {
        "runtime": "trtllm",
        "cuda_graph_config": {"batch_sizes": [1, 2], "enable_padding": True},
    }
    assert documents["small.yaml"] == {"cuda_graph_config": {"batch_sizes": [4]}, "max_seq_len": 512}
    assert documents["large.yaml"] == {"cuda_graph_config": {"enable_padding": False}, "runtime": "demollm"}
