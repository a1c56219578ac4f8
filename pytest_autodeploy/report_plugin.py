"""pytest glue for run reports: the options and a plugin that passes test reports to ``report``."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from .report import (
    Comparison,
    ModelRecord,
    PhaseResult,
    RecordTable,
    ReportFileError,
    ThrottledWriter,
    append_to_markdown,
    build_document,
    compare_records,
    comparison_lines,
    load_report,
    phase_status,
    render_markdown,
    utc_timestamp,
    write_markdown,
    write_report,
)
from .summary import TOO_FEW_GPUS
from .writable import check_writable_file

PLUGIN_NAME = "autodeploy-report"

# The report file is rewritten at most this often while tests finish.
WRITE_INTERVAL_SECONDS = 1.0

_INI_NOTE = " (an ini value is relative to the ini file)"
_OPTIONS = (
    (
        "--autodeploy-report",
        "Write a JSON report with one record per model test to FILE, replaced atomically "
        "as tests finish (at most once per second) and at the end" + _INI_NOTE,
    ),
    (
        "--autodeploy-compare",
        "Compare the results with FILE, a JSON report of an earlier run, and list newly failing, "
        "newly passing and still failing models" + _INI_NOTE,
    ),
    (
        "--autodeploy-markdown",
        "Write a Markdown summary of the run to FILE, replacing it; FILE equal to "
        "$GITHUB_STEP_SUMMARY is appended to instead" + _INI_NOTE,
    ),
)


def add_report_options(group: pytest.OptionGroup, parser: pytest.Parser) -> None:
    """Add the report options to ``group`` and their ini twins to ``parser``."""
    for flag, help_text in _OPTIONS:
        dest = flag.lstrip("-").replace("-", "_")
        group.addoption(flag, dest=dest, metavar="FILE", default=None, help=help_text)
        parser.addini(dest, help=help_text, type="string", default=None)


def _option_path(config: pytest.Config, dest: str) -> tuple[Path | None, str]:
    """Return the absolute path an option or its ini twin gives, and where it came from."""
    flag = "--" + dest.replace("_", "-")
    value = config.getoption(dest, default=None)
    if value:
        # Made absolute now, because a test may change the working folder.
        return Path(value).expanduser().absolute(), flag

    value = config.getini(dest)
    if value:
        base = config.inipath.parent if config.inipath else config.rootpath
        return base / Path(value).expanduser(), f"ini {dest}"
    return None, flag


def register_report_plugin(config: pytest.Config, registry_path: str | None) -> ReportPlugin | None:
    """Validate the report options and register a ``ReportPlugin`` when one is set.

    Registers nothing in an xdist worker, because only the controller receives the
    reports of every worker, and nothing when the plugin is already registered.
    Raises pytest.UsageError for a report or Markdown path that is a folder and
    for a comparison file that is missing or not a report.
    """
    if hasattr(config, "workerinput") or config.pluginmanager.has_plugin(PLUGIN_NAME):
        return None

    report_path, report_source = _option_path(config, "autodeploy_report")
    compare_path, compare_source = _option_path(config, "autodeploy_compare")
    markdown_path, markdown_source = _option_path(config, "autodeploy_markdown")
    if report_path is None and compare_path is None and markdown_path is None:
        return None

    for path, source in ((report_path, report_source), (markdown_path, markdown_source)):
        if path is not None and path.is_dir():
            raise pytest.UsageError(f"{source}: '{path}' is a folder. Give a file path such as '{path / 'report.json'}'")
        if path is not None:
            check_writable_file(path, source)

    previous = None
    if compare_path is not None:
        try:
            previous = load_report(compare_path)
        except ReportFileError as error:
            raise pytest.UsageError(
                f"{compare_source}: {error}. Give a file written by --autodeploy-report, or drop the option"
            ) from None

    plugin = ReportPlugin(
        report_path=report_path,
        markdown_path=markdown_path,
        compare_path=compare_path,
        previous=previous,
        registry_path=registry_path,
    )
    config.pluginmanager.register(plugin, PLUGIN_NAME)
    return plugin


def phase_from_report(report: pytest.TestReport) -> PhaseResult | None:
    """Reduce a test report to a PhaseResult; None for outcomes that are not final, such as a rerun."""
    # xdist's report for a test whose worker crashed has the phase "???".
    crashed = report.when not in ("setup", "call", "teardown")
    if report.outcome not in ("passed", "failed", "skipped") or (crashed and not report.failed):
        return None

    properties = dict(report.user_properties)
    status = "failed" if crashed else phase_status(report.when, report.outcome, hasattr(report, "wasxfail"))
    return PhaseResult(
        nodeid=report.nodeid,
        when="crash" if crashed else report.when,
        status=status,
        properties=properties,
        duration=report.duration,
        reason=_reason(report),
        failure_text=report.longreprtext if report.failed else "",
        too_few_gpus=bool(properties.get(TOO_FEW_GPUS)),
        crashed=crashed,
    )


def _reason(report: pytest.TestReport) -> str | None:
    if hasattr(report, "wasxfail"):
        return str(report.wasxfail).removeprefix("reason: ") or None

    if report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2])
        return None if reason == "Skipped" else reason.removeprefix("Skipped: ")

    if report.failed:
        if isinstance(report.longrepr, str):
            return report.longrepr
        crash = getattr(report.longrepr, "reprcrash", None)
        if crash is not None:
            return str(crash.message)
        return report.longreprtext
    return None


class ReportPlugin:
    """Collects the records of the model tests and writes the report files.

    Registered on the controller only. Hooks run in the main thread, and the
    report writer may also run in its timer thread, so ``_lock`` guards the
    record table and the session fields.
    """

    def __init__(
        self,
        *,
        report_path: Path | None,
        markdown_path: Path | None,
        compare_path: Path | None,
        previous: list[ModelRecord] | None,
        registry_path: str | None,
    ) -> None:
        self.report_path = report_path
        self.markdown_path = markdown_path
        self.compare_path = compare_path
        self.previous = previous
        self.registry_path = registry_path

        self.table = RecordTable()
        self.started = utc_timestamp()
        self.finished: str | None = None
        self.complete = False
        self.interrupted = False
        self.markdown_error: OSError | None = None
        self._lock = threading.Lock()
        self._writer: ThrottledWriter | None = None
        if report_path is not None:
            self._writer = ThrottledWriter(self._write_report, f"report {report_path}", WRITE_INTERVAL_SECONDS)

    def document(self) -> dict[str, Any]:
        with self._lock:
            return build_document(
                self.table.records.values(),
                started=self.started,
                finished=self.finished,
                complete=self.complete,
                registry=self.registry_path,
            )

    def _write_report(self) -> None:
        assert self.report_path is not None
        write_report(self.report_path, self.document())

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        with self._lock:
            self.started = utc_timestamp()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        phase = phase_from_report(report)
        if phase is None:
            return
        with self._lock:
            changed = self.table.add(phase)
        if changed and self._writer is not None:
            self._writer.request()

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        # xdist 3.8 also ends a run stopped by -x or by a worker's Ctrl-C through
        # this hook, because it raises its Interrupted, a KeyboardInterrupt.
        self.interrupted = True

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int | pytest.ExitCode) -> None:
        with self._lock:
            self.finished = utc_timestamp()
            self.complete = self._is_complete(session, exitstatus)

        if self._writer is not None:
            self._writer.flush()

        if self.markdown_path is not None:
            text = render_markdown(self.document(), self._comparison(), str(self.compare_path or ""))
            try:
                write_markdown(self.markdown_path, text, append=append_to_markdown(self.markdown_path, os.environ))
            except OSError as error:
                self.markdown_error = error

        # A run whose results were not saved must not pass in CI. The terminal
        # summary names the failed file.
        report_error = self._writer.error if self._writer is not None else None
        if (report_error is not None or self.markdown_error is not None) and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _is_complete(self, session: pytest.Session, exitstatus: int | pytest.ExitCode) -> bool:
        if self.interrupted or self.table.crashed or session.shouldfail or session.shouldstop:
            return False
        return exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED, pytest.ExitCode.NO_TESTS_COLLECTED)

    def _comparison(self) -> Comparison | None:
        if self.previous is None:
            return None
        with self._lock:
            return compare_records(self.previous, list(self.table.records.values()))

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        terminalreporter.ensure_newline()
        terminalreporter.write_sep("=", "autodeploy report")
        if self.report_path is not None:
            error = self._writer.error if self._writer is not None else None
            if error is not None:
                terminalreporter.write_line(f"failed to write report {self.report_path}: {error.strerror or error}", red=True)
            else:
                state = "complete" if self.complete else "incomplete"
                count = len(self.table.records)
                terminalreporter.write_line(f"report: {self.report_path} ({count} records, {state} run)")

        if self.markdown_path is not None:
            if self.markdown_error is not None:
                error_text = self.markdown_error.strerror or self.markdown_error
                terminalreporter.write_line(f"failed to write Markdown summary {self.markdown_path}: {error_text}", red=True)
            else:
                terminalreporter.write_line(f"Markdown summary: {self.markdown_path}")

        comparison = self._comparison()
        if comparison is not None:
            terminalreporter.write_line(f"compared with {self.compare_path}:")
            for line in comparison_lines(comparison):
                terminalreporter.write_line(line)
