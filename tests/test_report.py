"""Tests of run reports: the pure logic in ``report`` and, through pytester, ``report_plugin``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_autodeploy import report
from pytest_autodeploy.report import (
    FORMAT_NAME,
    Change,
    ModelRecord,
    PhaseResult,
    RecordTable,
    ReportFileError,
    ThrottledWriter,
    append_to_markdown,
    build_document,
    compare_records,
    comparison_lines,
    count_statuses,
    load_report,
    phase_status,
    render_markdown,
    write_markdown,
    write_report,
    write_text_atomic,
)
from pytest_autodeploy.summary import TOO_FEW_GPUS

MODEL_PROPERTIES = {"model": "org/a", "config_id": "base", "world_size": 2, "yaml_extra": ["extra.yaml"]}


def phase(when: str, status: str, nodeid: str = "m.yaml::org/a[base]", **kwargs: Any) -> PhaseResult:
    kwargs.setdefault("properties", MODEL_PROPERTIES)
    return PhaseResult(nodeid=nodeid, when=when, status=status, **kwargs)


def record(nodeid: str, status: str, **kwargs: Any) -> ModelRecord:
    return ModelRecord(nodeid=nodeid, status=status, **kwargs)


# Phase status


@pytest.mark.parametrize(
    ("when", "outcome", "wasxfail", "expected"),
    [
        ("call", "passed", False, "passed"),
        ("call", "passed", True, "xpassed"),
        ("call", "skipped", False, "skipped"),
        ("call", "skipped", True, "xfailed"),
        ("call", "failed", False, "failed"),
        ("setup", "failed", False, "error"),
        ("teardown", "failed", False, "error"),
        ("setup", "skipped", False, "skipped"),
    ],
)
def test_phase_status(when: str, outcome: str, wasxfail: bool, expected: str) -> None:
    assert phase_status(when, outcome, wasxfail) == expected


# Record table


def test_table_records_call_phase() -> None:
    table = RecordTable()
    properties = {**MODEL_PROPERTIES, "gpus": "0,1"}

    assert table.add(phase("setup", "passed")) is False
    assert table.add(phase("call", "passed", properties=properties, duration=12.34567)) is True
    assert table.add(phase("teardown", "passed")) is False

    assert [entry.to_json() for entry in table.records.values()] == [
        {
            "nodeid": "m.yaml::org/a[base]",
            "model": "org/a",
            "config_id": "base",
            "world_size": 2,
            "yaml_extra": ["extra.yaml"],
            "status": "passed",
            "duration": 12.346,
            "gpus": ["0", "1"],
            "reason": None,
            "output_tail": None,
            "too_few_gpus": False,
        }
    ]


def test_table_ignores_non_model_tests() -> None:
    table = RecordTable()

    changed = table.add(phase("call", "failed", properties={"other": 1}))

    assert changed is False
    assert table.records == {}


def test_table_empty_config_id_is_null() -> None:
    table = RecordTable()

    table.add(phase("call", "passed", properties={"model": "org/a", "config_id": "", "world_size": 1}))

    assert table.records["m.yaml::org/a[base]"].config_id is None


def test_table_setup_skip_is_final() -> None:
    table = RecordTable()

    assert table.add(phase("setup", "skipped", reason="registry skip: broken weights")) is True
    assert table.add(phase("teardown", "passed")) is False

    entry = table.records["m.yaml::org/a[base]"]
    assert entry.status == "skipped"
    assert entry.reason == "registry skip: broken weights"
    assert entry.duration == 0.0


def test_table_teardown_error_overrides_pass() -> None:
    table = RecordTable()
    table.add(phase("call", "passed", duration=1.0))

    changed = table.add(phase("teardown", "error", reason="RuntimeError: cleanup failed", failure_text="trace\nRuntimeError: cleanup failed"))

    entry = table.records["m.yaml::org/a[base]"]
    assert changed is True
    assert entry.status == "error"
    assert entry.reason == "RuntimeError: cleanup failed"
    assert entry.output_tail == "trace\nRuntimeError: cleanup failed"
    assert entry.duration == 1.0


def test_table_teardown_error_keeps_failure() -> None:
    table = RecordTable()
    table.add(phase("call", "failed", reason="AssertionError: first"))

    changed = table.add(phase("teardown", "error", reason="RuntimeError: second"))

    assert changed is False
    assert table.records["m.yaml::org/a[base]"].reason == "AssertionError: first"


def test_table_reason_is_first_line() -> None:
    table = RecordTable()

    table.add(phase("call", "failed", reason="\ncommand exited with code 1\nlast output:\nboom"))

    assert table.records["m.yaml::org/a[base]"].reason == "command exited with code 1"


def test_table_output_tail_keeps_last_lines() -> None:
    table = RecordTable()
    text = "\n".join(f"line {number}" for number in range(100)) + "\n"

    table.add(phase("call", "failed", failure_text=text))

    tail = table.records["m.yaml::org/a[base]"].output_tail
    assert tail is not None
    assert tail.splitlines() == [f"line {number}" for number in range(60, 100)]


def test_table_crash_uses_setup_properties() -> None:
    table = RecordTable()
    message = "worker 'gw0' crashed while running 'm.yaml::org/a[base]'"
    table.add(phase("setup", "passed"))

    changed = table.add(phase("crash", "failed", properties={}, reason=message, failure_text=message, crashed=True))

    entry = table.records["m.yaml::org/a[base]"]
    assert changed is True
    assert table.crashed == ["m.yaml::org/a[base]"]
    assert entry.status == "failed"
    assert entry.reason == message
    assert entry.model == "org/a"
    assert entry.world_size == 2


def test_table_crash_before_setup_has_no_model() -> None:
    table = RecordTable()

    table.add(phase("crash", "failed", properties={}, reason="worker 'gw1' crashed", crashed=True))

    entry = table.records["m.yaml::org/a[base]"]
    assert entry.status == "failed"
    assert entry.model is None


def test_table_crash_of_plain_test_ignored() -> None:
    table = RecordTable()
    table.add(phase("setup", "passed", nodeid="t.py::test_x", properties={}))

    changed = table.add(phase("crash", "failed", nodeid="t.py::test_x", properties={}, crashed=True))

    assert changed is False
    assert table.records == {}
    assert table.crashed == []


# Counts and document


def test_count_statuses_per_world_size() -> None:
    records = [
        record("a", "passed", world_size=8),
        record("b", "failed", world_size=1),
        record("c", "passed", world_size=1),
        record("d", "error"),
    ]

    totals, per_world_size = count_statuses(records)

    assert totals == {"passed": 2, "failed": 1, "skipped": 0, "xfailed": 0, "xpassed": 0, "error": 1}
    assert list(per_world_size) == ["1", "8", "unknown"]
    assert per_world_size["1"] == {"passed": 1, "failed": 1, "skipped": 0, "xfailed": 0, "xpassed": 0, "error": 0}
    assert per_world_size["unknown"]["error"] == 1


def test_document_round_trip(tmp_path: Path) -> None:
    records = [
        record("m::a", "failed", model="org/a", config_id="x", world_size=2, gpus=["0", "1"], reason="boom", output_tail="boom"),
        record("m::b", "skipped", model="org/b", world_size=8, reason="needs 8 GPUs", too_few_gpus=True),
    ]
    document = build_document(records, started="2026-01-01T00:00:00Z", finished=None, complete=False, registry=None)
    path = tmp_path / "report.json"

    write_report(path, document)

    assert json.loads(path.read_text(encoding="utf-8")) == document
    assert load_report(path) == records


# Atomic writing


def test_atomic_write_failure_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "report.json"
    path.write_text("old", encoding="utf-8")

    def fail_replace(source: str, target: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report.os, "replace", fail_replace)
    with pytest.raises(OSError, match="No space left"):
        write_text_atomic(path, "new")

    assert path.read_text(encoding="utf-8") == "old"
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["report.json"]


def test_atomic_write_creates_folders(tmp_path: Path) -> None:
    path = tmp_path / "out" / "deep" / "report.json"

    write_text_atomic(path, "text")

    assert path.read_text(encoding="utf-8") == "text"
    assert (path.stat().st_mode & 0o777) == 0o644


# Loading


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"

    with pytest.raises(ReportFileError) as error:
        load_report(path)

    assert str(error.value) == f"report file '{path}' not found"


def test_load_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{", encoding="utf-8")

    with pytest.raises(ReportFileError) as error:
        load_report(path)

    assert str(error.value).startswith(f"invalid report file '{path}': line 1, column 2:")


def test_load_other_format(tmp_path: Path) -> None:
    path = write_json(tmp_path / "durations.json", {"format": "pytest-autodeploy-durations", "version": 1})

    with pytest.raises(ReportFileError) as error:
        load_report(path)

    assert str(error.value) == f"invalid report file '{path}': expected a JSON object with \"format\": \"{FORMAT_NAME}\""


def test_load_invalid_status(tmp_path: Path) -> None:
    path = write_json(
        tmp_path / "report.json",
        {"format": FORMAT_NAME, "version": 1, "records": [{"nodeid": "m::a", "status": "broken"}]},
    )

    with pytest.raises(ReportFileError) as error:
        load_report(path)

    assert str(error.value) == (
        f"invalid report file '{path}': records[0] has \"status\" \"broken\", "
        "expected one of passed, failed, skipped, xfailed, xpassed, error"
    )


# Compare


def test_compare_sorts_changes() -> None:
    previous = [
        record("m::a", "passed"),
        record("m::b", "failed"),
        record("m::c", "error"),
        record("m::d", "skipped"),
    ]
    current = [
        record("m::a", "failed", reason="boom"),
        record("m::b", "passed"),
        record("m::c", "failed", reason="still"),
        record("m::d", "passed"),
        record("m::new", "error", reason="fixture"),
    ]

    comparison = compare_records(previous, current)

    assert comparison.newly_failing == [Change("m::a", "failed", "passed", "boom"), Change("m::new", "error", None, "fixture")]
    assert comparison.newly_passing == [Change("m::b", "passed", "failed", None)]
    assert comparison.still_failing == [Change("m::c", "failed", "error", "still")]


def test_compare_matches_by_model() -> None:
    previous = [record("old/models.yaml::org/a[x]", "failed", model="org/a", config_id="x")]
    current = [record("new/models.yaml::org/a[x]", "passed", model="org/a", config_id="x")]

    comparison = compare_records(previous, current)

    assert comparison.newly_passing == [Change("new/models.yaml::org/a[x]", "passed", "failed", None)]


def test_compare_skips_ambiguous_model() -> None:
    previous = [
        record("one::org/a", "passed", model="org/a"),
        record("two::org/a", "passed", model="org/a"),
    ]
    current = [record("three::org/a", "failed", model="org/a", reason="boom")]

    comparison = compare_records(previous, current)

    assert comparison.newly_failing == [Change("three::org/a", "failed", None, "boom")]


def test_comparison_lines() -> None:
    comparison = compare_records(
        [record("m::a", "passed"), record("m::b", "failed")],
        [record("m::a", "failed", reason="boom"), record("m::b", "passed"), record("m::c", "failed")],
    )

    assert comparison_lines(comparison) == [
        "newly failing: 2",
        "  m::a (was passed): boom",
        "  m::c (new)",
        "newly passing: 1",
        "  m::b (was failed)",
        "still failing: 0",
    ]


# Markdown


def test_render_markdown() -> None:
    records = [
        record("m::a", "passed", world_size=1),
        record("m::b", "failed", world_size=2, reason="assert <x> | y * 2"),
        record("m::c", "skipped", world_size=8, reason="needs 8 GPUs, this node has 2", too_few_gpus=True),
    ]
    document = build_document(records, started="s", finished="f", complete=False, registry=None)
    comparison = compare_records([record("m::b", "passed")], records)

    text = render_markdown(document, comparison, "prev.json")

    assert text == (
        "## pytest-autodeploy results\n"
        "\n"
        "**Incomplete run:** interrupted, stopped early or a worker crashed.\n"
        "\n"
        "| world size | models | passed | failed | skipped | xfailed | xpassed | error |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        "| 1 | 1 | 1 | 0 | 0 | 0 | 0 | 0 |\n"
        "| 2 | 1 | 0 | 1 | 0 | 0 | 0 | 0 |\n"
        "| 8 | 1 | 0 | 0 | 1 | 0 | 0 | 0 |\n"
        "| **total** | 3 | 1 | 1 | 1 | 0 | 0 | 0 |\n"
        "\n"
        "### Failures (1)\n"
        "\n"
        "- `m::b` failed: assert \\<x\\> \\| y \\* 2\n"
        "\n"
        "### Not run: too few GPUs (1)\n"
        "\n"
        "- `m::c`: needs 8 GPUs, this node has 2\n"
        "\n"
        "### Compared with `prev.json`\n"
        "\n"
        "**Newly failing (1)**\n"
        "\n"
        "- `m::b` (was passed): assert \\<x\\> \\| y \\* 2\n"
        "\n"
        "**Newly passing (0)**\n"
        "\n"
        "**Still failing (0)**\n"
    )


def test_render_markdown_without_failures() -> None:
    document = build_document([record("m::a", "passed", world_size=1)], started="s", finished="f", complete=True, registry=None)

    text = render_markdown(document)

    assert "Incomplete run" not in text
    assert text.endswith("### Failures (0)\n\nNone.\n")


def test_markdown_appends_to_step_summary(tmp_path: Path) -> None:
    path = tmp_path / "summary.md"

    assert append_to_markdown(path, {"GITHUB_STEP_SUMMARY": str(path)}) is True
    assert append_to_markdown(path, {"GITHUB_STEP_SUMMARY": str(tmp_path / "other.md")}) is False
    assert append_to_markdown(path, {}) is False


def test_write_markdown_modes(tmp_path: Path) -> None:
    path = tmp_path / "summary.md"
    path.write_text("earlier step\n", encoding="utf-8")

    write_markdown(path, "first\n", append=True)
    assert path.read_text(encoding="utf-8") == "earlier step\n\nfirst\n"

    write_markdown(path, "second\n", append=False)
    assert path.read_text(encoding="utf-8") == "second\n"


# Throttled writer


def wait_for(condition: Any, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_writer_throttles_and_defers() -> None:
    calls: list[float] = []
    writer = ThrottledWriter(lambda: calls.append(time.monotonic()), "test file", interval=0.2)

    writer.request()
    writer.request()
    writer.request()

    # The first request writes at once and the next two share one deferred write.
    assert len(calls) == 1
    assert wait_for(lambda: len(calls) == 2)
    assert calls[1] - calls[0] >= 0.19
    time.sleep(0.3)
    assert len(calls) == 2


def test_writer_flush_cancels_timer() -> None:
    calls: list[float] = []
    writer = ThrottledWriter(lambda: calls.append(time.monotonic()), "test file", interval=0.2)
    writer.request()
    writer.request()

    writer.flush()

    assert len(calls) == 2
    time.sleep(0.3)
    assert len(calls) == 2


def test_writer_keeps_os_error(caplog: pytest.LogCaptureFixture) -> None:
    def fail() -> None:
        raise PermissionError(13, "Permission denied")

    writer = ThrottledWriter(fail, "test file", interval=0.0)

    writer.flush()

    assert isinstance(writer.error, PermissionError)
    assert caplog.messages == ["failed to write test file: [Errno 13] Permission denied"]


# The plugin, run through pytester. The conftest registers the report plugin
# itself and the installed plugin is disabled (-p no:autodeploy), so these
# tests do not depend on how plugin.py wires the report options.

CONFTEST = """
import pytest

from pytest_autodeploy.report_plugin import add_report_options, register_report_plugin


def pytest_addoption(parser):
    add_report_options(parser.getgroup("autodeploy"), parser)


def pytest_configure(config):
    config.addinivalue_line("markers", "model(name, config_id, world_size): a registry model test")
    register_report_plugin(config, "reg/models.yaml")


def pytest_collection_modifyitems(items):
    # Model items carry these properties from their creation on.
    for item in items:
        marker = item.get_closest_marker("model")
        if marker is not None:
            name, config_id, world_size = marker.args
            item.user_properties.extend(
                [("model", name), ("config_id", config_id), ("world_size", world_size), ("yaml_extra", ["extra.yaml"])]
            )
"""

MODEL_TESTS = f"""
import pytest


@pytest.mark.model("org/a", "base", 1)
def test_pass(record_property):
    record_property("gpus", "0")


@pytest.mark.model("org/b", "", 2)
def test_fail(record_property):
    record_property("gpus", "0,1")
    assert 1 == 2, "wrong answer"


@pytest.mark.model("org/c", "big", 8)
def test_skip(record_property):
    record_property("{TOO_FEW_GPUS}", True)
    pytest.skip("needs 8 GPUs, this node has 2")


@pytest.mark.model("org/d", "x", 1)
@pytest.mark.xfail(reason="known bug")
def test_xfail():
    assert False


def test_plain():
    pass
"""

DISABLE_INSTALLED = ("-p", "no:autodeploy", "-p", "no:cacheprovider")


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    return pytester


def read_records(path: Path) -> dict[str, dict[str, Any]]:
    document = json.loads(path.read_text(encoding="utf-8"))
    return {entry["nodeid"]: entry for entry in document["records"]}


def test_plugin_normal_run(project: pytest.Pytester) -> None:
    project.makepyfile(test_models=MODEL_TESTS)
    path = project.path / "out" / "report.json"

    result = project.runpytest(*DISABLE_INSTALLED, f"--autodeploy-report={path}")

    document = json.loads(path.read_text(encoding="utf-8"))
    records = read_records(path)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert document["format"] == FORMAT_NAME
    assert document["version"] == 1
    assert document["complete"] is True
    assert document["finished"] is not None
    assert document["registry"] == "reg/models.yaml"
    assert document["totals"] == {"passed": 1, "failed": 1, "skipped": 1, "xfailed": 1, "xpassed": 0, "error": 0}
    assert list(document["totals_by_world_size"]) == ["1", "2", "8"]
    assert sorted(records) == [f"test_models.py::test_{name}" for name in ("fail", "pass", "skip", "xfail")]
    assert records["test_models.py::test_pass"] == {
        "nodeid": "test_models.py::test_pass",
        "model": "org/a",
        "config_id": "base",
        "world_size": 1,
        "yaml_extra": ["extra.yaml"],
        "status": "passed",
        "duration": records["test_models.py::test_pass"]["duration"],
        "gpus": ["0"],
        "reason": None,
        "output_tail": None,
        "too_few_gpus": False,
    }
    failed = records["test_models.py::test_fail"]
    assert failed["reason"] == "AssertionError: wrong answer"
    assert failed["output_tail"].endswith("E       assert 1 == 2\n\ntest_models.py:12: AssertionError")
    assert failed["gpus"] == ["0", "1"]
    assert failed["config_id"] is None
    assert records["test_models.py::test_skip"]["too_few_gpus"] is True
    assert records["test_models.py::test_xfail"]["reason"] == "known bug"
    result.stdout.fnmatch_lines(["*= autodeploy report =*", f"report: {path} (4 records, complete run)"])


def test_plugin_writes_during_run(project: pytest.Pytester) -> None:
    path = project.path / "report.json"
    project.makepyfile(
        test_order=f"""
        import json
        import pytest

        @pytest.mark.model("org/a", "x", 1)
        def test_a():
            pass

        def test_b_reads_report():
            # The first finished test is written at once, not only at the end.
            document = json.loads(open({str(path)!r}, encoding="utf-8").read())
            assert [entry["nodeid"] for entry in document["records"]] == ["test_order.py::test_a"]
            assert document["finished"] is None
            assert document["complete"] is False
        """
    )

    result = project.runpytest(*DISABLE_INSTALLED, f"--autodeploy-report={path}")

    assert result.ret == pytest.ExitCode.OK


def test_plugin_ini_path(project: pytest.Pytester) -> None:
    project.makepyfile(test_models=MODEL_TESTS)
    project.makeini("[pytest]\nautodeploy_report = out/from-ini.json\n")

    project.runpytest(*DISABLE_INSTALLED)

    assert len(read_records(project.path / "out" / "from-ini.json")) == 4


def test_plugin_report_folder_rejected(project: pytest.Pytester) -> None:
    project.makepyfile(test_models=MODEL_TESTS)
    folder = project.mkdir("reports")

    result = project.runpytest(*DISABLE_INSTALLED, f"--autodeploy-report={folder}")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"ERROR: --autodeploy-report: '{folder}' is a folder. Give a file path such as '{folder / 'report.json'}'"]
    )


def test_plugin_keyboard_interrupt(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_stop="""
        import pytest

        @pytest.mark.model("org/a", "x", 1)
        def test_a():
            pass

        @pytest.mark.model("org/b", "x", 1)
        def test_b():
            raise KeyboardInterrupt

        @pytest.mark.model("org/c", "x", 1)
        def test_c():
            pass
        """
    )
    path = project.path / "report.json"

    # no_reraise_ctrlc keeps the inner run's KeyboardInterrupt from stopping this test.
    result = project.runpytest_inprocess(*DISABLE_INSTALLED, f"--autodeploy-report={path}", no_reraise_ctrlc=True)

    document = json.loads(path.read_text(encoding="utf-8"))
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert document["complete"] is False
    assert [entry["nodeid"] for entry in document["records"]] == ["test_stop.py::test_a"]
    assert document["records"][0]["status"] == "passed"


def test_plugin_crashed_worker(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_crash="""
        import os
        import pytest

        @pytest.mark.model("org/a", "x", 1)
        def test_a():
            pass

        @pytest.mark.model("org/crash", "x", 2)
        def test_crash():
            os._exit(1)

        @pytest.mark.model("org/c", "x", 1)
        def test_c():
            pass
        """
    )
    path = project.path / "report.json"

    result = project.runpytest_subprocess(*DISABLE_INSTALLED, "-n", "2", f"--autodeploy-report={path}", timeout=120)

    document = json.loads(path.read_text(encoding="utf-8"))
    records = read_records(path)
    crashed = records["test_crash.py::test_crash"]
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert document["complete"] is False
    assert sorted(records) == ["test_crash.py::test_a", "test_crash.py::test_c", "test_crash.py::test_crash"]
    assert records["test_crash.py::test_a"]["status"] == "passed"
    assert records["test_crash.py::test_c"]["status"] == "passed"
    assert crashed["status"] == "failed"
    assert crashed["reason"].startswith("worker 'gw")
    assert crashed["reason"].endswith("' crashed while running 'test_crash.py::test_crash'")
    assert crashed["model"] == "org/crash"
    assert crashed["world_size"] == 2


def test_plugin_compare_lines(project: pytest.Pytester) -> None:
    project.makepyfile(test_models=MODEL_TESTS)
    previous = project.path / "previous.json"
    records = [
        record("test_models.py::test_pass", "failed", model="org/a", config_id="base"),
        record("test_models.py::test_fail", "passed", model="org/b"),
    ]
    write_report(previous, build_document(records, started="2026-12-04T00:00:00Z", finished="2026-12-04T01:00:00Z", complete=True, registry=None))

    result = project.runpytest(*DISABLE_INSTALLED, f"--autodeploy-compare={previous}")

    result.stdout.fnmatch_lines(
        [
            "*= autodeploy report =*",
            f"compared with {previous}:",
            "newly failing: 1",
            "  test_models.py::test_fail (was passed): AssertionError: wrong answer",
            "newly passing: 1",
            "  test_models.py::test_pass (was failed)",
            "still failing: 0",
        ]
    )


def test_plugin_compare_missing_file(project: pytest.Pytester) -> None:
    project.makepyfile(test_models=MODEL_TESTS)
    missing = project.path / "absent.json"

    result = project.runpytest(*DISABLE_INSTALLED, f"--autodeploy-compare={missing}")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"ERROR: --autodeploy-compare: report file '{missing}' not found. Give a file written by --autodeploy-report, or drop the option"]
    )


def test_plugin_markdown_step_summary(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    project.makepyfile(test_models=MODEL_TESTS)
    summary = project.path / "step-summary.md"
    summary.write_text("earlier step\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))

    project.runpytest(*DISABLE_INSTALLED, f"--autodeploy-markdown={summary}")

    lines = summary.read_text(encoding="utf-8").splitlines()
    assert lines[:3] == ["earlier step", "", "## pytest-autodeploy results"]
    assert "| **total** | 4 | 1 | 1 | 1 | 1 | 0 | 0 |" in lines
    assert "- `test_models.py::test_fail` failed: AssertionError: wrong answer" in lines
    assert "- `test_models.py::test_skip`: needs 8 GPUs, this node has 2" in lines


def test_markdown_appends_through_symlink(tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("", encoding="utf-8")
    link = tmp_path / "link.md"
    link.symlink_to(summary)

    assert append_to_markdown(link, {"GITHUB_STEP_SUMMARY": str(summary)}) is True


def test_writer_logs_repeated_error_once(caplog: pytest.LogCaptureFixture) -> None:
    def fail() -> None:
        raise OSError(28, "No space left on device")

    writer = ThrottledWriter(fail, "test file", interval=0.0)

    writer.flush()
    writer.flush()

    assert caplog.messages == ["failed to write test file: [Errno 28] No space left on device"]


def test_load_deep_nesting(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")

    with pytest.raises(ReportFileError) as error:
        load_report(path)

    assert str(error.value) == f"invalid report file '{path}': nested too deeply"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("model", 5, 'records[0] has "model" 5, expected a string or null'),
        ("config_id", ["x"], 'records[0] has "config_id" ["x"], expected a string or null'),
        ("world_size", "2", 'records[0] has "world_size" "2", expected a positive integer or null'),
        ("world_size", 0, 'records[0] has "world_size" 0, expected a positive integer or null'),
        ("yaml_extra", "a.yaml", 'records[0] has "yaml_extra" "a.yaml", expected a list of strings'),
        ("gpus", [0, 1], 'records[0] has "gpus" [0, 1], expected a list of strings'),
        ("duration", "1.5", 'records[0] has "duration" "1.5", expected a finite number >= 0'),
        ("duration", -1, 'records[0] has "duration" -1, expected a finite number >= 0'),
        ("reason", 3, 'records[0] has "reason" 3, expected a string or null'),
        ("too_few_gpus", "yes", 'records[0] has "too_few_gpus" "yes", expected true or false'),
    ],
)
def test_load_rejects_record_field(tmp_path: Path, field: str, value: object, message: str) -> None:
    entry = {"nodeid": "m::a", "status": "passed", field: value}
    path = write_json(tmp_path / "report.json", {"format": FORMAT_NAME, "version": 1, "records": [entry]})

    with pytest.raises(ReportFileError) as error:
        load_report(path)

    assert str(error.value) == f"invalid report file '{path}': {message}"


def test_load_accepts_minimal_record(tmp_path: Path) -> None:
    entry = {"nodeid": "m::a", "status": "passed"}
    path = write_json(tmp_path / "report.json", {"format": FORMAT_NAME, "version": 1, "started": "", "records": [entry]})

    assert load_report(path) == [record("m::a", "passed")]


UNWRITABLE_TESTS = """
import shutil

import pytest


@pytest.mark.model("org/a", "base", 1)
def test_breaks_output_folder():
    # Replace the output folder with a file, so the writes at the end fail.
    shutil.rmtree("out")
    with open("out", "w") as stream:
        stream.write("not a folder")
"""


@pytest.mark.parametrize("option", ["--autodeploy-report=out/report.json", "--autodeploy-markdown=out/summary.md"])
def test_plugin_write_failure_fails_run(project: pytest.Pytester, option: str) -> None:
    project.makepyfile(test_models=UNWRITABLE_TESTS)
    (project.path / "out").mkdir()

    result = project.runpytest(*DISABLE_INSTALLED, option)

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["failed to write * File exists"])
