"""Plan nightly CI jobs for a registry: one job per world size and shard.

``build_matrix`` returns a GitHub Actions matrix, ``{"include": [job, ...]}``,
that a workflow passes to ``strategy.matrix`` with ``fromJSON``. Each job runs
the models of one world size (selected with ``-m world_size_N``) and one shard
of them (``--autodeploy-shard K/N``).

``plan_shards`` decides which models belong to which shard. The plugin calls
it for ``--autodeploy-shard`` too, so a CI job runs exactly the models planned
for it, provided the plan and the job read the same durations table.

Nothing here imports pytest.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping, Sequence
from typing import Any, Union

from .durations import DurationRecord, estimate_seconds
from .markers import world_size_marker
from .registry import Model, Registry
from .shards import SHARD_OPTION, split_shards

REGISTRY_OPTION = "--autodeploy-registry"

# GitHub Actions rejects a matrix with more jobs than this.
GITHUB_MATRIX_JOB_LIMIT = 256

DEFAULT_RUNNER_LABEL = "gpu-{gpus}"

# Estimates within this relative error of the limit count as within it, so
# that float rounding of a sum cannot add a shard.
_LIMIT_TOLERANCE = 1e-9

DurationsTable = Mapping[str, DurationRecord]
RunnerGpus = Union[Mapping[int, int], int]


def model_seconds(model: Model, table: DurationsTable) -> float:
    """Return the estimated wall seconds of one model test.

    An entry with ``skip`` costs 0 seconds, because pytest skips it without
    running it. Every other entry gets ``durations.estimate_seconds``.
    Raises ValueError when the model has no world size, which happens only
    for entries with registry errors.
    """
    world_size = _world_size_of(model)
    if model.entry.skip is not None:
        return 0.0

    return estimate_seconds(model.test_id, world_size, table)


def model_gpu_seconds(model: Model, table: DurationsTable) -> float:
    """Return the weight of one model in a shard split: ``world_size * model_seconds``."""
    return _world_size_of(model) * model_seconds(model, table)


def plan_shards(models: Sequence[Model], table: DurationsTable | None, n: int) -> list[list[str]]:
    """Split ``models`` into ``n`` shards and return each shard's test ids.

    Each model weighs its GPU-seconds (``model_gpu_seconds``), and
    ``shards.split_shards`` balances them (LPT). Pass the models in collection
    order: each shard lists its test ids in that order. The result depends only
    on the models, their order, the table and ``n``, so every process that
    passes the same arguments gets the same split.

    Raises ValueError for ``n < 1``, duplicate test ids, or a model without a
    world size.
    """
    table = {} if table is None else table
    weighted = [(model.test_id, model_gpu_seconds(model, table)) for model in models]
    return split_shards(weighted, n)


def runner_gpu_count(world_size: int, runner_gpus: RunnerGpus) -> int:
    """Return the GPU count of the runner that runs models of ``world_size``.

    An integer G means one runner size for every group: ``max(world_size, G)``
    GPUs, so a model larger than G gets a runner of exactly its size. A
    mapping maps each world size to its runner's GPU count, which must be at
    least the world size. Raises ValueError for a world size missing from the
    mapping or a runner too small for it.
    """
    if isinstance(runner_gpus, Mapping):
        if world_size not in runner_gpus:
            sizes = ", ".join(str(size) for size in sorted(runner_gpus))
            raise ValueError(
                f"no runner for world size {world_size}: runner_gpus maps only world sizes {sizes}; "
                f"add {world_size}"
            )
        gpus = runner_gpus[world_size]
        _check_gpu_count(gpus, f"runner_gpus[{world_size}]")
        if gpus < world_size:
            raise ValueError(
                f"invalid runner_gpus[{world_size}]: a runner with {gpus} GPUs cannot run "
                f"a model that needs {world_size}"
            )
        return gpus

    _check_gpu_count(runner_gpus, "runner_gpus")
    return max(world_size, runner_gpus)


def shard_wall_seconds(world_size: int, seconds: Sequence[float], gpus: int) -> float:
    """Estimate the wall seconds of one shard of ``world_size`` models on ``gpus`` GPUs.

    The models share the runner's GPUs, so the shard takes its GPU-seconds
    divided by the GPUs that models of this size can use at once, but at least
    its longest model. A runner runs ``gpus // world_size`` such models at a
    time, which uses all of its GPUs when ``world_size`` divides ``gpus``.
    """
    if not seconds:
        return 0.0

    usable_gpus = (gpus // world_size) * world_size
    return max(world_size * sum(seconds) / usable_gpus, max(seconds))


def choose_shard_count(models: Sequence[Model], table: DurationsTable, gpus: int, max_seconds: float) -> int:
    """Return the smallest shard count that keeps every shard within ``max_seconds``.

    All models must have the same world size. A shard is never shorter than
    its longest model, so when one model alone takes more than
    ``max_seconds``, its time becomes the limit instead. The count never
    exceeds the number of models, and it is 1 for an empty list.
    """
    if not models:
        return 1

    world_size = _world_size_of(models[0])
    seconds_by_id = {model.test_id: model_seconds(model, table) for model in models}
    limit = max(max_seconds, max(seconds_by_id.values())) * (1 + _LIMIT_TOLERANCE)

    # Fewer shards than this cannot fit: their average is already over the limit.
    total = shard_wall_seconds(world_size, list(seconds_by_id.values()), gpus)
    first = min(len(models), max(1, math.ceil(total / limit)))

    for count in range(first, len(models) + 1):
        shards = plan_shards(models, table, count)
        longest = max(shard_wall_seconds(world_size, [seconds_by_id[key] for key in shard], gpus) for shard in shards)
        if longest <= limit:
            return count

    # One model per shard always fits, because the limit is at least the longest model.
    raise AssertionError(f"no shard count fits {len(models)} models within {limit} seconds")


def build_matrix(
    registry: Registry | Sequence[Model],
    durations_table: DurationsTable | None,
    runner_gpus: RunnerGpus,
    max_shard_minutes: float,
    *,
    registry_arg: str | None = None,
    runner_label: str = DEFAULT_RUNNER_LABEL,
    max_jobs: int | None = GITHUB_MATRIX_JOB_LIMIT,
) -> dict[str, list[dict[str, Any]]]:
    """Return a GitHub Actions matrix with one job per world size and shard.

    Each job in ``include`` has these fields:

    - ``name``: ``ws4-shard-2-of-3``
    - ``world_size``: GPUs per model
    - ``gpus``: GPUs of the runner (see ``runner_gpu_count``)
    - ``runner``: the runner label, ``runner_label`` formatted with ``gpus``
      and ``world_size`` (default ``gpu-8``)
    - ``shard``: ``2/3``
    - ``pytest_argv``: the pytest arguments that select the job's models
    - ``pytest_args``: the same arguments as one shell-quoted string
    - ``estimated_minutes``: the estimated wall time, rounded to 0.1 minute
    - ``models``: the number of models in the shard

    Jobs come in order of world size, then shard. ``registry_arg`` is the
    registry path that the jobs pass to ``--autodeploy-registry``; None
    passes the flag without a path. Raises ``RegistryError`` when the registry
    has errors, and ValueError for invalid arguments or when the matrix has
    more than ``max_jobs`` jobs (None: no limit).
    """
    models = _models_of(registry)
    table = {} if durations_table is None else durations_table
    max_seconds = _max_seconds(max_shard_minutes)

    groups: dict[int, list[Model]] = {}
    for model in models:
        groups.setdefault(_world_size_of(model), []).append(model)

    jobs = []
    for world_size in sorted(groups):
        group_jobs = _group_jobs(world_size, groups[world_size], table, runner_gpus, max_seconds, registry_arg, runner_label)
        jobs.extend(group_jobs)

    if max_jobs is not None and len(jobs) > max_jobs:
        raise ValueError(
            f"the matrix has {len(jobs)} jobs, more than the limit of {max_jobs}; "
            "raise the maximum shard minutes or use runners with more GPUs"
        )

    return {"include": jobs}


def _group_jobs(
    world_size: int,
    models: list[Model],
    table: DurationsTable,
    runner_gpus: RunnerGpus,
    max_seconds: float,
    registry_arg: str | None,
    runner_label: str,
) -> list[dict[str, Any]]:
    gpus = runner_gpu_count(world_size, runner_gpus)
    count = choose_shard_count(models, table, gpus, max_seconds)
    seconds_by_id = {model.test_id: model_seconds(model, table) for model in models}
    registry_flag = REGISTRY_OPTION if registry_arg is None else f"{REGISTRY_OPTION}={registry_arg}"

    jobs = []
    for index, shard in enumerate(plan_shards(models, table, count), start=1):
        spec = f"{index}/{count}"
        argv = [registry_flag, "-m", world_size_marker(world_size), f"{SHARD_OPTION}={spec}"]
        wall_seconds = shard_wall_seconds(world_size, [seconds_by_id[key] for key in shard], gpus)
        jobs.append(
            {
                "name": f"ws{world_size}-shard-{index}-of-{count}",
                "world_size": world_size,
                "gpus": gpus,
                "runner": runner_label.format(gpus=gpus, world_size=world_size),
                "shard": spec,
                "pytest_args": shlex.join(argv),
                "pytest_argv": argv,
                "estimated_minutes": round(wall_seconds / 60, 1),
                "models": len(shard),
            }
        )
    return jobs


def _models_of(registry: Registry | Sequence[Model]) -> list[Model]:
    if isinstance(registry, Registry):
        registry.raise_for_errors()
        return list(registry.models)
    return list(registry)


def _world_size_of(model: Model) -> int:
    if model.world_size is None:
        raise ValueError(
            f"model {model.test_id!r} has no world size; fix its registry errors first "
            "(pytest-autodeploy validate lists them)"
        )
    return model.world_size


def _max_seconds(max_shard_minutes: float) -> float:
    valid = not isinstance(max_shard_minutes, bool) and isinstance(max_shard_minutes, (int, float))
    if not valid or not math.isfinite(max_shard_minutes) or max_shard_minutes <= 0:
        raise ValueError(f"invalid max_shard_minutes {max_shard_minutes!r}: expected a finite number > 0")
    return max_shard_minutes * 60.0


def _check_gpu_count(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"invalid {name} {value!r}: expected a positive integer GPU count")
