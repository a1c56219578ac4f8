"""The CI subcommands: matrix, merge-durations and merge-reports."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_autodeploy.cli import main
from pytest_autodeploy.durations import DurationRecord, load_durations, save_durations
from pytest_autodeploy.registry import load_registry
from pytest_autodeploy.report import (
    ModelRecord,
    build_document,
    load_report,
    write_report,
)

REPO = Path(__file__).resolve().parent.parent
BUNDLED = REPO / "model_registry"


def test_matrix_covers_every_model_once(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["matrix", str(BUNDLED), "--runner-gpus", "8", "--max-shard-minutes", "30"])
    matrix = json.loads(capsys.readouterr().out)

    assert code == 0
    assert sum(job["models"] for job in matrix["include"]) == len(load_registry(BUNDLED).models)
    assert len({job["name"] for job in matrix["include"]}) == len(matrix["include"])


def test_matrix_jobs_match_plugin_shards(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A copy, because pytest rejects this repository's conftest.py when the
    # collected registry lies below it but the rootdir does not.
    registry = tmp_path / "model_registry"
    shutil.copytree(BUNDLED, registry)
    main(["matrix", str(registry), "--runner-gpus", "8", "--max-shard-minutes", "30"])
    matrix = json.loads(capsys.readouterr().out)
    seen: list[str] = []

    # Run every job's pytest arguments, as a CI job would, and list its items.
    for job in matrix["include"]:
        result = subprocess.run(
            [sys.executable, "-m", "pytest", *job["pytest_argv"], "--co", "-q", "-p", "no:cacheprovider"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        items = [line for line in result.stdout.splitlines() if "::" in line]
        assert len(items) == job["models"], job["name"]
        seen.extend(items)

    assert len(seen) == len(set(seen))
    assert len(seen) == len(load_registry(BUNDLED).models)


def test_matrix_registry_errors_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "models.yaml").write_text("version: '2.0'\nmodels:\n- name: org/a\n  yaml_extra: [missing.yaml]\n")

    code = main(["matrix", str(tmp_path), "--runner-gpus", "8", "--max-shard-minutes", "30"])

    assert code == 1
    assert "config file 'missing.yaml' of org/a not found" in capsys.readouterr().err


def test_merge_durations_newest_wins(tmp_path: Path) -> None:
    first = tmp_path / "shard1.json"
    second = tmp_path / "shard2.json"
    save_durations(first, {"a": DurationRecord(10.0, 1, "2026-12-01T00:00:00Z"), "b": DurationRecord(5.0, 2, "2026-12-01T00:00:00Z")})
    save_durations(second, {"a": DurationRecord(12.0, 1, "2026-12-02T00:00:00Z")})

    code = main(["merge-durations", str(tmp_path / "all.json"), str(first), str(second)])
    merged = load_durations(tmp_path / "all.json")

    assert code == 0
    assert merged["a"].seconds == 12.0
    assert merged["b"].seconds == 5.0


def test_merge_durations_missing_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["merge-durations", str(tmp_path / "all.json"), str(tmp_path / "nope.json")])

    assert code == 2
    assert "input file not found" in capsys.readouterr().err


def report_file(path: Path, nodeids: list[str], complete: bool = True) -> Path:
    records = [
        ModelRecord.from_json(
            {"nodeid": nodeid, "model": nodeid, "config_id": None, "world_size": 1, "yaml_extra": [], "status": "passed", "duration": 1.0, "gpus": []},
            "test",
        )
        for nodeid in nodeids
    ]
    write_report(path, build_document(records, started="2026-12-04T00:00:00Z", finished="2026-12-04T01:00:00Z", complete=complete, registry="r"))
    return path


def test_merge_reports_combines_shards(tmp_path: Path) -> None:
    first = report_file(tmp_path / "r1.json", ["m::a", "m::b"])
    second = report_file(tmp_path / "r2.json", ["m::c"], complete=False)

    code = main(["merge-reports", str(tmp_path / "all.json"), str(first), str(second)])
    merged = json.loads((tmp_path / "all.json").read_text())

    assert code == 0
    assert [record.nodeid for record in load_report(tmp_path / "all.json")] == ["m::a", "m::b", "m::c"]
    assert merged["complete"] is False
    assert merged["totals"]["passed"] == 3


def test_merge_reports_overlap_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = report_file(tmp_path / "r1.json", ["m::a"])
    second = report_file(tmp_path / "r2.json", ["m::a"])

    code = main(["merge-reports", str(tmp_path / "all.json"), str(first), str(second)])

    assert code == 1
    assert "m::a is in both" in capsys.readouterr().err
    assert not (tmp_path / "all.json").exists()


def test_merge_reports_overlap_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = report_file(tmp_path / "r1.json", ["m::a"])
    second = report_file(tmp_path / "r2.json", ["m::a"])

    main(["merge-reports", str(tmp_path / "all.json"), str(first), str(second)])

    assert "the inputs overlap. Either a full run is merged with one of its shards" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("started", 5, '"started" is 5, expected an ISO 8601 time such as 2026-12-04T19:00:00Z or null'),
        ("finished", 7, '"finished" is 7, expected an ISO 8601 time such as 2026-12-04T19:00:00Z or null'),
        ("started", "yesterday", '"started" is "yesterday", expected an ISO 8601 time'),
        ("registry", ["x"], '"registry" is ["x"], expected a string or null'),
        ("complete", "yes", '"complete" is "yes", expected true or false'),
    ],
)
def test_merge_reports_invalid_header(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], field: str, value: object, message: str
) -> None:
    first = report_file(tmp_path / "r1.json", ["m::a"])
    second = report_file(tmp_path / "r2.json", ["m::b"])
    data = json.loads(second.read_text())
    data[field] = value
    second.write_text(json.dumps(data))

    code = main(["merge-reports", str(tmp_path / "all.json"), str(first), str(second)])

    assert code == 1
    assert f"invalid report file '{second}': {message}" in capsys.readouterr().err


def test_merge_reports_invalid_record_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = report_file(tmp_path / "r1.json", ["m::a"])
    data = json.loads(path.read_text())
    data["records"][0]["model"] = 5
    path.write_text(json.dumps(data))

    code = main(["merge-reports", str(tmp_path / "all.json"), str(path)])

    assert code == 1
    assert f"invalid report file '{path}': records[0] has \"model\" 5, expected a string or null" in capsys.readouterr().err


def test_merge_reports_times_by_value(tmp_path: Path) -> None:
    first = report_file(tmp_path / "r1.json", ["m::a"])
    second = report_file(tmp_path / "r2.json", ["m::b"])
    # 2026-12-03T23:30:00Z, earlier than the first report's start, in another offset.
    data = json.loads(second.read_text())
    data["started"] = "2026-12-04T01:30:00+02:00"
    data["finished"] = None
    second.write_text(json.dumps(data))

    main(["merge-reports", str(tmp_path / "all.json"), str(first), str(second)])
    merged = json.loads((tmp_path / "all.json").read_text())

    assert merged["started"] == "2026-12-04T01:30:00+02:00"
    assert merged["finished"] is None
    assert merged["registry"] == "r"


DEEP_JSON = "[" * 100_000 + "]" * 100_000


def test_merge_reports_deep_nesting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "r1.json"
    path.write_text(DEEP_JSON)

    code = main(["merge-reports", str(tmp_path / "all.json"), str(path)])

    assert code == 1
    assert f"invalid report file '{path}': nested too deeply" in capsys.readouterr().err


def test_merge_durations_deep_nesting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "d.json"
    path.write_text(DEEP_JSON)

    code = main(["merge-durations", str(tmp_path / "all.json"), str(path)])

    assert code == 1
    assert f"invalid durations file '{path}': nested too deeply" in capsys.readouterr().err


def test_matrix_deep_durations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "d.json"
    path.write_text(DEEP_JSON)

    code = main(["matrix", str(BUNDLED), "--runner-gpus", "8", "--max-shard-minutes", "30", "--durations", str(path)])

    assert code == 1
    assert f"invalid durations file '{path}': nested too deeply" in capsys.readouterr().err


def test_matrix_huge_seconds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "d.json"
    path.write_text('{"a": 1e308}')

    code = main(["matrix", str(BUNDLED), "--runner-gpus", "8", "--max-shard-minutes", "30", "--durations", str(path)])

    assert code == 1
    assert 'the value of "a" must be at most 2592000 (30 days)' in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--max-shard-minutes", "inf", "invalid value 'inf'; it must be a finite number greater than 0"),
        ("--max-shard-minutes", "nan", "invalid value 'nan'; it must be a finite number greater than 0"),
        ("--max-shard-minutes", "0", "invalid value '0'; it must be a finite number greater than 0"),
        ("--runner-gpus", "1025", "invalid GPU count '1025'; it must be at most 1024"),
    ],
)
def test_matrix_rejects_option(capsys: pytest.CaptureFixture[str], option: str, value: str, message: str) -> None:
    arguments = {"--runner-gpus": "8", "--max-shard-minutes": "30", option: value}

    with pytest.raises(SystemExit) as excinfo:
        main(["matrix", str(BUNDLED), *[part for pair in arguments.items() for part in pair]])

    assert excinfo.value.code == 2
    assert message in capsys.readouterr().err


def test_matrix_one_error_singular(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "models.yaml").write_text("version: '2.0'\nmodels:\n- name: org/a\n  yaml_extra: [missing.yaml]\n")

    main(["matrix", str(tmp_path), "--runner-gpus", "8", "--max-shard-minutes", "30"])

    assert "the registry has 1 error; run validate" in capsys.readouterr().err


def test_merge_durations_folder_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["merge-durations", str(tmp_path / "all.json"), str(tmp_path)])

    assert code == 2
    assert f"input is a folder, not a file: {tmp_path}" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["merge-durations", "merge-reports"])
def test_merge_output_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    source = report_file(tmp_path / "r1.json", ["m::a"])

    code = main([command, str(tmp_path), str(source)])
    error = capsys.readouterr().err

    assert code == 2
    assert f"OUT '{tmp_path}' is a folder; give a file path such as" in error
    assert ".tmp" not in error


def test_merge_output_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "d.json"
    save_durations(source, {"a": DurationRecord(1.0)})

    code = main(["merge-durations", "", str(source)])

    assert code == 2
    assert "OUT is empty; give the path of the file to write, e.g. durations.json" in capsys.readouterr().err
