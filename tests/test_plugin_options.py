"""Option checks and the autodeploy_gpus fixture, through pytest itself."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pytest_autodeploy.leases import LeaseManager

MODELS = """\
version: '2.0'
models:
- name: org/one
  yaml_extra: [world_size_1.yaml]
- name: org/two
  config_id: a
  yaml_extra: [world_size_2.yaml]
- name: org/two
  config_id: b
  yaml_extra: [world_size_2.yaml]
- name: org/eight
  yaml_extra: [world_size_8.yaml]
"""


@pytest.fixture
def registry(pytester: pytest.Pytester) -> Path:
    folder = pytester.path / "reg"
    (folder / "configs").mkdir(parents=True)
    for size in (1, 2, 8):
        (folder / "configs" / f"world_size_{size}.yaml").write_text(f"world_size: {size}\n")
    (folder / "models.yaml").write_text(MODELS)
    return folder


@pytest.mark.parametrize(
    "option",
    ["--autodeploy-command=", "--autodeploy-gpus=", "--autodeploy-shard= ", "--autodeploy-report="],
)
def test_empty_option_rejected(pytester: pytest.Pytester, registry: Path, option: str) -> None:
    result = pytester.runpytest(f"--autodeploy-registry={registry}", option)

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    flag = option.split("=")[0]
    result.stderr.fnmatch_lines([f"*{flag} is empty; give a value or leave the option out*"])


def test_lock_dir_that_is_a_file(pytester: pytest.Pytester, registry: Path) -> None:
    not_a_folder = pytester.makefile(".txt", locks="x")

    result = pytester.runpytest(
        f"--autodeploy-registry={registry}", "--autodeploy-command=true", f"--autodeploy-lock-dir={not_a_folder}"
    )

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--autodeploy-lock-dir: *locks.txt' is not a folder*"])


def test_gpu_count_cap(pytester: pytest.Pytester, registry: Path) -> None:
    result = pytester.runpytest(f"--autodeploy-registry={registry}", "--autodeploy-gpus=999999")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*more than 1024 GPUs on one node*"])


def test_lints_as_errors_without_internalerror(pytester: pytest.Pytester, registry: Path) -> None:
    # org/one lists no dashboard file, so it has no lint; an unused file gives one.
    (registry / "configs" / "unused.yaml").write_text("a: 1\n")

    result = pytester.runpytest(f"--autodeploy-registry={registry}", "-W", "error")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    result.stderr.fnmatch_lines(["*registry warnings are errors*", "*unused.yaml:1: warning: config file is not used*"])


def test_last_failed_reruns_config_id_items(pytester: pytest.Pytester, registry: Path) -> None:
    args = [f"--autodeploy-registry={registry}", "--autodeploy-command=false", "--autodeploy-gpus=8",
            f"--autodeploy-lock-dir={pytester.path / 'locks'}", "-p", "cacheprovider"]
    pytester.runpytest(*args).assert_outcomes(failed=4)

    result = pytester.runpytest(*args, "--lf")

    result.assert_outcomes(failed=4)


def test_lease_timeout_names_holder(pytester: pytest.Pytester, registry: Path) -> None:
    lock_dir = pytester.path / "locks"
    holder = LeaseManager(lock_dir, ["0"]).acquire(1, owner="another session")
    try:
        result = pytester.runpytest(
            f"--autodeploy-registry={registry}",
            "--autodeploy-command=true",
            "--autodeploy-gpus=1",
            f"--autodeploy-lock-dir={lock_dir}",
            "--autodeploy-lease-timeout=0.5",
            "-k",
            "org/one",
        )
    finally:
        holder.release()

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*busy: GPU 0: *owner: another session*(--autodeploy-lease-timeout)"])


def test_gpus_fixture_leases_world_size(pytester: pytest.Pytester, registry: Path) -> None:
    pytester.makepyfile(
        test_user="""
        def test_model(autodeploy_model, autodeploy_gpus):
            assert len(autodeploy_gpus) == autodeploy_model.world_size
            assert len(set(autodeploy_gpus)) == len(autodeploy_gpus)
        """
    )

    result = pytester.runpytest(
        f"--autodeploy-registry={registry}",
        "test_user.py",
        "--autodeploy-gpus=4",
        f"--autodeploy-lock-dir={pytester.path / 'locks'}",
        "-rs",
    )

    result.assert_outcomes(passed=3, skipped=1)
    result.stdout.fnmatch_lines(["*test_model?org/eight?: needs 8 GPUs, this node has 4*"])
    assert LeaseManager(pytester.path / "locks", ["0", "1", "2", "3"]).free_gpus() == ("0", "1", "2", "3")


def test_gpus_fixture_strict_fails(pytester: pytest.Pytester, registry: Path) -> None:
    pytester.makepyfile(test_user="def test_model(autodeploy_gpus):\n    pass\n")

    result = pytester.runpytest(
        f"--autodeploy-registry={registry}",
        "test_user.py",
        "--autodeploy-gpus=4",
        f"--autodeploy-lock-dir={pytester.path / 'locks'}",
        "--autodeploy-strict-gpus",
    )

    result.assert_outcomes(passed=3, errors=1)


def test_fixture_broken_registry_no_traceback(pytester: pytest.Pytester, registry: Path) -> None:
    (registry / "models.yaml").write_text(MODELS + "- name: org/bad\n  yaml_extra: [missing.yaml]\n")
    pytester.makepyfile(test_user="def test_model(autodeploy_model):\n    pass\n")

    result = pytester.runpytest(f"--autodeploy-registry={registry}", "test_user.py")

    output = result.stdout.str()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert "config file 'missing.yaml' of org/bad not found" in output
    assert "Traceback" not in output
    assert "_multicall" not in output


def test_empty_registry_path_rejected(pytester: pytest.Pytester, registry: Path) -> None:
    result = pytester.runpytest("--autodeploy-registry=")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--autodeploy-registry= is empty*"])


def test_outputs_must_differ(pytester: pytest.Pytester, registry: Path) -> None:
    result = pytester.runpytest(
        f"--autodeploy-registry={registry}", "--autodeploy-report=out.json", "--autodeploy-durations=out.json"
    )

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--autodeploy-report and --autodeploy-durations both write*out.json*"])


def test_output_over_registry_rejected(pytester: pytest.Pytester, registry: Path) -> None:
    result = pytester.runpytest(f"--autodeploy-registry={registry}", f"--autodeploy-report={registry / 'models.yaml'}")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*would overwrite a registry file*"])


def test_ini_durations_relative_to_ini(pytester: pytest.Pytester, registry: Path) -> None:
    pytester.makeini("[pytest]\nautodeploy_registry = reg\nautodeploy_durations = out/durations.json\n")
    subfolder = pytester.mkdir("sub")
    command = f"{sys.executable} -c pass"

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(subfolder)
        result = pytester.runpytest(
            "--autodeploy-registry",
            f"--autodeploy-command={command}",
            "--autodeploy-gpus=8",
            f"--autodeploy-lock-dir={pytester.path / 'locks'}",
        )

    result.assert_outcomes(passed=4)
    assert (pytester.path / "out" / "durations.json").is_file()
    assert not (subfolder / "out").exists()


def test_check_runner_ignores_entry_outcomes(pytester: pytest.Pytester, registry: Path) -> None:
    # The check runner validates the entry; a known failure of the model does not excuse it.
    (registry / "config.schema.json").write_text('{"properties": {"world_size": {"maximum": 4}}}')
    text = (registry / "models.yaml").read_text()
    text = text.replace("- name: org/eight\n", '- name: org/eight\n  xfail: "OOM"\n')
    text = text.replace("  config_id: b\n", '  config_id: b\n  skip: "no weights"\n')
    (registry / "models.yaml").write_text(text)

    result = pytester.runpytest(f"--autodeploy-registry={registry}")

    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*org/eight: 'world_size' fails config.schema.json*"])


def test_shard_ignores_models_node_skips(pytester: pytest.Pytester, registry: Path) -> None:
    # org/eight needs 8 GPUs and the node has 2, so it must not weigh down a shard.
    args = [
        f"--autodeploy-registry={registry}",
        "--autodeploy-command=true",
        "--autodeploy-gpus=2",
        f"--autodeploy-lock-dir={pytester.path / 'locks'}",
        "--co",
        "-q",
    ]

    first = [line for line in pytester.runpytest(*args, "--autodeploy-shard=1/2").outlines if "::" in line]
    second = [line for line in pytester.runpytest(*args, "--autodeploy-shard=2/2").outlines if "::" in line]

    assert len(first) == 2
    assert len(second) == 2


def test_fixture_tests_follow_entry_outcomes(pytester: pytest.Pytester, registry: Path) -> None:
    text = (registry / "models.yaml").read_text()
    text = text.replace("- name: org/one\n", '- name: org/one\n  xfail: "known crash"\n')
    text = text.replace("  config_id: b\n", '  config_id: b\n  skip: "no weights"\n')
    (registry / "models.yaml").write_text(text)
    pytester.makepyfile(test_user="def test_model(autodeploy_model):\n    assert autodeploy_model.name != 'org/one'\n")

    result = pytester.runpytest(f"--autodeploy-registry={registry}", "test_user.py")

    result.assert_outcomes(passed=2, skipped=1, xfailed=1)
    # The skipped model still counts in the summary table: 2 models of world size 2.
    result.stdout.fnmatch_lines(["*2       2        1        0        0        1        0        0"])


def test_summary_counts_setup_errors(pytester: pytest.Pytester, registry: Path) -> None:
    pytester.makepyfile(
        test_user="""
        import pytest

        @pytest.fixture
        def broken():
            raise RuntimeError("fixture failed")

        def test_model(autodeploy_model, broken):
            pass
        """
    )

    result = pytester.runpytest(f"--autodeploy-registry={registry}", "test_user.py")

    result.assert_outcomes(errors=4)
    result.stdout.fnmatch_lines(["*total       4        0        0        4        0        0        0"])
