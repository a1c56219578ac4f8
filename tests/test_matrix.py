"""Tests of the CI matrix planner, the CI examples, the models.yaml schema and the pre-commit hook."""

from __future__ import annotations

import json
import math
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from pytest_autodeploy import matrix
from pytest_autodeploy.diagnostics import RegistryError
from pytest_autodeploy.durations import (
    DurationRecord,
    estimate_seconds,
    load_durations,
    save_durations,
)
from pytest_autodeploy.matrix import build_matrix, plan_shards
from pytest_autodeploy.registry import (
    _SELECTABLE_NAME,
    Model,
    ModelEntry,
    Registry,
    load_registry,
)
from pytest_autodeploy.shards import parse_shard_spec, split_shards

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = REPO_ROOT / "examples" / "github" / "nightly.yml"
SBATCH = REPO_ROOT / "examples" / "slurm" / "nightly.sbatch"
SCHEMA_PATH = REPO_ROOT / "pytest_autodeploy" / "models.schema.json"
HOOKS = REPO_ROOT / ".pre-commit-hooks.yaml"
CI_DOC = REPO_ROOT / "docs" / "ci.md"
BUNDLED_MODELS = REPO_ROOT / "model_registry" / "models.yaml"
TRTLLM_MODELS = Path("/work/shared/real-registries/tensorrt-llm/models.yaml")

# Entries per world size in the generated registry: 140 in all, in about the
# proportions of the TensorRT-LLM registry.
WORLD_SIZE_COUNTS = {1: 61, 2: 38, 4: 27, 8: 14}

# Typical seconds per model by world size. Recorded durations vary around these.
BASE_SECONDS = {1: 300.0, 2: 450.0, 4: 600.0, 8: 900.0}

RUNNER_GPUS = 8
MAX_MINUTES = 60.0

DEFAULT_SBATCH_COMMAND = "python -m my_deploy_check --model {model} --config {config} --world-size {world_size}"


# --- helpers ------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratedRegistry:
    root: Path
    registry: Registry
    durations_path: Path
    table: dict[str, DurationRecord]


def write_registry(root: Path, seed: int) -> None:
    """Write a 140-entry registry with shuffled world sizes, shared names, one skip and one xfail entry."""
    rng = random.Random(seed)
    sizes = [world_size for world_size, count in WORLD_SIZE_COUNTS.items() for _ in range(count)]
    rng.shuffle(sizes)

    configs = root / "configs"
    configs.mkdir(parents=True)
    (configs / "dashboard_default.yaml").write_text("runtime: trtllm\n")
    for world_size in WORLD_SIZE_COUNTS:
        (configs / f"world_size_{world_size}.yaml").write_text(f"world_size: {world_size}\n")

    lines = ["version: '2.0'", "models:"]
    for index, world_size in enumerate(sizes):
        # Every tenth entry repeats the name before it, so both get NAME[CONFIG_ID] test ids.
        number = index - 1 if index % 10 == 1 else index
        lines.append(f"- name: org/model-{number:03d}")
        lines.append(f"  config_id: ws{world_size}-{index}")
        lines.append(f"  yaml_extra: [dashboard_default.yaml, world_size_{world_size}.yaml]")
        if index == 5:
            lines.append('  skip: "weights are not public"')
        if index == 6:
            lines.append('  xfail: "fails with CUDA OOM"')
    (root / "models.yaml").write_text("\n".join(lines) + "\n")


def write_durations(path: Path, registry: Registry, seed: int) -> dict[str, DurationRecord]:
    """Record lognormal durations for two in three models. The rest get the default estimates."""
    rng = random.Random(seed)
    table = {}
    for index, model in enumerate(registry.models):
        if index % 3 == 0:
            continue
        seconds = BASE_SECONDS[model.world_size] * rng.lognormvariate(0.0, 0.6)
        table[model.test_id] = DurationRecord(seconds=seconds, world_size=model.world_size)

    # Reading the saved file back gives the seconds rounded as every reader sees them.
    save_durations(path, table)
    return load_durations(path)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> GeneratedRegistry:
    root = tmp_path_factory.mktemp("registry")
    write_registry(root, seed=7)
    registry = load_registry(root)
    assert registry.errors == []

    durations_path = tmp_path_factory.mktemp("durations") / "durations.json"
    table = write_durations(durations_path, registry, seed=11)
    return GeneratedRegistry(root, registry, durations_path, table)


@pytest.fixture(scope="module")
def generated_matrix(generated: GeneratedRegistry) -> dict[str, Any]:
    return build_matrix(generated.registry, generated.table, RUNNER_GPUS, MAX_MINUTES)


def make_model(name: str, world_size: int | None, *, skip: str | None = None) -> Model:
    entry = ModelEntry(index=0, line=3, name=name, config_id=None, yaml_extra=("dashboard_default.yaml",), skip=skip)
    return Model(entry=entry, test_id=name, world_size=world_size)


def recorded(seconds_by_id: dict[str, float]) -> dict[str, DurationRecord]:
    return {test_id: DurationRecord(seconds=seconds) for test_id, seconds in seconds_by_id.items()}


def seconds_of(model: Model, table: dict[str, DurationRecord]) -> float:
    """Estimate a model's seconds the way the planner must: skipped entries cost nothing."""
    if model.entry.skip is not None:
        return 0.0
    return estimate_seconds(model.test_id, model.world_size, table)


def wall_seconds(world_size: int, seconds: list[float], gpus: int) -> float:
    """Estimate a shard's wall time: models of one size run gpus // world_size at a time."""
    concurrent = gpus // world_size
    return max(sum(seconds) / concurrent, max(seconds))


def job_test_ids(job: dict[str, Any], models: list[Model], table: dict[str, DurationRecord]) -> list[str]:
    """Return the test ids that ``--autodeploy-shard`` selects for one matrix job."""
    k, n = parse_shard_spec(job["shard"])
    group = [model for model in models if model.world_size == job["world_size"]]
    return plan_shards(group, table, n)[k - 1]


# --- build_matrix on the generated registry -------------------------------------


def test_matrix_json_round_trip(generated_matrix: dict[str, Any]) -> None:
    text = json.dumps(generated_matrix, allow_nan=False)

    assert json.loads(text) == generated_matrix


def test_matrix_covers_each_model_once(generated: GeneratedRegistry, generated_matrix: dict[str, Any]) -> None:
    models = generated.registry.models

    placed = Counter(
        test_id for job in generated_matrix["include"] for test_id in job_test_ids(job, models, generated.table)
    )

    assert placed == Counter(model.test_id for model in models)


def test_matrix_model_counts_match_shards(generated: GeneratedRegistry, generated_matrix: dict[str, Any]) -> None:
    models = generated.registry.models
    for job in generated_matrix["include"]:
        assert job["models"] == len(job_test_ids(job, models, generated.table)), job["name"]


def test_matrix_shards_are_non_empty(generated_matrix: dict[str, Any]) -> None:
    assert all(job["models"] > 0 for job in generated_matrix["include"])


def test_matrix_respects_max_minutes(generated: GeneratedRegistry, generated_matrix: dict[str, Any]) -> None:
    by_id = {model.test_id: model for model in generated.registry.models}

    for job in generated_matrix["include"]:
        world_size = job["world_size"]
        group = [model for model in by_id.values() if model.world_size == world_size]
        # A model longer than the limit raises the limit of its world size to its own time.
        limit = max(MAX_MINUTES * 60, max(seconds_of(model, generated.table) for model in group))
        shard_ids = job_test_ids(job, list(by_id.values()), generated.table)
        seconds = [seconds_of(by_id[test_id], generated.table) for test_id in shard_ids]

        assert wall_seconds(world_size, seconds, RUNNER_GPUS) <= limit + 1e-6, job["name"]


def test_matrix_estimates_match_shards(generated: GeneratedRegistry, generated_matrix: dict[str, Any]) -> None:
    models = generated.registry.models
    by_id = {model.test_id: model for model in models}

    for job in generated_matrix["include"]:
        shard_ids = job_test_ids(job, models, generated.table)
        seconds = [seconds_of(by_id[test_id], generated.table) for test_id in shard_ids]
        expected = round(wall_seconds(job["world_size"], seconds, RUNNER_GPUS) / 60, 1)

        assert job["estimated_minutes"] == expected, job["name"]


def test_matrix_shard_count_is_smallest(generated: GeneratedRegistry, generated_matrix: dict[str, Any]) -> None:
    counts = Counter(job["world_size"] for job in generated_matrix["include"])
    assert max(counts.values()) > 1

    for world_size, count in counts.items():
        if count == 1:
            continue
        group = [model for model in generated.registry.models if model.world_size == world_size]
        seconds_by_id = {model.test_id: seconds_of(model, generated.table) for model in group}
        limit = max(MAX_MINUTES * 60, max(seconds_by_id.values()))

        fewer = plan_shards(group, generated.table, count - 1)
        longest = max(wall_seconds(world_size, [seconds_by_id[key] for key in shard], RUNNER_GPUS) for shard in fewer)

        assert longest > limit, f"world size {world_size} fits in {count - 1} shards"


def test_matrix_one_group_per_world_size(generated_matrix: dict[str, Any]) -> None:
    names = [job["name"] for job in generated_matrix["include"]]
    sizes = [job["world_size"] for job in generated_matrix["include"]]

    assert sizes == sorted(sizes)
    assert set(sizes) == set(WORLD_SIZE_COUNTS)
    assert len(names) == len(set(names))


DUMP_MATRIX = """
import json, sys
from pytest_autodeploy.durations import load_durations
from pytest_autodeploy.matrix import build_matrix
from pytest_autodeploy.registry import load_registry

registry = load_registry(sys.argv[1])
print(json.dumps(build_matrix(registry, load_durations(sys.argv[2]), 8, 60.0)))
"""


@pytest.mark.parametrize("hash_seed", ["0", "4242"])
def test_matrix_same_across_processes(
    generated: GeneratedRegistry, generated_matrix: dict[str, Any], hash_seed: str
) -> None:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}

    result = subprocess.run(
        [sys.executable, "-c", DUMP_MATRIX, str(generated.root), str(generated.durations_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == json.dumps(generated_matrix) + "\n"


def collect_ids(pytester: pytest.Pytester, generated: GeneratedRegistry, *args: str) -> list[str]:
    """Collect the generated registry with the plugin and return the selected test ids in order."""
    # Each run gets its own copy, because the plugin rewrites its durations file at the end.
    durations = pytester.path / f"durations-{len(list(pytester.path.glob('durations-*.json')))}.json"
    shutil.copyfile(generated.durations_path, durations)

    result = pytester.runpytest(
        f"--autodeploy-registry={generated.root}",
        "--autodeploy-gpus=8",
        f"--autodeploy-durations={durations}",
        "--collect-only",
        "-q",
        *args,
    )
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    return [line.partition("::")[2] for line in result.outlines if "::" in line]


def test_plugin_shards_match_plan(
    pytester: pytest.Pytester, generated: GeneratedRegistry, generated_matrix: dict[str, Any]
) -> None:
    models = generated.registry.models

    for job in generated_matrix["include"]:
        selected = collect_ids(pytester, generated, *job["pytest_argv"][1:])

        assert selected == job_test_ids(job, models, generated.table), job["name"]


def test_plugin_shards_give_unsharded_set(
    pytester: pytest.Pytester, generated: GeneratedRegistry, generated_matrix: dict[str, Any]
) -> None:
    unsharded = collect_ids(pytester, generated)

    sharded = []
    for job in generated_matrix["include"]:
        sharded += collect_ids(pytester, generated, *job["pytest_argv"][1:])

    assert len(unsharded) == sum(WORLD_SIZE_COUNTS.values())
    assert sorted(sharded) == sorted(unsharded)


def test_plugin_skipped_model_weighs_nothing(pytester: pytest.Pytester) -> None:
    registry = pytester.path / "registry"
    (registry / "configs").mkdir(parents=True)
    (registry / "configs" / "world_size_8.yaml").write_text("world_size: 8\n")
    entries = [f"- name: org/{name}\n  yaml_extra: [world_size_8.yaml]\n" for name in "abcd"]
    entries[0] += '  skip: "weights are not public"\n'
    (registry / "models.yaml").write_text("version: '2.0'\nmodels:\n" + "".join(entries))
    durations = pytester.path / "durations.json"
    save_durations(durations, recorded({"org/b": 1000.0, "org/c": 900.0, "org/d": 100.0}))
    models = load_registry(registry).models

    # Weighing the skipped org/a at the 900-second default would give [b, d] and [a, c].
    assert plan_shards(models, load_durations(durations), 2) == [["org/a", "org/b"], ["org/c", "org/d"]]

    result = pytester.runpytest(
        f"--autodeploy-registry={registry}",
        "--autodeploy-gpus=8",
        f"--autodeploy-durations={durations}",
        "--autodeploy-shard=1/2",
        "--collect-only",
        "-q",
    )

    assert [line.partition("::")[2] for line in result.outlines if "::" in line] == ["org/a", "org/b"]


# --- build_matrix and plan_shards on small inputs ---------------------------------


def test_job_fields_exact() -> None:
    models = [make_model("org/a", 4), make_model("org/b", 4), make_model("org/c", 4)]
    table = recorded({"org/a": 1800.0, "org/b": 1800.0, "org/c": 1800.0})

    jobs = build_matrix(models, table, 8, 30)["include"]

    # 4 * 3 * 1800 GPU-seconds on 8 GPUs is 45 minutes, so two shards: a and c, then b.
    assert jobs == [
        {
            "name": "ws4-shard-1-of-2",
            "world_size": 4,
            "gpus": 8,
            "runner": "gpu-8",
            "shard": "1/2",
            "pytest_args": "--autodeploy-registry -m world_size_4 --autodeploy-shard=1/2",
            "pytest_argv": ["--autodeploy-registry", "-m", "world_size_4", "--autodeploy-shard=1/2"],
            "estimated_minutes": 30.0,
            "models": 2,
        },
        {
            "name": "ws4-shard-2-of-2",
            "world_size": 4,
            "gpus": 8,
            "runner": "gpu-8",
            "shard": "2/2",
            "pytest_args": "--autodeploy-registry -m world_size_4 --autodeploy-shard=2/2",
            "pytest_argv": ["--autodeploy-registry", "-m", "world_size_4", "--autodeploy-shard=2/2"],
            "estimated_minutes": 30.0,
            "models": 1,
        },
    ]


def test_plan_shards_exact_split() -> None:
    models = [make_model("org/a", 4), make_model("org/b", 4), make_model("org/c", 4)]
    table = recorded({"org/a": 1800.0, "org/b": 1800.0, "org/c": 1800.0})

    assert plan_shards(models, table, 2) == [["org/a", "org/c"], ["org/b"]]


def test_plan_shards_weighs_gpu_seconds() -> None:
    models = [make_model("org/small", 1), make_model("org/big", 8), make_model("org/mid", 2), make_model("org/x", 4)]
    table = recorded({"org/small": 500.0, "org/big": 100.0, "org/mid": 350.0})
    expected_weights = [
        (model.test_id, model.world_size * estimate_seconds(model.test_id, model.world_size, table)) for model in models
    ]

    for n in (1, 2, 3, 4):
        assert plan_shards(models, table, n) == split_shards(expected_weights, n), n


def test_skipped_model_weighs_nothing() -> None:
    skipped = make_model("org/skipped", 8, skip="weights are not public")

    assert matrix.model_seconds(skipped, {}) == 0.0


def test_recorded_seconds_override_default() -> None:
    model = make_model("org/a", 2)

    assert matrix.model_seconds(model, recorded({"org/a": 42.5})) == 42.5


def test_jobs_ordered_by_world_size_then_shard() -> None:
    models = [make_model("org/e", 8), make_model("org/a", 1), make_model("org/f", 8), make_model("org/b", 2)]

    jobs = build_matrix(models, {}, 8, 15)["include"]

    # Each world-size-8 model takes 15 minutes by default, so each gets its own shard.
    assert [job["name"] for job in jobs] == [
        "ws1-shard-1-of-1",
        "ws2-shard-1-of-1",
        "ws8-shard-1-of-2",
        "ws8-shard-2-of-2",
    ]


def test_registry_path_is_quoted() -> None:
    jobs = build_matrix([make_model("org/a", 1)], {}, 8, 60, registry_arg="my registry/models.yaml")["include"]

    assert jobs[0]["pytest_args"] == "'--autodeploy-registry=my registry/models.yaml' -m world_size_1 --autodeploy-shard=1/1"
    assert shlex.split(jobs[0]["pytest_args"]) == jobs[0]["pytest_argv"]


def test_runner_label_template() -> None:
    jobs = build_matrix([make_model("org/a", 2)], {}, 4, 60, runner_label="h100x{gpus}-ws{world_size}")["include"]

    assert jobs[0]["runner"] == "h100x4-ws2"


def test_longest_model_sets_the_limit() -> None:
    models = [make_model("org/long", 8), make_model("org/b", 8), make_model("org/c", 8)]
    table = recorded({"org/long": 7200.0, "org/b": 600.0, "org/c": 600.0})

    jobs = build_matrix(models, table, 8, 60)["include"]

    # No shard can be shorter than the 120-minute model, so the other two share one.
    assert [job["estimated_minutes"] for job in jobs] == [120.0, 20.0]


def test_shard_count_capped_by_models() -> None:
    models = [make_model("org/a", 8), make_model("org/b", 8), make_model("org/c", 8)]
    table = recorded({"org/a": 300.0, "org/b": 300.0, "org/c": 300.0})

    jobs = build_matrix(models, table, 8, 1)["include"]

    assert [job["shard"] for job in jobs] == ["1/3", "2/3", "3/3"]


def test_wall_time_counts_whole_models() -> None:
    # Two 3-GPU models fit on 8 GPUs at once, not 8/3 of them.
    assert matrix.shard_wall_seconds(3, [600.0, 600.0, 600.0, 600.0], 8) == 1200.0


def test_wall_time_at_least_longest_model() -> None:
    assert matrix.shard_wall_seconds(1, [800.0, 10.0], 8) == 800.0


def test_runner_gpus_grow_to_world_size() -> None:
    jobs = build_matrix([make_model("org/huge", 16)], {}, 8, 60)["include"]

    assert jobs[0]["gpus"] == 16
    assert jobs[0]["runner"] == "gpu-16"


def test_runner_gpus_mapping() -> None:
    models = [make_model("org/a", 1), make_model("org/b", 1), make_model("org/c", 4)]

    jobs = build_matrix(models, {}, {1: 1, 4: 8}, 60)["include"]

    # On a 1-GPU runner the two 5-minute defaults run one after the other.
    assert [(job["runner"], job["estimated_minutes"]) for job in jobs] == [("gpu-1", 10.0), ("gpu-8", 10.0)]


def test_runner_gpus_mapping_missing_size() -> None:
    with pytest.raises(ValueError, match=r"no runner for world size 8: runner_gpus maps only world sizes 1, 2; add 8"):
        build_matrix([make_model("org/a", 8)], {}, {1: 1, 2: 2}, 60)


def test_runner_gpus_mapping_too_small() -> None:
    with pytest.raises(ValueError, match=r"a runner with 2 GPUs cannot run a model that needs 4"):
        build_matrix([make_model("org/a", 4)], {}, {4: 2}, 60)


@pytest.mark.parametrize("gpus", [0, -1, True, 2.5, "8"])
def test_invalid_runner_gpus(gpus: Any) -> None:
    with pytest.raises(ValueError, match=r"invalid runner_gpus .*: expected a positive integer GPU count"):
        build_matrix([make_model("org/a", 1)], {}, gpus, 60)


@pytest.mark.parametrize("minutes", [0, -5, math.nan, math.inf, True, "60"])
def test_invalid_max_minutes(minutes: Any) -> None:
    with pytest.raises(ValueError, match=r"invalid max_shard_minutes .*: expected a finite number > 0"):
        build_matrix([make_model("org/a", 1)], {}, 8, minutes)


def test_too_many_jobs() -> None:
    models = [make_model("org/a", 8), make_model("org/b", 8), make_model("org/c", 8)]

    with pytest.raises(ValueError, match=r"the matrix has 3 jobs, more than the limit of 2"):
        build_matrix(models, {}, 8, 1, max_jobs=2)


def test_model_without_world_size() -> None:
    with pytest.raises(ValueError, match=r"model 'org/broken' has no world size"):
        build_matrix([make_model("org/broken", None)], {}, 8, 60)


def test_registry_with_errors(tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "models.yaml").write_text("version: '2.0'\nmodels:\n- name: org/a\n  yaml_extra: [missing.yaml]\n")
    registry = load_registry(tmp_path)

    with pytest.raises(RegistryError, match=r"config file 'missing.yaml' of org/a not found"):
        build_matrix(registry, {}, 8, 60)


def test_empty_registry() -> None:
    assert build_matrix([], None, 8, 60) == {"include": []}


def test_bundled_registry_matrix() -> None:
    registry = load_registry(BUNDLED_MODELS.parent)

    jobs = build_matrix(registry, None, RUNNER_GPUS, MAX_MINUTES)["include"]

    assert sum(job["models"] for job in jobs) == len(registry.models)


def test_matrix_imports_no_pytest() -> None:
    code = "import sys, pytest_autodeploy.matrix; print(sorted(m for m in ('pytest', '_pytest') if m in sys.modules))"

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert result.stdout == "[]\n"


# --- examples/github/nightly.yml ------------------------------------------------


@pytest.fixture(scope="module")
def workflow() -> dict[Any, Any]:
    return yaml.safe_load(WORKFLOW.read_text())


def step_runs(job: dict[str, Any]) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def uses_action(step: dict[str, Any], action: str) -> bool:
    return step.get("uses", "").startswith(f"actions/{action}@")


def test_workflow_triggers(workflow: dict[Any, Any]) -> None:
    # YAML 1.1 reads the bare key on as True; GitHub reads it as "on".
    triggers = workflow.get("on", workflow.get(True))

    assert set(triggers) == {"schedule", "workflow_dispatch"}


def test_workflow_plans_with_matrix_command(workflow: dict[Any, Any]) -> None:
    plan = workflow["jobs"]["plan"]

    assert "python -m pytest_autodeploy matrix model_registry --runner-gpus 8 --max-shard-minutes 60" in step_runs(plan)
    assert plan["outputs"]["matrix"] == "${{ steps.matrix.outputs.matrix }}"


def test_workflow_matrix_from_plan(workflow: dict[Any, Any]) -> None:
    test = workflow["jobs"]["test"]

    assert test["needs"] == "plan"
    assert test["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    assert test["strategy"]["fail-fast"] is False


def test_workflow_runs_on_matrix_runner(workflow: dict[Any, Any]) -> None:
    assert workflow["jobs"]["test"]["runs-on"] == ["self-hosted", "${{ matrix.runner }}"]


def test_workflow_matrix_keys_exist() -> None:
    text = WORKFLOW.read_text()
    job_keys = set(build_matrix([make_model("org/a", 1)], {}, 8, 60)["include"][0])

    # matrix.X inside ${{ }} expressions, but not steps.matrix.outputs.
    expressions = " ".join(re.findall(r"\$\{\{(.*?)\}\}", text))
    used = set(re.findall(r"(?<![\w.])matrix\.(\w+)", expressions))

    assert {"pytest_args", "runner", "name"} <= used
    assert used <= job_keys


def test_workflow_test_command(workflow: dict[Any, Any]) -> None:
    runs = step_runs(workflow["jobs"]["test"])

    assert "pytest ${{ matrix.pytest_args }} -n auto" in runs
    assert "--autodeploy-command=" in runs
    assert "--autodeploy-durations=durations.json" in runs
    assert "--autodeploy-report=report.json" in runs
    assert '--autodeploy-markdown="$GITHUB_STEP_SUMMARY"' in runs


def test_workflow_downloads_continue_on_error(workflow: dict[Any, Any]) -> None:
    for name in ("test", "merge"):
        downloads = [step for step in workflow["jobs"][name]["steps"] if uses_action(step, "download-artifact")]

        assert downloads, name
        assert all(step.get("continue-on-error") is True for step in downloads), name


def test_workflow_uploads_per_shard(workflow: dict[Any, Any]) -> None:
    uploads = [step for step in workflow["jobs"]["test"]["steps"] if uses_action(step, "upload-artifact")]

    assert [step["with"]["name"] for step in uploads] == ["autodeploy-shard-${{ matrix.name }}"]
    assert uploads[0]["if"] == "always()"
    assert uploads[0]["with"]["path"].split() == ["durations.json", "report.json"]


def test_workflow_merge_job(workflow: dict[Any, Any]) -> None:
    merge = workflow["jobs"]["merge"]
    runs = step_runs(merge)
    downloads = [step["with"] for step in merge["steps"] if uses_action(step, "download-artifact")]

    assert merge["if"] == "always()"
    assert {"pattern": "autodeploy-shard-*", "path": "shards"} in downloads
    assert 'python -m pytest_autodeploy merge-durations durations.json "${existing[@]}"' in runs
    assert 'python -m pytest_autodeploy merge-reports report.json "${reports[@]}"' in runs


def test_workflow_scripts_parse(workflow: dict[Any, Any], tmp_path: Path) -> None:
    for job_name, job in workflow["jobs"].items():
        for index, step in enumerate(job["steps"]):
            if "run" not in step:
                continue
            # GitHub replaces each ${{ ... }} before the shell reads the script.
            script = tmp_path / f"{job_name}-{index}.sh"
            script.write_text(re.sub(r"\$\{\{.*?\}\}", "placeholder", step["run"]))

            result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)

            assert result.returncode == 0, f"{job_name} step {index}: {result.stderr}"


# --- examples/slurm/nightly.sbatch ----------------------------------------------


def test_sbatch_syntax() -> None:
    result = subprocess.run(["bash", "-n", str(SBATCH)], capture_output=True, text=True, timeout=30)

    assert result.returncode == 0, result.stderr


def test_sbatch_requests_array_and_gpus() -> None:
    directives = [line.split(None, 1)[1] for line in SBATCH.read_text().splitlines() if line.startswith("#SBATCH ")]

    assert "--array=0-7" in directives
    assert "--gpus-per-node=8" in directives


@dataclass(frozen=True)
class SbatchRun:
    result: subprocess.CompletedProcess[str]
    calls: dict[str, list[str]]  # argv of each fake tool that ran, by tool name
    output_dir: Path


def run_sbatch(tmp_path: Path, task_env: dict[str, str], *args: str) -> SbatchRun:
    """Run the script with fake srun, python and pytest on PATH, each recording its argv."""
    bin_dir = tmp_path / "bin"
    log_dir = tmp_path / "calls"
    bin_dir.mkdir()
    log_dir.mkdir()
    for tool in ("srun", "python", "python3", "pytest"):
        fake = bin_dir / tool
        fake.write_text(f"#!/bin/sh\nprintf '%s\\0' \"$@\" > \"$FAKE_LOG_DIR/{tool}\"\n")
        fake.chmod(0o755)

    output_dir = tmp_path / "out"
    inherited = {key: value for key, value in os.environ.items() if not key.startswith(("SLURM_", "AUTODEPLOY_"))}
    env = {key: value for key, value in inherited.items() if key != "PYTHON"}
    env.update(
        {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "FAKE_LOG_DIR": str(log_dir),
            "AUTODEPLOY_REGISTRY": "my registry",
            "AUTODEPLOY_DURATIONS": str(tmp_path / "durations.json"),
            "AUTODEPLOY_OUTPUT_DIR": str(output_dir),
            **task_env,
        }
    )

    result = subprocess.run(
        ["bash", str(SBATCH), *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    calls = {path.name: path.read_text().split("\0")[:-1] for path in log_dir.iterdir()}
    return SbatchRun(result, calls, output_dir)


def test_sbatch_runs_task_shard(tmp_path: Path) -> None:
    (tmp_path / "durations.json").write_text('{"org/a": 12.5}\n')

    run = run_sbatch(tmp_path, {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4"}, "-k", "llama")

    assert run.result.returncode == 0, run.result.stderr
    assert run.calls["srun"] == [
        "python",
        "-m",
        "pytest",
        "--autodeploy-registry=my registry",
        "--autodeploy-shard=3/4",
        "-n",
        "auto",
        f"--autodeploy-command={DEFAULT_SBATCH_COMMAND}",
        f"--autodeploy-durations={run.output_dir / 'durations-shard-3-of-4.json'}",
        f"--autodeploy-report={run.output_dir / 'report-shard-3-of-4.json'}",
        "-k",
        "llama",
    ]


def test_sbatch_runs_nothing_real(tmp_path: Path) -> None:
    run = run_sbatch(tmp_path, {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "1"})

    assert run.result.returncode == 0, run.result.stderr
    assert sorted(run.calls) == ["srun"]


def test_sbatch_copies_durations(tmp_path: Path) -> None:
    (tmp_path / "durations.json").write_text('{"org/a": 12.5}\n')

    run = run_sbatch(tmp_path, {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "2"})

    assert run.result.returncode == 0, run.result.stderr
    assert (run.output_dir / "durations-shard-1-of-2.json").read_text() == '{"org/a": 12.5}\n'


def test_sbatch_removes_stale_durations(tmp_path: Path) -> None:
    stale = tmp_path / "out" / "durations-shard-1-of-2.json"
    stale.parent.mkdir()
    stale.write_text('{"org/a": 99.0}\n')

    run = run_sbatch(tmp_path, {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "2"})

    assert run.result.returncode == 0, run.result.stderr
    assert not stale.exists()


@pytest.mark.parametrize(
    ("task_env", "message"),
    [
        ({}, "SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT are not set"),
        ({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4"}, "array task 4 gives shard 5 of 4"),
        ({"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "4"}, "invalid SLURM_ARRAY_TASK_ID 'x'"),
    ],
)
def test_sbatch_rejects_bad_task(tmp_path: Path, task_env: dict[str, str], message: str) -> None:
    run = run_sbatch(tmp_path, task_env)

    assert run.result.returncode == 2
    assert message in run.result.stderr
    assert run.calls == {}


# --- docs/ci.md -----------------------------------------------------------------


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", CI_DOC.read_text(), flags=re.MULTILINE | re.DOTALL)


def test_doc_yaml_blocks_parse() -> None:
    blocks = code_blocks("yaml")

    assert len(blocks) >= 3
    for block in blocks:
        yaml.safe_load(block)


def test_doc_bash_blocks_parse() -> None:
    for block in code_blocks("bash"):
        result = subprocess.run(["bash", "-n"], input=block, capture_output=True, text=True, timeout=30)

        assert result.returncode == 0, f"{block}\n{result.stderr}"


def test_doc_gitlab_shards_from_node_index() -> None:
    gitlab = next(yaml.safe_load(block) for block in code_blocks("yaml") if "stages" in yaml.safe_load(block))
    script = " ".join(gitlab[".autodeploy-shard"]["script"])

    assert '--autodeploy-shard="${CI_NODE_INDEX:-1}/${CI_NODE_TOTAL:-1}"' in script
    assert [gitlab[f"autodeploy-ws{size}"]["variables"]["WORLD_SIZE"] for size in (1, 2, 4, 8)] == ["1", "2", "4", "8"]


# --- models.schema.json -----------------------------------------------------------


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    return jsonschema.Draft202012Validator(schema)


def error_paths(validator: jsonschema.Draft202012Validator, document: Any) -> list[list[Any]]:
    return [list(error.absolute_path) for error in validator.iter_errors(document)]


def test_schema_is_draft_2020_12() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())

    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_schema_accepts_bundled_registry(validator: jsonschema.Draft202012Validator) -> None:
    assert error_paths(validator, yaml.safe_load(BUNDLED_MODELS.read_text())) == []


def test_schema_accepts_trtllm_registry(validator: jsonschema.Draft202012Validator) -> None:
    if not TRTLLM_MODELS.is_file():
        pytest.skip(f"{TRTLLM_MODELS} is not available")

    assert error_paths(validator, yaml.safe_load(TRTLLM_MODELS.read_text())) == []


HEADER = "version: '2.0'\nmodels:\n"
GOOD_ENTRY = "- name: org/model\n  yaml_extra: [dashboard_default.yaml]\n"

# Each broken models.yaml with the place of the error that must reject it.
BROKEN_REGISTRIES = [
    pytest.param(HEADER + "- name: org/model\n  yaml_extras: [a.yaml]\n", ["models", 0], id="yaml_extras-typo"),
    pytest.param("version: 2.0\nmodels:\n" + GOOD_ENTRY, ["version"], id="version-number"),
    pytest.param("version: '2.1'\nmodels:\n" + GOOD_ENTRY, ["version"], id="version-other"),
    pytest.param(HEADER + GOOD_ENTRY + '  xfail: ""\n', ["models", 0, "xfail"], id="xfail-empty"),
    pytest.param(HEADER + GOOD_ENTRY + '  skip: "  "\n', ["models", 0, "skip"], id="skip-blank"),
    pytest.param(HEADER + GOOD_ENTRY + "  xfail: OOM\n  skip: no weights\n", ["models", 0], id="xfail-and-skip"),
    pytest.param(HEADER + "- name: org/my model\n  yaml_extra: []\n", ["models", 0, "name"], id="name-space"),
    pytest.param(HEADER + '- name: "org/model\\n"\n  yaml_extra: []\n', ["models", 0, "name"], id="name-newline"),
    pytest.param(HEADER + "- name: org/model\n  yaml_extra: a.yaml\n", ["models", 0, "yaml_extra"], id="yaml_extra-string"),
    pytest.param(HEADER + "- name: org/model\n  yaml_extra: [a.yaml, a.yaml]\n", ["models", 0, "yaml_extra"], id="yaml_extra-repeat"),
    pytest.param(HEADER + "- name: org/model\n  yaml_extra: ['']\n", ["models", 0, "yaml_extra", 0], id="yaml_extra-empty-item"),
    pytest.param(HEADER + GOOD_ENTRY + "  config_id: a b\n", ["models", 0, "config_id"], id="config_id-space"),
    pytest.param("version: '2.0'\n", [], id="models-missing"),
    pytest.param("version: '2.0'\nmodel:\n" + GOOD_ENTRY, [], id="top-level-typo"),
]


@pytest.mark.parametrize(("models_yaml", "path"), BROKEN_REGISTRIES)
def test_schema_rejects_broken_registry(
    validator: jsonschema.Draft202012Validator, models_yaml: str, path: list[Any]
) -> None:
    assert path in error_paths(validator, yaml.safe_load(models_yaml))


@pytest.mark.parametrize(
    "name",
    ["org/model-1.5B", "a+b:c_d", "Qwen/Qwen2.5-0.5B-Instruct", "modèle/ü", "a b", "a'b", "a\n", "", "a\tb", "a;b", "a[b]"],
)
def test_schema_name_rule_matches_loader(validator: jsonschema.Draft202012Validator, name: str) -> None:
    document = {"version": "2.0", "models": [{"name": name, "yaml_extra": []}]}

    schema_accepts = ["models", 0, "name"] not in error_paths(validator, document)

    assert schema_accepts == bool(_SELECTABLE_NAME.fullmatch(name))


# --- .pre-commit-hooks.yaml -----------------------------------------------------


def test_hook_definition() -> None:
    hooks = yaml.safe_load(HOOKS.read_text())

    assert [hook["id"] for hook in hooks] == ["autodeploy-validate"]
    assert hooks[0]["entry"] == "pytest-autodeploy validate"
    assert hooks[0]["language"] == "python"
    assert hooks[0]["pass_filenames"] is False
    assert hooks[0]["args"] == ["model_registry"]


@pytest.mark.parametrize(
    ("path", "matches"),
    [
        ("model_registry/models.yaml", True),
        ("examples/auto_deploy/model_registry/configs/world_size_2.yaml", True),
        ("model_registry/configs/nested/llama.yml", True),
        ("model_registry/config.schema.json", False),
        ("models.yaml.bak", False),
        ("README.md", False),
    ],
)
def test_hook_files_pattern(path: str, matches: bool) -> None:
    pattern = yaml.safe_load(HOOKS.read_text())[0]["files"]

    # pre-commit matches the files pattern with re.search.
    assert bool(re.search(pattern, path)) is matches


def test_doc_slurm_merge_first_night(tmp_path: Path) -> None:
    block = next(block for block in code_blocks("bash") if "--wrap" in block)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python"
    fake.write_text('#!/bin/sh\necho "$*" >> calls.txt\n')
    fake.chmod(0o755)
    shard_dir = tmp_path / "autodeploy" / "77"
    shard_dir.mkdir(parents=True)
    (shard_dir / "durations-shard-1-of-1.json").write_text("{}")

    # sbatch prints the --wrap text, which then runs with sh as Slurm would.
    printed = subprocess.run(
        ["bash", "-c", f'sbatch() {{ printf "%s" "$3"; }}\njobid=77\n{block}'],
        capture_output=True, text=True, timeout=30,
    )
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["sh", "-c", printed.stdout], cwd=tmp_path, env=env, timeout=30, check=True)

    assert (tmp_path / "calls.txt").read_text().splitlines() == [
        "-m pytest_autodeploy merge-durations autodeploy/durations.json autodeploy/77/durations-shard-1-of-1.json",
        "-m pytest_autodeploy merge-reports autodeploy/77/report.json autodeploy/77/report-*.json",
    ]
