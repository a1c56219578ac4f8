from __future__ import annotations

import itertools
import json
import os
import stat
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from pytest_autodeploy.durations import (
    DEFAULT_SECONDS_PER_WORLD_SIZE,
    FORMAT_NAME,
    DurationRecord,
    DurationsFileError,
    estimate_seconds,
    load_durations,
    merge_durations,
    save_durations,
)


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def document(durations: dict[str, object]) -> dict[str, object]:
    return {"format": FORMAT_NAME, "version": 1, "durations": durations}


def test_load_missing_file_is_empty(tmp_path: Path) -> None:
    assert load_durations(tmp_path / "absent.json") == {}


def test_load_native_format(tmp_path: Path) -> None:
    path = write_json(
        tmp_path / "durations.json",
        document(
            {
                "meta-llama/Llama-3.1-8B-Instruct": {
                    "seconds": 12.3,
                    "world_size": 2,
                    "updated": "2026-12-04T19:00:00Z",
                },
                "Qwen/Qwen3-8B[demollm]": {"seconds": 40},
            }
        ),
    )

    table = load_durations(path)

    assert table == {
        "Qwen/Qwen3-8B[demollm]": DurationRecord(seconds=40.0),
        "meta-llama/Llama-3.1-8B-Instruct": DurationRecord(12.3, 2, "2026-12-04T19:00:00Z"),
    }
    assert list(table) == sorted(table)
    assert isinstance(table["Qwen/Qwen3-8B[demollm]"].seconds, float)


def test_load_pytest_split_mapping(tmp_path: Path) -> None:
    path = write_json(tmp_path / ".test_durations", {"tests/test_a.py::test_one": 1.5, "b": 0})

    table = load_durations(path)

    assert table == {"b": DurationRecord(0.0), "tests/test_a.py::test_one": DurationRecord(1.5)}


def test_load_pytest_split_pair_list(tmp_path: Path) -> None:
    path = write_json(tmp_path / ".test_durations", [["a", 2.0], ["b", 3], ["a", 5.0]])

    table = load_durations(path)

    assert table == {"a": DurationRecord(5.0), "b": DurationRecord(3.0)}


def test_load_reports_json_position(tmp_path: Path) -> None:
    path = tmp_path / "durations.json"
    path.write_text('{\n  "a": 1,\n  "b" 2\n}\n', encoding="utf-8")

    with pytest.raises(DurationsFileError) as excinfo:
        load_durations(path)

    message = str(excinfo.value)
    assert str(path) in message
    assert "line 3, column 7" in message
    assert "Expecting ':' delimiter" in message
    assert "Fix the file or delete it" in message


def test_load_rejects_deep_nesting(tmp_path: Path) -> None:
    path = tmp_path / "durations.json"
    path.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")

    with pytest.raises(DurationsFileError) as excinfo:
        load_durations(path)

    assert str(excinfo.value) == (
        f"invalid durations file '{path}': nested too deeply. "
        "Fix the file or delete it to start without recorded durations."
    )


def test_load_accepts_thirty_days(tmp_path: Path) -> None:
    path = tmp_path / "durations.json"
    path.write_text('{"a": 2592000}', encoding="utf-8")

    assert load_durations(path) == {"a": DurationRecord(2592000.0)}


def test_measured_caps_seconds() -> None:
    record = DurationRecord.measured(1e9, 1)

    assert record.seconds == 2592000.0


def test_load_rejects_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "durations.json"
    path.write_text("", encoding="utf-8")

    with pytest.raises(DurationsFileError, match="line 1, column 1"):
        load_durations(path)


def test_load_rejects_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "durations.json"
    path.write_bytes(b'{"a": 1, "\xff": 2}')

    with pytest.raises(DurationsFileError, match="not UTF-8 text"):
        load_durations(path)


def test_load_rejects_folder(tmp_path: Path) -> None:
    with pytest.raises(DurationsFileError, match="failed to read durations file"):
        load_durations(tmp_path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("3", "expected a JSON object at the top level, got the number 3"),
        ('"text"', 'expected a JSON object at the top level, got the string "text"'),
        ('{"a": "slow"}', 'the value of "a" must be a number of seconds, got the string "slow"'),
        ('{"a": true}', 'the value of "a" must be a number of seconds, got a boolean'),
        ('{"a": -1}', 'the value of "a" must be a finite number >= 0, got -1'),
        ('{"a": NaN}', "NaN is not a valid number of seconds"),
        ('{"a": Infinity}', "Infinity is not a valid number of seconds"),
        ('{"a": 1e999}', 'the value of "a" must be a finite number >= 0, got inf'),
        ('{"a": 1e308}', 'the value of "a" must be at most 2592000 (30 days), got 1e+308'),
        ('{"a": 2592001}', 'the value of "a" must be at most 2592000 (30 days), got 2592001'),
        ('[["a", 1e308]]', 'the seconds of "a" must be at most 2592000 (30 days), got 1e+308'),
        ("[1]", "item 0 of the top-level list must be a [key, seconds] pair"),
        ('[["a", "x"]]', 'the seconds of "a" must be a number of seconds, got the string "x"'),
        ('{"format": "other", "durations": {}}', "\"format\" is 'other', expected 'pytest-autodeploy-durations'"),
        (
            '{"format": "pytest-autodeploy-durations", "version": 2, "durations": {}}',
            '"version" is 2, but this pytest-autodeploy reads only version 1',
        ),
        (
            '{"format": "pytest-autodeploy-durations", "version": true, "durations": {}}',
            '"version" is true, but this pytest-autodeploy reads only version 1',
        ),
        ('{"format": "pytest-autodeploy-durations", "version": 1}', '"durations" must be a JSON object, got null'),
        (
            '{"format": "pytest-autodeploy-durations", "version": 1, "durations": {}, "extra": 1}',
            'unknown top-level field "extra"',
        ),
        (
            '{"format": "pytest-autodeploy-durations", "version": 1, "durations": {"a": 5}}',
            'durations["a"] must be a JSON object, got the number 5',
        ),
        (
            '{"format": "pytest-autodeploy-durations", "version": 1, "durations": {"a": {}}}',
            'durations["a"] is missing "seconds"',
        ),
        (
            '{"format": "pytest-autodeploy-durations", "version": 1, "durations": {"a": {"seconds": 1, "secs": 2}}}',
            'durations["a"] has unknown field "secs"',
        ),
        (
            '{"format": "pytest-autodeploy-durations", "version": 1, "durations": {"a": {"seconds": "1"}}}',
            'durations["a"].seconds must be a number of seconds, got the string "1"',
        ),
        (
            '{"format": "pytest-autodeploy-durations", "version": 1,'
            ' "durations": {"a": {"seconds": 1, "world_size": 0}}}',
            'durations["a"].world_size must be a positive integer, got 0',
        ),
        (
            '{"format": "pytest-autodeploy-durations", "version": 1,'
            ' "durations": {"a": {"seconds": 1, "world_size": 2.5}}}',
            'durations["a"].world_size must be a positive integer, got the number 2.5',
        ),
        (
            '{"format": "pytest-autodeploy-durations", "version": 1,'
            ' "durations": {"a": {"seconds": 1, "updated": "yesterday"}}}',
            "durations[\"a\"].updated must be an ISO 8601 time such as 2026-12-04T19:00:00Z, got 'yesterday'",
        ),
        (
            '{"format": "pytest-autodeploy-durations", "version": 1,'
            ' "durations": {"a": {"seconds": 1, "updated": 20261204}}}',
            'durations["a"].updated must be an ISO 8601 time string, got the number 20261204',
        ),
    ],
)
def test_load_rejects_wrong_shape(tmp_path: Path, data: str, message: str) -> None:
    path = tmp_path / "durations.json"
    path.write_text(data, encoding="utf-8")

    with pytest.raises(DurationsFileError) as excinfo:
        load_durations(path)

    text = str(excinfo.value)
    assert text.startswith(f"invalid durations file '{path}': ")
    assert message in text
    assert text.endswith("Fix the file or delete it to start without recorded durations.")


def test_error_is_value_error() -> None:
    assert issubclass(DurationsFileError, ValueError)


def test_save_then_load_round_trip(tmp_path: Path) -> None:
    table = {
        "z-model": DurationRecord(1.25, 1, "2026-12-04T19:00:00Z"),
        "a-model": DurationRecord(300.0, 8, None),
        "m-model": DurationRecord(7.0, None, "2026-12-01T00:00:00+00:00"),
    }
    path = tmp_path / "nested" / "deeper" / "durations.json"

    save_durations(path, table)

    assert load_durations(path) == table
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert saved["format"] == "pytest-autodeploy-durations"
    assert saved["version"] == 1
    assert list(saved["durations"]) == ["a-model", "m-model", "z-model"]
    assert saved["durations"]["a-model"] == {"seconds": 300.0, "world_size": 8}


def test_save_output_is_stable(tmp_path: Path) -> None:
    table = {"b": DurationRecord(2.0, 1, "2026-12-04T19:00:00Z"), "a": DurationRecord(1.0, 2, "2026-12-04T19:00:00Z")}
    first, second = tmp_path / "first.json", tmp_path / "second.json"

    save_durations(first, table)
    save_durations(second, dict(reversed(list(table.items()))))

    assert first.read_bytes() == second.read_bytes()
    assert first.read_text(encoding="utf-8").endswith("}\n")


def test_save_rounds_to_milliseconds(tmp_path: Path) -> None:
    path = tmp_path / "durations.json"

    save_durations(path, {"a": DurationRecord(1.23456789)})

    assert load_durations(path)["a"].seconds == 1.235


def test_save_replaces_without_leftovers(tmp_path: Path) -> None:
    path = tmp_path / "durations.json"
    path.write_text("old content", encoding="utf-8")

    save_durations(path, {"a": DurationRecord(1.0)})

    assert sorted(os.listdir(tmp_path)) == ["durations.json"]
    assert load_durations(path) == {"a": DurationRecord(1.0)}


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_save_keeps_file_mode(tmp_path: Path) -> None:
    path = tmp_path / "durations.json"
    path.write_text("{}", encoding="utf-8")
    os.chmod(path, 0o640)

    save_durations(path, {"a": DurationRecord(1.0)})

    assert stat.S_IMODE(path.stat().st_mode) == 0o640


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_save_new_file_is_readable(tmp_path: Path) -> None:
    path = tmp_path / "durations.json"

    save_durations(path, {"a": DurationRecord(1.0)})

    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_save_failure_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "durations.json"
    save_durations(path, {"old": DurationRecord(1.0)})
    before = path.read_bytes()

    def fail_replace(source: object, target: object) -> None:
        raise OSError("simulated failure")

    monkeypatch.setattr(os, "replace", fail_replace)
    with pytest.raises(OSError, match="simulated failure"):
        save_durations(path, {"new": DurationRecord(2.0)})

    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["durations.json"]


def test_merge_newest_wins() -> None:
    old = {"a": DurationRecord(10.0, 1, "2026-12-01T00:00:00Z"), "b": DurationRecord(5.0, 1, "2026-12-05T00:00:00Z")}
    new = {"a": DurationRecord(20.0, 1, "2026-12-02T00:00:00Z"), "b": DurationRecord(9.0, 1, "2026-12-04T00:00:00Z")}

    merged = merge_durations(old, new)

    assert merged == {"a": new["a"], "b": old["b"]}


def test_merge_tie_keeps_larger_seconds() -> None:
    stamp = "2026-12-04T19:00:00Z"
    small = {"a": DurationRecord(10.0, 1, stamp)}
    large = {"a": DurationRecord(11.0, 1, stamp)}

    assert merge_durations(small, large)["a"].seconds == 11.0
    assert merge_durations(large, small)["a"].seconds == 11.0


def test_merge_compares_instants_not_text() -> None:
    # 20:00 at +02:00 is 18:00 UTC, so it is older than 19:00Z despite sorting later as text.
    utc = {"a": DurationRecord(1.0, 1, "2026-12-04T19:00:00Z")}
    offset = {"a": DurationRecord(2.0, 1, "2026-12-04T20:00:00+02:00")}

    assert merge_durations(utc, offset)["a"].seconds == 1.0
    assert merge_durations(offset, utc)["a"].seconds == 1.0


def test_merge_untimed_record_is_oldest() -> None:
    untimed = {"a": DurationRecord(100.0)}
    timed = {"a": DurationRecord(1.0, 1, "2000-01-01T00:00:00Z")}

    assert merge_durations(untimed, timed)["a"] == timed["a"]
    assert merge_durations(timed, untimed)["a"] == timed["a"]


def test_merge_order_independent() -> None:
    base = datetime(2026, 12, 4, tzinfo=timezone.utc)
    shards = []
    for shard in range(4):
        table = {}
        for index in range(12):
            # Overlapping keys with clashing times and seconds across shards.
            when = base + timedelta(hours=(index * 7 + shard * 3) % 5)
            seconds = float((index * 13 + shard * 5) % 9)
            world_size = None if (index + shard) % 4 == 0 else 1 + (index + shard) % 3
            table[f"k{index % 8}"] = DurationRecord.measured(seconds, world_size, when)
        shards.append(table)

    results = [merge_durations(*order) for order in itertools.permutations(shards)]

    assert all(result == results[0] for result in results)
    assert all(list(result) == sorted(result) for result in results)


def test_merge_of_nothing_is_empty() -> None:
    assert merge_durations() == {}


def test_merge_saved_shard_files(tmp_path: Path) -> None:
    first, second = tmp_path / "shard1.json", tmp_path / "shard2.json"
    save_durations(first, {"a": DurationRecord(1.0, 1, "2026-12-04T10:00:00Z")})
    save_durations(second, {"a": DurationRecord(2.0, 1, "2026-12-04T11:00:00Z"), "b": DurationRecord(3.0, 2, None)})

    merged = merge_durations(load_durations(first), load_durations(second))

    assert merged == {"a": DurationRecord(2.0, 1, "2026-12-04T11:00:00Z"), "b": DurationRecord(3.0, 2, None)}


def test_measured_stamps_utc_seconds() -> None:
    when = datetime(2026, 12, 4, 21, 0, 5, 999_000, tzinfo=timezone(timedelta(hours=2)))

    record = DurationRecord.measured(12.5, 2, when)

    assert record == DurationRecord(12.5, 2, "2026-12-04T19:00:05Z")


def test_measured_defaults_to_now() -> None:
    before = datetime.now(timezone.utc).replace(microsecond=0)

    record = DurationRecord.measured(1.0, 1)

    assert before <= record.updated_at() <= datetime.now(timezone.utc)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((-1.0,), "seconds must be a finite number >= 0"),
        ((float("nan"),), "seconds must be a finite number >= 0"),
        ((1e308,), "seconds must be at most 2592000"),
        ((1.0, 0), "world_size must be a positive integer"),
        ((1.0, 1, "not a time"), "updated must be an ISO 8601 time"),
        ((1.0, 1, 20261204), "updated must be an ISO 8601 time string"),
    ],
)
def test_record_rejects_invalid_fields(arguments: tuple[object, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DurationRecord(*arguments)  # type: ignore[arg-type]


def test_estimate_uses_record() -> None:
    table = {"a": DurationRecord(42.0, 2, None)}

    assert estimate_seconds("a", 2, table) == 42.0
    assert estimate_seconds("a", 8, table) == 42.0


@pytest.mark.parametrize(("world_size", "expected"), [(1, 300.0), (2, 450.0), (4, 600.0), (8, 900.0)])
def test_estimate_default_table(world_size: int, expected: float) -> None:
    assert estimate_seconds("unknown", world_size, {}) == expected
    assert DEFAULT_SECONDS_PER_WORLD_SIZE[world_size] == expected


@pytest.mark.parametrize(("world_size", "expected"), [(3, 525.0), (5, 675.0), (6, 750.0), (7, 825.0)])
def test_estimate_interpolates_between_sizes(world_size: int, expected: float) -> None:
    assert estimate_seconds("unknown", world_size, {}) == pytest.approx(expected)


def test_estimate_scales_beyond_largest_size() -> None:
    assert estimate_seconds("unknown", 16, {}) == 1800.0


def test_estimate_below_smallest_custom_size() -> None:
    assert estimate_seconds("unknown", 1, {}, defaults={2: 100.0, 4: 200.0}) == 100.0


def test_estimate_grows_with_world_size() -> None:
    estimates = [estimate_seconds("unknown", world_size, {}) for world_size in range(1, 33)]

    assert estimates == sorted(estimates)


@pytest.mark.parametrize("world_size", [0, -2])
def test_estimate_rejects_invalid_world_size(world_size: int) -> None:
    with pytest.raises(ValueError, match="invalid world size for 'm'"):
        estimate_seconds("m", world_size, {})


def test_estimate_rejects_empty_defaults() -> None:
    with pytest.raises(ValueError, match="defaults must contain"):
        estimate_seconds("m", 1, {}, defaults={})
