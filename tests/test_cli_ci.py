"""The CI subcommands: matrix, merge-durations and merge-reports."""

from __future__ import annotations

import json
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
    main(["matrix", str(BUNDLED), "--runner-gpus", "8", "--max-shard-minutes", "30"])
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
