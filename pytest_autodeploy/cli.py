"""Command line for checking a model registry without running pytest.

Run it as ``pytest-autodeploy COMMAND`` or ``python -m pytest_autodeploy COMMAND``:

- ``validate [PATH]`` reports every error and warning as ``FILE:LINE: severity: message``.
- ``workload [PATH] --output FILE`` writes the merged config of every entry as YAML.
- ``explain MODEL [PATH]`` shows which file and line set each key of one entry's config.
- ``matrix``, ``merge-durations`` and ``merge-reports`` serve nightly CI (see ``cli_ci``).

Exit codes:

- 0: success. ``validate`` found no errors, although it may have found warnings.
- 1: the registry has errors, the model was not found, or reading the registry
  or writing the output failed.
- 2: usage error. An option is invalid, PATH does not exist or has no
  ``models.yaml``, or MODEL matches several entries and needs ``--config-id``.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from . import __version__
from .atomic import write_text_atomic
from .diagnostics import Diagnostic, RegistryError
from .merge import format_key_path
from .registry import (
    MODELS_FILE,
    SUPPORTED_VERSION,
    Model,
    Registry,
    bundled_registry_path,
    load_registry,
)
from .schema import SchemaFileError, validate_config
from .worldsize import PARALLEL_KEYS, WORLD_SIZE_KEY
from .yamlio import KeyPath

PROG = "pytest-autodeploy"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

class UsageError(Exception):
    """Raised for invalid command-line input. ``main`` prints the message and exits 2."""


class CommandFailed(Exception):
    """Raised when a command cannot finish. ``main`` prints the message and exits 1."""


@dataclass
class CheckedRegistry:
    """A loaded registry with the schema violations of its merged configs."""

    registry: Registry
    schema_errors: list[Diagnostic]

    @property
    def errors(self) -> list[Diagnostic]:
        return [*self.registry.errors, *self.schema_errors]

    @property
    def warnings(self) -> list[Diagnostic]:
        return self.registry.warnings


# --- loading ----------------------------------------------------------------


def default_registry_path() -> Path:
    """Return the bundled registry: inside the package when installed, else beside it."""
    bundled = bundled_registry_path()
    if bundled is not None:
        return bundled
    raise UsageError(
        "the bundled registry is missing from this install; "
        "pass PATH, a registry folder or its models.yaml, or reinstall pytest-autodeploy"
    )


def load_checked(path_argument: str | None) -> CheckedRegistry:
    """Load the registry at ``path_argument`` (or the bundled one) and check its schema."""
    path = default_registry_path() if path_argument is None else Path(path_argument).expanduser()
    if not path.exists():
        raise UsageError(f"registry path {str(path)!r} does not exist; pass a registry folder or its {MODELS_FILE}")

    try:
        registry = load_registry(path)
        schema_errors = check_schema(registry)
    except RegistryError as error:
        locations = [f"{diagnostic.location()}: {diagnostic.message}" for diagnostic in error.diagnostics]
        raise UsageError("\n".join(locations)) from None
    except OSError as error:
        raise CommandFailed(f"cannot read registry {str(path)!r}: {error.strerror or error}") from None

    return CheckedRegistry(registry, schema_errors)


def check_schema(registry: Registry) -> list[Diagnostic]:
    """Return the schema violations of every merged config, or none without a schema file."""
    schema_path = registry.schema_path
    if schema_path is None:
        return []

    problems: list[Diagnostic] = []
    for model in registry.models:
        if model.merged is None:
            continue
        try:
            problems.extend(validate_config(schema_path, model.merged, model.test_id))
        except SchemaFileError as error:
            # A broken schema breaks every check the same way, so report it once.
            return [error.diagnostic]
    return problems


def world_size_counts(models: Sequence[Model]) -> tuple[dict[int, int], int]:
    """Return the number of models per world size, and the number without one."""
    counts = Counter(model.world_size for model in models if model.world_size is not None)
    unresolved = sum(1 for model in models if model.world_size is None)
    return dict(sorted(counts.items())), unresolved


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


# --- validate ---------------------------------------------------------------


def diagnostic_record(diagnostic: Diagnostic) -> dict[str, Any]:
    """Return a diagnostic as a JSON-ready mapping."""
    return {
        "file": str(diagnostic.path) if diagnostic.path is not None else None,
        "line": diagnostic.line,
        "column": diagnostic.column,
        "severity": diagnostic.severity,
        "message": diagnostic.message,
        "entry": diagnostic.entry,
    }


def run_validate(args: argparse.Namespace) -> int:
    checked = load_checked(args.path)
    registry = checked.registry
    counts, unresolved = world_size_counts(registry.models)
    errors = checked.errors
    warnings = [] if args.quiet else checked.warnings

    if args.format == "json":
        report = {
            "registry": str(registry.root),
            "errors": [diagnostic_record(diagnostic) for diagnostic in errors],
            "warnings": [diagnostic_record(diagnostic) for diagnostic in warnings],
            "counts": {
                "models": len(registry.models),
                "errors": len(errors),
                # Counted even when --quiet leaves the list out.
                "warnings": len(checked.warnings),
                "world_sizes": {str(size): count for size, count in counts.items()},
                "unresolved": unresolved,
            },
        }
        print(json.dumps(report, indent=2))
        return EXIT_FAILURE if errors else EXIT_OK

    # Loader errors first, then warnings, then schema violations, which are
    # errors too but only exist for entries whose configs merged.
    # Sorted by file and line, as pytest's collection error lists them.
    for diagnostic in sorted(registry.errors, key=Diagnostic.sort_key):
        print(diagnostic.format())
    for diagnostic in warnings:
        print(diagnostic.format())
    for diagnostic in checked.schema_errors:
        print(diagnostic.format())

    print(f"registry: {registry.models_path}")
    for size, count in counts.items():
        print(f"world size {size}: {plural(count, 'model')}")
    if unresolved:
        print(f"no world size (entry has errors): {plural(unresolved, 'model')}")
    print(
        f"total: {plural(len(registry.models), 'model')}, "
        f"{plural(len(errors), 'error')}, {plural(len(checked.warnings), 'warning')}"
    )
    return EXIT_FAILURE if errors else EXIT_OK


# --- workload ---------------------------------------------------------------


class _NoAliasSafeDumper(yaml.SafeDumper):
    """A safe dumper that writes shared objects out in full instead of as &anchor/*alias."""

    def ignore_aliases(self, data: Any) -> bool:
        # Entries with the same yaml_extra share one merged config object, and
        # a coverage file should show each config in full.
        return True


def build_workload(registry: Registry) -> dict[str, Any]:
    """Return the coverage document of a registry that has no errors."""
    counts, _ = world_size_counts(registry.models)
    models = [
        {
            "name": model.name,
            "config_id": model.config_id,
            "test_id": model.test_id,
            "yaml_extra": list(model.entry.yaml_extra),
            "world_size": model.world_size,
            "config": model.config,
        }
        for model in registry.models
    ]
    return {
        "registry": str(registry.root),
        # A registry without errors has exactly this version.
        "version": SUPPORTED_VERSION,
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "summary": {"total": len(models), "world_sizes": counts},
        "models": models,
    }


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path``; readers see the old file or the complete new one."""
    write_text_atomic(path, text, create_parents=False)


def run_workload(args: argparse.Namespace) -> int:
    checked = load_checked(args.path)
    errors = checked.errors
    if errors:
        for diagnostic in errors:
            print(diagnostic.format(), file=sys.stderr)
        print(
            f"{PROG} workload: error: the registry has {plural(len(errors), 'error')}; "
            "fix them before writing a workload (nothing was written)",
            file=sys.stderr,
        )
        return EXIT_FAILURE

    text = yaml.dump(build_workload(checked.registry), Dumper=_NoAliasSafeDumper, sort_keys=False, allow_unicode=True)
    if args.output == "-":
        sys.stdout.write(text)
        return EXIT_OK

    output = Path(args.output).expanduser()
    try:
        write_atomically(output, text)
    except OSError as error:
        raise CommandFailed(f"cannot write {str(output)!r}: {error.strerror or error}") from None
    counts, _ = world_size_counts(checked.registry.models)
    per_size = ", ".join(f"world size {size}: {count}" for size, count in counts.items())
    print(f"wrote {plural(len(checked.registry.models), 'model')} to {output} ({per_size})", file=sys.stderr)
    return EXIT_OK


# --- explain ----------------------------------------------------------------


_MISSING = object()


def leaf_key_paths(data: Mapping[Any, Any], prefix: KeyPath = ()) -> list[KeyPath]:
    """Return the key path of every value that is not a non-empty mapping, depth first."""
    paths: list[KeyPath] = []
    for key, value in data.items():
        path = prefix + (key,)
        if isinstance(value, Mapping) and value:
            paths.extend(leaf_key_paths(value, path))
        else:
            paths.append(path)
    return paths


def value_at(data: Any, key_path: KeyPath) -> Any:
    """Return the value at ``key_path``, or ``_MISSING`` when a key is absent."""
    for key in key_path:
        if not isinstance(data, Mapping) or key not in data:
            return _MISSING
        data = data[key]
    return data


def format_value(value: Any) -> str:
    # JSON makes strings, booleans and null unambiguous (`"2"` versus `2`);
    # default=str covers YAML dates and timestamps.
    return json.dumps(value, ensure_ascii=False, default=str)


def describe_entry(model: Model, registry: Registry) -> str:
    config_id = model.config_id if model.config_id is not None else "(none)"
    return f"{model.test_id}  config_id {config_id}  ({registry.models_path}:{model.entry.line})"


def select_model(registry: Registry, query: str, config_id: str | None) -> Model:
    """Return the one entry that ``query`` (a name or test id) and ``config_id`` select."""
    matches = [model for model in registry.models if model.name == query or model.test_id == query]
    if not matches:
        raise CommandFailed(unknown_model_message(registry, query))

    if config_id is not None:
        chosen = [model for model in matches if model.config_id == config_id]
        if not chosen:
            known = ", ".join(sorted(str(model.config_id) for model in matches))
            raise CommandFailed(f"{query} has no entry with config_id {config_id!r}; its config_ids: {known}")
        matches = chosen

    # An entry without config_id that shares its name with other entries has
    # the bare name as its test id: an exact test id match selects it.
    if len(matches) > 1 and config_id is None:
        exact = [model for model in matches if model.test_id == query]
        if len(exact) == 1:
            return exact[0]
    if len(matches) > 1:
        listed = "\n".join(f"  {describe_entry(model, registry)}" for model in matches)
        raise UsageError(f"{query} matches {len(matches)} entries; pass --config-id ID to choose one:\n{listed}")
    return matches[0]


def unknown_model_message(registry: Registry, query: str) -> str:
    # Compare case-insensitively, because "llama" versus "Llama" is a common slip.
    names = sorted({model.name for model in registry.models} | {model.test_id for model in registry.models})
    by_lower = {name.lower(): name for name in names}
    close = difflib.get_close_matches(query.lower(), list(by_lower), n=3, cutoff=0.6)

    message = f"model {query!r} not found in {registry.models_path}"
    if close:
        message += "; did you mean " + " or ".join(repr(by_lower[name]) for name in close) + "?"
    if registry.errors:
        # An entry with errors in models.yaml is not loaded, so it cannot be found.
        message += f" (the registry has {plural(len(registry.errors), 'error')}; run `{PROG} validate` to list them)"
    return message


def model_errors(model: Model, checked: CheckedRegistry) -> list[Diagnostic]:
    """Return the errors of one entry, including those of the config files it lists."""
    registry = checked.registry
    config_paths = {registry.configs_dir / name for name in model.entry.yaml_extra}
    return [
        diagnostic
        for diagnostic in checked.errors
        if diagnostic.entry == model.test_id or diagnostic.path in config_paths
    ]


def explain_world_size(model: Model) -> str:
    merged = model.merged
    assert merged is not None  # only called for entries whose configs merged
    keys = (WORLD_SIZE_KEY,) if model.world_size_source == WORLD_SIZE_KEY else PARALLEL_KEYS
    places = []
    for key in keys:
        origin = merged.origin((key,))
        if key in merged.data and origin is not None:
            places.append(f"{key} set at {origin.format()}")
    where = f"; {', '.join(places)}" if places else ""
    return f"world size: {model.world_size}, from {model.world_size_source}{where}"


def explain_lines(model: Model, registry: Registry) -> list[str]:
    """Return the lines that show each leaf value with the file that set it and what it overrode."""
    merged = model.merged
    assert merged is not None  # only called for entries whose configs merged

    lines = []
    for key_path in leaf_key_paths(merged.data):
        lines.append(f"{format_key_path(key_path)} = {format_value(value_at(merged.data, key_path))}")
        origin = merged.origin(key_path)
        lines.append(f"    set at {origin.format() if origin is not None else 'unknown'}")

        for earlier in merged.overridden(key_path):
            document = registry.config_documents.get(earlier.path)
            earlier_value = value_at(document.data, key_path) if document is not None else _MISSING
            earlier_text = "value unknown" if earlier_value is _MISSING else format_value(earlier_value)
            lines.append(f"    overrides {earlier.format()} ({earlier_text})")
    return lines


def run_explain(args: argparse.Namespace) -> int:
    checked = load_checked(args.path)
    registry = checked.registry
    model = select_model(registry, args.model, args.config_id)

    print(f"model: {model.name}")
    print(f"config_id: {model.config_id if model.config_id is not None else '(none)'}")
    print(f"test id: {model.test_id}")
    print(f"entry: {registry.models_path}:{model.entry.line}")
    for key in ("xfail", "skip"):
        reason = getattr(model.entry, key)
        if reason is not None:
            print(f"{key}: {reason}")
    print("config files, in merge order (later files override earlier ones):")
    for name in model.entry.yaml_extra:
        print(f"  {registry.configs_dir / name}")

    errors = model_errors(model, checked)
    if model.merged is not None:
        print(explain_world_size(model))
        print()
        for line in explain_lines(model, registry):
            print(line)

    if errors:
        print()
        for diagnostic in errors:
            print(diagnostic.format())
        return EXIT_FAILURE
    return EXIT_OK


# --- entry point ------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Check and inspect a pytest-autodeploy model registry (models.yaml and configs/).",
        epilog="Exit codes: 0 success, 1 registry errors or failed output, 2 usage error.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    path_help = "Registry folder or its models.yaml (default: the bundled registry)"

    validate = commands.add_parser(
        "validate",
        help="Report every error and warning in a registry",
        description="Report every error and warning as FILE:LINE: severity: message, then counts per world size. "
        "Exits 1 when there are errors; warnings alone exit 0.",
    )
    validate.add_argument("path", nargs="?", metavar="PATH", help=path_help)
    validate.add_argument("-q", "--quiet", action="store_true", help="Do not print warnings (they are still counted)")
    validate.add_argument(
        "--format", choices=("text", "json"), default="text", help="Output format (default: %(default)s)"
    )
    validate.set_defaults(handler=run_validate)

    workload = commands.add_parser(
        "workload",
        help="Write every entry with its merged config as YAML",
        description="Write a YAML coverage file: the registry, a summary per world size, and every entry "
        "with its merged config. Writes nothing and exits 1 when the registry has errors.",
    )
    workload.add_argument("path", nargs="?", metavar="PATH", help=path_help)
    workload.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="File to write, replaced atomically; - writes to stdout"
    )
    workload.set_defaults(handler=run_workload)

    explain = commands.add_parser(
        "explain",
        help="Show where each key of one entry's merged config comes from",
        description="Print the merged config of one entry: every key with its value, the FILE:LINE that set it "
        "and the earlier files it overrides, and where the world size comes from.",
    )
    explain.add_argument("model", metavar="MODEL", help="Model name as in models.yaml, or a test id such as NAME[CONFIG_ID]")
    explain.add_argument("path", nargs="?", metavar="PATH", help=path_help)
    explain.add_argument("--config-id", metavar="ID", help="config_id of the entry, needed when MODEL has several entries")
    explain.set_defaults(handler=run_explain)

    from .cli_ci import add_ci_commands  # it imports this module's helpers

    add_ci_commands(commands, path_help)
    return parser


def _silence_stdout() -> None:
    # After a broken pipe, Python's final flush of stdout would fail again and
    # print "Exception ignored ... BrokenPipeError", so point stdout at /dev/null.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit code (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)

    try:
        return args.handler(args)
    except UsageError as error:
        print(f"{PROG} {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except CommandFailed as error:
        print(f"{PROG} {args.command}: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_FAILURE
    except OSError as error:
        # load_checked turns read failures into CommandFailed, so this OSError
        # comes from writing the output.
        print(f"{PROG} {args.command}: error: cannot write output: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
