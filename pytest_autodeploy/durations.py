"""Recorded test durations: load, merge, save and estimate seconds per model.

The durations file is JSON in this format (version 1)::

    {
      "format": "pytest-autodeploy-durations",
      "version": 1,
      "durations": {
        "Qwen/Qwen3-8B[demollm]": {
          "seconds": 12.3,
          "world_size": 2,
          "updated": "2026-12-04T19:00:00Z"
        }
      }
    }

Each key is a test key, usually the pytest test id; this module treats it as an
opaque string. ``seconds`` is required and must be a number from 0 to
``MAX_SECONDS`` (30 days).
``world_size`` (a positive integer) and ``updated`` (an ISO 8601 time, UTC when
it has no offset) are optional.

The loader also accepts the file that pytest-split writes: a plain
``{"<key>": seconds}`` mapping, or the older list of ``[key, seconds]`` pairs.
Such records have no world size and no update time.

CI shards each write their own file, and ``merge_durations`` combines them. Per
key, the record with the newest ``updated`` time wins, and a record without a
time is older than any record with one. Equal times keep the larger
``seconds``, then the larger ``world_size``. That makes the merge a maximum
under a total order, so merging the shard files in any order gives the same
table.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Union

from .atomic import write_text_atomic

FORMAT_NAME = "pytest-autodeploy-durations"
FORMAT_VERSION = 1

# An estimate of one test's wall time by GPU count, used when a test has no
# recorded duration. Larger models need more GPUs and take longer to load and
# compile, so the estimate grows with the world size.
DEFAULT_SECONDS_PER_WORLD_SIZE: Mapping[int, float] = {1: 300.0, 2: 450.0, 4: 600.0, 8: 900.0}

# No test runs for 30 days, and the cap keeps sums of seconds times GPU counts
# in the shard and matrix estimates far from float overflow.
MAX_SECONDS = 30 * 24 * 3600

_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

# Ranks records without an update time below every record with one.
_OLDEST = datetime.min.replace(tzinfo=timezone.utc)

_FIX_HINT = "Fix the file or delete it to start without recorded durations."

PathLike = Union[str, "os.PathLike[str]"]


class DurationsFileError(ValueError):
    """A durations file that cannot be read or does not have the expected format."""


@dataclass(frozen=True)
class DurationRecord:
    """The measured wall time of one test and when it was measured.

    ``world_size`` is None for records imported from pytest-split files, and
    ``updated`` is None when the time of the measurement is unknown.
    """

    seconds: float
    world_size: int | None = None
    updated: str | None = None

    def __post_init__(self) -> None:
        problems = {
            "seconds": _describe_seconds_problem(self.seconds),
            "world_size": _describe_world_size_problem(self.world_size),
            "updated": None if self.updated is None else _describe_timestamp_problem(self.updated),
        }
        for field, problem in problems.items():
            if problem is not None:
                raise ValueError(f"invalid duration record: {field} {problem}")

    @classmethod
    def measured(cls, seconds: float, world_size: int | None, when: datetime | None = None) -> DurationRecord:
        """Create a record stamped with ``when`` (default: the current UTC time).

        The stamp has a resolution of one second. A naive ``when`` is taken as
        UTC. Seconds above ``MAX_SECONDS`` are stored as ``MAX_SECONDS``.
        """
        if when is None:
            when = datetime.now(timezone.utc)
        elif when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)

        updated = when.astimezone(timezone.utc).strftime(_TIMESTAMP_FORMAT)
        return cls(seconds=min(float(seconds), MAX_SECONDS), world_size=world_size, updated=updated)

    def updated_at(self) -> datetime:
        """Return ``updated`` as an aware datetime, or the oldest datetime when it is None."""
        if self.updated is None:
            return _OLDEST
        return _parse_timestamp(self.updated)


def load_durations(path: PathLike) -> dict[str, DurationRecord]:
    """Read a durations file and return its records by test key, sorted by key.

    A missing file returns an empty table, so the first run needs no file.
    Raises DurationsFileError, naming the file, when the file cannot be read,
    is not valid JSON or does not have one of the accepted shapes.
    """
    path = Path(path)

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except UnicodeDecodeError as error:
        raise DurationsFileError(
            f"invalid durations file '{path}': not UTF-8 text ({error.reason} at byte {error.start}). {_FIX_HINT}"
        ) from error
    except OSError as error:
        raise DurationsFileError(f"failed to read durations file '{path}': {error.strerror or error}") from error

    try:
        data = json.loads(text, parse_constant=_reject_json_constant)
    except json.JSONDecodeError as error:
        raise DurationsFileError(
            f"invalid durations file '{path}': line {error.lineno}, column {error.colno}: {error.msg}. {_FIX_HINT}"
        ) from error
    except ValueError as error:
        # _reject_json_constant raises this for NaN and Infinity. The json
        # module accepts them by default, but they are not valid seconds.
        raise DurationsFileError(f"invalid durations file '{path}': {error}. {_FIX_HINT}") from error
    except RecursionError:
        # The json module's C scanner recurses once per nested list or object.
        raise DurationsFileError(f"invalid durations file '{path}': nested too deeply. {_FIX_HINT}") from None

    try:
        table = _parse_document(data)
    except _ShapeError as error:
        raise DurationsFileError(f"invalid durations file '{path}': {error}. {_FIX_HINT}") from error

    return dict(sorted(table.items()))


def merge_durations(*tables: Mapping[str, DurationRecord]) -> dict[str, DurationRecord]:
    """Combine duration tables into one, sorted by key.

    Per key the newest record wins (see the module docstring for the full
    order), so the result does not depend on the order of ``tables``.
    """
    merged: dict[str, DurationRecord] = {}
    for table in tables:
        for key, record in table.items():
            current = merged.get(key)
            if current is None or _merge_rank(record) > _merge_rank(current):
                merged[key] = record

    return dict(sorted(merged.items()))


def save_durations(path: PathLike, table: Mapping[str, DurationRecord]) -> None:
    """Write ``table`` to ``path`` in the version 1 format, replacing the file atomically.

    The data goes to a temporary file in the same folder, which is flushed to
    disk and then renamed over ``path``. Readers therefore see either the old
    or the new file, never a partial one. Missing parent folders are created.
    Two processes that save the same path at once do not merge: the last
    rename wins, so shards should write separate files and merge them later.
    """
    text = json.dumps(_to_document(table), indent=2, sort_keys=False, allow_nan=False) + "\n"

    write_text_atomic(path, text)


def estimate_seconds(
    key: str,
    world_size: int,
    table: Mapping[str, DurationRecord],
    defaults: Mapping[int, float] = DEFAULT_SECONDS_PER_WORLD_SIZE,
) -> float:
    """Return the recorded seconds for ``key``, or an estimate from ``defaults``.

    A record is used even when it was measured at another world size, because
    the model, not the GPU count, dominates the time. Without a record, a world
    size between two entries of ``defaults`` gets a linear interpolation. One
    above the largest entry gets that entry scaled in proportion to the GPU
    count, and one below the smallest entry gets the smallest entry.
    """
    problem = _describe_world_size_problem(world_size)
    if problem is not None:
        raise ValueError(f"invalid world size for '{key}': {problem}")

    record = table.get(key)
    if record is not None:
        return record.seconds

    return _interpolate_default(world_size, defaults)


def _interpolate_default(world_size: int, defaults: Mapping[int, float]) -> float:
    if not defaults:
        raise ValueError("defaults must contain at least one world size")

    points = sorted(defaults.items())
    if world_size in defaults:
        return float(defaults[world_size])

    smallest_size, smallest_seconds = points[0]
    if world_size < smallest_size:
        return float(smallest_seconds)

    largest_size, largest_seconds = points[-1]
    if world_size > largest_size:
        return float(largest_seconds) * world_size / largest_size

    for (lower_size, lower_seconds), (upper_size, upper_seconds) in zip(points, points[1:]):
        if lower_size < world_size < upper_size:
            fraction = (world_size - lower_size) / (upper_size - lower_size)
            return float(lower_seconds + fraction * (upper_seconds - lower_seconds))

    raise AssertionError(f"world size {world_size} not covered by {points}")


class _ShapeError(Exception):
    """A JSON document with valid syntax but the wrong structure. The message names the place."""


def _parse_document(data: Any) -> dict[str, DurationRecord]:
    if isinstance(data, list):
        return _parse_pair_list(data)

    if not isinstance(data, dict):
        raise _ShapeError(f"expected a JSON object at the top level, got {_json_type(data)}")

    # A pytest-split mapping maps keys to numbers, so a string "format" entry
    # marks this plugin's format.
    if "format" not in data or not isinstance(data["format"], str):
        return _parse_plain_mapping(data)

    if data["format"] != FORMAT_NAME:
        raise _ShapeError(f"\"format\" is {data['format']!r}, expected {FORMAT_NAME!r}")

    version = data.get("version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise _ShapeError(
            f'"version" is {json.dumps(version)}, but this pytest-autodeploy reads only version {FORMAT_VERSION}'
        )

    durations = data.get("durations")
    if not isinstance(durations, dict):
        raise _ShapeError(f'"durations" must be a JSON object, got {_json_type(durations)}')

    unknown = sorted(set(data) - {"format", "version", "durations"})
    if unknown:
        raise _ShapeError(f"unknown top-level field {json.dumps(unknown[0])}")

    return {key: _parse_record(key, entry) for key, entry in durations.items()}


def _parse_record(key: str, entry: Any) -> DurationRecord:
    place = f"durations[{json.dumps(key)}]"
    if not isinstance(entry, dict):
        raise _ShapeError(f"{place} must be a JSON object, got {_json_type(entry)}")

    unknown = sorted(set(entry) - {"seconds", "world_size", "updated"})
    if unknown:
        raise _ShapeError(f"{place} has unknown field {json.dumps(unknown[0])}")

    if "seconds" not in entry:
        raise _ShapeError(f'{place} is missing "seconds"')

    seconds = entry["seconds"]
    problem = _describe_seconds_problem(seconds)
    if problem is not None:
        raise _ShapeError(f"{place}.seconds {problem}")

    world_size = entry.get("world_size")
    problem = _describe_world_size_problem(world_size)
    if problem is not None:
        raise _ShapeError(f"{place}.world_size {problem}")

    updated = entry.get("updated")
    if updated is not None:
        problem = _describe_timestamp_problem(updated)
        if problem is not None:
            raise _ShapeError(f"{place}.updated {problem}")

    return DurationRecord(seconds=float(seconds), world_size=world_size, updated=updated)


def _parse_plain_mapping(data: dict[str, Any]) -> dict[str, DurationRecord]:
    table = {}
    for key, seconds in data.items():
        problem = _describe_seconds_problem(seconds)
        if problem is not None:
            raise _ShapeError(f"the value of {json.dumps(key)} {problem}")
        table[key] = DurationRecord(seconds=float(seconds))

    return table


def _parse_pair_list(data: list[Any]) -> dict[str, DurationRecord]:
    pairs: dict[str, DurationRecord] = {}
    for index, pair in enumerate(data):
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
            raise _ShapeError(f"item {index} of the top-level list must be a [key, seconds] pair")

        key, seconds = pair
        problem = _describe_seconds_problem(seconds)
        if problem is not None:
            raise _ShapeError(f"the seconds of {json.dumps(key)} {problem}")

        record = DurationRecord(seconds=float(seconds))
        pairs[key] = max(record, pairs.get(key, record), key=_merge_rank)

    return pairs


def _to_document(table: Mapping[str, DurationRecord]) -> dict[str, Any]:
    durations: dict[str, Any] = {}
    for key in sorted(table):
        record = table[key]
        entry: dict[str, Any] = {"seconds": round(record.seconds, 3)}
        if record.world_size is not None:
            entry["world_size"] = record.world_size
        if record.updated is not None:
            entry["updated"] = record.updated
        durations[key] = entry

    return {"format": FORMAT_NAME, "version": FORMAT_VERSION, "durations": durations}


def _merge_rank(record: DurationRecord) -> tuple[datetime, float, int]:
    world_size = record.world_size if record.world_size is not None else 0
    return (record.updated_at(), record.seconds, world_size)


def _describe_seconds_problem(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must be a number of seconds, got {_json_type(value)}"
    if not math.isfinite(value) or value < 0:
        return f"must be a finite number >= 0, got {value}"
    if value > MAX_SECONDS:
        return f"must be at most {MAX_SECONDS} (30 days), got {value}"
    return None


def _describe_world_size_problem(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be a positive integer, got {_json_type(value)}"
    if value < 1:
        return f"must be a positive integer, got {value}"
    return None


def _describe_timestamp_problem(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"must be an ISO 8601 time string, got {_json_type(value)}"
    try:
        _parse_timestamp(value)
    except ValueError:
        return f"must be an ISO 8601 time such as 2026-12-04T19:00:00Z, got {value!r}"
    return None


def _parse_timestamp(value: str) -> datetime:
    # datetime.fromisoformat accepts a trailing "Z" only from Python 3.11 on.
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {json.dumps(value)}"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _reject_json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid number of seconds")
