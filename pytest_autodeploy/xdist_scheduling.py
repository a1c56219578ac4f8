"""An xdist scheduler that starts registry items only when their GPUs are free.

How xdist runs items shapes this design (checked against pytest-xdist 3.8):
a worker starts an item only once it has received the next one (or a
shutdown), because pytest needs ``nextitem`` for teardown. So each worker
has at most two items: the one it runs and the next one, which it holds.
Sending the held item's successor (or a shutdown) is what starts the held item, and the
scheduler does that only when the backfill policy allows the held item to
start now. The GPU model here is a plan; the leases that workers take from
the lock folder are what guarantee exclusive GPUs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Collection, Mapping, Sequence

from .backfill import BackfillPolicy, Job

if TYPE_CHECKING:
    import pytest

logger = logging.getLogger(__name__)


@dataclass
class _NodeState:
    # Collection indices sent to the worker and not yet complete. The first is
    # running once a second one or a shutdown was sent.
    sent: list[int] = field(default_factory=list)
    shutdown_sent: bool = False
    # Start time of sent[0] once it runs.
    started_at: float | None = None

    @property
    def running(self) -> int | None:
        if self.sent and (len(self.sent) >= 2 or self.shutdown_sent):
            return self.sent[0]
        return None

    @property
    def held(self) -> int | None:
        if len(self.sent) == 1 and not self.shutdown_sent:
            return self.sent[0]
        if len(self.sent) >= 2:
            return self.sent[1]
        return None

    @property
    def idle(self) -> bool:
        return self.running is None and not self.shutdown_sent


class GpuScheduling:
    """The xdist ``Scheduling`` protocol, dispatching by GPU-seconds with backfill.

    ``job_for`` maps a collected node id to its :class:`Job`; items outside the
    registry are modelled as one-GPU jobs by the caller.
    """

    def __init__(
        self,
        numnodes: int,
        gpu_count: int,
        job_for: Callable[[str], Job],
        clock: Callable[[], float] = time.monotonic,
        report_collection_diff: Callable[[Sequence[str], Sequence[str], str, str], str | None] | None = None,
        config: pytest.Config | None = None,
    ) -> None:
        self.numnodes = numnodes
        self.gpu_count = gpu_count
        self.policy = BackfillPolicy(gpu_count)
        self.job_for = job_for
        self.clock = clock
        self.report_collection_diff = report_collection_diff
        # Receives a failed collection report per collection error, as xdist's LoadScheduling sends.
        self.config = config
        self.node_states: dict[Any, _NodeState] = {}
        self.node_collections: dict[Any, list[str]] = {}
        self.collection: list[str] | None = None
        self.jobs: list[Job] = []
        # Collection indices not yet sent to any worker, in priority order.
        self.queue: list[int] = []
        self.collection_errors: list[str] = []
        # Set when the first workers collected different items: nothing runs, and the session ends.
        self.collections_differ = False

    # --- the xdist Scheduling protocol --------------------------------------

    @property
    def nodes(self) -> list[Any]:
        return list(self.node_states)

    @property
    def collection_is_completed(self) -> bool:
        return len(self.node_collections) >= self.numnodes

    @property
    def tests_finished(self) -> bool:
        # DSession stops only once this is True. Otherwise the exit of the last
        # worker makes DSession raise "Unexpectedly no active workers available".
        if self.collections_differ:
            return True
        if not self.collection_is_completed or self.collection is None:
            return False
        if self.queue:
            return False
        return all(not state.sent for state in self.node_states.values())

    @property
    def has_pending(self) -> bool:
        return bool(self.queue) or any(state.sent for state in self.node_states.values())

    def add_node(self, node: Any) -> None:
        self.node_states[node] = _NodeState()

    def add_node_collection(self, node: Any, collection: Sequence[str]) -> None:
        if self.collection is not None and list(collection) != self.collection:
            # A replacement worker that collected something else must get no work.
            self._report_collection_error(node.gateway.id, f"worker {node.gateway.id} collected different items; it gets no work")
            self.node_states[node].shutdown_sent = True
            node.shutdown()
            return
        self.node_collections[node] = list(collection)

    def mark_test_complete(self, node: Any, item_index: int, duration: float = 0) -> None:
        state = self.node_states[node]
        state.sent.remove(item_index)
        state.started_at = None
        self._dispatch()

    def mark_test_pending(self, item: str) -> None:
        assert self.collection is not None
        self._enqueue([self.collection.index(item)])
        self._dispatch()

    def remove_pending_tests_from_node(self, node: Any, indices: Sequence[int]) -> None:
        raise NotImplementedError("this scheduler never steals items from workers")

    def remove_node(self, node: Any) -> str | None:
        """Forget a worker that finished or crashed; return the item it was running, if any.

        xdist reports the returned item as failed. Its GPUs return to the plan,
        and the item the worker held goes back to the queue.
        """
        state = self.node_states.pop(node)
        crashed = state.running
        requeue = [index for index in state.sent if index != crashed]
        if requeue:
            self._enqueue(requeue)
        if crashed is not None:
            assert self.collection is not None
            logger.warning("worker %s died while running %s; its GPUs return to the pool", node.gateway.id, self.collection[crashed])
        self._dispatch()
        return self.collection[crashed] if crashed is not None and self.collection is not None else None

    def schedule(self) -> None:
        assert self.collection_is_completed
        if self.collections_differ:
            return
        if self.collection is None:
            if not self._check_same_collection():
                return
            self.collection = next(iter(self.node_collections.values()))
            self.jobs = [self.job_for(nodeid) for nodeid in self.collection]
            self._enqueue(range(len(self.collection)))
        self._dispatch()

    # --- scheduling ---------------------------------------------------------

    def _check_same_collection(self) -> bool:
        collections = list(self.node_collections.items())
        first_node, first = collections[0]
        same = True
        for node, other in collections[1:]:
            if other != first:
                same = False
                message = None
                if self.report_collection_diff is not None:
                    message = self.report_collection_diff(first, other, first_node.gateway.id, node.gateway.id)
                message = message or f"workers {first_node.gateway.id} and {node.gateway.id} collected different items"
                self._report_collection_error(node.gateway.id, message)
        if not same:
            self.collections_differ = True
            for node, state in self.node_states.items():
                state.shutdown_sent = True
                node.shutdown()
        return same

    def _report_collection_error(self, node_id: str, message: str) -> None:
        self.collection_errors.append(message)
        logger.error("%s", message)
        if self.config is not None:
            import pytest

            report = pytest.CollectReport(nodeid=node_id, outcome="failed", longrepr=message, result=[])
            self.config.hook.pytest_collectreport(report=report)

    def _enqueue(self, indices: Any) -> None:
        merged = set(self.queue) | set(indices)
        order = self.policy.order(self.jobs[index] for index in merged)
        position = {job.key: index for index, job in enumerate(self.jobs) if index in merged}
        self.queue = [position[job.key] for job in order]

    def _running(self) -> list[tuple[Job, float]]:
        pairs = []
        for state in self.node_states.values():
            if state.running is not None:
                started_at = state.started_at if state.started_at is not None else self.clock()
                pairs.append((self.jobs[state.running], started_at))
        return pairs

    def _dispatch(self) -> None:
        """Start every item that the policy allows now, then shut down workers with no work left."""
        if self.collection is None:
            return

        while True:
            started = self._dispatch_once()
            if not started:
                break

        # Workers with nothing sent and nothing left to send can stop.
        if not self.queue:
            for node, state in self.node_states.items():
                if not state.shutdown_sent and not state.sent:
                    self._shutdown(node, state)

    def _dispatch_once(self) -> bool:
        """Start one item that the policy allows now, and return whether one started."""
        now = self.clock()
        running = self._running()
        free = self.gpu_count - sum(job.world_size for job, _ in running)

        # Items held by busy workers stay out of the plan: they cannot start
        # before their worker's current item ends, so reserving GPUs for them
        # now would leave those GPUs idle. Each joins the plan once its worker
        # is idle.
        held_on_idle = {state.held: node for node, state in self.node_states.items() if state.idle and state.held is not None}
        empty_nodes = [node for node, state in self.node_states.items() if state.idle and not state.sent]

        waiting = list(held_on_idle) + self.queue
        ordered = self.policy.order(self.jobs[index] for index in waiting)
        index_of = {self.jobs[index].key: index for index in waiting}

        startable = {self.jobs[index].key for index in held_on_idle}
        if empty_nodes:
            startable.update(self.jobs[index].key for index in self.queue)

        plan = self.policy.plan(ordered, running, now, max(free, 0), startable)
        if not plan.start:
            return False

        # The worker that starts an item must also get the next item to hold,
        # and that item waits until the started one ends. So the started item
        # with the shortest estimate goes first and receives the queue head.
        job = min(plan.start, key=lambda candidate: candidate.seconds)
        index = index_of[job.key]
        if index in held_on_idle:
            node = held_on_idle[index]
            spare_nodes = len(empty_nodes)
        else:
            node = empty_nodes[0]
            spare_nodes = len(empty_nodes) - 1
            self.queue.remove(index)
            self.node_states[node].sent.append(index)
            node.send_runtest_some([index])

        # Queued items that the plan starts now on other empty workers must
        # not become this worker's held item.
        starting_elsewhere = [index_of[other.key] for other in plan.start if other is not job and index_of[other.key] in self.queue]
        self._start_held(node, self.node_states[node], now, keep=set(starting_elsewhere[:spare_nodes]))
        return True

    def _start_held(self, node: Any, state: _NodeState, now: float, keep: Collection[int] = ()) -> None:
        """Start the worker's held item by sending it a successor to hold, or a shutdown.

        The successor is the first queued item outside ``keep``. Without one
        the worker gets a shutdown, which is safe because each item in ``keep``
        has an empty worker of its own.
        """
        state.started_at = now
        successor = next((index for index in self.queue if index not in keep), None)
        if successor is None:
            self._shutdown(node, state)
            return
        self.queue.remove(successor)
        state.sent.append(successor)
        node.send_runtest_some([successor])

    def _shutdown(self, node: Any, state: _NodeState) -> None:
        if state.sent and state.started_at is None:
            state.started_at = self.clock()
        state.shutdown_sent = True
        node.shutdown()


def jobs_from_models(
    collection: Sequence[str],
    model_world_sizes: Mapping[str, int],
    estimate: Callable[[str, int], float],
    gpu_count: int,
) -> Callable[[str], Job]:
    """Return a ``job_for`` function for a collection.

    A node id maps to a registry model through its last ``::`` part (built-in
    items) or its parameter id (tests using the ``autodeploy_model`` fixture).
    """
    del collection

    def job_for(nodeid: str) -> Job:
        key = model_key(nodeid, model_world_sizes)
        if key is None:
            # NOTE: items outside the registry are modelled as one-GPU jobs of
            # one second; they take no lease, so the model is only an estimate.
            return Job(nodeid, 1, 1.0)
        world_size = model_world_sizes[key]
        if world_size > gpu_count:
            # Skipped at once on the worker, so it costs no GPU time.
            return Job(nodeid, 1, 0.0)
        return Job(nodeid, world_size, estimate(key, world_size))

    return job_for


def model_key(nodeid: str, model_world_sizes: Mapping[str, int]) -> str | None:
    """Return the registry test id that a node id runs, or None for other tests."""
    _, _, rest = nodeid.partition("::")
    if rest in model_world_sizes:
        return rest
    if nodeid.endswith("]") and "[" in nodeid:
        param = nodeid[nodeid.index("[") + 1 : -1]
        if param in model_world_sizes:
            return param
    return None
