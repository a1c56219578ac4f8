"""GpuScheduling driven the way xdist's DSession drives it, with fake workers and a fake clock.

The driver follows pytest-xdist 3.8: a worker starts item i only once it has
received item i+1 or a shutdown, reports each finished item with
``mark_test_complete``, and leaves through ``remove_node``. A crashed worker
is replaced by a new one that collects and joins again.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable, Sequence

import pytest

from pytest_autodeploy.backfill import Job, lower_bound
from pytest_autodeploy.xdist_scheduling import (
    GpuScheduling,
    jobs_from_models,
    model_key,
)

GPU_COUNT = 8
REGISTRY_FILE = "model_registry/models.yaml"

# Share of each world size in a TensorRT-LLM-like registry; the rest are 1-GPU models.
WORLD_SIZE_SHARES = {1: 0.40, 2: 0.27, 4: 0.19, 8: 0.10}
BASE_SECONDS = {1: 300.0, 2: 450.0, 4: 600.0, 8: 900.0}

# The marker a fake worker finds in its inbox after a shutdown.
SHUTDOWN = "shutdown"

# Seconds from a crash until the replacement worker has started and collected.
RESTART_SECONDS = 5.0


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeNode:
    """A fake xdist worker controller that records every command it receives, in order."""

    def __init__(self, gateway_id: str) -> None:
        self.gateway = SimpleNamespace(id=gateway_id)
        self.inbox: list[int | str] = []
        self.calls: list[tuple[str, tuple[int, ...]]] = []
        # Items sent after the shutdown, which a real worker would never run.
        self.sent_after_shutdown: list[int] = []

    def send_runtest_some(self, indices: Sequence[int]) -> None:
        self.calls.append(("send", tuple(indices)))
        if SHUTDOWN in self.inbox:
            self.sent_after_shutdown.extend(indices)
        self.inbox.extend(indices)

    def shutdown(self) -> None:
        self.calls.append(("shutdown", ()))
        # WorkerController.shutdown sends the command once.
        if SHUTDOWN not in self.inbox:
            self.inbox.append(SHUTDOWN)

    @property
    def got_shutdown(self) -> bool:
        return SHUTDOWN in self.inbox

    def __repr__(self) -> str:
        return f"FakeNode({self.gateway.id})"


@dataclass
class ItemRun:
    """One start of an item on a worker, as the simulation executed it."""

    index: int
    node: str
    gpus: int
    start: float
    end: float | None = None
    crashed: bool = False


@dataclass
class Workload:
    """A collection with the GPUs and the true seconds of each item."""

    collection: list[str]
    world_sizes: dict[str, int]
    seconds: list[float]
    # GPUs the item really holds: 0 for items skipped because they are wider than the node.
    gpus: list[int]
    estimates: dict[str, float] = field(default_factory=dict)

    def job_for(self) -> Callable[[str], Job]:
        def estimate(key: str, world_size: int) -> float:
            return self.estimates[key]

        return jobs_from_models(self.collection, self.world_sizes, estimate, GPU_COUNT)

    def jobs(self) -> list[Job]:
        """Return the jobs with their true seconds, for the lower bound."""
        return [
            Job(nodeid, max(gpus, 1), seconds)
            for nodeid, gpus, seconds in zip(self.collection, self.gpus, self.seconds)
        ]


def make_workload(entries: Sequence[tuple[str, int, float]], gpu_count: int = GPU_COUNT) -> Workload:
    """Build a workload from (test id, world size, seconds); estimates equal the true seconds."""
    collection = [f"{REGISTRY_FILE}::{test_id}" for test_id, _, _ in entries]
    world_sizes = {test_id: world_size for test_id, world_size, _ in entries}
    estimates = {test_id: seconds for test_id, _, seconds in entries}
    seconds = []
    gpus = []
    for _, world_size, duration in entries:
        # The plugin skips an item wider than the node at once.
        fits = world_size <= gpu_count
        seconds.append(duration if fits else 0.0)
        gpus.append(world_size if fits else 0)
    return Workload(collection, world_sizes, seconds, gpus, estimates)


def make_registry_mix(count: int, seed: int) -> Workload:
    """Build a registry-like workload with the world-size shares above and lognormal durations."""
    rng = random.Random(seed)
    sizes: list[int] = []
    for world_size in (8, 4, 2):
        sizes += [world_size] * round(WORLD_SIZE_SHARES[world_size] * count)
    sizes += [1] * (count - len(sizes))
    rng.shuffle(sizes)

    entries = []
    for index, world_size in enumerate(sizes):
        seconds = round(BASE_SECONDS[world_size] * rng.lognormvariate(0.0, 0.6), 1)
        entries.append((f"org/model-{index:03d}[ws{world_size}]", world_size, seconds))
    return make_workload(entries)


class XdistSimulation:
    """A discrete-event replay of DSession and its workers around one GpuScheduling.

    Events at the same time run in the order they were queued. After every
    event the driver checks ``tests_finished`` and shuts every worker down
    once it is True, as DSession.loop_once does.
    """

    def __init__(
        self,
        workload: Workload,
        numnodes: int,
        *,
        collections: Sequence[list[str]] | None = None,
        crash_item: int | None = None,
        clock_start: float = 0.0,
        report_collection_diff: Callable[[Sequence[str], Sequence[str], str, str], str | None] | None = None,
    ) -> None:
        self.workload = workload
        self.numnodes = numnodes
        self.collections = list(collections) if collections is not None else [workload.collection] * numnodes
        self.crash_item = crash_item
        self.clock = FakeClock(clock_start)
        self.scheduler = GpuScheduling(
            numnodes,
            GPU_COUNT,
            workload.job_for(),
            clock=self.clock,
            report_collection_diff=report_collection_diff,
        )

        self.nodes: list[FakeNode] = []
        self.runs: list[ItemRun] = []
        self.running: dict[FakeNode, ItemRun] = {}
        self.exited: list[FakeNode] = []
        self.crashed_items: list[str | None] = []
        self.removed: list[tuple[str, str | None]] = []
        self.finished_at: float | None = None
        self.shutting_down = False
        self.events: list[tuple[float, int, str, FakeNode | None]] = []
        self.sequence = 0

    # --- event queue ---------------------------------------------------------

    def push(self, when: float, kind: str, node: FakeNode | None = None) -> None:
        heapq.heappush(self.events, (when, self.sequence, kind, node))
        self.sequence += 1

    def run(self, max_events: int = 100_000) -> XdistSimulation:
        for collection in self.collections:
            self.start_worker(collection)

        handled = 0
        while self.events:
            handled += 1
            assert handled <= max_events, "the simulation did not finish; the scheduler may loop"
            when, _, kind, node = heapq.heappop(self.events)
            self.clock.now = when

            if kind == "complete":
                assert node is not None
                self.complete(node)
            elif kind == "crash":
                assert node is not None
                self.crash(node)
            elif kind == "replace":
                self.start_worker(self.workload.collection)
            self.after_event()
        return self

    # --- DSession callbacks --------------------------------------------------

    def start_worker(self, collection: list[str]) -> None:
        node = FakeNode(f"gw{len(self.nodes)}")
        self.nodes.append(node)

        # worker_workerready
        if self.shutting_down:
            node.shutdown()
            self.after_event()
            return
        self.scheduler.add_node(node)
        self.after_event()

        # worker_collectionfinish
        if self.shutting_down:
            return
        self.scheduler.add_node_collection(node, collection)
        if self.scheduler.collection_is_completed:
            self.scheduler.schedule()
        self.after_event()

    def complete(self, node: FakeNode) -> None:
        run = self.running.pop(node)
        run.end = self.clock.now
        node.inbox.pop(0)
        self.scheduler.mark_test_complete(node, run.index, run.end - run.start)

    def crash(self, node: FakeNode) -> None:
        run = self.running.pop(node)
        run.end = self.clock.now
        run.crashed = True
        self.exited.append(node)

        # worker_errordown: the returned item is reported as crashed, and a clone replaces the worker.
        crashed = self.scheduler.remove_node(node)
        self.crashed_items.append(crashed)
        self.shutting_down = False
        self.push(self.clock.now + RESTART_SECONDS, "replace")

    def after_event(self) -> None:
        if self.scheduler.tests_finished:
            if self.finished_at is None:
                self.finished_at = self.clock.now
            if not self.shutting_down:
                self.shutting_down = True
                for node in self.scheduler.nodes:
                    node.shutdown()
        self.advance_workers()

    # --- the workers ---------------------------------------------------------

    def advance_workers(self) -> None:
        """Start every item whose successor or shutdown has arrived, and end workers that got a shutdown."""
        for node in list(self.nodes):
            if node in self.exited or node in self.running or not node.inbox:
                continue

            head = node.inbox[0]
            if head == SHUTDOWN:
                # worker_workerfinished: a clean exit must not report a crashed item.
                self.exited.append(node)
                if node in self.scheduler.nodes:
                    self.removed.append((node.gateway.id, self.scheduler.remove_node(node)))
                self.after_event()
                continue

            if len(node.inbox) < 2:
                continue
            assert isinstance(head, int)
            run = ItemRun(head, node.gateway.id, self.workload.gpus[head], self.clock.now)
            self.runs.append(run)
            self.running[node] = run
            if head == self.crash_item:
                self.push(self.clock.now + self.workload.seconds[head] / 2, "crash", node)
            else:
                self.push(self.clock.now + self.workload.seconds[head], "complete", node)

    # --- results -------------------------------------------------------------

    @property
    def makespan(self) -> float:
        return max((run.end for run in self.runs if run.end is not None), default=self.clock.now)

    def starts_of(self, index: int) -> list[ItemRun]:
        return [run for run in self.runs if run.index == index]

    def max_gpus_in_use(self) -> int:
        """Return the largest sum of GPUs held by items running at one time."""
        peak = 0
        for moment in {run.start for run in self.runs}:
            active = [run for run in self.runs if run.start <= moment and (run.end is None or moment < run.end)]
            peak = max(peak, sum(run.gpus for run in active))
        return peak


def assert_every_item_once(simulation: XdistSimulation, skip: Sequence[int] = ()) -> None:
    counts = [len(simulation.starts_of(index)) for index in range(len(simulation.workload.collection))]
    assert [index for index, count in enumerate(counts) if count != 1 and index not in skip] == []


def assert_clean_finish(simulation: XdistSimulation) -> None:
    assert simulation.finished_at == simulation.makespan
    assert simulation.scheduler.tests_finished
    crashed = {run.node for run in simulation.runs if run.crashed}
    assert [node.gateway.id for node in simulation.nodes if not node.got_shutdown and node.gateway.id not in crashed] == []
    assert [node.gateway.id for node in simulation.nodes if node not in simulation.exited] == []
    assert [node.gateway.id for node in simulation.nodes if node.sent_after_shutdown] == []
    assert [entry for entry in simulation.removed if entry[1] is not None] == []


# --- whole runs -------------------------------------------------------------


def test_registry_mix_runs_each_item_once() -> None:
    workload = make_registry_mix(120, seed=3)

    simulation = XdistSimulation(workload, numnodes=8).run()

    assert_every_item_once(simulation)
    assert simulation.max_gpus_in_use() <= GPU_COUNT
    assert_clean_finish(simulation)


def test_registry_mix_makespan_near_bound() -> None:
    workload = make_registry_mix(120, seed=3)

    simulation = XdistSimulation(workload, numnodes=8).run()

    ratio = simulation.makespan / lower_bound(workload.jobs(), GPU_COUNT)
    print(f"makespan/LB for 120 registry-mix items, 8 fake workers, 8 GPUs: {ratio:.4f}")
    assert ratio <= 1.10


@pytest.mark.parametrize("seed", range(10))
def test_registry_mix_across_seeds(seed: int) -> None:
    workload = make_registry_mix(100 + 10 * seed, seed=100 + seed)

    simulation = XdistSimulation(workload, numnodes=8).run()

    assert_every_item_once(simulation)
    assert simulation.max_gpus_in_use() <= GPU_COUNT
    assert_clean_finish(simulation)
    assert simulation.makespan / lower_bound(workload.jobs(), GPU_COUNT) <= 1.10


@pytest.mark.parametrize("seed", range(30))
def test_random_runs_stay_valid(seed: int) -> None:
    # Random sizes, worker counts, crashes and estimates off by up to a factor of 3.
    rng = random.Random(seed)
    workload = make_registry_mix(rng.randint(1, 60), seed=seed)
    for index, gpus in enumerate(workload.gpus):
        if gpus:
            workload.seconds[index] = round(workload.seconds[index] * rng.uniform(0.3, 3.0), 1)
    crash_item = rng.choice([None, rng.randrange(len(workload.collection))])

    simulation = XdistSimulation(workload, numnodes=rng.randint(1, 10), crash_item=crash_item).run()

    assert_every_item_once(simulation)
    assert simulation.max_gpus_in_use() <= GPU_COUNT
    assert simulation.crashed_items == ([] if crash_item is None else [workload.collection[crash_item]])
    assert_clean_finish(simulation)


def test_schedule_independent_of_clock_origin() -> None:
    # A running item that started at clock time 0 must count as started then, not now.
    workload = make_registry_mix(100, seed=8)

    at_zero = XdistSimulation(workload, numnodes=8, clock_start=0.0).run()
    shifted = XdistSimulation(workload, numnodes=8, clock_start=1000.0).run()

    assert [(run.index, run.node) for run in at_zero.runs] == [(run.index, run.node) for run in shifted.runs]
    assert [run.start for run in at_zero.runs] == pytest.approx([run.start - 1000.0 for run in shifted.runs])


def test_fewer_workers_than_gpus() -> None:
    workload = make_registry_mix(40, seed=4)

    simulation = XdistSimulation(workload, numnodes=3).run()

    assert_every_item_once(simulation)
    assert simulation.max_gpus_in_use() <= GPU_COUNT
    assert_clean_finish(simulation)


def test_single_item_run() -> None:
    workload = make_workload([("org/only[ws2]", 2, 10.0)])

    simulation = XdistSimulation(workload, numnodes=8).run()

    assert_every_item_once(simulation)
    assert simulation.makespan == 10.0
    assert_clean_finish(simulation)


def test_wide_item_not_starved() -> None:
    # Eight long 1-GPU items with more GPU-seconds than the 8-GPU item start
    # first and end at 810 to 880. Short 1-GPU items would keep every freed GPU
    # busy if any item that fits could start.
    entries = [(f"org/first-{index}[ws1]", 1, 810.0 + 10 * index) for index in range(8)]
    entries.append(("org/wide[ws8]", 8, 100.0))
    entries += [(f"org/short-{index:03d}[ws1]", 1, 7.0) for index in range(200)]
    workload = make_workload(entries)
    wide = workload.collection.index(f"{REGISTRY_FILE}::org/wide[ws8]")

    simulation = XdistSimulation(workload, numnodes=8).run()

    assert_every_item_once(simulation)
    assert simulation.max_gpus_in_use() <= GPU_COUNT
    assert simulation.starts_of(wide)[0].start == 880.0
    assert_clean_finish(simulation)


def test_wide_item_not_starved_after_overrun() -> None:
    entries = [(f"org/first-{index}[ws1]", 1, 810.0 + 10 * index) for index in range(8)]
    entries.append(("org/wide[ws8]", 8, 100.0))
    entries += [(f"org/short-{index:03d}[ws1]", 1, 7.0) for index in range(200)]
    workload = make_workload(entries)
    # The first 1-GPU item runs far past its estimate of 810 s.
    workload.seconds[0] = 2000.0
    wide = workload.collection.index(f"{REGISTRY_FILE}::org/wide[ws8]")

    simulation = XdistSimulation(workload, numnodes=8).run()

    assert_every_item_once(simulation)
    assert simulation.max_gpus_in_use() <= GPU_COUNT
    assert simulation.starts_of(wide)[0].start == 2000.0
    assert_clean_finish(simulation)


def test_too_wide_items_do_not_block() -> None:
    entries = [("org/huge[ws16]", 16, 900.0), ("org/huge[ws32]", 32, 900.0)]
    entries += [(f"org/small-{index}[ws2]", 2, 100.0) for index in range(8)]
    workload = make_workload(entries)

    simulation = XdistSimulation(workload, numnodes=8).run()

    assert_every_item_once(simulation)
    assert simulation.max_gpus_in_use() <= GPU_COUNT
    # Eight 2-GPU items of 100 s fill 8 GPUs twice over; the skipped items add no time.
    assert simulation.makespan == 200.0
    assert_clean_finish(simulation)


def test_too_wide_item_maps_to_instant_job() -> None:
    workload = make_workload([("org/huge[ws16]", 16, 900.0)])

    job = workload.job_for()(workload.collection[0])

    assert job == Job(workload.collection[0], 1, 0.0)


# --- crashes ------------------------------------------------------------------


def largest_item(workload: Workload) -> int:
    """Return the item with the most GPU-seconds, which starts first, while the queue is full."""
    job_for = workload.job_for()
    return max(range(len(workload.collection)), key=lambda index: job_for(workload.collection[index]).gpu_seconds)


def test_crashed_worker_item_reported() -> None:
    workload = make_registry_mix(60, seed=5)
    crash_item = largest_item(workload)

    simulation = XdistSimulation(workload, numnodes=8, crash_item=crash_item).run()

    assert simulation.crashed_items == [workload.collection[crash_item]]


def test_crashed_worker_replaced_and_run_completes() -> None:
    workload = make_registry_mix(60, seed=5)
    crash_item = largest_item(workload)

    simulation = XdistSimulation(workload, numnodes=8, crash_item=crash_item).run()

    crashed_run = simulation.starts_of(crash_item)
    assert [run.crashed for run in crashed_run] == [True]
    crashed_node = next(node for node in simulation.nodes if node.gateway.id == crashed_run[0].node)
    # The crashed worker held a second item, which must run elsewhere.
    held = [index for kind, indices in crashed_node.calls if kind == "send" for index in indices if index != crash_item]
    assert held != []
    assert [run.node for run in simulation.starts_of(held[0])] != [crashed_node.gateway.id]
    assert "gw8" in [node.gateway.id for node in simulation.nodes]
    assert_every_item_once(simulation)
    assert simulation.max_gpus_in_use() <= GPU_COUNT
    assert_clean_finish(simulation)


def test_crash_frees_gpus_of_item() -> None:
    # One 8-GPU item crashes; the next 8-GPU item must still get all GPUs.
    entries = [("org/wide-a[ws8]", 8, 100.0), ("org/wide-b[ws8]", 8, 50.0)]
    workload = make_workload(entries)

    simulation = XdistSimulation(workload, numnodes=2, crash_item=0).run()

    assert simulation.crashed_items == [workload.collection[0]]
    # The other worker already exited, so the held item waits for the replacement.
    assert [run.start for run in simulation.starts_of(1)] == [50.0 + RESTART_SECONDS]
    assert_clean_finish(simulation)


def test_crash_of_last_item_finishes_run() -> None:
    workload = make_workload([("org/only[ws4]", 4, 100.0)])

    simulation = XdistSimulation(workload, numnodes=2, crash_item=0).run()

    assert simulation.crashed_items == [workload.collection[0]]
    assert simulation.finished_at == 50.0
    assert [node.gateway.id for node in simulation.nodes if not node.got_shutdown] == []


# --- collections --------------------------------------------------------------


def test_no_work_before_all_collections() -> None:
    workload = make_workload([("org/a[ws1]", 1, 10.0), ("org/b[ws1]", 1, 10.0)])
    scheduler = GpuScheduling(2, GPU_COUNT, workload.job_for(), clock=FakeClock())
    first, second = FakeNode("gw0"), FakeNode("gw1")
    scheduler.add_node(first)
    scheduler.add_node(second)

    scheduler.add_node_collection(first, workload.collection)

    assert not scheduler.collection_is_completed
    assert not scheduler.tests_finished
    assert first.calls == []


def test_different_collections_send_no_work() -> None:
    workload = make_workload([("org/a[ws1]", 1, 10.0), ("org/b[ws1]", 1, 10.0)])
    diffs: list[tuple[str, str]] = []

    def report_diff(first: Sequence[str], other: Sequence[str], first_id: str, other_id: str) -> str:
        diffs.append((first_id, other_id))
        return f"{first_id} and {other_id} differ"

    simulation = XdistSimulation(
        workload,
        numnodes=2,
        collections=[workload.collection, workload.collection[:1]],
        report_collection_diff=report_diff,
    ).run()

    assert [call for node in simulation.nodes for call in node.calls if call[0] == "send"] == []
    assert diffs == [("gw0", "gw1")]
    assert simulation.scheduler.collection_errors == ["gw0 and gw1 differ"]
    assert [node.gateway.id for node in simulation.nodes if not node.got_shutdown] == []


def test_different_collections_post_collect_report() -> None:
    workload = make_workload([("org/a[ws1]", 1, 10.0), ("org/b[ws1]", 1, 10.0)])
    reports: list[pytest.CollectReport] = []
    config = SimpleNamespace(hook=SimpleNamespace(pytest_collectreport=lambda report: reports.append(report)))
    scheduler = GpuScheduling(2, GPU_COUNT, workload.job_for(), clock=FakeClock(), config=config)  # type: ignore[arg-type]
    first, second = FakeNode("gw0"), FakeNode("gw1")
    for node, collection in ((first, workload.collection), (second, workload.collection[:1])):
        scheduler.add_node(node)
        scheduler.add_node_collection(node, collection)

    scheduler.schedule()

    assert [(report.nodeid, report.outcome, report.longrepr) for report in reports] == [
        ("gw1", "failed", "workers gw0 and gw1 collected different items")
    ]


def test_different_collections_finish_session() -> None:
    # DSession ends the loop only after tests_finished; otherwise it raises
    # "Unexpectedly no active workers available" once every worker has exited.
    workload = make_workload([("org/a[ws1]", 1, 10.0), ("org/b[ws1]", 1, 10.0)])

    simulation = XdistSimulation(workload, numnodes=2, collections=[workload.collection, workload.collection[::-1]]).run()

    assert simulation.scheduler.tests_finished


def test_different_collections_without_diff_reporter() -> None:
    workload = make_workload([("org/a[ws1]", 1, 10.0), ("org/b[ws1]", 1, 10.0)])

    simulation = XdistSimulation(workload, numnodes=2, collections=[workload.collection, workload.collection[:1]]).run()

    assert simulation.scheduler.collection_errors == ["workers gw0 and gw1 collected different items"]


def test_replacement_with_other_collection_gets_no_work() -> None:
    workload = make_workload([("org/a[ws1]", 1, 10.0), ("org/b[ws1]", 1, 10.0)])
    scheduler = GpuScheduling(1, GPU_COUNT, workload.job_for(), clock=FakeClock())
    first = FakeNode("gw0")
    scheduler.add_node(first)
    scheduler.add_node_collection(first, workload.collection)
    scheduler.schedule()
    replacement = FakeNode("gw1")
    scheduler.add_node(replacement)

    scheduler.add_node_collection(replacement, workload.collection[:1])
    scheduler.schedule()

    assert replacement.calls == [("shutdown", ())]
    assert scheduler.collection_errors == ["worker gw1 collected different items; it gets no work"]


def test_clean_exit_reports_no_item() -> None:
    workload = make_workload([("org/a[ws1]", 1, 10.0)])

    simulation = XdistSimulation(workload, numnodes=4).run()

    assert sorted(simulation.removed) == [(f"gw{index}", None) for index in range(4)]


# --- node ids -------------------------------------------------------------------


def test_model_key_from_registry_item() -> None:
    assert model_key(f"{REGISTRY_FILE}::org/a[ws1]", {"org/a[ws1]": 1}) == "org/a[ws1]"


def test_model_key_from_fixture_parameter() -> None:
    assert model_key("tests/test_x.py::test_serve[org/a[ws1]]", {"org/a[ws1]": 1}) == "org/a[ws1]"


def test_model_key_of_other_test() -> None:
    assert model_key("tests/test_x.py::test_other", {"org/a[ws1]": 1}) is None


def test_job_for_other_test_is_one_gpu() -> None:
    job_for = jobs_from_models((), {"org/a[ws1]": 1}, lambda key, world_size: 5.0, GPU_COUNT)

    assert job_for("tests/test_x.py::test_other") == Job("tests/test_x.py::test_other", 1, 1.0)


def test_job_for_uses_estimate() -> None:
    calls: list[tuple[str, int]] = []

    def estimate(key: str, world_size: int) -> float:
        calls.append((key, world_size))
        return 42.0

    job_for = jobs_from_models((), {"org/a[ws4]": 4}, estimate, GPU_COUNT)

    assert job_for(f"{REGISTRY_FILE}::org/a[ws4]") == Job(f"{REGISTRY_FILE}::org/a[ws4]", 4, 42.0)
    assert calls == [("org/a[ws4]", 4)]
