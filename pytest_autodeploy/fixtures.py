"""Fixtures that give user-written tests the registry's models and their GPUs."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from .leases import LeaseManager, LeaseTimeout, default_lock_dir
from .registry import Model
from .runners import write_merged_config
from .session import get_state, too_few_gpus_reason
from .summary import TOO_FEW_GPUS
from .writable import check_lock_dir


@dataclass(frozen=True)
class AutodeployModel:
    """The registry entry a test runs for, as the ``autodeploy_model`` fixture gives it."""

    name: str
    config_id: str | None
    yaml_extra: tuple[str, ...]
    config: dict[str, Any]  # a deep copy: a test may change it freely
    world_size: int
    config_path: Path  # the merged config written as YAML
    test_id: str


@pytest.fixture
def autodeploy_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AutodeployModel:
    """The registry entry of this test: name, config_id, merged config and world size."""
    model = getattr(request, "param", None)
    if not isinstance(model, Model):
        pytest.skip("autodeploy_model needs --autodeploy-registry to parametrize this test")
    folder = tmp_path_factory.mktemp("autodeploy-config")
    # The plugin added the model's user properties at collection.
    return AutodeployModel(
        name=model.name,
        config_id=model.config_id,
        yaml_extra=model.entry.yaml_extra,
        config=copy.deepcopy(model.config),
        world_size=model.world_size,
        config_path=write_merged_config(model, folder),
        test_id=model.test_id,
    )


# Lock folders that passed check_lock_dir in this pytest process.
_CHECKED_LOCK_DIRS_KEY = pytest.StashKey[set[Path]]()


@pytest.fixture
def autodeploy_gpus(autodeploy_model: AutodeployModel, request: pytest.FixtureRequest) -> Iterator[tuple[str, ...]]:
    """GPU ids leased for this test's model: exactly its world size, held machine-wide.

    A model that needs more GPUs than the node has is skipped, or fails with
    --autodeploy-strict-gpus. Set CUDA_VISIBLE_DEVICES to these ids in the
    child process that uses them.
    """
    state = get_state(request.config)
    needed = autodeploy_model.world_size
    if needed > state.inventory.count:
        # pytest -rs folds skips by location, so the reason names the model.
        reason = f"{autodeploy_model.test_id}: {too_few_gpus_reason(needed, state.inventory.count)}"
        request.node.user_properties.append((TOO_FEW_GPUS, True))
        if state.settings.strict_gpus:
            pytest.fail(f"{reason} (--autodeploy-strict-gpus)", pytrace=False)
        pytest.skip(reason)

    lock_dir = state.settings.lock_dir or default_lock_dir()
    _check_lock_dir_once(request.config, lock_dir)

    # pytest.fail runs after the except blocks, so the report does not show the lease
    # error a second time as the exception that the failure happened during.
    failure: str | None = None
    try:
        manager = LeaseManager(lock_dir, state.inventory.ids)
        lease = manager.acquire(
            needed, owner=f"{request.node.nodeid} (pid {os.getpid()})", timeout=state.settings.lease_timeout
        )
    except LeaseTimeout as error:
        failure = f"{error} (--autodeploy-lease-timeout)"
    except OSError as error:
        failure = f"{autodeploy_model.test_id}: cannot lease {needed} GPUs in lock folder '{lock_dir}': {error}"
    if failure is not None:
        pytest.fail(failure, pytrace=False)

    with lease:
        request.node.user_properties[:] = [
            (name, value) for name, value in request.node.user_properties if name != "gpus"
        ] + [("gpus", ",".join(lease.gpus))]
        yield lease.gpus


def _check_lock_dir_once(config: pytest.Config, lock_dir: Path) -> None:
    """Fail the test without a traceback if the lock folder cannot be used.

    Each folder is checked once per pytest process, because every test that leases GPUs
    would otherwise repeat the check.
    """
    checked = config.stash.setdefault(_CHECKED_LOCK_DIRS_KEY, set())
    if lock_dir in checked:
        return

    failure: str | None = None
    try:
        check_lock_dir(lock_dir, "--autodeploy-lock-dir")
    except pytest.UsageError as error:
        failure = str(error)
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    checked.add(lock_dir)
