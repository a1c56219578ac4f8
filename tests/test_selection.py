"""Selecting models in the plugin: shards, changed-since and strict xfail."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

WORLD_SIZES = [1, 1, 2, 4, 1, 8, 2, 1, 4, 2, 1, 1, 2, 8, 1, 4, 1, 2, 1, 1]


def write_registry(root: Path, entries: str) -> Path:
    (root / "configs").mkdir(parents=True, exist_ok=True)
    for size in (1, 2, 4, 8):
        (root / "configs" / f"world_size_{size}.yaml").write_text(f"world_size: {size}\n")
    (root / "configs" / "dashboard_default.yaml").write_text("runtime: trtllm\nmax_seq_len: 512\n")
    (root / "models.yaml").write_text("version: '2.0'\nmodels:\n" + entries)
    return root


def generated_entries() -> str:
    return "".join(
        f"- name: org/model-{index}\n  yaml_extra: [dashboard_default.yaml, world_size_{size}.yaml]\n"
        for index, size in enumerate(WORLD_SIZES)
    )


def collected_ids(result: pytest.RunResult) -> list[str]:
    return [line.split("::", 1)[1] for line in result.outlines if "::" in line]


def test_shards_cover_every_model_once(pytester: pytest.Pytester) -> None:
    write_registry(pytester.path / "reg", generated_entries())
    everything = collected_ids(pytester.runpytest("--autodeploy-registry=reg", "--co", "-q"))

    shards = [
        collected_ids(pytester.runpytest("--autodeploy-registry=reg", "--co", "-q", f"--autodeploy-shard={k}/3"))
        for k in (1, 2, 3)
    ]

    assert len(everything) == len(WORLD_SIZES)
    assert sorted(sum(shards, [])) == sorted(everything)
    assert all(shards)
    # Each shard keeps the registry's order.
    assert all(shard == [test_id for test_id in everything if test_id in shard] for shard in shards)


def test_shards_compose_with_marker(pytester: pytest.Pytester) -> None:
    write_registry(pytester.path / "reg", generated_entries())
    expected = {f"org/model-{index}" for index, size in enumerate(WORLD_SIZES) if size == 1}

    shards = [
        collected_ids(
            pytester.runpytest("--autodeploy-registry=reg", "--co", "-q", "-m", "world_size_1", f"--autodeploy-shard={k}/2")
        )
        for k in (1, 2)
    ]

    assert set(shards[0]) | set(shards[1]) == expected
    assert not set(shards[0]) & set(shards[1])


def test_shards_identical_across_processes(pytester: pytest.Pytester) -> None:
    root = write_registry(pytester.path / "reg", generated_entries())
    listings = []
    for seed in ("1", "2"):
        environment = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-m", "pytest", f"--autodeploy-registry={root}", "--co", "-q", "--autodeploy-shard=2/4", "-p", "no:cacheprovider"],
            cwd=pytester.path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
        )
        listings.append([line for line in result.stdout.splitlines() if "::" in line])

    assert listings[0] == listings[1]
    assert listings[0]


def test_shard_spec_invalid(pytester: pytest.Pytester) -> None:
    write_registry(pytester.path / "reg", generated_entries())

    result = pytester.runpytest("--autodeploy-registry=reg", "--autodeploy-shard=0/3")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*invalid --autodeploy-shard value '0/3'*"])


def git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        timeout=60,
    )


def test_changed_since_selects_affected(pytester: pytest.Pytester) -> None:
    root = write_registry(
        pytester.path / "reg",
        "- name: org/a\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml, tuned.yaml]\n"
        "- name: org/b\n  yaml_extra: [dashboard_default.yaml, world_size_2.yaml]\n"
        "- name: org/c\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml, tuned.yaml]\n",
    )
    (root / "configs" / "tuned.yaml").write_text("max_batch_size: 8\n")
    git(pytester.path, "init", "-q")
    git(pytester.path, "add", "-A")
    git(pytester.path, "commit", "-qm", "registry")
    (root / "configs" / "tuned.yaml").write_text("max_batch_size: 16\n")

    result = pytester.runpytest("--autodeploy-registry=reg", "--autodeploy-changed-since=HEAD", "-q")

    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*configs/tuned.yaml changed: 2 models*", "*2 passed, 1 deselected*"])


def test_changed_since_unknown_ref(pytester: pytest.Pytester) -> None:
    write_registry(pytester.path / "reg", generated_entries())
    git(pytester.path, "init", "-q")
    git(pytester.path, "add", "-A")
    git(pytester.path, "commit", "-qm", "registry")

    result = pytester.runpytest("--autodeploy-registry=reg", "--autodeploy-changed-since=no-such-ref")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--autodeploy-changed-since: git cannot resolve 'no-such-ref'*"])


def xfail_registry(pytester: pytest.Pytester) -> None:
    write_registry(
        pytester.path / "reg",
        '- name: org/fixed\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]\n  xfail: "crashed in the loader"\n'
        '- name: org/broken\n  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]\n  xfail: "CUDA OOM"\n',
    )
    pytester.makefile(".py", run="import sys\nsys.exit(0 if sys.argv[1] == 'org/fixed' else 3)\n")


def test_strict_xfail_passing_model_fails(pytester: pytest.Pytester) -> None:
    xfail_registry(pytester)
    command = f"{sys.executable} run.py {{model}}"

    result = pytester.runpytest(
        "--autodeploy-registry=reg",
        f"--autodeploy-command={command}",
        "--autodeploy-gpus=1",
        f"--autodeploy-lock-dir={pytester.path / 'locks'}",
        "--autodeploy-strict-xfail",
    )

    result.assert_outcomes(failed=1, xfailed=1)
    result.stdout.fnmatch_lines(["*org/fixed now passes; remove xfail*"])


def test_xfail_passing_model_xpasses(pytester: pytest.Pytester) -> None:
    xfail_registry(pytester)
    command = f"{sys.executable} run.py {{model}}"

    result = pytester.runpytest(
        "--autodeploy-registry=reg",
        f"--autodeploy-command={command}",
        "--autodeploy-gpus=1",
        f"--autodeploy-lock-dir={pytester.path / 'locks'}",
    )

    result.assert_outcomes(xpassed=1, xfailed=1)
