"""Tests of the changed-since selection against real temporary git repositories."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pytest_autodeploy.changed import (
    ChangedSinceError,
    ChangeReport,
    changed_key_paths,
    select_changed,
)
from pytest_autodeploy.registry import load_registry

MODELS = """\
version: '2.0'
description: test registry
models:
- name: org/alpha
  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]
- name: org/beta
  yaml_extra: [dashboard_default.yaml, world_size_2.yaml, tuned.yaml]
- name: org/gamma
  yaml_extra: [dashboard_default.yaml, world_size_2.yaml, tuned.yaml]
"""

CONFIGS = {
    "dashboard_default.yaml": "# Baseline.\nruntime: trtllm\nmax_batch_size: 8\n",
    "world_size_1.yaml": "world_size: 1\n",
    "world_size_2.yaml": "world_size: 2\n",
    "world_size_4.yaml": "world_size: 4\n",
    "tuned.yaml": "max_batch_size: 16\nkv_cache:\n  fraction: 0.8\n",
    "unused.yaml": "runtime: demollm\n",
}


@pytest.fixture(autouse=True)
def isolated_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The user's git config (hooks, signing, templates) must not change the results,
    # and git must not find a repository above tmp_path.
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=Test", "-c", "user.email=test@example.com", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout.strip()


def write_registry(root: Path, models: str = MODELS, configs: dict[str, str] = CONFIGS) -> None:
    (root / "configs").mkdir(parents=True, exist_ok=True)
    (root / "models.yaml").write_text(models)
    for name, text in configs.items():
        (root / "configs" / name).write_text(text)


def commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "--no-verify", "-m", message)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository whose first commit, tagged 'base', contains the test registry."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    write_registry(root)
    commit_all(root, "base")
    git(root, "tag", "base")
    return root


def compare(root: Path, registry_folder: Path | None = None, ref: str = "base") -> ChangeReport:
    """Commit the edits as a second commit and compare the registry with ``ref``."""
    commit_all(root, "change")
    return select_changed(load_registry(registry_folder or root), ref)


def edit(root: Path, name: str, old: str, new: str) -> None:
    path = root / name
    text = path.read_text()
    assert old in text, f"test setup: {old!r} not in {name}"
    path.write_text(text.replace(old, new))


# --- one test per kind of change ------------------------------------------------


def test_config_value_selects_users(repo: Path) -> None:
    edit(repo, "configs/tuned.yaml", "max_batch_size: 16", "max_batch_size: 32")

    report = compare(repo)

    assert report.selected_test_ids == ["org/beta", "org/gamma"]
    assert report.reasons["org/beta"] == [
        "merged config changed (keys: max_batch_size)",
        "changed files: configs/tuned.yaml",
    ]
    assert report.file_changes == ["configs/tuned.yaml changed: 2 models (org/beta, org/gamma)"]
    assert report.removed == []


def test_nested_key_named_by_path(repo: Path) -> None:
    edit(repo, "configs/tuned.yaml", "fraction: 0.8", "fraction: 0.9")

    report = compare(repo)

    assert report.reasons["org/gamma"][0] == "merged config changed (keys: kv_cache.fraction)"


def test_world_size_swap_selected(repo: Path) -> None:
    edit(
        repo,
        "models.yaml",
        "- name: org/gamma\n  yaml_extra: [dashboard_default.yaml, world_size_2.yaml,",
        "- name: org/gamma\n  yaml_extra: [dashboard_default.yaml, world_size_4.yaml,",
    )

    report = compare(repo)

    assert report.selected_test_ids == ["org/gamma"]
    assert report.reasons["org/gamma"] == [
        "yaml_extra changed",
        "world size 2 -> 4",
        "merged config changed (keys: world_size)",
    ]
    assert report.file_changes == ["models.yaml changed: 0 new, 0 removed, 1 edited entries"]


def test_new_entry_selected(repo: Path) -> None:
    with (repo / "models.yaml").open("a") as file:
        file.write("- name: org/delta\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]\n")

    report = compare(repo)

    assert report.selected_test_ids == ["org/delta"]
    assert report.reasons == {"org/delta": ["new entry"]}
    assert report.file_changes == ["models.yaml changed: 1 new, 0 removed, 0 edited entries"]


def test_new_config_id_is_new_entry(repo: Path) -> None:
    with (repo / "models.yaml").open("a") as file:
        file.write("- name: org/beta\n  config_id: long\n  yaml_extra: [dashboard_default.yaml, world_size_2.yaml]\n")

    report = compare(repo)

    assert report.selected_test_ids == ["org/beta[long]"]


def test_removed_entry_reported(repo: Path) -> None:
    edit(repo, "models.yaml", "- name: org/alpha\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]\n", "")

    report = compare(repo)

    assert report.selected_test_ids == []
    assert report.removed == ["org/alpha"]
    assert "  removed org/alpha: no longer in the registry, not run" in report.lines()


def test_unused_config_reported(repo: Path) -> None:
    edit(repo, "configs/unused.yaml", "demollm", "trtllm")

    report = compare(repo)

    assert report.selected_test_ids == []
    assert report.file_changes == ["configs/unused.yaml changed: no model uses it"]


def test_added_and_removed_config_files(repo: Path) -> None:
    (repo / "configs" / "unused.yaml").unlink()
    (repo / "configs" / "extra.yaml").write_text("runtime: demollm\n")

    report = compare(repo)

    assert report.file_changes == [
        "configs/extra.yaml added: no model uses it",
        "configs/unused.yaml removed: no model uses it",
    ]


def test_comment_edit_selects_nothing(repo: Path) -> None:
    edit(repo, "configs/dashboard_default.yaml", "# Baseline.", "# Baseline settings for every entry.")

    report = compare(repo)

    assert report.selected_test_ids == []
    assert report.file_changes == [
        "configs/dashboard_default.yaml changed: used by 3 models, "
        "but none of their merged configs or world sizes changed"
    ]


def test_reordered_models_select_nothing(repo: Path) -> None:
    header, _, entries = MODELS.partition("models:\n")
    alpha, beta, gamma = ("- name:" + part for part in entries.split("- name:")[1:])
    (repo / "models.yaml").write_text(f"{header}models:\n{gamma}{alpha}{beta}")

    report = compare(repo)

    assert report.selected_test_ids == []
    assert report.notes == []
    assert report.file_changes == ["models.yaml changed: 0 new, 0 removed, 0 edited entries"]


def test_same_merge_result_only_noted(repo: Path) -> None:
    # world_size_2.yaml and tuned.yaml share no key, so their order does not matter.
    edit(
        repo,
        "models.yaml",
        "- name: org/beta\n  yaml_extra: [dashboard_default.yaml, world_size_2.yaml, tuned.yaml]",
        "- name: org/beta\n  yaml_extra: [dashboard_default.yaml, tuned.yaml, world_size_2.yaml]",
    )

    report = compare(repo)

    assert report.selected_test_ids == []
    assert report.notes == [
        "not selected org/beta: yaml_extra changed in models.yaml, but its merged config and world size did not"
    ]


def test_registry_in_subfolder(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    registry = repo / "examples" / "model registry"
    registry.mkdir(parents=True)
    git(repo, "init", "-q")
    write_registry(registry)
    (repo / "configs").mkdir()
    (repo / "configs" / "tuned.yaml").write_text("outside: the registry\n")
    commit_all(repo, "base")
    git(repo, "tag", "base")
    edit(registry, "configs/tuned.yaml", "max_batch_size: 16", "max_batch_size: 32")
    (repo / "configs" / "tuned.yaml").write_text("outside: changed\n")

    report = compare(repo, registry)

    assert report.selected_test_ids == ["org/beta", "org/gamma"]
    assert report.file_changes == ["configs/tuned.yaml changed: 2 models (org/beta, org/gamma)"]


def test_uncommitted_edit_against_head(repo: Path) -> None:
    edit(repo, "configs/tuned.yaml", "max_batch_size: 16", "max_batch_size: 32")

    report = select_changed(load_registry(repo), "HEAD")

    assert report.selected_test_ids == ["org/beta", "org/gamma"]


def test_registry_absent_at_ref(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "README.md").write_text("no registry yet\n")
    commit_all(repo, "base")
    git(repo, "tag", "base")
    write_registry(repo)

    report = compare(repo)

    assert report.selected_test_ids == ["org/alpha", "org/beta", "org/gamma"]
    assert report.reasons["org/alpha"] == ["new entry"]
    assert report.registry_at_ref is False
    assert report.file_changes == []
    assert "  the registry did not exist at base, so every entry is new" in report.lines()


def test_errors_at_ref_still_compared(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    broken = MODELS.replace("world_size_2.yaml, tuned.yaml]\n- name: org/gamma", "world_size_2.yaml, missing.yaml]\n- name: org/gamma")
    broken += "- name: org/delta\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]\n  color: red\n"
    write_registry(repo, models=broken)
    commit_all(repo, "base")
    git(repo, "tag", "base")
    write_registry(repo, models=MODELS + "- name: org/delta\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]\n")

    report = compare(repo)

    assert report.selected_test_ids == ["org/beta", "org/delta"]
    assert report.reasons["org/beta"] == ["merged config was invalid at base"]
    assert report.reasons["org/delta"] == ["entry was invalid at base"]
    assert report.errors_at_ref == [
        "models.yaml:12: error: unknown key 'color' in org/delta (allowed keys: name, yaml_extra, config_id, xfail, skip)",
        "models.yaml:7: error: config file 'missing.yaml' of org/beta not found in configs",
    ]
    assert "  the registry at base has 2 errors; compared only the entries that loaded:" in report.lines()


def test_unparsable_models_at_ref(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    write_registry(repo, models=MODELS + "  - : [\n")
    commit_all(repo, "base")
    git(repo, "tag", "base")
    write_registry(repo)

    report = compare(repo)

    assert report.selected_test_ids == ["org/alpha", "org/beta", "org/gamma"]
    assert report.errors_at_ref == ["models.yaml:10:3: error: invalid YAML: did not find expected key; fix the syntax"]
    assert report.reasons["org/alpha"] == ["new entry, or not comparable because models.yaml did not load at base"]


def test_symlinked_config_at_ref(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    write_registry(repo, models=MODELS.replace("world_size_2.yaml, tuned.yaml]\n- name: org/gamma", "world_size_2.yaml, alias.yaml]\n- name: org/gamma"))
    (repo / "configs" / "alias.yaml").symlink_to("tuned.yaml")
    commit_all(repo, "base")
    git(repo, "tag", "base")

    report = compare(repo)

    assert report.errors_at_ref == []
    assert report.selected_test_ids == []


def test_report_lines(repo: Path) -> None:
    edit(repo, "configs/tuned.yaml", "max_batch_size: 16", "max_batch_size: 32")
    edit(repo, "models.yaml", "- name: org/alpha\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]\n", "")

    report = compare(repo)
    commit = git(repo, "rev-parse", "base")

    assert report.lines() == [
        f"changed since base ({commit[:12]}): 2 of 2 entries selected",
        "  models.yaml changed: 0 new, 1 removed, 0 edited entries",
        "  configs/tuned.yaml changed: 2 models (org/beta, org/gamma)",
        "  selected org/beta: merged config changed (keys: max_batch_size); changed files: configs/tuned.yaml",
        "  selected org/gamma: merged config changed (keys: max_batch_size); changed files: configs/tuned.yaml",
        "  removed org/alpha: no longer in the registry, not run",
    ]


# --- errors -----------------------------------------------------------------------


def test_unknown_ref_raises(repo: Path) -> None:
    registry = load_registry(repo)

    with pytest.raises(ChangedSinceError) as raised:
        select_changed(registry, "origin/nope")

    message = str(raised.value)
    assert message.startswith("git cannot resolve 'origin/nope'; fetch it first, e.g. git fetch origin main (git: ")
    assert "fatal:" in message


def test_option_like_ref_rejected(repo: Path) -> None:
    with pytest.raises(ChangedSinceError, match=r"^invalid git revision '--output=x'; pass a branch"):
        select_changed(load_registry(repo), "--output=x")


def test_not_a_git_repository(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    write_registry(root)

    with pytest.raises(ChangedSinceError) as raised:
        select_changed(load_registry(root), "main")

    message = str(raised.value)
    assert message.startswith(f"the registry folder {root} is not inside a git work tree")
    assert "not a git repository" in message


def test_git_missing(repo: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    registry = load_registry(repo)
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))

    with pytest.raises(ChangedSinceError, match=r"^git is not installed or not on PATH; install git"):
        select_changed(registry, "base")


# --- value comparison ---------------------------------------------------------------


def test_key_paths_distinguish_types() -> None:
    assert changed_key_paths({"a": 1, "b": {"c": 1.0}}, {"a": True, "b": {"c": 1}}) == [("a",), ("b", "c")]


def test_key_paths_added_and_removed() -> None:
    assert changed_key_paths({"a": {"x": 1}, "b": 2}, {"a": {"y": 1}, "b": 2}) == [("a", "x"), ("a", "y")]


def test_key_paths_equal_lists() -> None:
    assert changed_key_paths({"a": [1, {"b": 2}]}, {"a": [1, {"b": 2}]}) == []
