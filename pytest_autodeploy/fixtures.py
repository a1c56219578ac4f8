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
    # The same properties as built-in items, for reports, junitxml and the summary.
    request.node.user_properties.extend(
        [("model", model.name), ("config_id", model.config_id or ""), ("world_size", model.world_size)]
    )
    return AutodeployModel(
        name=model.name,
        config_id=model.config_id,
        yaml_extra=model.entry.yaml_extra,
        config=copy.deepcopy(model.config),
        world_size=model.world_size,
        config_path=write_merged_config(model, folder),
        test_id=model.test_id,
    )


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
        reason = too_few_gpus_reason(needed, state.inventory.count)
        request.node.user_properties.append((TOO_FEW_GPUS, True))
        if state.settings.strict_gpus:
            pytest.fail(f"{reason} (--autodeploy-strict-gpus)", pytrace=False)
        pytest.skip(reason)

    manager = LeaseManager(state.settings.lock_dir or default_lock_dir(), state.inventory.ids)
    try:
        lease = manager.acquire(
            needed, owner=f"{request.node.nodeid} (pid {os.getpid()})", timeout=state.settings.lease_timeout
        )
    except LeaseTimeout as error:
        pytest.fail(f"{error} (--autodeploy-lease-timeout)", pytrace=False)
    with lease:
        request.node.user_properties.append(("gpus", ",".join(lease.gpus)))
        yield lease.gpus
