"""Command-line tools for nightly CI: the shard matrix and merging shard outputs.

- ``matrix [PATH] --runner-gpus N --max-shard-minutes M`` prints the CI matrix
  as one line of JSON, ready for GitHub Actions ``fromJSON``.
- ``merge-durations OUT IN...`` merges durations files from shards.
- ``merge-reports OUT IN...`` merges JSON reports from shards.

They share ``cli.main`` and its exit codes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from .cli import CommandFailed, UsageError, load_checked
from .durations import (
    DurationsFileError,
    load_durations,
    merge_durations,
    save_durations,
)
from .gpus import MAX_GPUS
from .matrix import build_matrix
from .report import (
    ReportDocument,
    ReportFileError,
    build_document,
    parse_timestamp,
    read_report,
    write_report,
)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}; give minutes such as 60") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"invalid value {text!r}; it must be a finite number greater than 0")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid GPU count {text!r}; give a whole number such as 8") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid GPU count {text!r}; it must be 1 or more")
    # The same limit as --autodeploy-gpus: no node has more GPUs.
    if value > MAX_GPUS:
        raise argparse.ArgumentTypeError(f"invalid GPU count {text!r}; it must be at most {MAX_GPUS}")
    return value


def run_matrix(args: argparse.Namespace) -> int:
    checked = load_checked(args.path)
    if checked.errors:
        for diagnostic in checked.errors:
            print(diagnostic.format(), file=sys.stderr)
        count = len(checked.errors)
        raise CommandFailed(f"the registry has {count} {'error' if count == 1 else 'errors'}; run validate for details")

    table = {}
    if args.durations is not None:
        try:
            table = load_durations(args.durations)
        except DurationsFileError as error:
            raise CommandFailed(str(error)) from None

    try:
        matrix = build_matrix(
            checked.registry, table, args.runner_gpus, args.max_shard_minutes, registry_arg=args.path
        )
    except ValueError as error:
        raise CommandFailed(str(error)) from None

    # $GITHUB_OUTPUT takes one line per value, so the JSON has no newlines.
    print(json.dumps(matrix, separators=(",", ":")))
    return 0


def _existing_inputs(inputs: list[str]) -> list[Path]:
    paths = [Path(name) for name in inputs]
    folders = [str(path) for path in paths if path.is_dir()]
    if folders:
        raise UsageError(f"input is a folder, not a file: {', '.join(folders)}")
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise UsageError(f"input file not found: {', '.join(missing)}")
    resolved = [path.resolve() for path in paths]
    repeated = sorted({str(path) for path in paths if resolved.count(path.resolve()) > 1})
    if repeated:
        raise UsageError(f"input file given more than once: {', '.join(repeated)}")
    return paths


def _check_output(name: str, example: str) -> Path:
    # Checked before any input is read, so that the error names OUT and not
    # the temporary file that write_text_atomic renames over it.
    if not name.strip():
        raise UsageError(f"OUT is empty; give the path of the file to write, e.g. {example}")
    path = Path(name)
    if path.is_dir():
        raise UsageError(f"OUT '{path}' is a folder; give a file path such as '{path / example}'")
    return path


def run_merge_durations(args: argparse.Namespace) -> int:
    output = _check_output(args.output, "durations.json")

    # Every input is read before OUT is written, so OUT may also be an input.
    tables = []
    for path in _existing_inputs(args.inputs):
        try:
            tables.append(load_durations(path))
        except DurationsFileError as error:
            raise CommandFailed(str(error)) from None

    merged = merge_durations(*tables)
    save_durations(output, merged)
    print(f"merged {len(tables)} durations files into {output}: {len(merged)} models", file=sys.stderr)
    return 0


def run_merge_reports(args: argparse.Namespace) -> int:
    output = _check_output(args.output, "report.json")

    documents: list[ReportDocument] = []
    seen: dict[str, Path] = {}
    for path in _existing_inputs(args.inputs):
        try:
            document = read_report(path)
        except ReportFileError as error:
            raise CommandFailed(str(error)) from None

        for record in document.records:
            if record.nodeid in seen:
                raise CommandFailed(
                    f"{record.nodeid} is in both {seen[record.nodeid]} and {path}: the inputs overlap. "
                    "Either a full run is merged with one of its shards, or the shards read different "
                    "durations files; merge the reports of one sharded run whose shards read the same file"
                )
            seen[record.nodeid] = path
        documents.append(document)

    merged = build_document(
        [record for document in documents for record in document.records],
        started=_earliest([document.started for document in documents]),
        finished=_latest_if_all([document.finished for document in documents]),
        complete=all(document.complete for document in documents),
        registry=_common_registry(documents),
    )
    write_report(output, merged)
    print(f"merged {len(documents)} reports into {output}: {len(seen)} models", file=sys.stderr)
    return 0


def _earliest(times: list[str | None]) -> str | None:
    known = [time for time in times if time is not None]
    return min(known, key=parse_timestamp, default=None)


def _latest_if_all(times: list[str | None]) -> str | None:
    # A shard without a finish time did not finish, so neither did the merged run.
    if not times or any(time is None for time in times):
        return None
    return max(times, key=parse_timestamp)


def _common_registry(documents: list[ReportDocument]) -> str | None:
    registries = {document.registry for document in documents}
    return registries.pop() if len(registries) == 1 else None


def add_ci_commands(commands: Any, path_help: str) -> None:
    """Add the CI subcommands to the ``pytest-autodeploy`` parser."""
    matrix = commands.add_parser(
        "matrix",
        help="Print the CI matrix of shards as JSON",
        description="Print one JSON line {\"include\": [...]} with one job per (world size, shard): its pytest "
        "arguments, the GPUs its runner needs and its estimated minutes. Use it with GitHub Actions fromJSON.",
    )
    matrix.add_argument("path", nargs="?", metavar="PATH", help=path_help)
    matrix.add_argument(
        "--runner-gpus", type=_positive_int, required=True, metavar="N", help="GPUs per CI runner, e.g. 8"
    )
    matrix.add_argument(
        "--max-shard-minutes",
        type=_positive_float,
        required=True,
        metavar="M",
        help="Split a world-size group into shards of at most this many estimated minutes",
    )
    matrix.add_argument("--durations", metavar="FILE", help="Durations file from earlier runs, for better estimates")
    matrix.set_defaults(handler=run_matrix)

    merge_durations_parser = commands.add_parser(
        "merge-durations",
        help="Merge durations files written by shards",
        description="Merge durations files; per model the newest record wins. OUT is replaced atomically and may "
        "also be one of the inputs.",
    )
    merge_durations_parser.add_argument("output", metavar="OUT", help="File to write")
    merge_durations_parser.add_argument("inputs", nargs="+", metavar="IN", help="Durations files to merge")
    merge_durations_parser.set_defaults(handler=run_merge_durations)

    merge_reports = commands.add_parser(
        "merge-reports",
        help="Merge JSON reports written by shards",
        description="Merge --autodeploy-report files into one; totals are recomputed and the result is complete "
        "only if every shard's report is. A test present in two inputs is an error.",
    )
    merge_reports.add_argument("output", metavar="OUT", help="File to write, replaced atomically")
    merge_reports.add_argument("inputs", nargs="+", metavar="IN", help="Report files to merge")
    merge_reports.set_defaults(handler=run_merge_reports)
