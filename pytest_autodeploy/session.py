"""The state that pytest-autodeploy keeps for one pytest process, and running one item."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .durations import DurationRecord
from .gpus import GpuInventory
from .leases import LeaseManager, LeaseTimeout, default_lock_dir
from .options import Settings
from .registry import Model, Registry
from .runners import RunFailure, run_check, run_model_command, write_merged_config
from .summary import TOO_FEW_GPUS, ResultTable

if TYPE_CHECKING:
    from .items import ModelItem


@dataclass
class SessionState:
    """Everything the plugin keeps for one pytest process."""

    settings: Settings
    registry: Registry
    registry_source: str
    inventory: GpuInventory
    results: ResultTable = field(default_factory=ResultTable)
    # Seconds per model from the durations file, and those measured in this run.
    durations: dict[str, DurationRecord] = field(default_factory=dict)
    measured: dict[str, DurationRecord] = field(default_factory=dict)
    # What --autodeploy-changed-since selected, and why.
    changes: Any = None
    _work_dir: Path | None = None
    _world_sizes: dict[str, int] | None = None
    # pytest's temporary folders rotate, so work folders do not pile up.
    tmp_path_factory: Any = None

    @property
    def uses_gpus(self) -> bool:
        return self.settings.command is not None

    def world_sizes(self) -> dict[str, int]:
        """Return the world size of every model by test id (computed once, read per report)."""
        if self._world_sizes is None:
            self._world_sizes = {
                model.test_id: model.world_size for model in self.registry.models if model.world_size is not None
            }
        return self._world_sizes

    @property
    def work_dir(self) -> Path:
        """A private folder for merged configs and command logs of this process."""
        if self._work_dir is None:
            base = self.tmp_path_factory.getbasetemp() if self.tmp_path_factory is not None else None
            self._work_dir = Path(tempfile.mkdtemp(prefix="autodeploy-", dir=base))
        return self._work_dir

    def run_item(self, item: ModelItem) -> None:
        model = item.model
        if self.settings.command is None:
            run_check(model, self.registry)
            return

        self._check_gpu_count(item)
        manager = LeaseManager(self.settings.lock_dir or default_lock_dir(), self.inventory.ids)
        config_path = write_merged_config(model, self.work_dir / "configs")
        try:
            lease = manager.acquire(
                model.world_size, owner=f"{item.nodeid} (pid {os.getpid()})", timeout=self.settings.lease_timeout
            )
        except LeaseTimeout as error:
            raise RunFailure(f"{error} (--autodeploy-lease-timeout)") from None
        except OSError as error:
            # A broken lock folder, such as a planted symbolic link.
            raise RunFailure(f"cannot lease GPUs: {error}") from None
        with lease:
            item.user_properties[:] = [
                (name, value) for name, value in item.user_properties if name != "gpus"
            ] + [("gpus", ",".join(lease.gpus))]
            run_model_command(
                self.settings.command,
                model,
                config_path,
                lease.gpus,
                log_dir=self.work_dir / "logs",
                timeout=self.settings.timeout,
                pass_fds=lease.fds,
            )

    def too_few_gpus_reason(self, model: Model) -> str:
        return too_few_gpus_reason(model.world_size or 0, self.inventory.count)

    def _check_gpu_count(self, item: ModelItem) -> None:
        if (item.model.world_size or 0) <= self.inventory.count:
            return
        reason = self.too_few_gpus_reason(item.model)
        item.user_properties.append((TOO_FEW_GPUS, True))
        if self.settings.strict_gpus:
            raise RunFailure(f"{reason} (--autodeploy-strict-gpus)")
        pytest.skip(reason)


STATE_KEY = pytest.StashKey[SessionState]()


def too_few_gpus_reason(needed: int, available: int) -> str:
    return f"needs {needed} GPU{'' if needed == 1 else 's'}, this node has {available}"


def get_state(config: pytest.Config) -> SessionState:
    return config.stash[STATE_KEY]


def is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")
