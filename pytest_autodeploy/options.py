"""Command-line options, their ini twins, and the settings resolved from them."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .report_plugin import add_report_options
from .runners import CommandTemplate, TemplateError
from .shards import ShardSpecError, parse_shard_spec

# Every option has an ini twin: --autodeploy-foo-bar <-> autodeploy_foo_bar,
# with the same help text. A command-line value wins over the ini value.


def _positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seconds value {value!r}; give a number such as 600") from None
    if not seconds > 0 or not math.isfinite(seconds):
        raise argparse.ArgumentTypeError(f"invalid seconds value {value!r}; it must be a finite number greater than 0")
    return seconds


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("autodeploy", "pytest-autodeploy: model registry tests")
    add_report_options(group, parser)

    def add(flag: str, ini_type: str | None, help: str, **kwargs: Any) -> None:
        dest = flag.lstrip("-").replace("-", "_")
        group.addoption(flag, dest=dest, help=help, **kwargs)
        if ini_type is not None:
            parser.addini(dest, help=help, type=ini_type, default=None)

    add(
        "--autodeploy-registry",
        "string",
        "Enable registry tests. PATH is a registry folder or its models.yaml; without "
        "PATH: the autodeploy_registry ini value, then model_registry/ under rootdir, "
        "then the bundled registry. Write --autodeploy-registry=PATH",
        nargs="?",
        # The bare flag stores True, so that an empty "=PATH" can be rejected.
        const=True,
        default=None,
        metavar="PATH",
    )
    add(
        "--autodeploy-command",
        "string",
        "Run each model with this command (argv, no shell) instead of the check runner. "
        "Placeholders: {model} {config} {world_size} {config_id} {gpus}",
        metavar="TEMPLATE",
    )
    add(
        "--autodeploy-timeout",
        "string",
        "Kill a model's command and its process group after this many seconds (default: no limit)",
        type=_positive_seconds,
        metavar="SECONDS",
    )
    add(
        "--autodeploy-lease-timeout",
        "string",
        "Fail a model that waits longer than this many seconds for its GPUs, "
        "naming who holds them (default: wait without limit)",
        type=_positive_seconds,
        metavar="SECONDS",
    )
    add(
        "--autodeploy-gpus",
        "string",
        "GPUs on this node: a count (8) or a list of ids (0,1,2,3). "
        "Default: CUDA_VISIBLE_DEVICES, then NVML, then nvidia-smi -L",
        metavar="N|LIST",
    )
    add(
        "--autodeploy-strict-gpus",
        "bool",
        "Fail, instead of skip, a model that needs more GPUs than this node has",
        action="store_true",
        default=None,
    )
    add(
        "--autodeploy-durations",
        "string",
        "JSON file of seconds per model: read to order work before the run, "
        "updated atomically after it",
        metavar="FILE",
    )
    add(
        "--autodeploy-shard",
        "string",
        "Run only shard K of N (e.g. 2/4) of the selected models, balanced by "
        "GPU-seconds; identical on every runner",
        metavar="K/N",
    )
    add(
        "--autodeploy-changed-since",
        "string",
        "Run only models whose merged config or world size differs from the "
        "registry at this git ref, plus new models",
        metavar="REF",
    )
    add(
        "--autodeploy-strict-xfail",
        "bool",
        "Fail a model marked xfail in the registry when it passes (\"now passes; remove xfail\")",
        action="store_true",
        default=None,
    )
    add(
        "--autodeploy-lock-dir",
        "string",
        "Folder of the machine-wide GPU lock files shared by every session on this host "
        "(default: <tmp>/pytest-autodeploy-gpu-locks)",
        metavar="PATH",
    )


def _get(config: pytest.Config, name: str) -> Any:
    """Return the option value if given on the command line, else the ini value."""
    value = config.getoption(name, default=None)
    if value is None:
        value = config.getini(name)
    return value


def output_path(config: pytest.Config, name: str) -> Path | None:
    """Return the path of an output option, as the plugin resolves it."""
    return _get_path(config, name)


def _get_path(config: pytest.Config, name: str) -> Path | None:
    """Return a path option: relative to the current folder when given on the
    command line, relative to the ini file when set there."""
    value = config.getoption(name, default=None)
    if value:
        # Absolute now, because a test may change the working folder.
        return Path(value).expanduser().absolute()
    value = config.getini(name)
    if not value:
        return None
    base = config.inipath.parent if config.inipath else config.rootpath
    return base / Path(value).expanduser()


def _ini_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    """Plugin settings resolved from options and ini values."""

    registry_arg: str | bool | None  # None: plugin disabled; True: flag without PATH
    command: CommandTemplate | None
    timeout: float | None
    gpus_spec: str | None
    strict_gpus: bool
    lock_dir: Path | None
    durations_path: Path | None = None
    lease_timeout: float | None = None
    shard: tuple[int, int] | None = None
    changed_since: str | None = None
    strict_xfail: bool = False

    @property
    def enabled(self) -> bool:
        return self.registry_arg is not None

    @property
    def runner_name(self) -> str:
        return "command" if self.command is not None else "check"


# Options whose empty value is a mistake: an unset shell variable in CI
# (--autodeploy-command="$RUNNER") must not quietly select the check runner.
_NON_EMPTY_OPTIONS = (
    "autodeploy_command",
    "autodeploy_gpus",
    "autodeploy_lock_dir",
    "autodeploy_durations",
    "autodeploy_shard",
    "autodeploy_changed_since",
    "autodeploy_report",
    "autodeploy_compare",
    "autodeploy_markdown",
)


def _reject_empty_values(config: pytest.Config) -> None:
    for name in _NON_EMPTY_OPTIONS:
        value = config.getoption(name, default=None)
        if isinstance(value, str) and not value.strip():
            flag = "--" + name.replace("_", "-")
            raise pytest.UsageError(f"{flag} is empty; give a value or leave the option out")


def _get_seconds(config: pytest.Config, name: str) -> float | None:
    value = config.getoption(name, default=None)
    if value is None and config.getini(name):
        try:
            value = _positive_seconds(config.getini(name))
        except argparse.ArgumentTypeError as error:
            raise pytest.UsageError(f"ini {name}: {error}") from None
    return value


def resolve_settings(config: pytest.Config) -> Settings:
    """Read and check every option; raise ``pytest.UsageError`` naming the bad one."""
    _reject_empty_values(config)
    command_text = _get(config, "autodeploy_command")
    command = None
    if command_text:
        try:
            command = CommandTemplate.parse(command_text)
        except TemplateError as error:
            raise pytest.UsageError(str(error)) from None

    timeout = _get_seconds(config, "autodeploy_timeout")
    lease_timeout = _get_seconds(config, "autodeploy_lease_timeout")

    registry_arg = config.getoption("autodeploy_registry", default=None)
    if isinstance(registry_arg, str) and not registry_arg.strip():
        raise pytest.UsageError(
            "--autodeploy-registry= is empty; give a registry folder, or write the flag without '=' for the default"
        )

    lock_dir = _get_path(config, "autodeploy_lock_dir")
    gpus_spec = _get(config, "autodeploy_gpus")
    durations = _get_path(config, "autodeploy_durations")
    shard = None
    shard_text = _get(config, "autodeploy_shard")
    if shard_text:
        try:
            shard = parse_shard_spec(str(shard_text))
        except ShardSpecError as error:
            raise pytest.UsageError(str(error)) from None

    return Settings(
        registry_arg=registry_arg,
        command=command,
        timeout=timeout,
        lease_timeout=lease_timeout,
        gpus_spec=str(gpus_spec) if gpus_spec not in (None, "") else None,
        strict_gpus=_ini_bool(_get(config, "autodeploy_strict_gpus") or False),
        lock_dir=lock_dir,
        durations_path=durations,
        shard=shard,
        changed_since=_get(config, "autodeploy_changed_since") or None,
        strict_xfail=_ini_bool(_get(config, "autodeploy_strict_xfail") or False),
    )

