"""Tests of the ``pytest-autodeploy`` command line: validate, workload and explain."""

from __future__ import annotations

import errno
import io
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from pytest_autodeploy import cli

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLED_REGISTRY = REPO_ROOT / "model_registry"
REAL_TRTLLM_REGISTRY = Path("/work/shared/real-registries/tensorrt-llm")

GOOD_MODELS = """\
version: '2.0'
models:
- name: org/tiny-1B
  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]
- name: org/mid-7B
  config_id: ws2
  yaml_extra: [dashboard_default.yaml, world_size_2.yaml]
- name: org/mid-7B
  config_id: ws2_triton
  yaml_extra: [dashboard_default.yaml, world_size_2.yaml, triton.yaml]
"""

# The same registry with one warning, on line 5: the ws2 entry does not list
# dashboard_default.yaml first.
WARNING_MODELS = GOOD_MODELS.replace(
    "config_id: ws2\n  yaml_extra: [dashboard_default.yaml, world_size_2.yaml]",
    "config_id: ws2\n  yaml_extra: [world_size_2.yaml, dashboard_default.yaml]",
)

# Line numbers matter: the explain tests check them.
GOOD_CONFIGS = {
    "dashboard_default.yaml": (
        "runtime: trtllm\n"  # line 1
        "attn_backend: flashinfer\n"  # line 2
        "transforms:\n"  # line 3
        "  detect_sharding:\n"  # line 4
        "    enabled: false\n"  # line 5
    ),
    "world_size_1.yaml": "world_size: 1\n",
    "world_size_2.yaml": "world_size: 2\n",
    "triton.yaml": (
        "attn_backend: triton\n"  # line 1
        "transforms:\n"  # line 2
        "  detect_sharding:\n"  # line 3
        "    enabled: true\n"  # line 4
    ),
}

ERROR_LINE = re.compile(r"^(?P<file>/.+?):(?P<line>\d+)(?::\d+)?: error: (?P<message>.+)$")


def write_registry(root: Path, models: str = GOOD_MODELS, configs: dict[str, str] | None = None) -> Path:
    """Write models.yaml and configs/ under ``root`` and return ``root``."""
    (root / "configs").mkdir(parents=True)
    (root / "models.yaml").write_text(models, encoding="utf-8")
    for name, text in (GOOD_CONFIGS if configs is None else configs).items():
        (root / "configs" / name).write_text(text, encoding="utf-8")
    return root


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if ERROR_LINE.match(line)]


def bundled_entries() -> list[dict]:
    """Read the bundled models.yaml directly, without the project's loader."""
    data = yaml.safe_load((BUNDLED_REGISTRY / "models.yaml").read_text(encoding="utf-8"))
    return data["models"]


def world_size_from_file_names(entry: dict) -> int:
    sizes = [int(match.group(1)) for name in entry["yaml_extra"] if (match := re.fullmatch(r"world_size_(\d+)\.yaml", name))]
    assert len(sizes) == 1, f"{entry['name']} lists {len(sizes)} world_size_N.yaml files"
    return sizes[0]


# --- validate: exit codes and the FILE:LINE form ---------------------------


def test_validate_good_registry_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_registry(tmp_path / "registry")

    code, out, err = run_cli(capsys, "validate", str(root))

    assert code == 0
    assert err == ""
    assert "world size 1: 1 model\n" in out
    assert "world size 2: 2 models\n" in out
    assert "total: 3 models, 0 errors, 0 warnings" in out


def test_validate_wrong_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_registry(tmp_path / "registry", GOOD_MODELS.replace("'2.0'", "'1.0'"))

    code, out, _ = run_cli(capsys, "validate", str(root))

    assert code == 1
    models_path = root / "models.yaml"
    assert f"{models_path}:1: error: unsupported registry version '1.0'" in out
    assert "total: 3 models, 1 error, 0 warnings" in out


def test_validate_unknown_key_suggests_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    models = GOOD_MODELS.replace(
        "- name: org/tiny-1B\n", "- name: org/tiny-1B\n  xfial: flaky on H100\n"
    )
    root = write_registry(tmp_path / "registry", models)

    code, out, _ = run_cli(capsys, "validate", str(root))

    assert code == 1
    lines = error_lines(out)
    assert len(lines) == 1
    assert lines[0].startswith(f"{root / 'models.yaml'}:4: error: unknown key 'xfial'")
    assert "did you mean 'xfail'?" in lines[0]


def test_validate_missing_config_suggests_suffix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    models = GOOD_MODELS.replace("[dashboard_default.yaml, world_size_1.yaml]", "[dashboard_default.yaml, world_size_1.yml]")
    root = write_registry(tmp_path / "registry", models)

    code, out, _ = run_cli(capsys, "validate", str(root))

    assert code == 1
    lines = error_lines(out)
    assert len(lines) == 1
    assert lines[0].startswith(f"{root / 'models.yaml'}:4: error: config file 'world_size_1.yml'")
    assert "did you mean 'world_size_1.yaml'?" in lines[0]


def test_validate_duplicate_config_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    configs = dict(GOOD_CONFIGS, **{"triton.yaml": "attn_backend: triton\nattn_backend: flashinfer\n"})
    root = write_registry(tmp_path / "registry", configs=configs)

    code, out, _ = run_cli(capsys, "validate", str(root))

    assert code == 1
    lines = error_lines(out)
    assert len(lines) == 1
    assert lines[0].startswith(f"{root / 'configs' / 'triton.yaml'}:2:1: error: duplicate key 'attn_backend'")
    assert "first set on line 1" in lines[0]


def test_validate_merge_conflict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    configs = dict(GOOD_CONFIGS, **{"triton.yaml": "attn_backend: triton\ntransforms: none\n"})
    root = write_registry(tmp_path / "registry", configs=configs)

    code, out, _ = run_cli(capsys, "validate", str(root))

    assert code == 1
    lines = error_lines(out)
    assert len(lines) == 1
    assert lines[0].startswith(f"{root / 'configs' / 'triton.yaml'}:2: error: merge conflict at 'transforms'")
    assert f"{root / 'configs' / 'dashboard_default.yaml'}:3 sets a mapping" in lines[0]
    assert "no world size (entry has errors): 1 model" in out


def test_validate_reports_all_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    models = """\
version: 2.0
models:
- name: org/tiny-1B
  yaml_extra: [dashboard_default.yaml, world_size_1.yml]
- name: org/mid-7B
  config_id: ws2
  yaml_extra: [dashboard_default.yaml, world_size_2.yaml]
  skipp: no GPU
- name: org/mid-7B
  config_id: ws2_triton
  yaml_extra: [dashboard_default.yaml, world_size_2.yaml, triton.yaml]
"""
    configs = dict(GOOD_CONFIGS, **{"world_size_2.yaml": "world_size: 2\nworld_size: 4\n"})
    root = write_registry(tmp_path / "registry", models, configs)

    code, out, _ = run_cli(capsys, "validate", str(root))

    assert code == 1
    lines = error_lines(out)
    assert len(lines) == 4
    # Sorted by file, then line: configs/ comes before models.yaml.
    assert lines[0].startswith(f"{root / 'configs' / 'world_size_2.yaml'}:2:1: error: duplicate key")
    assert lines[1].startswith(f"{root / 'models.yaml'}:1: error: version must be the string '2.0', got 2.0")
    assert any("unknown key 'skipp'" in line and "did you mean 'skip'?" in line for line in lines)
    assert any("'world_size_1.yml'" in line for line in lines)
    assert any(line.startswith(f"{root / 'configs' / 'world_size_2.yaml'}:2:1: error: duplicate key") for line in lines)
    assert "4 errors" in out


def test_validate_schema_violation_is_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_registry(tmp_path / "registry")
    schema = {"type": "object", "properties": {"attn_backend": {"enum": ["flashinfer", "trtllm"]}}}
    (root / "config.schema.json").write_text(json.dumps(schema), encoding="utf-8")

    code, out, _ = run_cli(capsys, "validate", str(root))

    assert code == 1
    lines = error_lines(out)
    assert len(lines) == 1
    assert lines[0].startswith(f"{root / 'configs' / 'triton.yaml'}:1: error: org/mid-7B[ws2_triton]: 'attn_backend'")
    assert "total: 3 models, 1 error, 0 warnings" in out


def test_validate_broken_schema_reported_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_registry(tmp_path / "registry")
    (root / "config.schema.json").write_text("{not json", encoding="utf-8")

    code, out, _ = run_cli(capsys, "validate", str(root))

    assert code == 1
    lines = error_lines(out)
    assert len(lines) == 1
    assert lines[0].startswith(f"{root / 'config.schema.json'}:1:2: error: invalid JSON")


def test_validate_warnings_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_registry(tmp_path / "registry", WARNING_MODELS)

    code, out, _ = run_cli(capsys, "validate", str(root))

    assert code == 0
    assert f"{root / 'models.yaml'}:5: warning: org/mid-7B[ws2]: dashboard_default.yaml is not first" in out
    assert "total: 3 models, 0 errors, 1 warning" in out


def test_validate_quiet_hides_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_registry(tmp_path / "registry", WARNING_MODELS)

    code, out, _ = run_cli(capsys, "validate", "-q", str(root))

    assert code == 0
    assert "warning:" not in out
    assert "total: 3 models, 0 errors, 1 warning" in out


def test_validate_errors_before_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    models = WARNING_MODELS.replace("'2.0'", "'3.0'")
    root = write_registry(tmp_path / "registry", models)

    code, out, _ = run_cli(capsys, "validate", str(root))

    assert code == 1
    lines = out.splitlines()
    error_index = next(index for index, line in enumerate(lines) if ": error: " in line)
    warning_index = next(index for index, line in enumerate(lines) if ": warning: " in line)
    assert error_index < warning_index


def test_validate_json_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    models = WARNING_MODELS.replace("'2.0'", "'1.0'")
    root = write_registry(tmp_path / "registry", models)

    code, out, _ = run_cli(capsys, "validate", "--format", "json", str(root))

    assert code == 1
    report = json.loads(out)
    assert set(report) >= {"errors", "warnings", "counts"}
    assert len(report["errors"]) == 1
    error = report["errors"][0]
    assert error["file"] == str(root / "models.yaml")
    assert error["line"] == 1
    assert "unsupported registry version '1.0'" in error["message"]
    assert len(report["warnings"]) == 1
    assert report["warnings"][0]["line"] == 5
    assert report["counts"]["models"] == 3
    assert report["counts"]["errors"] == 1
    assert report["counts"]["warnings"] == 1
    assert report["counts"]["world_sizes"] == {"1": 1, "2": 2}
    assert report["counts"]["unresolved"] == 0


def test_validate_json_clean_registry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_registry(tmp_path / "registry")

    code, out, _ = run_cli(capsys, "validate", "--format=json", str(root))

    assert code == 0
    report = json.loads(out)
    assert report["errors"] == []
    assert report["warnings"] == []
    assert report["counts"]["world_sizes"] == {"1": 1, "2": 2}


# --- usage errors ------------------------------------------------------------


def test_validate_missing_path_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-such-registry"

    code, out, err = run_cli(capsys, "validate", str(missing))

    assert code == 2
    assert out == ""
    assert f"registry path '{missing}' does not exist" in err
    assert "Traceback" not in err


def test_validate_folder_without_models_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "validate", str(tmp_path))

    assert code == 2
    assert "no models.yaml in registry folder" in err


def test_validate_bad_format_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["validate", "--format", "xml"])

    assert exit_info.value.code == 2
    assert "invalid choice: 'xml'" in capsys.readouterr().err


def test_no_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([])

    assert exit_info.value.code == 2
    assert "required: COMMAND" in capsys.readouterr().err


# --- the bundled registry and the entry point --------------------------------


def test_module_entry_point_validates_bundled() -> None:
    entry_count = len(bundled_entries())

    result = subprocess.run(
        [sys.executable, "-m", "pytest_autodeploy", "validate"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"total: {entry_count} models, 0 errors, 0 warnings" in result.stdout
    assert result.stderr == ""


def test_module_entry_point_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest_autodeploy", "validate", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 2
    assert "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_workload_bundled_registry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    entries = bundled_entries()
    expected_sizes = Counter(world_size_from_file_names(entry) for entry in entries)
    output = tmp_path / "workload.yaml"

    code, _, err = run_cli(capsys, "workload", "--output", str(output))

    assert code == 0, err
    workload = yaml.safe_load(output.read_text(encoding="utf-8"))
    assert list(workload) == ["registry", "version", "generated", "summary", "models"]
    assert workload["version"] == "2.0"
    assert workload["summary"]["total"] == len(entries)
    assert workload["summary"]["world_sizes"] == dict(sorted(expected_sizes.items()))
    assert [model["name"] for model in workload["models"]] == [entry["name"] for entry in entries]
    assert [model["yaml_extra"] for model in workload["models"]] == [entry["yaml_extra"] for entry in entries]
    for model, entry in zip(workload["models"], entries):
        assert model["world_size"] == world_size_from_file_names(entry)
        assert model["config"]["world_size"] == model["world_size"]
    assert "&id" not in output.read_text(encoding="utf-8")


def test_workload_item_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_registry(tmp_path / "registry")
    output = tmp_path / "out" / "workload.yaml"
    output.parent.mkdir()

    code, _, err = run_cli(capsys, "workload", str(root), "-o", str(output))

    assert code == 0, err
    workload = yaml.safe_load(output.read_text(encoding="utf-8"))
    assert workload["registry"] == str(root)
    assert isinstance(workload["generated"], str)
    assert workload["generated"].endswith("+00:00")
    assert workload["summary"] == {"total": 3, "world_sizes": {1: 1, 2: 2}}
    assert workload["models"][2] == {
        "name": "org/mid-7B",
        "config_id": "ws2_triton",
        "test_id": "org/mid-7B[ws2_triton]",
        "yaml_extra": ["dashboard_default.yaml", "world_size_2.yaml", "triton.yaml"],
        "world_size": 2,
        "config": {
            "runtime": "trtllm",
            "attn_backend": "triton",
            "transforms": {"detect_sharding": {"enabled": True}},
            "world_size": 2,
        },
    }
    assert workload["models"][0]["config_id"] is None
    assert os.listdir(output.parent) == ["workload.yaml"]


def test_workload_to_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_registry(tmp_path / "registry")

    code, out, _ = run_cli(capsys, "workload", str(root), "--output", "-")

    assert code == 0
    workload = yaml.safe_load(out)
    assert workload["summary"]["total"] == 3


def test_workload_errors_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_registry(tmp_path / "registry", GOOD_MODELS.replace("'2.0'", "'1.0'"))
    output = tmp_path / "workload.yaml"
    output.write_text("previous\n", encoding="utf-8")

    code, out, err = run_cli(capsys, "workload", str(root), "--output", str(output))

    assert code == 1
    assert out == ""
    assert f"{root / 'models.yaml'}:1: error: unsupported registry version" in err
    assert "nothing was written" in err
    assert output.read_text(encoding="utf-8") == "previous\n"


def test_workload_unwritable_output_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_registry(tmp_path / "registry")
    output = tmp_path / "missing-folder" / "workload.yaml"

    code, _, err = run_cli(capsys, "workload", str(root), "--output", str(output))

    assert code == 1
    assert f"cannot write '{output}'" in err
    assert "Traceback" not in err


def test_workload_output_is_folder_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_registry(tmp_path / "registry")
    target = tmp_path / "folder"
    target.mkdir()

    code, _, err = run_cli(capsys, "workload", str(root), "--output", str(target))

    assert code == 1
    assert f"cannot write '{target}'" in err
    assert sorted(os.listdir(tmp_path)) == ["folder", "registry"]
    assert os.listdir(target) == []


class FullDiskStdout(io.StringIO):
    """A stdout whose every write fails the way a full disk does."""

    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_workload_stdout_failure_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_registry(tmp_path / "registry")
    monkeypatch.setattr(sys, "stdout", FullDiskStdout())

    code = cli.main(["workload", str(root), "--output", "-"])

    err = capsys.readouterr().err
    assert code == 1
    assert "cannot write output: [Errno 28] No space left on device" in err
    assert "Traceback" not in err


def test_workload_replaces_existing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_registry(tmp_path / "registry")
    output = tmp_path / "workload.yaml"
    output.write_text("old\n", encoding="utf-8")

    code, _, _ = run_cli(capsys, "workload", str(root), "--output", str(output))

    assert code == 0
    assert yaml.safe_load(output.read_text(encoding="utf-8"))["summary"]["total"] == 3
    assert sorted(os.listdir(tmp_path)) == ["registry", "workload.yaml"]


# --- explain -----------------------------------------------------------------


def test_explain_shows_origin_and_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_registry(tmp_path / "registry")
    configs = root / "configs"

    code, out, err = run_cli(capsys, "explain", "org/mid-7B", str(root), "--config-id", "ws2_triton")

    assert code == 0, err
    lines = out.splitlines()
    position = lines.index("transforms.detect_sharding.enabled = true")
    assert lines[position + 1] == f"    set at {configs / 'triton.yaml'}:4"
    assert lines[position + 2] == f"    overrides {configs / 'dashboard_default.yaml'}:5 (false)"

    position = lines.index('attn_backend = "triton"')
    assert lines[position + 1] == f"    set at {configs / 'triton.yaml'}:1"
    assert lines[position + 2] == f'    overrides {configs / "dashboard_default.yaml"}:2 ("flashinfer")'

    position = lines.index('runtime = "trtllm"')
    assert lines[position + 1] == f"    set at {configs / 'dashboard_default.yaml'}:1"
    assert not lines[position + 2].startswith("    overrides")


def test_explain_shows_world_size_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_registry(tmp_path / "registry")

    code, out, _ = run_cli(capsys, "explain", "org/tiny-1B", str(root))

    assert code == 0
    expected = f"world size: 1, from world_size; world_size set at {root / 'configs' / 'world_size_1.yaml'}:1"
    assert expected in out.splitlines()
    assert f"entry: {root / 'models.yaml'}:3" in out


def test_explain_world_size_from_parallel_sizes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    configs = dict(GOOD_CONFIGS, **{"world_size_1.yaml": "tensor_parallel_size: 1\n"})
    root = write_registry(tmp_path / "registry", configs=configs)

    code, out, _ = run_cli(capsys, "explain", "org/tiny-1B", str(root))

    assert code == 0
    assert "world size: 1, from tensor_parallel_size x pipeline_parallel_size; tensor_parallel_size set at " in out


def test_explain_test_id_selects_entry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_registry(tmp_path / "registry")

    code, out, _ = run_cli(capsys, "explain", "org/mid-7B[ws2]", str(root))

    assert code == 0
    assert "config_id: ws2\n" in out
    assert 'attn_backend = "flashinfer"' in out


def test_explain_ambiguous_model_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_registry(tmp_path / "registry")

    code, out, err = run_cli(capsys, "explain", "org/mid-7B", str(root))

    assert code == 2
    assert out == ""
    assert "pass --config-id" in err
    assert "config_id ws2 " in err
    assert "config_id ws2_triton " in err


def test_explain_unknown_config_id_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_registry(tmp_path / "registry")

    code, _, err = run_cli(capsys, "explain", "org/mid-7B", str(root), "--config-id", "ws4")

    assert code == 1
    assert "no entry with config_id 'ws4'" in err
    assert "ws2, ws2_triton" in err


def test_explain_unknown_model_suggests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_registry(tmp_path / "registry")

    code, out, err = run_cli(capsys, "explain", "org/tiny-1b", str(root))

    assert code == 1
    assert out == ""
    assert "model 'org/tiny-1b' not found" in err
    assert "did you mean 'org/tiny-1B'" in err


def test_explain_entry_with_errors_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    configs = dict(GOOD_CONFIGS, **{"triton.yaml": "attn_backend: triton\ntransforms: none\n"})
    root = write_registry(tmp_path / "registry", configs=configs)

    code, out, _ = run_cli(capsys, "explain", "org/mid-7B", str(root), "--config-id", "ws2_triton")

    assert code == 1
    assert "world size:" not in out
    assert f"{root / 'configs' / 'triton.yaml'}:2: error: merge conflict at 'transforms'" in out


# --- a real registry ---------------------------------------------------------


@pytest.mark.skipif(
    not (REAL_TRTLLM_REGISTRY / "models.yaml").is_file(),
    reason=f"no copy of the TensorRT-LLM registry at {REAL_TRTLLM_REGISTRY}",
)
def test_validate_tensorrt_llm_registry(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "validate", "--quiet", str(REAL_TRTLLM_REGISTRY))

    assert code == 0
    assert "total: 138 models, 0 errors" in out


def test_explain_entry_without_config_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    models = """\
version: '2.0'
models:
- name: org/pair-1B
  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]
- name: org/pair-1B
  config_id: tuned
  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]
"""
    root = write_registry(tmp_path / "registry", models)

    code, out, _ = run_cli(capsys, "explain", "org/pair-1B", str(root))

    assert code == 0
    assert "config_id: (none)" in out
