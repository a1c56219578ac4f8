"""GPU scheduling policy for tests that each need several GPUs on one node.

A node has ``gpu_count`` GPUs. Each job needs exactly ``world_size`` of them
for an estimated number of seconds. The policy is EASY backfilling:

1. Jobs are ordered by GPU-seconds (world size times seconds), largest first,
   with ties broken by key, so the longest and widest work starts early.
2. Jobs start in that order while they fit in the free GPUs.
3. The first job that cannot start gets a reservation at the shadow time: the
   earliest estimated time at which enough running jobs have ended to give it
   its GPUs. A running job that has overrun its estimate counts as ending
   now, so the shadow time never moves later than the estimates promised and
   the reserved job cannot starve.
4. A later job may start now if it fits in the free GPUs and either ends, by
   its estimate, by the shadow time, or uses only GPUs that the reserved job
   will not need at the shadow time.

The module is pure: no I/O and no clock. ``simulate`` replays a job list in a
discrete-event simulation, which the tests use to check capacity, GPU
overlap, starvation and makespan.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Job:
    """One test to schedule: its key, GPU count and estimated wall time in seconds."""

    key: str
    world_size: int
    seconds: float

    def __post_init__(self) -> None:
        if isinstance(self.world_size, bool) or not isinstance(self.world_size, int) or self.world_size < 1:
            raise ValueError(
                f"invalid world size for job '{self.key}': expected a positive integer, got {self.world_size!r}"
            )

        if not math.isfinite(self.seconds) or self.seconds < 0:
            raise ValueError(
                f"invalid seconds for job '{self.key}': expected a finite number >= 0, got {self.seconds!r}"
            )

    @property
    def gpu_seconds(self) -> float:
        return self.world_size * self.seconds


@dataclass(frozen=True)
class Plan:
    """The result of one scheduling decision.

    ``start`` lists the jobs to start now in priority order. ``reserved`` is the
    first job in the queue that cannot start now, or None when every job in
    the queue started. ``shadow_time`` is the estimated time at which
    ``reserved`` gets its GPUs. ``spare_gpus`` is the number of GPUs that the
    reserved job leaves unused at that time and that no job in ``start`` takes
    yet, so later jobs may still run past the shadow time on them. Both are
    None without a reservation.
    """

    start: list[Job]
    reserved: Job | None = None
    shadow_time: float | None = None
    spare_gpus: int | None = None


class BackfillPolicy:
    """EASY backfilling on one node with ``gpu_count`` GPUs, as the module docstring describes."""

    def __init__(self, gpu_count: int) -> None:
        if isinstance(gpu_count, bool) or not isinstance(gpu_count, int) or gpu_count < 1:
            raise ValueError(f"invalid GPU count: expected a positive integer, got {gpu_count!r}")
        self.gpu_count = gpu_count

    def order(self, jobs: Iterable[Job]) -> list[Job]:
        """Return ``jobs`` in priority order: GPU-seconds descending, then key, then world size."""
        return sorted(jobs, key=_priority_key)

    def pick(
        self,
        queue: Sequence[Job],
        running: Sequence[tuple[Job, float]],
        now: float,
        free_gpus: int,
        startable: Collection[str] | None = None,
    ) -> list[Job]:
        """Return the jobs from ``queue`` to start at time ``now``, in priority order.

        See ``plan`` for the arguments.
        """
        return self.plan(queue, running, now, free_gpus, startable).start

    def plan(
        self,
        queue: Sequence[Job],
        running: Sequence[tuple[Job, float]],
        now: float,
        free_gpus: int,
        startable: Collection[str] | None = None,
    ) -> Plan:
        """Decide which jobs start at time ``now`` and which job gets the reservation.

        ``queue`` contains every waiting job, already in priority order (see
        ``order``). ``running`` contains ``(job, start_time)`` pairs. GPUs that
        are neither free nor used by ``running`` count as returning now, like
        an overrunning job.

        ``startable`` restricts the jobs that the caller can start now, by key,
        for example to the jobs that an idle worker holds. None means every
        job. A job outside ``startable`` still takes the reservation when it
        comes first, so the caller can pass the full queue and still protect
        its head.

        Raises ValueError when a queued job needs more GPUs than the node has,
        because such a job would block the queue forever, or when the GPU
        counts do not add up.
        """
        busy_gpus = sum(job.world_size for job, _ in running)
        if free_gpus < 0 or busy_gpus + free_gpus > self.gpu_count:
            raise ValueError(
                f"invalid GPU counts: {free_gpus} free and {busy_gpus} running on a node with {self.gpu_count} GPUs"
            )

        too_wide = [job for job in queue if job.world_size > self.gpu_count]
        if too_wide:
            raise ValueError(
                f"job '{too_wide[0].key}' needs {too_wide[0].world_size} GPUs but the node has {self.gpu_count}. "
                "Skip jobs wider than the node before scheduling."
            )

        # Estimated end of every running job, with overruns clamped to now.
        # GPUs that are neither free nor running are counted as ending now too.
        releases = [(max(start + job.seconds, now), job.key, job.world_size) for job, start in running]
        unaccounted = self.gpu_count - busy_gpus - free_gpus
        if unaccounted:
            releases.append((now, "", unaccounted))

        free = free_gpus
        started: list[Job] = []

        # Start jobs in order until the first one that cannot start.
        position = 0
        while position < len(queue):
            job = queue[position]
            if job.world_size > free or not _is_startable(job, startable):
                break
            started.append(job)
            free -= job.world_size
            releases.append((now + job.seconds, job.key, job.world_size))
            position += 1

        if position == len(queue):
            return Plan(start=started)

        reserved = queue[position]
        shadow_time, spare_gpus = _reserve(reserved.world_size, free, releases, now)

        # Backfill: a later job may run now if it leaves the reservation intact.
        for job in queue[position + 1 :]:
            if job.world_size > free or not _is_startable(job, startable):
                continue

            if now + job.seconds <= shadow_time:
                started.append(job)
                free -= job.world_size
            elif job.world_size <= spare_gpus:
                started.append(job)
                free -= job.world_size
                spare_gpus -= job.world_size

        return Plan(start=started, reserved=reserved, shadow_time=shadow_time, spare_gpus=spare_gpus)


@dataclass(frozen=True)
class ScheduledJob:
    """One job placed by ``simulate``: its start and end time and the GPU ids it used."""

    job: Job
    start: float
    end: float
    gpus: tuple[int, ...]


@dataclass(frozen=True)
class SimulationResult:
    """The schedule that ``simulate`` produced, with jobs sorted by start time, then key."""

    gpu_count: int
    scheduled: list[ScheduledJob]
    makespan: float

    def by_key(self) -> dict[str, ScheduledJob]:
        return {entry.job.key: entry for entry in self.scheduled}


def simulate(
    jobs: Iterable[Job],
    gpu_count: int,
    policy: BackfillPolicy | None = None,
    actual_seconds: Mapping[str, float] | None = None,
) -> SimulationResult:
    """Run ``jobs`` through ``policy`` in a discrete-event simulation from time 0.

    Each job runs for its estimate unless ``actual_seconds`` gives its true
    duration by key, which lets a test model overruns. Each started job gets
    concrete GPU ids, preferring an aligned block (ids ``k*w`` to ``k*w+w-1``
    for world size ``w``), so callers can check that no two jobs share a GPU.

    Raises ValueError for duplicate keys and for jobs wider than the node.
    """
    policy = policy if policy is not None else BackfillPolicy(gpu_count)
    if policy.gpu_count != gpu_count:
        raise ValueError(f"policy is for {policy.gpu_count} GPUs but the simulation has {gpu_count}")

    job_list = list(jobs)
    key_counts = Counter(job.key for job in job_list)
    duplicates = sorted(key for key, count in key_counts.items() if count > 1)
    if duplicates:
        raise ValueError(f"duplicate job key '{duplicates[0]}'")

    actual_seconds = actual_seconds or {}
    queue = policy.order(job_list)
    free_ids = set(range(gpu_count))
    # Heap of (end time, key) so that simultaneous ends are processed in key order.
    end_heap: list[tuple[float, str]] = []
    running: dict[str, tuple[Job, float, tuple[int, ...]]] = {}
    scheduled: list[ScheduledJob] = []
    now = 0.0

    while queue or running:
        running_pairs = [(job, start) for job, start, _ in running.values()]
        chosen = policy.pick(queue, running_pairs, now, len(free_ids))

        for job in chosen:
            gpus = _choose_gpus(free_ids, job.world_size, gpu_count)
            free_ids.difference_update(gpus)
            end = now + actual_seconds.get(job.key, job.seconds)
            running[job.key] = (job, now, gpus)
            heapq.heappush(end_heap, (end, job.key))
            scheduled.append(ScheduledJob(job=job, start=now, end=end, gpus=gpus))

        chosen_keys = {job.key for job in chosen}
        queue = [job for job in queue if job.key not in chosen_keys]

        if not end_heap:
            if queue:
                raise AssertionError(f"simulation stalled at t={now} with {len(queue)} jobs waiting and none running")
            break

        # Advance to the next end and release every job that ends then.
        now = end_heap[0][0]
        while end_heap and end_heap[0][0] == now:
            _, key = heapq.heappop(end_heap)
            _, _, gpus = running.pop(key)
            free_ids.update(gpus)

    scheduled.sort(key=lambda entry: (entry.start, entry.job.key))
    makespan = max((entry.end for entry in scheduled), default=0.0)
    return SimulationResult(gpu_count=gpu_count, scheduled=scheduled, makespan=makespan)


def lower_bound(jobs: Iterable[Job], gpu_count: int) -> float:
    """Return a lower bound on any schedule's makespan.

    No schedule ends before its longest job ends, nor before the GPUs have
    delivered the total GPU-seconds: max(longest job, total GPU-seconds / GPU count).
    """
    job_list = list(jobs)
    if not job_list:
        return 0.0

    longest = max(job.seconds for job in job_list)
    total_gpu_seconds = math.fsum(job.gpu_seconds for job in sorted(job_list, key=_priority_key))
    return max(longest, total_gpu_seconds / gpu_count)


def _priority_key(job: Job) -> tuple[float, str, int, float]:
    return (-job.gpu_seconds, job.key, job.world_size, job.seconds)


def _is_startable(job: Job, startable: Collection[str] | None) -> bool:
    return startable is None or job.key in startable


def _reserve(needed: int, free: int, releases: list[tuple[float, str, int]], now: float) -> tuple[float, int]:
    """Return the shadow time for a job needing ``needed`` GPUs and the spare GPUs then.

    ``releases`` contains ``(estimated end, key, world size)`` of every running
    job. The shadow time is the earliest end at which the free GPUs plus
    those released so far cover ``needed``; spare GPUs are the excess then.
    """
    available = free
    if available >= needed:
        return now, available - needed

    for end, _, world_size in sorted(releases):
        available += world_size
        if available >= needed:
            return end, available - needed

    # The caller checks that no job is wider than the node, and the free plus
    # running GPUs add up to the node, so the loop always returns.
    raise AssertionError(f"{needed} GPUs never become available")


def _choose_gpus(free_ids: set[int], world_size: int, gpu_count: int) -> tuple[int, ...]:
    """Pick ``world_size`` GPU ids from ``free_ids``, preferring an aligned block.

    Among free aligned blocks the one whose enclosing block of twice the size
    is busiest wins, which keeps larger aligned blocks free for wider jobs.
    Without a free aligned block the lowest free ids are used.
    """
    if len(free_ids) < world_size:
        raise AssertionError(f"{world_size} GPUs requested but only {len(free_ids)} are free")

    best: tuple[int, int] | None = None
    if gpu_count % world_size == 0:
        for first in range(0, gpu_count, world_size):
            block = range(first, first + world_size)
            if not all(gpu in free_ids for gpu in block):
                continue

            parent_size = world_size * 2
            parent_first = first - first % parent_size
            parent = range(parent_first, min(parent_first + parent_size, gpu_count))
            busy_in_parent = sum(1 for gpu in parent if gpu not in free_ids)
            candidate = (-busy_in_parent, first)
            if best is None or candidate < best:
                best = candidate

    if best is not None:
        first = best[1]
        return tuple(range(first, first + world_size))

    return tuple(sorted(free_ids)[:world_size])
