"""Run reports: one record per model test, written as JSON while the run goes on.

This module does not import pytest. ``report_plugin`` turns pytest's test
reports into ``PhaseResult`` objects and passes them to ``RecordTable``.

The report file is JSON in this format (version 1)::

    {
      "format": "pytest-autodeploy-report",
      "version": 1,
      "started": "2026-12-04T19:00:00Z",
      "finished": "2026-12-04T19:42:10Z",
      "complete": true,
      "registry": "/repo/model_registry/models.yaml",
      "totals": {"passed": 1, "failed": 1, "skipped": 0, "xfailed": 0, "xpassed": 0, "error": 0},
      "totals_by_world_size": {"2": {"passed": 1, "failed": 1, ...}},
      "records": [
        {
          "nodeid": "model_registry/models.yaml::Qwen/Qwen3-8B[demollm]",
          "model": "Qwen/Qwen3-8B",
          "config_id": "demollm",
          "world_size": 2,
          "yaml_extra": ["demollm.yaml"],
          "status": "failed",
          "duration": 12.3,
          "gpus": ["0", "1"],
          "reason": "command exited with code 1 after 12.3 s: ...",
          "output_tail": "...the last 40 lines of the failure text...",
          "too_few_gpus": false
        }
      ]
    }

``finished`` is null and ``complete`` is false until the session finishes.
``started`` is null only in a merged report whose inputs lacked it.
``complete`` stays false when the run was interrupted, stopped early (for
example by ``-x``) or lost a test to a crashed xdist worker. ``registry`` is
null when unknown. ``totals_by_world_size`` uses the key ``"unknown"`` for
records without a world size.

In a record, ``status`` is one of ``STATUSES``. ``duration`` is the seconds of
the call phase, 0 when the test never reached it. ``model``, ``config_id`` and
``world_size`` are null when the test did not report them, for example when a
worker crashed during setup. ``reason`` is one line: the skip or xfail reason,
or the first line of the failure message, else null. ``output_tail`` is the
last ``OUTPUT_TAIL_LINES`` lines of the failure text for failed and error
records, else null. Records are listed in the order the tests finished.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Union

from .atomic import write_text_atomic

FORMAT_NAME = "pytest-autodeploy-report"
FORMAT_VERSION = 1

STATUSES = ("passed", "failed", "skipped", "xfailed", "xpassed", "error")
FAILING_STATUSES = frozenset({"failed", "error"})
OUTPUT_TAIL_LINES = 40
UNKNOWN_WORLD_SIZE = "unknown"

_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# Longer reasons are cut in the Markdown summary so one failure cannot flood it.
_MARKDOWN_REASON_CHARS = 300

PathLike = Union[str, "os.PathLike[str]"]

logger = logging.getLogger(__name__)


class ReportFileError(ValueError):
    """A report file that cannot be read or does not have the expected format."""


@dataclass(frozen=True)
class PhaseResult:
    """One phase report of one test, reduced to plain values.

    ``when`` is "setup", "call" or "teardown". ``crashed`` marks the report
    that xdist makes up for a test whose worker died, which has no phase and
    no properties. ``properties`` are the test's user properties at the end
    of the phase.
    """

    nodeid: str
    when: str
    status: str
    properties: Mapping[str, Any]
    duration: float = 0.0
    reason: str | None = None
    failure_text: str = ""
    too_few_gpus: bool = False
    crashed: bool = False


def phase_status(when: str, outcome: str, wasxfail: bool) -> str:
    """Return the record status for a phase report's ``outcome`` ("passed", "failed", "skipped").

    A failed setup or teardown is an error, as in pytest's own summary.
    """
    if outcome == "passed":
        return "xpassed" if wasxfail else "passed"
    if outcome == "skipped":
        return "xfailed" if wasxfail else "skipped"
    if when in ("setup", "teardown"):
        return "error"
    return "failed"


@dataclass
class ModelRecord:
    """The result of one model test, as one entry of ``records`` in the report file."""

    nodeid: str
    status: str
    model: str | None = None
    config_id: str | None = None
    world_size: int | None = None
    yaml_extra: list[str] = field(default_factory=list)
    duration: float = 0.0
    gpus: list[str] = field(default_factory=list)
    reason: str | None = None
    output_tail: str | None = None
    too_few_gpus: bool = False

    @classmethod
    def from_phase(cls, phase: PhaseResult, properties: Mapping[str, Any]) -> ModelRecord:
        """Create a record from a phase and the test's user properties."""
        record = cls(nodeid=phase.nodeid, status=phase.status)
        record.update_properties(properties)
        record.set_outcome(phase)
        return record

    def update_properties(self, properties: Mapping[str, Any]) -> None:
        model = properties.get("model")
        self.model = str(model) if model not in (None, "") else None
        # Model items report a missing config_id as "", which the file stores as null.
        config_id = properties.get("config_id")
        self.config_id = str(config_id) if config_id not in (None, "") else None
        world_size = properties.get("world_size")
        self.world_size = world_size if isinstance(world_size, int) and not isinstance(world_size, bool) else None
        self.yaml_extra = _string_list(properties.get("yaml_extra"))
        self.gpus = _string_list(properties.get("gpus"))

    def set_outcome(self, phase: PhaseResult) -> None:
        self.status = phase.status
        self.reason = _first_line(phase.reason)
        if phase.when == "call":
            self.duration = round(phase.duration, 3)
        self.output_tail = _tail(phase.failure_text) if phase.status in FAILING_STATUSES else None
        self.too_few_gpus = self.too_few_gpus or phase.too_few_gpus

    def to_json(self) -> dict[str, Any]:
        return {
            "nodeid": self.nodeid,
            "model": self.model,
            "config_id": self.config_id,
            "world_size": self.world_size,
            "yaml_extra": list(self.yaml_extra),
            "status": self.status,
            "duration": self.duration,
            "gpus": list(self.gpus),
            "reason": self.reason,
            "output_tail": self.output_tail,
            "too_few_gpus": self.too_few_gpus,
        }

    @classmethod
    def from_json(cls, data: Any, place: str) -> ModelRecord:
        """Parse one record of a report file. ``place`` names the record in errors.

        A missing optional field gets its default. A field of the wrong type
        raises ReportFileError instead of being converted, so a broken file
        is not taken for a valid one.
        """
        if not isinstance(data, dict):
            raise ReportFileError(f"{place} must be a JSON object")
        nodeid = data.get("nodeid")
        if not isinstance(nodeid, str) or not nodeid:
            raise ReportFileError(f'{place} has no "nodeid" string')
        status = data.get("status")
        if status not in STATUSES:
            raise ReportFileError(f'{place} has "status" {json.dumps(status)}, expected one of {", ".join(STATUSES)}')

        record = cls(nodeid=nodeid, status=status)
        record.model = _json_field(data, "model", place, _is_optional_string, "a string or null")
        record.config_id = _json_field(data, "config_id", place, _is_optional_string, "a string or null")
        record.world_size = _json_field(data, "world_size", place, _is_optional_world_size, "a positive integer or null")
        record.yaml_extra = list(_json_field(data, "yaml_extra", place, _is_string_list, "a list of strings") or [])
        record.gpus = list(_json_field(data, "gpus", place, _is_string_list, "a list of strings") or [])
        record.reason = _json_field(data, "reason", place, _is_optional_string, "a string or null")
        record.output_tail = _json_field(data, "output_tail", place, _is_optional_string, "a string or null")
        duration = _json_field(data, "duration", place, _is_duration, "a finite number >= 0")
        record.duration = 0.0 if duration is None else float(duration)
        record.too_few_gpus = _json_field(data, "too_few_gpus", place, _is_bool, "true or false") is True
        return record


def _json_field(data: Mapping[str, Any], name: str, place: str, is_valid: Callable[[Any], bool], expected: str) -> Any:
    """Return ``data[name]``, or None when it is missing; raise ReportFileError when it fails ``is_valid``."""
    value = data.get(name)
    if value is not None and not is_valid(value):
        raise ReportFileError(f'{place} has "{name}" {_json_excerpt(value)}, expected {expected}')
    return value


def _is_optional_string(value: Any) -> bool:
    return isinstance(value, str)


def _is_optional_world_size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _is_string_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(part, str) for part in value)


def _is_duration(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _json_excerpt(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


class RecordTable:
    """The records of one session, built from phase reports as they arrive.

    A record appears when a test's outcome is known: after a setup that did not
    pass, after the call, after a teardown that failed, or when its worker crashed.
    Tests without a "model" user property are left out.
    """

    def __init__(self) -> None:
        self.records: dict[str, ModelRecord] = {}
        self.crashed: list[str] = []
        # The properties each started test reported at setup, kept until its
        # teardown, because xdist's crash report carries none of its own.
        self._setup_properties: dict[str, Mapping[str, Any]] = {}

    def add(self, phase: PhaseResult) -> bool:
        """Apply one phase report and return whether a record was added or changed."""
        if phase.crashed:
            return self._add_crash(phase)

        if phase.when == "setup":
            self._setup_properties[phase.nodeid] = phase.properties
        elif phase.when == "teardown":
            self._setup_properties.pop(phase.nodeid, None)
        if "model" not in phase.properties:
            return False

        record = self.records.get(phase.nodeid)
        if phase.when == "setup":
            if phase.status == "passed":
                return False
            self.records[phase.nodeid] = ModelRecord.from_phase(phase, phase.properties)
            return True

        if phase.when == "call":
            self.records[phase.nodeid] = ModelRecord.from_phase(phase, phase.properties)
            return True

        # Teardown: only a failure changes the outcome. A test that already
        # failed keeps its failure, the first cause.
        if phase.status != "error":
            return False
        if record is None:
            self.records[phase.nodeid] = ModelRecord.from_phase(phase, phase.properties)
            return True
        if record.status in FAILING_STATUSES:
            return False
        record.set_outcome(phase)
        return True

    def _add_crash(self, phase: PhaseResult) -> bool:
        properties = self._setup_properties.pop(phase.nodeid, None)
        if properties is not None and "model" not in properties:
            return False

        # NOTE: a worker that dies during setup sends no setup report, so such a
        # record has no model, config_id or world size, and this cannot tell
        # whether the test was a model test at all.
        self.records[phase.nodeid] = ModelRecord.from_phase(phase, properties or {})
        self.crashed.append(phase.nodeid)
        return True


def count_statuses(records: Iterable[ModelRecord]) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Return the count per status, overall and per world size (sorted, "unknown" last)."""
    totals: Counter[str] = Counter()
    by_size: dict[int | None, Counter[str]] = {}
    for record in records:
        totals[record.status] += 1
        by_size.setdefault(record.world_size, Counter())[record.status] += 1

    ordered_sizes = sorted(by_size, key=lambda size: (size is None, size or 0))
    per_world_size = {
        UNKNOWN_WORLD_SIZE if size is None else str(size): {status: by_size[size][status] for status in STATUSES}
        for size in ordered_sizes
    }
    return {status: totals[status] for status in STATUSES}, per_world_size


def utc_timestamp(when: datetime | None = None) -> str:
    when = when or datetime.now(timezone.utc)
    return when.astimezone(timezone.utc).strftime(_TIMESTAMP_FORMAT)


def build_document(
    records: Iterable[ModelRecord],
    *,
    started: str | None,
    finished: str | None,
    complete: bool,
    registry: str | None,
) -> dict[str, Any]:
    """Return the report file's JSON document (see the module docstring)."""
    record_list = list(records)
    totals, per_world_size = count_statuses(record_list)
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "started": started,
        "finished": finished,
        "complete": complete,
        "registry": registry,
        "totals": totals,
        "totals_by_world_size": per_world_size,
        "records": [record.to_json() for record in record_list],
    }


def write_report(path: PathLike, document: Mapping[str, Any]) -> None:
    write_text_atomic(path, json.dumps(document, indent=2, allow_nan=False) + "\n")


@dataclass(frozen=True)
class ReportDocument:
    """A report file read back: the header fields and the records.

    ``started`` and ``finished`` are ISO 8601 times, None when unknown.
    """

    started: str | None
    finished: str | None
    complete: bool
    registry: str | None
    records: list[ModelRecord]


def read_report(path: PathLike) -> ReportDocument:
    """Read a report file written by ``write_report``: its header fields and records.

    Raises ReportFileError, naming the file, when it is missing, unreadable,
    not JSON, or not a version 1 report.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportFileError(f"report file '{path}' not found") from None
    except IsADirectoryError:
        raise ReportFileError(f"invalid report file '{path}': is a folder, not a file") from None
    except UnicodeDecodeError as error:
        raise ReportFileError(f"invalid report file '{path}': not UTF-8 text") from error
    except OSError as error:
        raise ReportFileError(f"failed to read report file '{path}': {error.strerror or error}") from error

    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ReportFileError(
            f"invalid report file '{path}': line {error.lineno}, column {error.colno}: {error.msg}"
        ) from error
    except RecursionError:
        # The json module's C scanner recurses once per nested list or object.
        raise ReportFileError(f"invalid report file '{path}': nested too deeply") from None

    try:
        return _parse_document(data)
    except ReportFileError as error:
        raise ReportFileError(f"invalid report file '{path}': {error}") from None


def load_report(path: PathLike) -> list[ModelRecord]:
    """Read the records of a report file; see ``read_report`` for the errors."""
    return read_report(path).records


def parse_timestamp(text: str) -> datetime:
    """Parse an ISO 8601 time such as ``2026-12-04T19:00:00Z``; a time without an offset is UTC.

    Raises ValueError for any other text.
    """
    # datetime.fromisoformat accepts a trailing "Z" only from Python 3.11 on.
    parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed


def _parse_document(data: Any) -> ReportDocument:
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise ReportFileError(f'expected a JSON object with "format": "{FORMAT_NAME}"')
    version = data.get("version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise ReportFileError(f'"version" is {json.dumps(version)}, but this pytest-autodeploy reads only version {FORMAT_VERSION}')

    complete = data.get("complete", False)
    if not isinstance(complete, bool):
        raise ReportFileError(f'"complete" is {_json_excerpt(complete)}, expected true or false')
    registry = data.get("registry")
    if registry is not None and not isinstance(registry, str):
        raise ReportFileError(f'"registry" is {_json_excerpt(registry)}, expected a string or null')

    records = data.get("records")
    if not isinstance(records, list):
        raise ReportFileError('"records" must be a JSON list')
    return ReportDocument(
        started=_header_time(data, "started"),
        finished=_header_time(data, "finished"),
        complete=complete,
        registry=registry,
        records=[ModelRecord.from_json(entry, f"records[{index}]") for index, entry in enumerate(records)],
    )


def _header_time(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    # Reports merged by earlier versions store an unknown start as "".
    if value is None or value == "":
        return None

    valid = isinstance(value, str)
    if valid:
        try:
            parse_timestamp(value)
        except ValueError:
            valid = False
    if not valid:
        raise ReportFileError(
            f'"{name}" is {_json_excerpt(value)}, expected an ISO 8601 time such as 2026-12-04T19:00:00Z or null'
        )
    return value


@dataclass(frozen=True)
class Change:
    """One test in a comparison. ``previous`` is None for a test that is new in this run."""

    nodeid: str
    current: str
    previous: str | None
    reason: str | None


@dataclass
class Comparison:
    newly_failing: list[Change] = field(default_factory=list)
    newly_passing: list[Change] = field(default_factory=list)
    still_failing: list[Change] = field(default_factory=list)


def compare_records(previous: Iterable[ModelRecord], current: Iterable[ModelRecord]) -> Comparison:
    """Compare this run's records with an earlier report's.

    A test is matched by nodeid, else by (model, config_id) when that pair is
    unique in the earlier report, so a moved registry still matches. Failing
    means failed or error. A failing test that the earlier report lacks counts
    as newly failing. Newly passing means passed now and failing before.
    """
    previous_list = list(previous)
    by_nodeid = {record.nodeid: record for record in previous_list}
    key_counts = Counter(_model_key(record) for record in previous_list)
    by_key = {_model_key(record): record for record in previous_list if key_counts[_model_key(record)] == 1}

    comparison = Comparison()
    for record in current:
        earlier = by_nodeid.get(record.nodeid)
        if earlier is None and record.model is not None:
            earlier = by_key.get(_model_key(record))
        previous_status = earlier.status if earlier is not None else None
        change = Change(record.nodeid, record.status, previous_status, record.reason)

        was_failing = previous_status in FAILING_STATUSES
        if record.status in FAILING_STATUSES:
            (comparison.still_failing if was_failing else comparison.newly_failing).append(change)
        elif record.status == "passed" and was_failing:
            comparison.newly_passing.append(change)
    return comparison


def _model_key(record: ModelRecord) -> tuple[str | None, str | None]:
    return (record.model, record.config_id)


def comparison_sections(comparison: Comparison) -> list[tuple[str, list[Change]]]:
    return [
        ("newly failing", comparison.newly_failing),
        ("newly passing", comparison.newly_passing),
        ("still failing", comparison.still_failing),
    ]


def _describe_change(change: Change, markdown: bool = False) -> str:
    text = _code(change.nodeid) if markdown else change.nodeid
    text += " (new)" if change.previous is None else f" (was {change.previous})"
    if change.current in FAILING_STATUSES and change.reason:
        text += ": " + (_markdown_reason(change.reason) if markdown else change.reason)
    return text


def comparison_lines(comparison: Comparison) -> list[str]:
    """Return the terminal lines of a comparison: a heading with a count per section, then its tests."""
    lines = []
    for title, changes in comparison_sections(comparison):
        lines.append(f"{title}: {len(changes)}")
        lines.extend(f"  {_describe_change(change)}" for change in changes)
    return lines


def render_markdown(document: Mapping[str, Any], comparison: Comparison | None = None, compared_with: str = "") -> str:
    """Return a Markdown summary of a report document, for example for $GITHUB_STEP_SUMMARY.

    It contains a count table per world size, the failures with the first line
    of their reason, the models not run for too few GPUs, and the comparison
    with ``compared_with`` when ``comparison`` is given.
    """
    records = [ModelRecord.from_json(entry, f"records[{index}]") for index, entry in enumerate(document["records"])]
    lines = ["## pytest-autodeploy results", ""]
    if not document.get("complete"):
        lines += ["**Incomplete run:** interrupted, stopped early or a worker crashed.", ""]

    lines += _markdown_counts(document["totals"], document["totals_by_world_size"])

    failures = [record for record in records if record.status in FAILING_STATUSES]
    lines += ["", f"### Failures ({len(failures)})", ""]
    lines += [f"- {_code(record.nodeid)} {record.status}: {_markdown_reason(record.reason)}" for record in failures] or ["None."]

    too_few = [record for record in records if record.too_few_gpus]
    if too_few:
        lines += ["", f"### Not run: too few GPUs ({len(too_few)})", ""]
        lines += [f"- {_code(record.nodeid)}: {_markdown_reason(_without_model_prefix(record))}" for record in too_few]

    if comparison is not None:
        lines += ["", f"### Compared with {_code(compared_with)}", ""]
        for title, changes in comparison_sections(comparison):
            lines.append(f"**{title.capitalize()} ({len(changes)})**")
            lines.append("")
            lines += [f"- {_describe_change(change, markdown=True)}" for change in changes]
            if changes:
                lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def _markdown_counts(totals: Mapping[str, int], per_world_size: Mapping[str, Mapping[str, int]]) -> list[str]:
    lines = [
        "| world size | models | " + " | ".join(STATUSES) + " |",
        "|---:|---:|" + "---:|" * len(STATUSES),
    ]
    for size, counts in per_world_size.items():
        lines.append(f"| {size} | {sum(counts.values())} | " + " | ".join(str(counts[status]) for status in STATUSES) + " |")
    lines.append(f"| **total** | {sum(totals.values())} | " + " | ".join(str(totals[status]) for status in STATUSES) + " |")
    return lines


def _code(text: str) -> str:
    """Return ``text`` as a Markdown code span, which needs double backticks when ``text`` contains one."""
    if "`" in text:
        return f"`` {text} ``"
    return f"`{text}`"


def _markdown_reason(reason: str | None) -> str:
    if not reason:
        return "(no reason given)"
    text = reason if len(reason) <= _MARKDOWN_REASON_CHARS else reason[: _MARKDOWN_REASON_CHARS - 3] + "..."
    # Backslash-escape the characters that Markdown or HTML would interpret inline.
    return "".join("\\" + char if char in "\\`*_[]<>|~&#" else char for char in text)


def append_to_markdown(path: PathLike, environ: Mapping[str, str]) -> bool:
    """Return whether the Markdown summary should be appended to ``path`` instead of replacing it.

    GitHub Actions collects a step's summary from the file named by
    GITHUB_STEP_SUMMARY, and other tools in the same step may already have
    written to it, so that file is appended to. Any other file is replaced,
    so reruns do not pile up old summaries. Paths are compared after
    resolving symbolic links, so a link to that file is appended to as well.
    """
    step_summary = environ.get("GITHUB_STEP_SUMMARY")
    if not step_summary:
        return False
    return os.path.realpath(os.fspath(path)) == os.path.realpath(step_summary)


def write_markdown(path: PathLike, text: str, append: bool) -> None:
    path = Path(path)
    if not append:
        write_text_atomic(path, text)
        return
    with path.open("a", encoding="utf-8") as stream:
        if stream.tell() > 0:
            stream.write("\n")
        stream.write(text)


class ThrottledWriter:
    """Calls ``write`` at most once per ``interval`` seconds, and late rather than never.

    A request inside the interval starts a timer thread that writes when the
    interval is over. So the state at each request is written within about
    ``interval`` seconds, even when no later request comes. ``write`` must be
    safe to call from that thread. An OSError from ``write`` is logged with
    ``target`` and kept in ``error``.
    """

    def __init__(
        self,
        write: Callable[[], None],
        target: str,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._write = write
        self._target = target
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._last_write: float | None = None
        self.error: OSError | None = None

    def request(self) -> None:
        with self._lock:
            if self._timer is not None:
                return
            wait = 0.0 if self._last_write is None else self._last_write + self._interval - self._clock()
            if wait <= 0:
                self._write_locked()
                return
            self._timer = threading.Timer(wait, self._write_from_timer)
            self._timer.daemon = True
            self._timer.start()

    def flush(self) -> None:
        """Cancel a pending timer and write now."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._write_locked()

    def _write_from_timer(self) -> None:
        with self._lock:
            if self._timer is None:
                return  # flush() ran in the meantime
            self._timer = None
            self._write_locked()

    def _write_locked(self) -> None:
        self._last_write = self._clock()
        try:
            self._write()
        except OSError as error:
            # Log each new failure once, so a full disk cannot add a warning per finished test.
            if self.error is None or str(self.error) != str(error):
                logger.warning("failed to write %s: %s", self._target, error)
            self.error = error
        else:
            self.error = None


def _string_list(value: Any) -> list[str]:
    """Return a property given as a comma-separated string or a list as a list of strings."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, (list, tuple)):
        return [str(part) for part in value]
    return [str(value)]


def _optional_string(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _first_line(text: str | None) -> str | None:
    if text is None:
        return None
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return None


def _tail(text: str) -> str | None:
    lines = text.rstrip("\n").splitlines()
    if not lines:
        return None
    return "\n".join(lines[-OUTPUT_TAIL_LINES:])


def _without_model_prefix(record: ModelRecord) -> str | None:
    """Return the reason without a leading "org/model: ", which the node id already shows."""
    reason = record.reason or ""
    prefix, separator, rest = reason.partition(": ")
    if separator and record.nodeid.endswith((prefix, f"[{prefix}]")):
        return rest
    return record.reason
