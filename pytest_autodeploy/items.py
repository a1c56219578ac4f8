"""pytest nodes for a registry: one collector for models.yaml, one item per model."""

from __future__ import annotations

import functools
from typing import Any, Iterator

import pytest

from .diagnostics import RegistryError
from .markers import AUTODEPLOY_MARKER, config_marker, world_size_marker
from .registry import Model
from .runners import RunFailure


def model_marker_names(model: Model) -> list[str]:
    return list(_marker_names(model.world_size, model.entry.yaml_extra))


@functools.lru_cache(maxsize=1024)
def _marker_names(world_size: int | None, yaml_extra: tuple[str, ...]) -> tuple[str, ...]:
    # Most models share a world size and list of files, so compute each once.
    names = [AUTODEPLOY_MARKER]
    if world_size is not None:
        names.append(world_size_marker(world_size))
    names.extend(config_marker(name) for name in yaml_extra)
    return tuple(names)


@functools.lru_cache(maxsize=None)
def _mark(name: str) -> pytest.MarkDecorator:
    # Looking a marker up on pytest.mark is slow enough to matter for 10,000 items.
    return getattr(pytest.mark, name)


def model_marks(model: Model, *, runs_model: bool = True) -> list[pytest.MarkDecorator]:
    """Return the model's markers, plus its registry ``skip`` when the test runs the model.

    The check runner only validates the entry, so a known failure of the model
    itself must not skip that check.
    """
    marks = [_mark(name) for name in model_marker_names(model)]
    if runs_model and model.entry.skip is not None:
        marks.append(pytest.mark.skip(reason=f"{model.test_id}: {model.entry.skip}"))
    return marks


def model_properties(model: Model) -> list[tuple[str, object]]:
    """Return the user properties that identify a model in reports and junitxml."""
    return [
        ("model", model.name),
        ("config_id", model.config_id or ""),
        ("world_size", model.world_size),
        ("yaml_extra", ",".join(model.entry.yaml_extra)),
        # The command runner and the autodeploy_gpus fixture fill in the leased GPUs.
        ("gpus", ""),
    ]


class RegistryFile(pytest.File):
    """Collects ``models.yaml``; a registry with errors becomes one collection error."""

    def collect(self) -> Iterator[pytest.Item]:
        from .session import get_state  # session.py imports this module

        state = get_state(self.config)
        state.registry.raise_for_errors()
        for model in state.registry.models:
            # Passing the id as a string lets pytest parse "[config_id]" as
            # parameters, as it does for ids that --lf and --deselect read back.
            nodeid = f"{self.nodeid}::{model.test_id}"
            yield ModelItem.from_parent(
                self, name=model.test_id, nodeid=nodeid, model=model, runs_model=state.uses_gpus
            )

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, RegistryError):
            return excinfo.value.format()
        return super().repr_failure(excinfo)


class ModelItem(pytest.Item):
    """One registry entry as a test; running it is the runner's job."""

    def __init__(self, *, model: Model, runs_model: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = model
        # False for the check runner, which validates the entry without running
        # the model, so the entry's xfail and skip do not apply.
        self.runs_model = runs_model
        # The same as add_marker() for each mark, without its per-call overhead.
        marks = model_marks(model, runs_model=runs_model)
        self.own_markers.extend(mark.mark for mark in marks)
        self.keywords.update({mark.name: mark for mark in marks})
        # user_properties travel with every report, also from xdist workers,
        # and junitxml writes them as <property> elements.
        self.user_properties.extend(model_properties(model))

    def runtest(self) -> None:
        from .session import get_state

        get_state(self.config).run_item(self)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, RunFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, self.model.entry.line - 1, f"{self.model.test_id} (world size {self.model.world_size})"
