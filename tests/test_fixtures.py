"""The lock folder check and the autodeploy_model / autodeploy_gpus fixtures."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_autodeploy.leases import LeaseManager
from pytest_autodeploy.writable import check_lock_dir

MODELS = """\
version: '2.0'
models:
- name: org/one
  yaml_extra: [world_size_1.yaml]
- name: org/big
  yaml_extra: [world_size_8.yaml]
- name: org/huge
  yaml_extra: [world_size_8.yaml]
"""

IS_ROOT = os.geteuid() == 0


@pytest.fixture
def registry(pytester: pytest.Pytester) -> Path:
    folder = pytester.path / "reg"
    (folder / "configs").mkdir(parents=True)
    for size in (1, 8):
        (folder / "configs" / f"world_size_{size}.yaml").write_text(f"world_size: {size}\n")
    (folder / "models.yaml").write_text(MODELS)
    return folder


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def run_user_tests(pytester: pytest.Pytester, registry: Path, lock_dir: Path, *args: str) -> pytest.RunResult:
    return pytester.runpytest(
        f"--autodeploy-registry={registry}",
        "test_user.py",
        "--autodeploy-gpus=1",
        f"--autodeploy-lock-dir={lock_dir}",
        *args,
    )


# --- check_lock_dir ------------------------------------------------------------


def test_missing_lock_dir_not_created(tmp_path: Path) -> None:
    lock_dir = tmp_path / "a" / "locks"

    check_lock_dir(lock_dir, "--autodeploy-lock-dir")

    assert not lock_dir.exists()
    assert not lock_dir.parent.exists()


def test_checked_lock_dir_shared(tmp_path: Path, umask_022: None) -> None:
    lock_dir = tmp_path / "locks"

    check_lock_dir(lock_dir, "--autodeploy-lock-dir")
    LeaseManager(lock_dir, ["0"]).acquire(1, owner="test", timeout=1).release()

    assert stat.S_IMODE(lock_dir.stat().st_mode) == 0o777


def test_existing_lock_dir_accepted(tmp_path: Path) -> None:
    check_lock_dir(tmp_path, "--autodeploy-lock-dir")

    assert tmp_path.is_dir()


def test_lock_dir_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "locks"
    path.write_text("x")

    with pytest.raises(pytest.UsageError) as excinfo:
        check_lock_dir(path, "--autodeploy-lock-dir")

    assert str(excinfo.value) == f"--autodeploy-lock-dir: '{path}' is not a folder; give a folder for the GPU lock files"


def test_lock_dir_under_file_rejected(tmp_path: Path) -> None:
    parent = tmp_path / "file"
    parent.write_text("x")
    path = parent / "sub" / "locks"

    with pytest.raises(pytest.UsageError) as excinfo:
        check_lock_dir(path, "--autodeploy-lock-dir")

    assert str(excinfo.value) == (
        f"--autodeploy-lock-dir: cannot create lock folder '{path}': '{parent}' is not a folder"
    )


def test_broken_symlink_lock_dir_rejected(tmp_path: Path) -> None:
    path = tmp_path / "locks"
    path.symlink_to(tmp_path / "missing")

    with pytest.raises(pytest.UsageError) as excinfo:
        check_lock_dir(path, "--autodeploy-lock-dir")

    assert str(excinfo.value) == (
        f"--autodeploy-lock-dir: '{path}' is a broken symbolic link; remove it or choose another lock folder"
    )


@pytest.mark.skipif(IS_ROOT, reason="root may write to any folder")
def test_unwritable_lock_dir_rejected(tmp_path: Path) -> None:
    path = tmp_path / "locks"
    path.mkdir(mode=0o555)

    with pytest.raises(pytest.UsageError) as excinfo:
        check_lock_dir(path, "--autodeploy-lock-dir")

    assert str(excinfo.value) == (
        f"--autodeploy-lock-dir: lock folder '{path}' is not writable; choose another with --autodeploy-lock-dir"
    )


@pytest.mark.skipif(IS_ROOT, reason="root may write to any folder")
def test_unwritable_parent_rejected(tmp_path: Path) -> None:
    parent = tmp_path / "read-only"
    parent.mkdir(mode=0o555)
    path = parent / "locks"

    with pytest.raises(pytest.UsageError) as excinfo:
        check_lock_dir(path, "--autodeploy-lock-dir")

    assert str(excinfo.value) == (
        f"--autodeploy-lock-dir: cannot create lock folder '{path}': folder '{parent}' is not writable; "
        "choose another with --autodeploy-lock-dir"
    )


# --- autodeploy_model and autodeploy_gpus ----------------------------------------


def test_lock_dir_file_fails_cleanly(pytester: pytest.Pytester, registry: Path) -> None:
    not_a_folder = pytester.path / "locks.txt"
    not_a_folder.write_text("x")
    pytester.makepyfile(test_user="def test_model(autodeploy_gpus):\n    pass\n")

    result = run_user_tests(pytester, registry, not_a_folder, "-k", "org/one")

    output = result.stdout.str()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*--autodeploy-lock-dir: '{not_a_folder}' is not a folder; give a folder*"])
    assert "NotADirectoryError" not in output
    assert "Traceback" not in output


def test_symlinked_lock_file_fails_cleanly(pytester: pytest.Pytester, registry: Path) -> None:
    lock_dir = pytester.path / "locks"
    lock_dir.mkdir()
    (lock_dir / "gpu-0.lock").symlink_to(pytester.path / "victim")
    pytester.makepyfile(test_user="def test_model(autodeploy_gpus):\n    pass\n")

    result = run_user_tests(pytester, registry, lock_dir, "-k", "org/one")

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [f"*org/one: cannot lease 1 GPUs in lock folder '{lock_dir}': lock file {lock_dir / 'gpu-0.lock'} "
         "is a symbolic link; remove it"]
    )
    assert "Traceback" not in result.stdout.str()
    assert not (pytester.path / "victim").exists()


def test_lease_timeout_reported_once(pytester: pytest.Pytester, registry: Path) -> None:
    lock_dir = pytester.path / "locks"
    pytester.makepyfile(test_user="def test_model(autodeploy_gpus):\n    pass\n")
    holder = LeaseManager(lock_dir, ["0"]).acquire(1, owner="another session", timeout=1)

    try:
        result = run_user_tests(pytester, registry, lock_dir, "-k", "org/one", "--autodeploy-lease-timeout=0.1", "-rN")
    finally:
        holder.release()

    output = result.stdout.str()
    result.assert_outcomes(errors=1)
    assert "During handling of the above exception" not in output
    assert output.count("timed out after 0.1 s waiting for 1 of the GPUs") == 1


def test_skip_reasons_name_models(pytester: pytest.Pytester, registry: Path) -> None:
    pytester.makepyfile(test_user="def test_model(autodeploy_gpus):\n    pass\n")

    result = run_user_tests(pytester, registry, pytester.path / "locks", "-rs")

    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines(
        [
            "SKIPPED [[]1[]] test_user.py:*: org/big: needs 8 GPUs, this node has 1",
            "SKIPPED [[]1[]] test_user.py:*: org/huge: needs 8 GPUs, this node has 1",
        ]
    )


def test_strict_failure_names_model(pytester: pytest.Pytester, registry: Path) -> None:
    pytester.makepyfile(test_user="def test_model(autodeploy_gpus):\n    pass\n")

    result = run_user_tests(pytester, registry, pytester.path / "locks", "-k", "org/big", "--autodeploy-strict-gpus")

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*org/big: needs 8 GPUs, this node has 1 (--autodeploy-strict-gpus)"])


def test_properties_match_builtin_items(pytester: pytest.Pytester, registry: Path) -> None:
    out = pytester.path / "properties.json"
    pytester.makepyfile(
        test_user=f"""
        import json

        def test_model(autodeploy_gpus, request):
            with open({str(out)!r}, "w") as handle:
                json.dump(request.node.user_properties, handle)
        """
    )

    result = run_user_tests(pytester, registry, pytester.path / "locks", "-k", "org/one")

    result.assert_outcomes(passed=1)
    assert json.loads(out.read_text()) == [
        ["model", "org/one"],
        ["config_id", ""],
        ["world_size", 1],
        ["yaml_extra", "world_size_1.yaml"],
        ["gpus", "0"],
    ]


def test_model_properties_without_lease(pytester: pytest.Pytester, registry: Path) -> None:
    out = pytester.path / "properties.json"
    pytester.makepyfile(
        test_user=f"""
        import json

        def test_model(autodeploy_model, request):
            with open({str(out)!r}, "w") as handle:
                json.dump(request.node.user_properties, handle)
        """
    )

    result = run_user_tests(pytester, registry, pytester.path / "locks", "-k", "org/one")

    result.assert_outcomes(passed=1)
    assert json.loads(out.read_text()) == [
        ["model", "org/one"],
        ["config_id", ""],
        ["world_size", 1],
        ["yaml_extra", "world_size_1.yaml"],
        ["gpus", ""],
    ]
