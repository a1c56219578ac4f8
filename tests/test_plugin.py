"""End-to-end tests of the pytest plugin, run through pytester on small registries."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

REAL_TRTLLM_REGISTRY = Path("/work/shared/real-registries/tensorrt-llm")

CONFIGS = {
    "dashboard_default.yaml": (
        "runtime: trtllm\n"
        "max_batch_size: 8\n"
        "cuda_graph_config:\n"
        "  max_batch_size: 8\n"
    ),
    "world_size_1.yaml": "world_size: 1\n",
    "world_size_2.yaml": "world_size: 2\n",
    "world_size_4.yaml": "world_size: 4\n",
    "world_size_8.yaml": "world_size: 8\n",
    "multimodal.yaml": "model_factory: AutoModelForImageTextToText\n",
    # A model config that overrides the world_size_2.yaml listed before it.
    "wide.yaml": "world_size: 4\n",
}

MODELS = """\
version: '2.0'
models:
- name: org/tiny-1B
  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]
- name: meta-llama/Llama-3.1-8B-Instruct
  config_id: text
  yaml_extra: [dashboard_default.yaml, world_size_2.yaml]
- name: meta-llama/Llama-3.1-8B-Instruct
  config_id: vision
  yaml_extra: [dashboard_default.yaml, world_size_2.yaml, multimodal.yaml]
- name: org/vision-12B
  config_id: mm
  yaml_extra: [dashboard_default.yaml, world_size_2.yaml, multimodal.yaml]
- name: org/big-70B
  yaml_extra: [dashboard_default.yaml, world_size_4.yaml]
- name: org/wide-32B
  yaml_extra: [dashboard_default.yaml, world_size_2.yaml, wide.yaml]
- name: org/huge-405B
  yaml_extra: [dashboard_default.yaml, world_size_8.yaml]
"""

# Test ids of MODELS in file order: a name listed twice gets its config_id in brackets.
MODEL_IDS = [
    "org/tiny-1B",
    "meta-llama/Llama-3.1-8B-Instruct[text]",
    "meta-llama/Llama-3.1-8B-Instruct[vision]",
    "org/vision-12B",
    "org/big-70B",
    "org/wide-32B",
    "org/huge-405B",
]

BASELINE = {"runtime": "trtllm", "max_batch_size": 8, "cuda_graph_config": {"max_batch_size": 8}}

# The merged config of each entry of MODELS.
MERGED = {
    "org/tiny-1B": {**BASELINE, "world_size": 1},
    "meta-llama/Llama-3.1-8B-Instruct[text]": {**BASELINE, "world_size": 2},
    "meta-llama/Llama-3.1-8B-Instruct[vision]": {
        **BASELINE,
        "world_size": 2,
        "model_factory": "AutoModelForImageTextToText",
    },
    "org/vision-12B": {**BASELINE, "world_size": 2, "model_factory": "AutoModelForImageTextToText"},
    "org/big-70B": {**BASELINE, "world_size": 4},
    "org/wide-32B": {**BASELINE, "world_size": 4},
    "org/huge-405B": {**BASELINE, "world_size": 8},
}

# Writes what the command received to OUT/<pid>.json, then exits 3 when the
# model name contains "fail", after 100 lines of output.
FAKE_COMMAND = """\
import json, os, sys
record = {{"argv": sys.argv[1:], "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}}
with open(os.path.join({out!r}, f"{{os.getpid()}}.json"), "w") as handle:
    json.dump(record, handle)
if "fail" in sys.argv[1]:
    for number in range(100):
        print(f"output line {{number}}")
    sys.exit(3)
"""

# Starts a child, records its process group, its own pid and the child's pid,
# then hangs until it is killed.
HANGING_COMMAND = """\
import os, subprocess, sys, time
child = subprocess.Popen(["sleep", "60"])
with open(sys.argv[1] + ".tmp", "w") as handle:
    handle.write(f"{os.getpgrp()} {os.getpid()} {child.pid}")
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(60)
"""


def write_registry(folder: Path, models: str = MODELS, configs: dict[str, str] | None = None) -> Path:
    """Write models.yaml and configs/ into ``folder`` and return the folder."""
    (folder / "configs").mkdir(parents=True)
    (folder / "models.yaml").write_text(models, encoding="utf-8")
    for name, text in (CONFIGS if configs is None else configs).items():
        (folder / "configs" / name).write_text(text, encoding="utf-8")
    return folder


def listed_ids(result: pytest.RunResult) -> list[str]:
    """Return the node ids that ``--co -q`` printed, in order."""
    return [line for line in result.outlines if "::" in line and not line.startswith(" ")]


def summary_rows(result: pytest.RunResult) -> dict[str, dict[str, int]]:
    """Parse the autodeploy summary table into {world size: {column: count}}."""
    lines = result.outlines
    start = next(index for index, line in enumerate(lines) if "autodeploy summary" in line)
    header = lines[start + 1].replace("world size", "world_size").split()
    rows = {}
    for line in lines[start + 2 :]:
        cells = line.split()
        if len(cells) != len(header):
            break
        rows[cells[0]] = {name: int(cell) for name, cell in zip(header[1:], cells[1:])}
    return rows


def is_running(pid: int) -> bool:
    """Return whether ``pid`` exists and is not a zombie.

    A zombie runs no code and uses no GPU. An init process that never reaps
    orphans, as in some containers, leaves zombies behind.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state != "Z"


def group_members(pgid: int) -> list[int]:
    """Return the running processes of process group ``pgid`` (Linux /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command name: state, ppid, pgrp.
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


@pytest.fixture(autouse=True)
def private_tempdir(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the plugin's per-session work folders inside this test's folder."""
    folder = pytester.mkdir("tmp")
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))


@pytest.fixture
def registry(pytester: pytest.Pytester) -> Path:
    return write_registry(pytester.path / "reg")


@pytest.fixture
def fake_command(pytester: pytest.Pytester) -> tuple[str, Path]:
    """Return the start of a command line that runs FAKE_COMMAND, and its output folder."""
    out = pytester.path / "calls"
    out.mkdir()
    script = pytester.path / "fake.py"
    script.write_text(FAKE_COMMAND.format(out=str(out)), encoding="utf-8")
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}", out


def read_calls(out: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(out.glob("*.json"))]


def lock_dir_option(pytester: pytest.Pytester) -> str:
    return f"--autodeploy-lock-dir={pytester.path / 'locks'}"


# --- finding the registry ---------------------------------------------------


def test_registry_option_folder(pytester: pytest.Pytester, registry: Path) -> None:
    result = pytester.runpytest(f"--autodeploy-registry={registry}", "--co", "-q")

    assert result.ret == pytest.ExitCode.OK
    assert listed_ids(result) == [f"reg/models.yaml::{test_id}" for test_id in MODEL_IDS]


def test_registry_option_models_file(pytester: pytest.Pytester, registry: Path) -> None:
    result = pytester.runpytest(f"--autodeploy-registry={registry / 'models.yaml'}", "--co", "-q")

    assert result.ret == pytest.ExitCode.OK
    assert listed_ids(result) == [f"reg/models.yaml::{test_id}" for test_id in MODEL_IDS]


def test_registry_ini_relative_to_ini_file(pytester: pytest.Pytester) -> None:
    chosen = MODELS.replace("org/tiny-1B", "org/from-ini-1B")
    write_registry(pytester.path / "registries" / "chosen", chosen)
    # A model_registry/ under rootdir must lose to the ini value.
    write_registry(pytester.path / "model_registry")
    pytester.makeini("[pytest]\nautodeploy_registry = registries/chosen\n")
    work = pytester.mkdir("work")
    # A folder of the same relative path under the working folder must not be used.
    write_registry(work / "registries" / "chosen")

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        result = pytester.runpytest("--autodeploy-registry", "--co", "-q")

    assert result.ret == pytest.ExitCode.OK
    assert listed_ids(result)[0] == "registries/chosen/models.yaml::org/from-ini-1B"
    assert len(listed_ids(result)) == len(MODEL_IDS)


def test_registry_under_rootdir(pytester: pytest.Pytester) -> None:
    write_registry(pytester.path / "model_registry")

    result = pytester.runpytest("--autodeploy-registry", "--co", "-q")

    assert result.ret == pytest.ExitCode.OK
    assert listed_ids(result) == [f"model_registry/models.yaml::{test_id}" for test_id in MODEL_IDS]


def test_registry_bundled_fallback(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--autodeploy-registry", "-q")

    assert result.ret == pytest.ExitCode.OK
    outcomes = result.parseoutcomes()
    assert outcomes["passed"] >= 60
    assert "failed" not in outcomes


def test_registry_bundled_header(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--autodeploy-registry", "--co")

    result.stdout.re_match_lines([r"autodeploy: registry .*models\.yaml \(bundled registry\), \d+ models"])


# --- collection, ids and markers --------------------------------------------


def test_only_registry_collected(pytester: pytest.Pytester, registry: Path) -> None:
    pytester.makepyfile(test_outside="def test_outside():\n    pass\n")
    (registry / "test_inside.py").write_text("def test_inside():\n    pass\n", encoding="utf-8")

    result = pytester.runpytest(f"--autodeploy-registry={registry}", "--co", "-q")

    assert result.ret == pytest.ExitCode.OK
    assert listed_ids(result) == [f"reg/models.yaml::{test_id}" for test_id in MODEL_IDS]


def test_select_by_name(pytester: pytest.Pytester, registry: Path) -> None:
    result = pytester.runpytest(f"--autodeploy-registry={registry}", "--co", "-q", "-k", "Llama-3.1-8B")

    assert listed_ids(result) == [
        "reg/models.yaml::meta-llama/Llama-3.1-8B-Instruct[text]",
        "reg/models.yaml::meta-llama/Llama-3.1-8B-Instruct[vision]",
    ]


def test_select_world_size_marker(pytester: pytest.Pytester, registry: Path) -> None:
    result = pytester.runpytest(
        f"--autodeploy-registry={registry}", "--co", "-q", "--strict-markers", "-m", "world_size_4"
    )

    assert result.ret == pytest.ExitCode.OK
    # org/wide-32B lists world_size_2.yaml, but wide.yaml overrides it with 4.
    assert listed_ids(result) == ["reg/models.yaml::org/big-70B", "reg/models.yaml::org/wide-32B"]


def test_select_config_marker(pytester: pytest.Pytester, registry: Path) -> None:
    result = pytester.runpytest(
        f"--autodeploy-registry={registry}",
        "--co",
        "-q",
        "--strict-markers",
        "-m",
        "world_size_2 and config_multimodal",
    )

    assert result.ret == pytest.ExitCode.OK
    assert listed_ids(result) == [
        "reg/models.yaml::meta-llama/Llama-3.1-8B-Instruct[vision]",
        "reg/models.yaml::org/vision-12B",
    ]


def test_strict_markers_run(pytester: pytest.Pytester, registry: Path) -> None:
    result = pytester.runpytest(f"--autodeploy-registry={registry}", "--strict-markers")

    result.assert_outcomes(passed=len(MODEL_IDS), warnings=1)


def test_xdist_collection_order(pytester: pytest.Pytester, registry: Path) -> None:
    # NOTE: xdist 3.8 turns itself off under --collect-only, so this compares two
    # single-process listings. test_xdist_run_all_items covers real workers.
    single = pytester.runpytest_subprocess(f"--autodeploy-registry={registry}", "--co", "-q")
    distributed = pytester.runpytest_subprocess(f"--autodeploy-registry={registry}", "-n", "2", "--co", "-q")

    assert single.ret == pytest.ExitCode.OK
    assert distributed.ret == pytest.ExitCode.OK
    assert set(listed_ids(distributed)) == set(listed_ids(single))
    assert listed_ids(distributed) == listed_ids(single)


def test_xdist_run_all_items(pytester: pytest.Pytester, registry: Path) -> None:
    # Workers that collected different items would make xdist stop the run.
    result = pytester.runpytest_subprocess(f"--autodeploy-registry={registry}", "-n", "2", "-v")

    assert result.ret == pytest.ExitCode.OK
    passed = {line.split()[-1] for line in result.outlines if " PASSED " in line}
    assert passed == {f"reg/models.yaml::{test_id}" for test_id in MODEL_IDS}


def test_xdist_lints_once(pytester: pytest.Pytester, registry: Path) -> None:
    result = pytester.runpytest_subprocess(f"--autodeploy-registry={registry}", "-n", "2")

    # MODELS has one lint: org/wide-32B lists world_size_2.yaml.
    result.assert_outcomes(passed=len(MODEL_IDS), warnings=1)


# --- registry errors and lints ----------------------------------------------

BROKEN_MODELS = """\
version: '2.0'
models:
- name: org/a-1B
  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]
  colour: red
- name: org/b-1B
- name: org/c-1B
  yaml_extra: [dashboard_default.yaml, missing.yaml]
- name: org/d-1B
  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]
- name: org/d-1B
  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]
- name: org/e-1B
  yaml_extra: [dashboard_default.yaml, broken.yaml]
"""


def test_broken_registry_one_error(pytester: pytest.Pytester) -> None:
    configs = {**CONFIGS, "broken.yaml": "world_size: [1\n"}
    folder = write_registry(pytester.path / "reg", BROKEN_MODELS, configs)
    models = folder / "models.yaml"

    result = pytester.runpytest(f"--autodeploy-registry={folder}")
    output = result.stdout.str() + result.stderr.str()

    assert result.ret in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.TESTS_FAILED)
    assert result.parseoutcomes()["errors"] == 1
    assert "passed" not in result.parseoutcomes()
    assert "Traceback" not in output
    assert "INTERNALERROR" not in output
    assert f"{models}:5: error: unknown key 'colour'" in output
    assert f"{models}:6: error: org/b-1B is missing 'yaml_extra'" in output
    assert f"{models}:8: error: config file 'missing.yaml' of org/c-1B not found" in output
    assert f"{models}:11: error: duplicate entry org/d-1B: lines 9 and 11" in output
    assert re.search(rf"^{re.escape(str(folder / 'configs' / 'broken.yaml'))}:\d+(:\d+)?: error: ", output, re.M)


def test_broken_registry_error_count(pytester: pytest.Pytester) -> None:
    configs = {**CONFIGS, "broken.yaml": "world_size: [1\n"}
    folder = write_registry(pytester.path / "reg", BROKEN_MODELS, configs)

    result = pytester.runpytest(f"--autodeploy-registry={folder}")
    output = result.stdout.str()

    match = re.search(r"invalid model registry: (\d+) errors", output)
    assert match is not None
    listed = re.findall(r"^\S+:\d+(?::\d+)?: error: ", output, re.M)
    assert len(listed) == int(match.group(1))


def test_lints_in_warnings_summary(pytester: pytest.Pytester) -> None:
    configs = {**CONFIGS, "unused.yaml": "max_batch_size: 4\n"}
    folder = write_registry(pytester.path / "reg", configs=configs)

    result = pytester.runpytest(f"--autodeploy-registry={folder}")

    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=len(MODEL_IDS), warnings=2)
    result.stdout.fnmatch_lines(
        [
            "*warnings summary*",
            f"*{folder / 'configs' / 'unused.yaml'}:1: RegistryWarning: config file is not used by any entry*",
        ]
    )
    result.stdout.fnmatch_lines(["*RegistryWarning: org/wide-32B: lists world_size_2.yaml but its effective world size is 4*"])


# --- the autodeploy_model fixture -------------------------------------------

USER_TESTS = """\
import json

import yaml


def test_mutate(autodeploy_model):
    autodeploy_model.config["cuda_graph_config"]["max_batch_size"] = 999
    autodeploy_model.config["added"] = True


def test_record(autodeploy_model, request):
    record = {{
        "id": request.node.callspec.id,
        "name": autodeploy_model.name,
        "config_id": autodeploy_model.config_id,
        "yaml_extra": list(autodeploy_model.yaml_extra),
        "world_size": autodeploy_model.world_size,
        "config": autodeploy_model.config,
        "config_file": yaml.safe_load(autodeploy_model.config_path.read_text()),
    }}
    with open({out!r}, "a") as handle:
        handle.write(json.dumps(record) + "\\n")
"""


def write_user_tests(pytester: pytest.Pytester) -> Path:
    out = pytester.path / "records.jsonl"
    pytester.makepyfile(test_user=USER_TESTS.format(out=str(out)))
    return out


def test_fixture_ids_match_registry(pytester: pytest.Pytester, registry: Path) -> None:
    write_user_tests(pytester)

    result = pytester.runpytest(f"--autodeploy-registry={registry}", "test_user.py", "--co", "-q")

    assert result.ret == pytest.ExitCode.OK
    assert listed_ids(result) == [f"test_user.py::test_mutate[{test_id}]" for test_id in MODEL_IDS] + [
        f"test_user.py::test_record[{test_id}]" for test_id in MODEL_IDS
    ]


def test_fixture_markers(pytester: pytest.Pytester, registry: Path) -> None:
    write_user_tests(pytester)

    result = pytester.runpytest(
        f"--autodeploy-registry={registry}", "test_user.py::test_record", "--co", "-q", "--strict-markers", "-m", "world_size_4"
    )

    assert listed_ids(result) == [
        "test_user.py::test_record[org/big-70B]",
        "test_user.py::test_record[org/wide-32B]",
    ]


def test_fixture_values(pytester: pytest.Pytester, registry: Path) -> None:
    out = write_user_tests(pytester)

    # test_mutate runs first, so a shared config would reach test_record changed.
    result = pytester.runpytest(f"--autodeploy-registry={registry}", "test_user.py", "-p", "no:randomly")

    result.assert_outcomes(passed=2 * len(MODEL_IDS))
    records = {record["id"]: record for record in map(json.loads, out.read_text().splitlines())}
    assert list(records) == MODEL_IDS
    for test_id, record in records.items():
        assert record["config"] == MERGED[test_id], test_id
        assert record["config_file"] == MERGED[test_id], test_id
        assert record["world_size"] == MERGED[test_id]["world_size"], test_id
    vision = records["meta-llama/Llama-3.1-8B-Instruct[vision]"]
    assert vision["name"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert vision["config_id"] == "vision"
    assert vision["yaml_extra"] == ["dashboard_default.yaml", "world_size_2.yaml", "multimodal.yaml"]
    assert records["org/tiny-1B"]["config_id"] is None


# --- the check runner -------------------------------------------------------

SCHEMA = {
    "type": "object",
    "properties": {"max_batch_size": {"type": "integer", "minimum": 1}},
}


def test_check_schema_violation(pytester: pytest.Pytester) -> None:
    models = """\
version: '2.0'
models:
- name: org/good-1B
  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]
- name: org/bad-1B
  yaml_extra: [dashboard_default.yaml, world_size_1.yaml, zero_batch.yaml]
"""
    configs = {
        "dashboard_default.yaml": CONFIGS["dashboard_default.yaml"],
        "world_size_1.yaml": CONFIGS["world_size_1.yaml"],
        "zero_batch.yaml": "# Too small on purpose.\nmax_batch_size: 0\n",
    }
    folder = write_registry(pytester.path / "reg", models, configs)
    (folder / "config.schema.json").write_text(json.dumps(SCHEMA), encoding="utf-8")

    result = pytester.runpytest(f"--autodeploy-registry={folder}")

    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [f"{folder / 'configs' / 'zero_batch.yaml'}:2: error: org/bad-1B: 'max_batch_size' fails config.schema.json: *"]
    )
    assert "Traceback" not in result.stdout.str()


def test_check_real_registry(pytester: pytest.Pytester) -> None:
    if not (REAL_TRTLLM_REGISTRY / "models.yaml").is_file():
        pytest.skip(f"the TensorRT-LLM registry is not at {REAL_TRTLLM_REGISTRY}")

    result = pytester.runpytest(f"--autodeploy-registry={REAL_TRTLLM_REGISTRY}")

    result.assert_outcomes(passed=138)


# --- the command runner -----------------------------------------------------

ODD_MODELS = """\
version: '2.0'
models:
- name: org/a+b:c
  config_id: x+y.z-1
  yaml_extra: [dashboard_default.yaml, world_size_2.yaml]
"""


def test_command_argv_exact(pytester: pytest.Pytester, fake_command: tuple[str, Path]) -> None:
    folder = write_registry(pytester.path / "reg", ODD_MODELS)
    prefix, out = fake_command
    # ";" and "$(...)" reach the command as plain arguments, because no shell runs it.
    template = f"{prefix} {{model}} {{config}} {{world_size}} {{config_id}} {{gpus}} ';' '$(touch pwned)' pre-{{model}}"

    result = pytester.runpytest(
        f"--autodeploy-registry={folder}",
        f"--autodeploy-command={template}",
        "--autodeploy-gpus=4",
        lock_dir_option(pytester),
    )

    result.assert_outcomes(passed=1)
    (call,) = read_calls(out)
    model, config, world_size, config_id, gpus, *rest = call["argv"]
    assert model == "org/a+b:c"
    assert world_size == "2"
    assert config_id == "x+y.z-1"
    assert rest == [";", "$(touch pwned)", "pre-org/a+b:c"]
    assert len(gpus.split(",")) == 2
    assert set(gpus.split(",")) <= {"0", "1", "2", "3"}
    assert call["cuda"] == gpus
    assert yaml.safe_load(Path(config).read_text()) == {**BASELINE, "world_size": 2}
    assert not (pytester.path / "pwned").exists()


def test_command_failure_tail(pytester: pytest.Pytester, fake_command: tuple[str, Path]) -> None:
    models = """\
version: '2.0'
models:
- name: org/will-fail-1B
  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]
"""
    folder = write_registry(pytester.path / "reg", models)
    prefix, _ = fake_command

    result = pytester.runpytest(
        f"--autodeploy-registry={folder}",
        f"--autodeploy-command={prefix} {{model}}",
        "--autodeploy-gpus=1",
        lock_dir_option(pytester),
    )

    result.assert_outcomes(failed=1)
    output = result.stdout.str()
    assert "command exited with code 3 after" in output
    assert "output line 99" in output
    assert "output line 59\n" not in output
    assert "Traceback" not in output


def test_command_timeout_kills_group(pytester: pytest.Pytester) -> None:
    models = """\
version: '2.0'
models:
- name: org/hang-1B
  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]
"""
    folder = write_registry(pytester.path / "reg", models)
    script = pytester.path / "hang.py"
    script.write_text(HANGING_COMMAND, encoding="utf-8")
    pid_file = pytester.path / "pids"
    template = f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} {shlex.quote(str(pid_file))}"

    started = time.monotonic()
    result = pytester.runpytest_subprocess(
        f"--autodeploy-registry={folder}",
        f"--autodeploy-command={template}",
        "--autodeploy-gpus=1",
        "--autodeploy-timeout=1",
        lock_dir_option(pytester),
        timeout=60,
    )

    assert time.monotonic() - started < 30
    result.assert_outcomes(failed=1)
    assert "timed out after 1 s" in result.stdout.str()
    group, command, grandchild = map(int, pid_file.read_text().split())
    deadline = time.monotonic() + 5
    while group_members(group) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_running(command)
    assert not is_running(grandchild)
    assert group_members(group) == []


def test_killed_pytest_kills_group(pytester: pytest.Pytester) -> None:
    models = """\
version: '2.0'
models:
- name: org/hang-1B
  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]
"""
    folder = write_registry(pytester.path / "reg", models)
    script = pytester.path / "hang.py"
    script.write_text(HANGING_COMMAND, encoding="utf-8")
    pid_file = pytester.path / "pids"
    template = f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} {shlex.quote(str(pid_file))}"

    session = pytester.popen(
        [
            sys.executable,
            "-m",
            "pytest",
            f"--autodeploy-registry={folder}",
            f"--autodeploy-command={template}",
            "--autodeploy-gpus=1",
            lock_dir_option(pytester),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not pid_file.exists():
            assert time.monotonic() < deadline, "the command never started"
            time.sleep(0.05)
        # A crashed worker gets no chance to clean up.
        session.send_signal(signal.SIGKILL)
        session.wait(timeout=10)
    finally:
        if session.poll() is None:
            session.kill()
            session.wait()

    group, command, grandchild = map(int, pid_file.read_text().split())
    deadline = time.monotonic() + 5
    while group_members(group) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_running(command)
    assert not is_running(grandchild)
    assert group_members(group) == []


TOO_BIG_MODELS = """\
version: '2.0'
models:
- name: org/tiny-1B
  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]
- name: org/huge-405B
  yaml_extra: [dashboard_default.yaml, world_size_8.yaml]
"""


def test_too_few_gpus_skipped(pytester: pytest.Pytester, fake_command: tuple[str, Path]) -> None:
    folder = write_registry(pytester.path / "reg", TOO_BIG_MODELS)
    prefix, out = fake_command

    result = pytester.runpytest(
        f"--autodeploy-registry={folder}",
        f"--autodeploy-command={prefix} {{model}}",
        "--autodeploy-gpus=4",
        lock_dir_option(pytester),
        "-rs",
    )

    result.assert_outcomes(passed=1, skipped=1)
    assert [call["argv"][0] for call in read_calls(out)] == ["org/tiny-1B"]
    result.stdout.fnmatch_lines(["SKIPPED [[]1] *: needs 8 GPUs, this node has 4"])
    result.stdout.fnmatch_lines(
        [
            "not run, too few GPUs on this node (1 model; never counted as passed):",
            "  reg/models.yaml::org/huge-405B: needs 8 GPUs, this node has 4",
        ]
    )
    assert summary_rows(result)["8"]["passed"] == 0


def test_too_few_gpus_skip_location(pytester: pytest.Pytester, fake_command: tuple[str, Path]) -> None:
    folder = write_registry(pytester.path / "reg", TOO_BIG_MODELS)
    prefix, _ = fake_command

    result = pytester.runpytest(
        f"--autodeploy-registry={folder}",
        f"--autodeploy-command={prefix} {{model}}",
        "--autodeploy-gpus=4",
        lock_dir_option(pytester),
        "-rs",
    )

    result.stdout.fnmatch_lines(["SKIPPED [[]1] reg/models.yaml*: needs 8 GPUs, this node has 4"])


def test_too_few_gpus_strict(pytester: pytest.Pytester, fake_command: tuple[str, Path]) -> None:
    folder = write_registry(pytester.path / "reg", TOO_BIG_MODELS)
    prefix, _ = fake_command

    result = pytester.runpytest(
        f"--autodeploy-registry={folder}",
        f"--autodeploy-command={prefix} {{model}}",
        "--autodeploy-gpus=4",
        "--autodeploy-strict-gpus",
        lock_dir_option(pytester),
    )

    result.assert_outcomes(passed=1, failed=1)
    assert "needs 8 GPUs, this node has 4 (--autodeploy-strict-gpus)" in result.stdout.str()


@pytest.mark.parametrize("argument", ["{foo}", "--{foo}=1"])
def test_unknown_placeholder(pytester: pytest.Pytester, registry: Path, argument: str) -> None:
    result = pytester.runpytest(
        f"--autodeploy-registry={registry}",
        f"--autodeploy-command=runner --model {{model}} {argument}",
        lock_dir_option(pytester),
    )

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "unknown placeholder {foo} in --autodeploy-command" in result.stderr.str()


@pytest.mark.parametrize("argument", ["{model:d}", "{model!r}", "{model:{foo}}", "{model:>9999999999}"])
def test_format_spec_rejected(pytester: pytest.Pytester, registry: Path, argument: str) -> None:
    result = pytester.runpytest(
        f"--autodeploy-registry={registry}",
        f"--autodeploy-command=runner {argument}",
        lock_dir_option(pytester),
    )

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"argument '{argument}' has a format spec or conversion" in result.stderr.str()


def test_visible_devices_respected(
    pytester: pytest.Pytester, registry: Path, fake_command: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    prefix, out = fake_command

    result = pytester.runpytest(
        f"--autodeploy-registry={registry}",
        f"--autodeploy-command={prefix} {{model}} {{world_size}} {{gpus}}",
        lock_dir_option(pytester),
    )

    # org/huge-405B needs 8 of the 4 visible GPUs.
    result.assert_outcomes(passed=len(MODEL_IDS) - 1, skipped=1, warnings=1)
    calls = read_calls(out)
    assert len(calls) == len(MODEL_IDS) - 1
    for call in calls:
        _, world_size, gpus = call["argv"]
        assert call["cuda"] == gpus
        assert len(gpus.split(",")) == int(world_size)
        assert set(gpus.split(",")) <= {"4", "5", "6", "7"}


def test_xdist_command_runner(pytester: pytest.Pytester, registry: Path, fake_command: tuple[str, Path]) -> None:
    prefix, out = fake_command

    result = pytester.runpytest_subprocess(
        f"--autodeploy-registry={registry}",
        f"--autodeploy-command={prefix} {{model}} {{world_size}} {{gpus}}",
        "--autodeploy-gpus=4",
        lock_dir_option(pytester),
        "-n",
        "2",
    )

    result.assert_outcomes(passed=len(MODEL_IDS) - 1, skipped=1)
    calls = read_calls(out)
    assert sorted(call["argv"][0] for call in calls) == sorted(
        test_id.split("[")[0] for test_id in MODEL_IDS if test_id != "org/huge-405B"
    )
    for call in calls:
        _, world_size, gpus = call["argv"]
        assert len(gpus.split(",")) == int(world_size)


# --- summary, skip and xfail ------------------------------------------------

MIXED_MODELS = """\
version: '2.0'
models:
- name: org/tiny-1B
  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]
- name: org/tiny-fail-1B
  yaml_extra: [dashboard_default.yaml, world_size_1.yaml]
- name: org/mid-8B
  yaml_extra: [dashboard_default.yaml, world_size_2.yaml]
- name: org/mid-skip-8B
  yaml_extra: [dashboard_default.yaml, world_size_2.yaml]
  skip: "weights not public"
- name: org/mid-fail-8B
  yaml_extra: [dashboard_default.yaml, world_size_2.yaml]
  xfail: "crashes in the loader"
- name: org/mid-ok-8B
  yaml_extra: [dashboard_default.yaml, world_size_2.yaml]
  xfail: "was flaky"
- name: org/big-70B
  yaml_extra: [dashboard_default.yaml, world_size_4.yaml]
- name: org/huge-405B
  yaml_extra: [dashboard_default.yaml, world_size_8.yaml]
"""


@pytest.fixture
def mixed_result(pytester: pytest.Pytester, fake_command: tuple[str, Path]) -> pytest.RunResult:
    folder = write_registry(pytester.path / "reg", MIXED_MODELS)
    prefix, _ = fake_command
    return pytester.runpytest(
        f"--autodeploy-registry={folder}",
        f"--autodeploy-command={prefix} {{model}}",
        "--autodeploy-gpus=4",
        lock_dir_option(pytester),
        "-rsxX",
    )


def test_summary_counts(mixed_result: pytest.RunResult) -> None:
    mixed_result.assert_outcomes(passed=3, failed=1, skipped=2, xfailed=1, xpassed=1)
    zero = dict.fromkeys(("models", "passed", "failed", "error", "skipped", "xfailed", "xpassed"), 0)

    rows = summary_rows(mixed_result)

    assert rows["1"] == {**zero, "models": 2, "passed": 1, "failed": 1}
    assert rows["2"] == {**zero, "models": 4, "passed": 1, "skipped": 1, "xfailed": 1, "xpassed": 1}
    assert rows["4"] == {**zero, "models": 1, "passed": 1}
    assert rows["8"] == {**zero, "models": 1, "skipped": 1}
    assert rows["total"] == {**zero, "models": 8, "passed": 3, "failed": 1, "skipped": 2, "xfailed": 1, "xpassed": 1}


def test_entry_skip_and_xfail(mixed_result: pytest.RunResult) -> None:
    # pytest leaves the line out for a skip that comes from a skip mark.
    mixed_result.stdout.fnmatch_lines(["SKIPPED [[]1] reg/models.yaml: org/mid-skip-8B: weights not public"])
    mixed_result.stdout.fnmatch_lines(["XFAIL reg/models.yaml::org/mid-fail-8B - crashes in the loader"])
    mixed_result.stdout.fnmatch_lines(["XPASS reg/models.yaml::org/mid-ok-8B - was flaky"])
