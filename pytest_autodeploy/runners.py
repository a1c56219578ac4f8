"""Runners for registry test items: the check runner and the command runner."""

from __future__ import annotations

import os
import re
import shlex
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import yaml

from .diagnostics import errors_only
from .process import KILL_GRACE_SECONDS, CommandResult, run_command
from .registry import Model, Registry
from .schema import SchemaFileError, validate_config

PLACEHOLDERS = ("model", "config", "world_size", "config_id", "gpus")
# Sample values that check a template's format specs at parse time. They are
# strings, because every value is a string when the template is rendered.
_SAMPLE_VALUES = {"model": "org/model", "config": "/tmp/config.yaml", "world_size": "1", "config_id": "id", "gpus": "0"}


class RunFailure(Exception):
    """Raised when a model's test fails; the message is shown without a traceback."""


class TemplateError(ValueError):
    """Raised for an invalid ``--autodeploy-command`` template."""


def safe_file_stem(model: Model) -> str:
    """Return a file name stem for a model, unique within its registry.

    The entry's position keeps names apart that differ only in characters
    replaced here (``org/a`` and ``org:a``), and the length stays far below
    the usual 255-byte limit of a file name.
    """
    readable = re.sub(r"[^\w.+-]+", "_", model.test_id).strip("_")[:100] or "model"
    return f"{model.entry.index:05d}-{readable}"


def write_merged_config(model: Model, folder: Path) -> Path:
    """Write the model's merged config as YAML and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{safe_file_stem(model)}.yaml"
    path.write_text(yaml.safe_dump(model.config, sort_keys=False), encoding="utf-8")
    return path


def run_check(model: Model, registry: Registry) -> None:
    """Validate one model: its entry, its merge, its world size and the config schema."""
    problems = errors_only(model.diagnostics)
    if model.merged is not None and registry.schema_path is not None:
        try:
            problems += validate_config(registry.schema_path, model.merged, model.test_id)
        except SchemaFileError as error:
            problems.append(error.diagnostic)
    if model.merged is None and not problems:
        raise RunFailure(f"{model.test_id}: no merged config (see the collection errors)")
    if problems:
        raise RunFailure("\n".join(problem.format() for problem in problems))


def _parse_fields(token: str) -> list[tuple[str, str | None, str | None, str | None]]:
    try:
        return list(string.Formatter().parse(token))
    except ValueError as error:
        raise TemplateError(
            f"invalid placeholder in --autodeploy-command argument {token!r}: {error}; write {{{{ for a literal brace"
        ) from None


def _placeholder_names(token: str) -> list[str]:
    """Return every field name in ``token``, also those nested in a format spec such as ``{model:{gpus}}``.

    Raises ``ValueError`` for unbalanced braces.
    """
    names = []
    for _, field, spec, _ in string.Formatter().parse(token):
        if field is None:
            continue
        names.append(field)
        if spec:
            names.extend(_placeholder_names(spec))
    return names


@dataclass(frozen=True)
class CommandTemplate:
    """A command line with placeholders, split into argv before substitution.

    Splitting first means a value such as a model name is always exactly one
    argument: it can never add arguments or reach a shell.
    """

    text: str
    argv: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> CommandTemplate:
        try:
            argv = tuple(shlex.split(text))
        except ValueError as error:
            raise TemplateError(f"invalid --autodeploy-command {text!r}: {error}; check the quoting") from None
        if not argv:
            raise TemplateError("--autodeploy-command is empty; give a command such as 'my-runner --model {model}'")

        for token in argv:
            # Only plain {name}: a format spec such as {model:>9999999999} can
            # exhaust memory, and !r adds quotes the command does not expect.
            for _, field, spec, conversion in _parse_fields(token):
                if field is not None and (spec or conversion):
                    raise TemplateError(
                        f"placeholder in --autodeploy-command argument {token!r} has a format spec or "
                        f"conversion; write plain placeholders such as {{{field}}}"
                    )
            try:
                fields = _placeholder_names(token)
            except ValueError as error:
                raise TemplateError(f"invalid placeholder in --autodeploy-command argument {token!r}: {error}; write {{{{ for a literal brace") from None
            for field in fields:
                if field not in PLACEHOLDERS:
                    allowed = ", ".join("{" + name + "}" for name in PLACEHOLDERS)
                    raise TemplateError(f"unknown placeholder {{{field}}} in --autodeploy-command; use {allowed}")
            # A bad format spec such as {model:d} would otherwise fail every test at run time.
            try:
                token.format(**_SAMPLE_VALUES)
            except (ValueError, TypeError) as error:
                raise TemplateError(f"invalid placeholder in --autodeploy-command argument {token!r}: {error}") from None
        return cls(text=text, argv=argv)

    def render(self, model: Model, config_path: Path, gpus: Sequence[str]) -> list[str]:
        values = {
            "model": model.name,
            "config": str(config_path),
            "world_size": str(model.world_size),
            "config_id": model.config_id or "",
            "gpus": ",".join(gpus),
        }
        return [token.format(**values) for token in self.argv]


def run_model_command(
    template: CommandTemplate,
    model: Model,
    config_path: Path,
    gpus: Sequence[str],
    *,
    log_dir: Path,
    timeout: float | None,
    base_env: Mapping[str, str] = os.environ,
    pass_fds: Sequence[int] = (),
) -> CommandResult:
    """Run the command for one model on exactly ``gpus``; raise :class:`RunFailure` if it fails."""
    argv = template.render(model, config_path, gpus)
    env = dict(base_env)
    # The child gets only its own GPUs, written in the visible list's own form.
    env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    env["AUTODEPLOY_MODEL"] = model.name
    env["AUTODEPLOY_CONFIG"] = str(config_path)
    env["AUTODEPLOY_WORLD_SIZE"] = str(model.world_size)

    log_path = log_dir / f"{safe_file_stem(model)}.log"
    try:
        result = run_command(argv, env=env, log_path=log_path, timeout=timeout, pass_fds=pass_fds)
    except OSError as error:
        raise RunFailure(f"cannot start {argv[0]!r}: {error.strerror}; check --autodeploy-command") from None

    shown = shlex.join(argv)
    if result.timed_out:
        raise RunFailure(
            f"timed out after {timeout:g} s; its process group got SIGTERM, then SIGKILL "
            f"{KILL_GRACE_SECONDS:g} s later if still running: {shown}\n"
            f"last output ({log_path}):\n{result.tail()}"
        )
    if result.returncode != 0:
        raise RunFailure(
            f"command exited with code {result.returncode} after {result.seconds:.1f} s: {shown}\n"
            f"last output ({log_path}):\n{result.tail()}"
        )
    return result
