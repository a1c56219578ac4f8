"""pytest hooks of pytest-autodeploy. The logic lives in the other modules."""

from __future__ import annotations

import signal
import warnings
from pathlib import Path
from typing import Any, Iterator

import pytest

from . import registry as registry_module
from .diagnostics import RegistryError
from .durations import (
    DurationRecord,
    DurationsFileError,
    estimate_seconds,
    load_durations,
    merge_durations,
    save_durations,
)
from .fixtures import AutodeployModel, autodeploy_gpus, autodeploy_model
from .gpus import GpuSpecError, discover_gpus
from .items import ModelItem, RegistryFile, model_marks, model_properties
from .leases import default_lock_dir
from .markers import AUTODEPLOY_MARKER, config_marker, world_size_marker
from .options import Settings, add_options, output_path, resolve_settings
from .process import stop_on_sigterm, terminate_with_parent
from .registry import Model, Registry, load_registry
from .report_plugin import register_report_plugin
from .session import STATE_KEY, SessionState, get_state, is_xdist_worker
from .summary import TOO_FEW_GPUS, ResultTable
from .writable import check_lock_dir, check_writable_file

# Fixtures are found among a plugin module's names, so they are imported here.
__all__ = ["AutodeployModel", "autodeploy_gpus", "autodeploy_model"]

class RegistryWarning(pytest.PytestWarning):
    """A registry lint, shown in the warnings summary; only warning filters such as -W error make it fail a run."""


def _find_registry(config: pytest.Config, settings: Settings) -> tuple[Path, str]:
    """Return the registry path and a note on where it came from."""
    if isinstance(settings.registry_arg, str):
        return Path(settings.registry_arg), "--autodeploy-registry"

    ini_value = config.getini("autodeploy_registry")
    if ini_value:
        base = config.inipath.parent if config.inipath else config.rootpath
        return base / ini_value, f"ini autodeploy_registry in {config.inipath or config.rootpath}"

    local = config.rootpath / "model_registry"
    if (local / registry_module.MODELS_FILE).is_file():
        return local, "model_registry/ under rootdir"

    bundled = registry_module.bundled_registry_path()
    if bundled is not None:
        return bundled, "bundled registry"
    raise pytest.UsageError("the bundled registry is missing from this install; reinstall pytest-autodeploy or pass --autodeploy-registry=PATH")


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def _register_markers(config: pytest.Config, registry: Registry | None) -> None:
    config.addinivalue_line("markers", f"{AUTODEPLOY_MARKER}: a test generated from the model registry")
    sizes = {1, 2, 4, 8}
    files: set[str] = set()
    if registry is not None:
        sizes.update(model.world_size for model in registry.models if model.world_size)
        for model in registry.models:
            files.update(model.entry.yaml_extra)
    for size in sorted(sizes):
        config.addinivalue_line("markers", f"{world_size_marker(size)}: the model needs {size} GPUs")
    for name in sorted(files):
        config.addinivalue_line("markers", f"{config_marker(name)}: the model lists {name} in yaml_extra")


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    settings = resolve_settings(config)
    if not settings.enabled:
        _register_markers(config, None)
        register_report_plugin(config, None)
        return

    path, source = _find_registry(config, settings)
    # pytest's cache folder keeps a parsed copy of a large models.yaml, which
    # every xdist worker would otherwise parse again.
    cache = getattr(config, "cache", None)
    cache_dir = cache.mkdir("autodeploy-yaml") if cache is not None else None
    try:
        registry = load_registry(path, cache_dir)
    except RegistryError as error:
        raise pytest.UsageError(f"{error.format()} ({source})") from None
    _register_markers(config, registry)
    register_report_plugin(config, str(registry.models_path))

    try:
        inventory = discover_gpus(settings.gpus_spec)
    except GpuSpecError as error:
        raise pytest.UsageError(str(error)) from None

    if settings.command is not None:
        check_lock_dir(settings.lock_dir or default_lock_dir(), "--autodeploy-lock-dir")

    _check_outputs_apart(config, registry)

    durations: dict[str, DurationRecord] = {}
    if settings.durations_path is not None:
        if not is_xdist_worker(config):
            check_writable_file(settings.durations_path, "--autodeploy-durations")
        try:
            durations = load_durations(settings.durations_path)
        except DurationsFileError as error:
            raise pytest.UsageError(f"--autodeploy-durations: {error}") from None

    changes = None
    if settings.changed_since is not None and not registry.errors:
        from .changed import ChangedSinceError, select_changed

        try:
            changes = select_changed(registry, settings.changed_since)
        except ChangedSinceError as error:
            raise pytest.UsageError(f"--autodeploy-changed-since: {error}") from None

    # NOTE: _tmp_path_factory is pytest's private handle on the factory behind
    # tmp_path; without it the work folders go to the system temp folder.
    config.stash[STATE_KEY] = SessionState(
        settings,
        registry,
        source,
        inventory,
        durations=durations,
        changes=changes,
        tmp_path_factory=getattr(config, "_tmp_path_factory", None),
    )

    if not is_xdist_worker(config):
        config.pluginmanager.register(DurationRecorder(get_state(config)), "autodeploy-durations")

    # A cancelled CI job must not leave model commands running on GPUs.
    if settings.command is not None:
        previous: list = []
        stop_on_sigterm(previous)
        if previous:
            config.add_cleanup(lambda: signal.signal(signal.SIGTERM, previous[0]))
        if is_xdist_worker(config):
            terminate_with_parent()

    # With the flag and no test paths, collect only the registry.
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        config.args = [str(registry.models_path)]


def _check_outputs_apart(config: pytest.Config, registry: Registry) -> None:
    """Reject outputs that would overwrite each other or a registry file."""
    outputs = {}
    for name in ("autodeploy_durations", "autodeploy_report", "autodeploy_markdown"):
        path = output_path(config, name)
        if path is not None:
            outputs[name] = path.resolve()
    if not outputs:
        return

    inputs = {registry.models_path, *(path.resolve() for path in registry.config_files())}
    if registry.schema_path is not None:
        inputs.add(registry.schema_path.resolve())

    seen: dict[Path, str] = {}
    for name, path in outputs.items():
        flag = "--" + name.replace("_", "-")
        if path in inputs:
            raise pytest.UsageError(f"{flag}={path} would overwrite a registry file; write it elsewhere")
        if path in seen:
            raise pytest.UsageError(f"{flag} and {seen[path]} both write {path}; give them different files")
        seen[path] = flag


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    if STATE_KEY not in config.stash:
        return None
    state = get_state(config)
    registry = state.registry
    return [
        f"autodeploy: registry {registry.models_path} ({state.registry_source}), {len(registry.models)} models",
        f"autodeploy: runner {state.settings.runner_name}; GPUs: {state.inventory.describe()}",
    ]


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    config = parent.config
    if STATE_KEY not in config.stash:
        return None
    if file_path.resolve() != get_state(config).registry.models_path:
        return None
    try:
        file_path.resolve().relative_to(config.rootpath.resolve())
    except ValueError:
        # pytest gives a file outside rootdir an empty node id, so ids would
        # read "::org/model". Name it by its folder instead.
        nodeid = f"{file_path.parent.name}/{file_path.name}"
        return RegistryFile.from_parent(parent, path=file_path, nodeid=nodeid)
    return RegistryFile.from_parent(parent, path=file_path)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if STATE_KEY not in config.stash:
        return
    state = get_state(config)

    # trylast: -k and -m have deselected already, so selection composes with them.
    # Shards split what the other selections leave.
    if state.changes is not None:
        changed = set(state.changes.selected_test_ids)
        _keep(config, items, {_item_key(item) for item in items if not isinstance(item, ModelItem) or item.model.test_id in changed})
    if state.settings.shard is not None:
        _keep(config, items, _shard_selection(state, items))

    # A model too big for this node is skipped at collection, so its skip
    # names the model. Strict mode fails it when it runs instead.
    if state.uses_gpus and not state.settings.strict_gpus:
        for item in items:
            if (
                isinstance(item, ModelItem)
                and item.model.entry.skip is None
                and (item.model.world_size or 0) > state.inventory.count
            ):
                # pytest's -rs folds skips by file, so the reason names the model.
                reason = f"{item.model.test_id}: {state.too_few_gpus_reason(item.model)}"
                item.add_marker(pytest.mark.skip(reason=reason))
                item.user_properties.append((TOO_FEW_GPUS, True))

    # Tests that take the autodeploy_model fixture carry the same properties as
    # built-in items, from collection on, so a skipped one still counts.
    for item in items:
        model = None if isinstance(item, ModelItem) else item_model(item)
        if model is not None:
            item.user_properties.extend(model_properties(model))


@pytest.hookimpl(tryfirst=True)
def pytest_collection(session: pytest.Session) -> None:
    config = session.config
    # Only the process that reports: each xdist worker would repeat every lint.
    if STATE_KEY not in config.stash or is_xdist_worker(config):
        return
    # Lints become pytest warnings, placed at the registry line they are about.
    lints = get_state(config).registry.warnings
    for warning in lints:
        try:
            warnings.warn_explicit(
                RegistryWarning(warning.message),
                category=RegistryWarning,
                filename=str(warning.path),
                lineno=warning.line or 1,
            )
        except RegistryWarning:
            # -W error or filterwarnings = error turned the lints into errors.
            listed = "\n".join(lint.format() for lint in lints)
            raise pytest.UsageError(
                f"registry warnings are errors under this run's warning filters:\n{listed}\n"
                "fix them, or add 'ignore::pytest_autodeploy.plugin.RegistryWarning' to filterwarnings"
            ) from None


def item_model(item: pytest.Item) -> Model | None:
    """Return the registry model a test runs: a built-in item's, or the autodeploy_model parameter."""
    if isinstance(item, ModelItem):
        return item.model
    callspec = getattr(item, "callspec", None)
    model = callspec.params.get("autodeploy_model") if callspec is not None else None
    return model if isinstance(model, Model) else None


def _item_key(item: pytest.Item) -> str:
    return item.model.test_id if isinstance(item, ModelItem) else item.nodeid


def _keep(config: pytest.Config, items: list[pytest.Item], keep: set[str]) -> None:
    """Deselect every item whose key is not in ``keep``, as -k and -m do."""
    selected = [item for item in items if _item_key(item) in keep]
    deselected = [item for item in items if _item_key(item) not in keep]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


def _shard_selection(state: SessionState, items: list[pytest.Item]) -> set[str]:
    # The same weights as the CI matrix (matrix.plan_shards), so that a job
    # runs exactly the models the matrix planned for it.
    from .matrix import model_gpu_seconds
    from .shards import split_shards

    k, n = state.settings.shard
    weighted = []
    seen: set[str] = set()
    for item in items:
        key = _item_key(item)
        # --keep-duplicates collects an item twice; both copies share one shard.
        if key in seen:
            continue
        seen.add(key)
        if isinstance(item, ModelItem):
            # A model too big for this node is skipped at once, so it costs nothing here.
            too_big = state.uses_gpus and (item.model.world_size or 0) > state.inventory.count
            weighted.append((key, 0.0 if too_big else model_gpu_seconds(item.model, state.durations)))
        else:
            weighted.append((key, estimate_seconds(key, 1, state.durations)))
    shards = split_shards(weighted, n)
    return set(shards[k - 1])


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "autodeploy_model" not in metafunc.fixturenames:
        return
    config = metafunc.config
    if STATE_KEY not in config.stash:
        return
    registry = get_state(config).registry
    if registry.errors:
        pytest.fail(RegistryError(registry.errors).format(), pytrace=False)
    metafunc.parametrize(
        "autodeploy_model",
        [pytest.param(model, id=model.test_id, marks=model_marks(model)) for model in registry.models],
        indirect=True,
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    report = yield
    model = item_model(item)
    if model is None or call.when != "call" or model.entry.xfail is None:
        return report
    # The check runner does not run the model, and --runxfail reports xfail
    # entries as if they had none.
    if (isinstance(item, ModelItem) and not item.runs_model) or item.config.option.runxfail:
        return report
    reason = model.entry.xfail
    if report.failed:
        report.outcome = "skipped"
        report.wasxfail = reason
    elif report.passed and get_state(item.config).settings.strict_xfail:
        report.outcome = "failed"
        report.longrepr = f"{model.test_id} now passes; remove xfail (its reason was: {reason})"
    elif report.passed:
        report.wasxfail = reason
    return report


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """With ``-n auto`` and a command runner, start one worker per GPU."""
    # xdist calls this before pytest_configure has run, so resolve the settings here.
    settings = resolve_settings(config)
    if not settings.enabled or settings.command is None:
        return None
    try:
        count = discover_gpus(settings.gpus_spec).count
    except GpuSpecError:
        return None  # pytest_configure reports the invalid value
    return count if count > 0 else None


def _dist_given(config: pytest.Config) -> bool:
    """Return True when the user chose an xdist mode with --dist or -d."""
    args = config.invocation_params.args
    return any(arg == "-d" or arg == "--dist" or arg.startswith("--dist=") for arg in args)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Schedule registry items by GPU-seconds with backfill when they run on GPUs."""
    if STATE_KEY not in config.stash:
        return None
    state = get_state(config)
    if not state.uses_gpus or state.inventory.count == 0 or _dist_given(config):
        return None

    from xdist.report import report_collection_diff
    from xdist.workermanage import parse_tx_spec_config

    from .xdist_scheduling import GpuScheduling, jobs_from_models

    def estimate(key: str, world_size: int) -> float:
        return estimate_seconds(key, world_size, state.durations)

    return GpuScheduling(
        numnodes=len(parse_tx_spec_config(config)),
        gpu_count=state.inventory.count,
        job_for=jobs_from_models((), state.world_sizes(), estimate, state.inventory.count),
        report_collection_diff=report_collection_diff,
        config=config,
    )


class DurationRecorder:
    """Records the call duration of every model test and saves the durations file.

    Registered only in the controller (or the single process without xdist),
    which receives the reports of every worker.
    """

    def __init__(self, state: SessionState) -> None:
        self.state = state

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":
            return
        properties = dict(report.user_properties)
        if "world_size" not in properties:
            return
        from .xdist_scheduling import model_key

        key = model_key(report.nodeid, self.state.world_sizes())
        if key is not None:
            self.state.measured[key] = DurationRecord.measured(report.duration, properties["world_size"])

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        path = self.state.settings.durations_path
        if path is None or not self.state.measured:
            return
        try:
            save_durations(path, merge_durations(self.state.durations, self.state.measured))
        except OSError as error:
            message = f"autodeploy: could not write --autodeploy-durations {path}: {error.strerror}"
            reporter = session.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.ensure_newline()
                reporter.write_line(message, red=True)
            # A requested output that is missing must not leave the run green.
            if session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if STATE_KEY not in config.stash:
        return
    state = get_state(config)
    if state.changes is not None:
        terminalreporter.write_sep("=", f"autodeploy changed since {state.settings.changed_since}")
        for line in state.changes.lines():
            terminalreporter.write_line(line)

    results = _collect_results(terminalreporter)
    if not results.results:
        return
    terminalreporter.write_sep("=", "autodeploy summary")
    for line in results.lines():
        terminalreporter.write_line(line)


def _collect_results(terminalreporter: Any) -> ResultTable:
    reports = [
        report
        for category in terminalreporter.stats.values()
        for report in category
        if isinstance(report, pytest.TestReport)
    ]
    # xdist's report for a crashed worker's item carries no user properties;
    # its setup report does.
    known = {report.nodeid: report.user_properties for report in reports if report.user_properties}
    table = ResultTable()
    for report in reports:
        table.record(report, known.get(report.nodeid))
    return table
