from __future__ import annotations

import random

import pytest

from pytest_autodeploy.backfill import (
    BackfillPolicy,
    Job,
    Plan,
    SimulationResult,
    lower_bound,
    simulate,
)

# Share of each world size in a TensorRT-LLM-like model registry.
WORLD_SIZE_SHARES = {1: 0.44, 2: 0.27, 4: 0.19, 8: 0.10}

# Typical seconds per test by world size; durations vary around these.
BASE_SECONDS = {1: 300.0, 2: 450.0, 4: 600.0, 8: 900.0}


def make_registry_jobs(count: int, seed: int) -> list[Job]:
    """Build jobs with the registry's world-size mix and lognormal durations."""
    rng = random.Random(seed)
    sizes: list[int] = []
    for world_size, share in sorted(WORLD_SIZE_SHARES.items(), reverse=True):
        sizes += [world_size] * round(share * count)
    sizes += [1] * (count - len(sizes))
    sizes = sizes[:count]
    rng.shuffle(sizes)

    jobs = []
    for index, world_size in enumerate(sizes):
        seconds = BASE_SECONDS[world_size] * rng.lognormvariate(0.0, 0.6)
        jobs.append(Job(f"org/model-{index:03d}[ws{world_size}]", world_size, seconds))
    return jobs


def make_random_jobs(count: int, gpu_count: int, seed: int) -> list[Job]:
    rng = random.Random(seed)
    sizes = [size for size in (1, 2, 4, 8) if size <= gpu_count]
    return [Job(f"job-{index:03d}", rng.choice(sizes), round(rng.uniform(0.0, 100.0), 1)) for index in range(count)]


def assert_valid_schedule(result: SimulationResult, jobs: list[Job]) -> None:
    """Check that every job ran once on exactly its GPU count, within the node, without sharing a GPU."""
    assert sorted(entry.job.key for entry in result.scheduled) == sorted(job.key for job in jobs)

    for entry in result.scheduled:
        assert len(entry.gpus) == entry.job.world_size, entry
        assert len(set(entry.gpus)) == entry.job.world_size, entry
        assert all(0 <= gpu < result.gpu_count for gpu in entry.gpus), entry
        assert entry.end >= entry.start, entry

    # At every start, the jobs running then must fit and use disjoint GPUs.
    for moment in sorted({entry.start for entry in result.scheduled}):
        active = [entry for entry in result.scheduled if entry.start <= moment < entry.end]
        used = [gpu for entry in active for gpu in entry.gpus]
        assert sum(entry.job.world_size for entry in active) <= result.gpu_count, moment
        assert len(used) == len(set(used)), (moment, active)

    assert result.makespan == max((entry.end for entry in result.scheduled), default=0.0)


def test_order_by_gpu_seconds_then_key() -> None:
    jobs = [Job("b", 1, 100.0), Job("a", 2, 50.0), Job("c", 8, 10.0), Job("d", 4, 30.0)]

    ordered = BackfillPolicy(8).order(jobs)

    assert [job.key for job in ordered] == ["d", "a", "b", "c"]


def test_order_ignores_input_order() -> None:
    jobs = make_random_jobs(50, 8, seed=1)
    shuffled = list(jobs)
    random.Random(2).shuffle(shuffled)

    policy = BackfillPolicy(8)

    assert policy.order(jobs) == policy.order(shuffled)


def test_plan_starts_jobs_that_fit() -> None:
    policy = BackfillPolicy(8)
    queue = policy.order([Job("big", 4, 100.0), Job("mid", 2, 100.0), Job("small", 1, 100.0)])

    plan = policy.plan(queue, [], now=0.0, free_gpus=8)

    assert plan == Plan(start=queue)


def test_plan_reserves_head_at_shadow_time() -> None:
    policy = BackfillPolicy(8)
    running = [(Job("r1", 4, 100.0), 0.0), (Job("r2", 2, 50.0), 0.0)]
    queue = [Job("head", 8, 100.0)]

    plan = policy.plan(queue, running, now=10.0, free_gpus=2)

    assert plan.start == []
    assert plan.reserved == queue[0]
    assert plan.shadow_time == 100.0
    assert plan.spare_gpus == 0


def test_plan_backfills_job_ending_before_shadow() -> None:
    policy = BackfillPolicy(8)
    running = [(Job("r1", 6, 100.0), 0.0)]
    queue = [Job("head", 8, 100.0), Job("long", 1, 200.0), Job("short", 2, 90.0)]

    plan = policy.plan(queue, running, now=0.0, free_gpus=2)

    # "long" would hold a GPU past t=100, which the head needs; "short" ends at 90.
    assert [job.key for job in plan.start] == ["short"]
    assert plan.shadow_time == 100.0


def test_plan_backfills_into_spare_gpus() -> None:
    policy = BackfillPolicy(8)
    running = [(Job("r1", 4, 100.0), 0.0)]
    queue = [Job("head", 6, 100.0), Job("long-a", 1, 500.0), Job("long-b", 1, 500.0), Job("long-c", 1, 500.0)]

    plan = policy.plan(queue, running, now=0.0, free_gpus=4)

    # At t=100 all 8 GPUs are free, the head needs 6, so 2 long jobs may run past it.
    assert [job.key for job in plan.start] == ["long-a", "long-b"]
    assert plan.spare_gpus == 0


def test_plan_mixes_both_backfill_rules() -> None:
    policy = BackfillPolicy(8)
    running = [(Job("r1", 5, 100.0), 0.0)]
    queue = [Job("head", 7, 100.0), Job("long", 1, 500.0), Job("long-2", 1, 500.0), Job("short", 1, 50.0)]

    plan = policy.plan(queue, running, now=0.0, free_gpus=3)

    assert [job.key for job in plan.start] == ["long", "short"]
    assert plan.spare_gpus == 0


def test_plan_counts_overrun_as_ending_now() -> None:
    policy = BackfillPolicy(8)
    # Estimated to end at t=100, still running at t=150.
    running = [(Job("late", 4, 100.0), 0.0)]
    queue = [Job("head", 8, 100.0), Job("short", 1, 10.0)]

    plan = policy.plan(queue, running, now=150.0, free_gpus=4)

    assert plan.shadow_time == 150.0
    assert plan.start == []


def test_plan_treats_unaccounted_gpus_as_returning_now() -> None:
    policy = BackfillPolicy(8)

    plan = policy.plan([Job("head", 8, 10.0), Job("short", 1, 5.0)], [], now=3.0, free_gpus=6)

    assert plan.shadow_time == 3.0
    assert plan.start == []


def test_plan_reserves_for_unstartable_head() -> None:
    policy = BackfillPolicy(8)
    queue = [Job("held", 4, 100.0), Job("long", 4, 500.0), Job("other", 2, 500.0), Job("tiny", 2, 1.0)]

    plan = policy.plan(queue, [], now=0.0, free_gpus=8, startable={"long", "other", "tiny"})

    # "held" fits but no idle worker can start it, so it keeps 4 GPUs reserved.
    assert plan.reserved == queue[0]
    assert plan.shadow_time == 0.0
    assert [job.key for job in plan.start] == ["long"]


def test_plan_startable_skips_later_jobs() -> None:
    policy = BackfillPolicy(8)
    queue = [Job("a", 2, 100.0), Job("b", 2, 90.0), Job("c", 2, 80.0)]

    plan = policy.plan(queue, [], now=0.0, free_gpus=8, startable={"a", "c"})

    assert [job.key for job in plan.start] == ["a", "c"]
    assert plan.reserved == queue[1]


def test_pick_returns_plan_start() -> None:
    policy = BackfillPolicy(4)
    queue = [Job("a", 4, 10.0), Job("b", 1, 5.0)]

    assert policy.pick(queue, [], now=0.0, free_gpus=4) == [queue[0]]


def test_plan_rejects_too_wide_job() -> None:
    with pytest.raises(ValueError, match="job 'huge' needs 8 GPUs but the node has 4"):
        BackfillPolicy(4).plan([Job("huge", 8, 1.0)], [], now=0.0, free_gpus=4)


@pytest.mark.parametrize(("free_gpus", "running_size"), [(-1, 0), (9, 0), (5, 4)])
def test_plan_rejects_inconsistent_counts(free_gpus: int, running_size: int) -> None:
    running = [(Job("r", running_size, 1.0), 0.0)] if running_size else []

    with pytest.raises(ValueError, match="invalid GPU counts"):
        BackfillPolicy(8).plan([], running, now=0.0, free_gpus=free_gpus)


@pytest.mark.parametrize("gpu_count", [0, -1, True])
def test_policy_rejects_invalid_gpu_count(gpu_count: int) -> None:
    with pytest.raises(ValueError, match="invalid GPU count"):
        BackfillPolicy(gpu_count)


@pytest.mark.parametrize(
    ("world_size", "seconds", "message"),
    [(0, 1.0, "invalid world size"), (2, -1.0, "invalid seconds"), (2, float("inf"), "invalid seconds")],
)
def test_job_rejects_invalid_fields(world_size: int, seconds: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Job("j", world_size, seconds)


@pytest.mark.parametrize("gpu_count", [1, 2, 4, 8])
@pytest.mark.parametrize("seed", range(8))
def test_simulation_respects_capacity(gpu_count: int, seed: int) -> None:
    jobs = make_random_jobs(60, gpu_count, seed=seed)

    result = simulate(jobs, gpu_count)

    assert_valid_schedule(result, jobs)
    assert result.makespan >= lower_bound(jobs, gpu_count) - 1e-9


@pytest.mark.parametrize("seed", range(4))
def test_simulation_with_overruns_respects_capacity(seed: int) -> None:
    jobs = make_random_jobs(60, 8, seed=seed)
    rng = random.Random(seed)
    actual = {job.key: job.seconds * rng.uniform(0.3, 3.0) for job in jobs}

    result = simulate(jobs, 8, actual_seconds=actual)

    assert_valid_schedule(result, jobs)
    for entry in result.scheduled:
        assert entry.end - entry.start == pytest.approx(actual[entry.job.key])


def test_simulation_prefers_aligned_blocks() -> None:
    jobs = [Job("w4", 4, 10.0), Job("w2", 2, 10.0), Job("w1", 1, 10.0)]

    placed = simulate(jobs, 8).by_key()

    assert placed["w4"].gpus == (0, 1, 2, 3)
    assert placed["w2"].gpus == (4, 5)
    assert placed["w1"].gpus == (6,)


def test_simulation_handles_zero_seconds() -> None:
    jobs = [Job("zero-a", 8, 0.0), Job("zero-b", 8, 0.0), Job("one", 1, 1.0)]

    result = simulate(jobs, 8)

    assert_valid_schedule(result, jobs)
    assert result.makespan == 1.0


def test_simulation_of_nothing() -> None:
    result = simulate([], 8)

    assert result.scheduled == []
    assert result.makespan == 0.0


def test_simulation_rejects_duplicate_keys() -> None:
    with pytest.raises(ValueError, match="duplicate job key 'a'"):
        simulate([Job("a", 1, 1.0), Job("a", 2, 1.0)], 8)


def test_simulation_rejects_mismatched_policy() -> None:
    with pytest.raises(ValueError, match="policy is for 4 GPUs"):
        simulate([], 8, policy=BackfillPolicy(4))


def test_wide_job_not_starved_by_short_jobs() -> None:
    # Eight 1-GPU jobs with more GPU-seconds than the 8-GPU job start first and
    # end at 810, 820, ..., 880. The 8-GPU job then gets the reservation with
    # a shadow time of 880, while 400 short jobs compete for the freed GPUs.
    first_wave = [Job(f"first-{index}", 1, 810.0 + 10 * index) for index in range(8)]
    wide = Job("wide", 8, 100.0)
    short_jobs = [Job(f"short-{index:03d}", 1, 7.0) for index in range(400)]
    jobs = [*first_wave, wide, *short_jobs]

    placed = simulate(jobs, 8).by_key()

    assert placed["wide"].start == 880.0
    started_before_wide = [key for key, entry in placed.items() if key.startswith("short") and entry.start < 880.0]
    assert started_before_wide, "short jobs should backfill the GPUs freed before the shadow time"
    assert all(placed[key].end <= 880.0 for key in started_before_wide)


def test_wide_job_waits_only_for_overrun() -> None:
    first_wave = [Job(f"first-{index}", 1, 810.0 + 10 * index) for index in range(8)]
    wide = Job("wide", 8, 100.0)
    short_jobs = [Job(f"short-{index:03d}", 1, 7.0) for index in range(400)]
    # One first-wave job runs far past its estimate of 810 s.
    actual = {"first-0": 2000.0}

    placed = simulate([*first_wave, wide, *short_jobs], 8, actual_seconds=actual).by_key()

    # From the estimated shadow time on, no short job may take a GPU that the
    # wide job needs, so it starts the moment the overrunning job ends.
    assert placed["wide"].start == 2000.0


def test_greedy_would_starve_wide_job() -> None:
    # The same workload without a reservation: a policy that backfills
    # anything that fits delays the wide job until the short jobs run out.
    class GreedyPolicy(BackfillPolicy):
        def pick(self, queue, running, now, free_gpus, startable=None):  # type: ignore[no-untyped-def]
            started = []
            for job in queue:
                if job.world_size <= free_gpus:
                    started.append(job)
                    free_gpus -= job.world_size
            return started

    first_wave = [Job(f"first-{index}", 1, 810.0 + 10 * index) for index in range(8)]
    short_jobs = [Job(f"short-{index:03d}", 1, 7.0) for index in range(400)]
    jobs = [*first_wave, Job("wide", 8, 100.0), *short_jobs]

    greedy = simulate(jobs, 8, policy=GreedyPolicy(8)).by_key()
    easy = simulate(jobs, 8).by_key()

    assert greedy["wide"].start > easy["wide"].start


def test_makespan_near_lower_bound() -> None:
    jobs = make_registry_jobs(120, seed=11)

    result = simulate(jobs, 8)

    assert_valid_schedule(result, jobs)
    ratio = result.makespan / lower_bound(jobs, 8)
    print(f"makespan/LB for 120 registry-mix jobs on 8 GPUs: {ratio:.4f}")
    assert ratio <= 1.10


@pytest.mark.parametrize("seed", range(20))
def test_makespan_near_lower_bound_across_seeds(seed: int) -> None:
    jobs = make_registry_jobs(120, seed=200 + seed)

    result = simulate(jobs, 8)

    assert result.makespan / lower_bound(jobs, 8) <= 1.10


def test_simulation_is_deterministic() -> None:
    jobs = make_registry_jobs(120, seed=5)
    shuffled = list(jobs)
    random.Random(9).shuffle(shuffled)

    first = simulate(jobs, 8)
    second = simulate(jobs, 8)
    reordered = simulate(shuffled, 8)

    assert first == second
    assert first == reordered


def test_lower_bound_cases() -> None:
    assert lower_bound([], 8) == 0.0
    assert lower_bound([Job("long", 1, 100.0), Job("short", 1, 1.0)], 8) == 100.0
    assert lower_bound([Job("a", 8, 10.0), Job("b", 8, 10.0)], 8) == 20.0
