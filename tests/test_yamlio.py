"""Unit tests for the safe, line-tracking YAML loader."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest
import yaml

from pytest_autodeploy import yamlio
from pytest_autodeploy.yamlio import YamlLoadError, load_yaml, parse_yaml

PATH = Path("configs/example.yaml")


def parse(text: str):
    return parse_yaml(textwrap.dedent(text), PATH)


def parse_errors(text: str) -> list[str]:
    with pytest.raises(YamlLoadError) as caught:
        parse(text)
    return [diagnostic.format() for diagnostic in caught.value.diagnostics]


def test_parse_plain_data() -> None:
    document = parse(
        """\
        max_batch_size: 8
        runtime: trtllm
        cuda_graph_config:
          enable_padding: true
          batch_sizes: [1, 2, 4]
        """
    )

    assert document.data == {
        "max_batch_size": 8,
        "runtime": "trtllm",
        "cuda_graph_config": {"enable_padding": True, "batch_sizes": [1, 2, 4]},
    }
    assert document.path == PATH


def test_parse_records_key_lines() -> None:
    document = parse(
        """\
        # a comment first
        runtime: trtllm
        cuda_graph_config:
          enable_padding: true
        models:
        - name: org/a
        - name: org/b
        """
    )

    assert document.line_of(()) == 2
    assert document.line_of(("runtime",)) == 2
    assert document.line_of(("cuda_graph_config",)) == 3
    assert document.line_of(("cuda_graph_config", "enable_padding")) == 4
    assert document.line_of(("models", 0)) == 6
    assert document.line_of(("models", 1)) == 7
    assert document.line_of(("models", 1, "name")) == 7


def test_line_of_falls_back_to_parent() -> None:
    document = parse(
        """\
        first: 1
        compile:
          backend: torch
        """
    )

    assert document.line_of(("compile", "missing")) == 2
    assert document.line_of(("missing",)) == 1


def test_parse_empty_text() -> None:
    document = parse("")

    assert document.data is None
    assert document.line_of(("anything",)) is None


def test_parse_comment_only_text() -> None:
    document = parse("# nothing set here\n")

    assert document.data is None


def test_parse_empty_mapping() -> None:
    document = parse("{}\n")

    assert document.data == {}


def test_parse_keeps_yaml_1_1_scalars() -> None:
    # PyYAML implements YAML 1.1: 1e0 has no dot, so it stays a string, and
    # an unquoted 2.0 is a float. The registry checks rely on these types.
    document = parse(
        """\
        exponent: 1e0
        version: 2.0
        quoted: '4'
        flag: true
        """
    )

    assert document.data["exponent"] == "1e0"
    assert document.data["version"] == 2.0
    assert document.data["quoted"] == "4"
    assert document.data["flag"] is True


def test_duplicate_key_top_level() -> None:
    errors = parse_errors(
        """\
        max_batch_size: 8
        runtime: trtllm
        max_batch_size: 16
        """
    )

    assert errors == [
        "configs/example.yaml:3:1: error: duplicate key 'max_batch_size' (first set on line 1); "
        "YAML keeps only the last value, so remove one of them"
    ]


def test_duplicate_key_nested() -> None:
    errors = parse_errors(
        """\
        cuda_graph_config:
          enable_padding: true
          batch_sizes: [1]
          enable_padding: false
        """
    )

    assert errors == [
        "configs/example.yaml:4:3: error: duplicate key 'enable_padding' (first set on line 2); "
        "YAML keeps only the last value, so remove one of them"
    ]


def test_duplicate_keys_all_reported() -> None:
    errors = parse_errors(
        """\
        a: 1
        a: 2
        b:
          c: 1
          c: 2
        """
    )

    assert len(errors) == 2
    assert errors[0].startswith("configs/example.yaml:2:1: error: duplicate key 'a' (first set on line 1)")
    assert errors[1].startswith("configs/example.yaml:5:3: error: duplicate key 'c' (first set on line 4)")


def test_duplicate_key_in_flow_mapping() -> None:
    errors = parse_errors("settings: {a: 1, a: 2}\n")

    assert errors == [
        "configs/example.yaml:1:18: error: duplicate key 'a' (first set on line 1); "
        "YAML keeps only the last value, so remove one of them"
    ]


def test_merge_key_override_allowed() -> None:
    document = parse(
        """\
        base: &base
          runtime: trtllm
          max_batch_size: 8
        derived:
          <<: *base
          max_batch_size: 16
        """
    )

    assert document.data["derived"] == {"runtime": "trtllm", "max_batch_size": 16}
    assert document.data["base"] == {"runtime": "trtllm", "max_batch_size": 8}


def test_merge_key_node_reused_by_alias() -> None:
    # Building "other" reaches the already flattened "derived" node again; its
    # merged pairs must not count as duplicates the second time.
    document = parse(
        """\
        base: &base {x: 1, y: 1}
        derived: &derived
          <<: *base
          x: 2
        other: *derived
        """
    )

    assert document.data["derived"] == {"x": 2, "y": 1}
    assert document.data["other"] == {"x": 2, "y": 1}


def test_merge_key_explicit_duplicate() -> None:
    errors = parse_errors(
        """\
        base: &base {x: 1}
        derived:
          <<: *base
          x: 2
          x: 3
        """
    )

    assert errors == [
        "configs/example.yaml:5:3: error: duplicate key 'x' (first set on line 4); "
        "YAML keeps only the last value, so remove one of them"
    ]


def test_invalid_yaml_location() -> None:
    errors = parse_errors(
        """\
        runtime: trtllm
        cuda_graph_config:
          enable_padding: true
         batch_sizes: [1, 2]
        """
    )

    assert errors == [
        "configs/example.yaml:4:2: error: invalid YAML: did not find expected key; fix the syntax"
    ]


def test_invalid_yaml_unclosed_flow() -> None:
    errors = parse_errors("yaml_extra: [a.yaml, b.yaml\nother: 1\n")

    assert len(errors) == 1
    assert errors[0].startswith("configs/example.yaml:2:6: error: invalid YAML: ")


def test_multiple_documents_rejected() -> None:
    errors = parse_errors("a: 1\n---\nb: 2\n")

    assert errors == [
        "configs/example.yaml:2:1: error: invalid YAML: but found another document; fix the syntax"
    ]


def test_python_tag_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    config = tmp_path / "evil.yaml"
    config.write_text(f'payload: !!python/object/apply:os.system ["touch {marker}"]\n')

    with pytest.raises(YamlLoadError) as caught:
        load_yaml(config)

    assert not marker.exists()
    assert [diagnostic.format() for diagnostic in caught.value.diagnostics] == [
        f"{config}:1:10: error: YAML tag 'tag:yaml.org,2002:python/object/apply:os.system' "
        "is not allowed; use a plain list"
    ]


def test_python_name_tag_rejected() -> None:
    errors = parse_errors("call: !!python/name:os.system\n")

    assert errors == [
        "configs/example.yaml:1:7: error: YAML tag 'tag:yaml.org,2002:python/name:os.system' "
        "is not allowed; use plain YAML values"
    ]


def test_python_object_mapping_rejected() -> None:
    errors = parse_errors("thing: !!python/object:os.PathLike {a: 1}\n")

    assert errors == [
        "configs/example.yaml:1:8: error: YAML tag 'tag:yaml.org,2002:python/object:os.PathLike' "
        "is not allowed; use a plain mapping"
    ]


def test_local_tag_rejected() -> None:
    errors = parse_errors("value: !custom text\n")

    assert errors == [
        "configs/example.yaml:1:8: error: YAML tag '!custom' is not allowed; use plain YAML values"
    ]


def test_set_tag_rejected() -> None:
    errors = parse_errors("values: !!set {a, b}\n")

    assert errors == [
        "configs/example.yaml:1:9: error: YAML tag 'tag:yaml.org,2002:set' is not allowed; use a plain mapping"
    ]


def test_recursive_alias_rejected() -> None:
    # An alias shares its anchor's node, so the error points at the anchor.
    errors = parse_errors("loop: &loop [1, *loop]\n")

    assert errors == [
        "configs/example.yaml:1:7: error: recursive YAML alias; expand the anchor by hand"
    ]


def test_unhashable_key_rejected() -> None:
    errors = parse_errors("? [a, b]\n: value\n")

    assert errors == [
        "configs/example.yaml:1:3: error: a mapping key must be a scalar, not a list or mapping"
    ]


def test_load_yaml_reads_file(tmp_path: Path) -> None:
    config = tmp_path / "world_size_2.yaml"
    config.write_text("tensor_parallel_size: 2\n")

    document = load_yaml(config)

    assert document.data == {"tensor_parallel_size": 2}
    assert document.path == config
    assert document.line_of(("tensor_parallel_size",)) == 1


def test_load_yaml_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"

    with pytest.raises(YamlLoadError) as caught:
        load_yaml(missing)

    assert [diagnostic.format() for diagnostic in caught.value.diagnostics] == [
        f"{missing}: error: cannot read file: No such file or directory"
    ]


def test_load_yaml_not_utf8(tmp_path: Path) -> None:
    config = tmp_path / "latin1.yaml"
    config.write_bytes(b"runtime: trtllm\nname: caf\xe9\n")

    with pytest.raises(YamlLoadError) as caught:
        load_yaml(config)

    assert [diagnostic.format() for diagnostic in caught.value.diagnostics] == [
        f"{config}:2: error: file is not valid UTF-8 (byte 25); save it as UTF-8"
    ]


def big_document(entries: int) -> str:
    lines = ["version: '2.0'", "models:"]
    for index in range(entries):
        lines.append(f"- name: org/model-{index}")
        lines.append(f"  yaml_extra: [dashboard_default.yaml, world_size_{2 ** (index % 4)}.yaml]")
    return "\n".join(lines) + "\n"


def test_cache_reused_for_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(big_document(2000), encoding="utf-8")
    cache_dir = tmp_path / "cache"
    first = load_yaml(path, cache_dir)

    def parse_must_not_run(text: str, path: Path):
        raise AssertionError("parsed again although the cache has this file")

    monkeypatch.setattr("pytest_autodeploy.yamlio.parse_yaml", parse_must_not_run)
    second = load_yaml(path, cache_dir)

    assert second.data == first.data
    assert second.lines == first.lines
    assert second.line_of(("models", 1999, "yaml_extra")) == 4002


def test_cache_ignores_small_files(tmp_path: Path) -> None:
    path = tmp_path / "small.yaml"
    path.write_text("a: 1\n", encoding="utf-8")
    cache_dir = tmp_path / "cache"

    load_yaml(path, cache_dir)

    assert not cache_dir.exists()


def test_cache_skips_data_json_changes(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    # Integer keys would come back from JSON as strings.
    path.write_text(big_document(2000) + "extra: {1: one}\n", encoding="utf-8")
    cache_dir = tmp_path / "cache"

    document = load_yaml(path, cache_dir)

    assert document.data["extra"] == {1: "one"}
    assert list(cache_dir.glob("*.json")) == []


def test_cache_damaged_entry_parses_again(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(big_document(2000), encoding="utf-8")
    cache_dir = tmp_path / "cache"
    expected = load_yaml(path, cache_dir).data
    (entry,) = cache_dir.glob("*.json")
    entry.write_text("{not json", encoding="utf-8")

    document = load_yaml(path, cache_dir)

    assert document.data == expected


def test_cache_changed_file_not_stale(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(big_document(2000), encoding="utf-8")
    cache_dir = tmp_path / "cache"
    load_yaml(path, cache_dir)
    path.write_text(big_document(2001), encoding="utf-8")

    document = load_yaml(path, cache_dir)

    assert len(document.data["models"]) == 2001


# --- hostile input -------------------------------------------------------------


def alias_bomb(levels: int) -> str:
    """Return YAML whose anchors each repeat the previous one nine times: 9**levels values."""
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, levels):
        aliases = ", ".join([f"*l{level - 1}"] * 9)
        lines.append(f"l{level}: &l{level} [{aliases}]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_rejected() -> None:
    text = alias_bomb(7)
    start = time.monotonic()

    with pytest.raises(YamlLoadError) as caught:
        parse_yaml(text, PATH)

    assert time.monotonic() - start < 2
    assert caught.value.document is None
    assert [diagnostic.format() for diagnostic in caught.value.diagnostics] == [
        "configs/example.yaml:1:5: error: YAML aliases expand to more than 100,000 values, because "
        "aliases inside anchored data multiply it; write the repeated data out or nest fewer aliases"
    ]


def test_alias_limit_grows_with_file() -> None:
    # 1,000 aliases of a 200-item list repeat 200,000 values, which a file of
    # this size (over 200,000 characters) may do.
    items = ", ".join(["x"] * 200)
    text = f"base: &base [{items}]\ncopies:\n" + "- *base\n" * 1000 + "# padding\n" * 20_000

    document = parse_yaml(text, PATH)

    assert len(document.data["copies"]) == 1000
    assert document.data["copies"][999] == ["x"] * 200


def test_aliases_and_merge_keys_load() -> None:
    document = parse(
        """\
        defaults: &defaults
          runtime: trtllm
          sizes: &sizes [1, 2, 4]
        one:
          <<: *defaults
          world_size: 1
        two:
          <<: *defaults
          sizes: *sizes
          world_size: 2
        """
    )

    assert document.data["one"] == {"runtime": "trtllm", "sizes": [1, 2, 4], "world_size": 1}
    assert document.data["two"] == {"runtime": "trtllm", "sizes": [1, 2, 4], "world_size": 2}
    assert document.line_of(("two", "sizes")) == 9
    assert document.line_of(("one", "runtime")) == 2


def test_merge_list_earlier_mapping_wins() -> None:
    document = parse(
        """\
        first: &first {runtime: trtllm, seq_len: 1}
        second: &second {runtime: demollm, batch: 2}
        merged:
          <<: [*first, *second]
        """
    )

    assert document.data["merged"] == {"runtime": "trtllm", "seq_len": 1, "batch": 2}
    assert document.line_of(("merged", "runtime")) == 1
    assert document.line_of(("merged", "batch")) == 2


def test_merge_of_scalar_rejected() -> None:
    errors = parse_errors("merged:\n  <<: 3\n")

    assert errors == [
        "configs/example.yaml:2:7: error: invalid YAML merge key: expected a mapping or list of "
        "mappings for merging, but found scalar"
    ]


def test_recursive_merge_rejected() -> None:
    errors = parse_errors("loop: &loop {<<: *loop}\n")

    assert errors == ["configs/example.yaml:1:7: error: recursive YAML alias; expand the anchor by hand"]


@pytest.mark.parametrize("loader", ["C", "Python"])
@pytest.mark.parametrize(
    ("text", "location", "code"),
    [
        pytest.param("a: 1\nb: x\x00y\n", "2:5", "0000", id="nul"),
        # The C reader counts bytes, so a non-ASCII character before must not shift the column.
        pytest.param("é: 1\nbé: 'é\x07'\n", "2:7", "0007", id="bell-after-non-ascii"),
        pytest.param("a: \ufffe\n", "1:4", "FFFE", id="noncharacter"),
    ],
)
def test_disallowed_character_location(
    text: str, location: str, code: str, loader: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if loader == "Python":
        monkeypatch.setattr(yamlio, "SafeLoader", yaml.SafeLoader)

    errors = parse_errors(text)

    # No second line such as 'in "<unicode string>", position 9' from PyYAML.
    assert errors == [
        f"configs/example.yaml:{location}: error: invalid YAML: character U+{code} is not allowed "
        f'in a YAML file; remove it, or write it as the escape "\\u{code}" inside a double-quoted string'
    ]


def test_deep_nesting_rejected() -> None:
    errors = parse_errors("a: " + "[" * 500 + "]" * 500 + "\n")

    assert errors == ["configs/example.yaml:1:103: error: YAML nesting is deeper than 100 levels; flatten the data"]
