from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_autodeploy.shards import (
    SHARD_OPTION,
    ShardSpecError,
    parse_shard_spec,
    split_shards,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

# Share of each world size in a TensorRT-LLM-like model registry.
WORLD_SIZE_SHARES = {1: 0.44, 2: 0.27, 4: 0.19, 8: 0.10}

# Typical seconds per test by world size; durations vary around these.
BASE_SECONDS = {1: 300.0, 2: 450.0, 4: 600.0, 8: 900.0}


def make_registry_items(count: int, seed: int) -> list[tuple[str, float]]:
    """Build ``(key, gpu_seconds)`` items with the registry's world-size mix and lognormal durations."""
    rng = random.Random(seed)
    sizes: list[int] = []
    for world_size, share in sorted(WORLD_SIZE_SHARES.items(), reverse=True):
        sizes += [world_size] * round(share * count)
    sizes += [1] * (count - len(sizes))
    sizes = sizes[:count]
    rng.shuffle(sizes)

    items = []
    for index, world_size in enumerate(sizes):
        seconds = BASE_SECONDS[world_size] * rng.lognormvariate(0.0, 0.6)
        items.append((f"org/model-{index:03d}[ws{world_size}]", world_size * seconds))
    return items


def shard_totals(items: list[tuple[str, float]], shards: list[list[str]]) -> list[float]:
    seconds_by_key = dict(items)
    return [sum(seconds_by_key[key] for key in shard) for shard in shards]


def test_split_puts_every_item_in_one_shard() -> None:
    items = make_registry_items(140, seed=1)

    shards = split_shards(items, 8)

    placed = [key for shard in shards for key in shard]
    assert len(shards) == 8
    assert sorted(placed) == sorted(key for key, _ in items)
    assert len(placed) == len(set(placed))


def test_split_keeps_input_order_in_shard() -> None:
    items = make_registry_items(140, seed=2)
    position = {key: index for index, (key, _) in enumerate(items)}

    shards = split_shards(items, 8)

    for shard in shards:
        assert [position[key] for key in shard] == sorted(position[key] for key in shard)


def test_split_follows_lpt_rule() -> None:
    items = [("a", 5.0), ("b", 4.0), ("c", 3.0), ("d", 3.0), ("e", 1.0)]

    shards = split_shards(items, 2)

    # a and b open the two shards. Then c joins b (4 < 5), d joins a (5 < 7)
    # and e joins b (7 < 8), which gives totals of 8 and 8.
    assert shards == [["a", "d"], ["b", "c", "e"]]


def test_split_breaks_total_ties_by_shard_index() -> None:
    items = [("x", 2.0), ("y", 2.0), ("z", 2.0)]

    assert split_shards(items, 3) == [["x"], ["y"], ["z"]]
    assert split_shards(items, 2) == [["x", "z"], ["y"]]


@pytest.mark.parametrize("count", [8, 9, 20, 140])
def test_split_fills_every_shard(count: int) -> None:
    items = make_registry_items(count, seed=count)

    shards = split_shards(items, 8)

    assert all(shard for shard in shards), [len(shard) for shard in shards]


def test_split_fills_shards_with_zero_seconds() -> None:
    items = [(f"t{index}", 0.0) for index in range(5)]

    shards = split_shards(items, 4)

    assert all(shard for shard in shards)
    assert shards == [["t0", "t4"], ["t1"], ["t2"], ["t3"]]


def test_split_fewer_items_than_shards() -> None:
    shards = split_shards([("b", 1.0), ("a", 3.0)], 4)

    assert shards == [["a"], ["b"], [], []]


def test_split_empty_input() -> None:
    assert split_shards([], 3) == [[], [], []]


def test_split_balances_registry_mix() -> None:
    items = make_registry_items(140, seed=7)

    totals = shard_totals(items, split_shards(items, 8))

    ratio = max(totals) / (sum(totals) / len(totals))
    print(f"shard max/mean for 140 items on 8 shards: {ratio:.4f}")
    assert ratio <= 1.05


@pytest.mark.parametrize("seed", range(30))
def test_split_balance_across_seeds(seed: int) -> None:
    items = make_registry_items(140, seed=100 + seed)

    totals = shard_totals(items, split_shards(items, 8))

    # A lognormal tail sometimes draws one item larger than the mean shard, and
    # no split can then beat that item, so compare with the larger of the two.
    largest_item = max(gpu_seconds for _, gpu_seconds in items)
    best_possible = max(sum(totals) / len(totals), largest_item)
    assert max(totals) / best_possible <= 1.05


def test_split_ignores_input_order_for_membership() -> None:
    items = make_registry_items(140, seed=3)
    shuffled = list(items)
    random.Random(0).shuffle(shuffled)

    original = [set(shard) for shard in split_shards(items, 8)]
    reordered = [set(shard) for shard in split_shards(shuffled, 8)]

    assert original == reordered


SUBPROCESS_SPLIT = """
import json, sys
from pytest_autodeploy.shards import split_shards
items = [tuple(item) for item in json.load(sys.stdin)]
json.dump(split_shards(items, 8), sys.stdout)
"""


@pytest.mark.parametrize("hash_seed", ["0", "12345"])
def test_split_same_in_other_process(hash_seed: str) -> None:
    items = make_registry_items(140, seed=4)
    env = dict(os.environ, PYTHONHASHSEED=hash_seed, PYTHONPATH=str(REPO_ROOT))

    completed = subprocess.run(
        [sys.executable, "-c", SUBPROCESS_SPLIT],
        input=json.dumps(items),
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        check=False,
        timeout=60,
    )

    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == split_shards(items, 8)


@pytest.mark.parametrize(
    ("items", "n", "message"),
    [
        ([("a", 1.0)], 0, "invalid shard count"),
        ([("a", -1.0)], 2, "invalid GPU-seconds for 'a'"),
        ([("a", float("nan"))], 2, "invalid GPU-seconds for 'a'"),
        ([("a", float("inf"))], 2, "invalid GPU-seconds for 'a'"),
    ],
)
def test_split_rejects_invalid_input(items: list[tuple[str, float]], n: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_shards(items, n)


def test_split_keeps_first_of_duplicates() -> None:
    items = [("a", 5.0), ("b", 4.0), ("a", 100.0), ("c", 3.0)]

    shards = split_shards(items, 2)

    assert shards == [["a"], ["b", "c"]]


def test_split_more_shards_than_items() -> None:
    items = [("a", 0.0), ("b", 2.0), ("c", 1.0)]

    shards = split_shards(items, 5)

    assert shards == [["b"], ["c"], ["a"], [], []]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1/1", (1, 1)), ("1/4", (1, 4)), ("4/4", (4, 4)), (" 2/8 ", (2, 8)), ("03/10", (3, 10)), ("1/10000", (1, 10000))],
)
def test_parse_shard_spec_accepts(text: str, expected: tuple[int, int]) -> None:
    assert parse_shard_spec(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("3/2", "invalid --autodeploy-shard value '3/2': K must be between 1 and N, e.g. 1/4"),
        ("0/4", "invalid --autodeploy-shard value '0/4': K must be between 1 and N, e.g. 1/4"),
        ("1/0", "invalid --autodeploy-shard value '1/0': N must be at least 1, e.g. 1/4"),
        ("0/0", "invalid --autodeploy-shard value '0/0': N must be at least 1, e.g. 1/4"),
        ("1/10001", "invalid --autodeploy-shard value '1/10001': N must be at most 10000, e.g. 1/4"),
        ("1/100000000", "invalid --autodeploy-shard value '1/100000000': N must be at most 10000, e.g. 1/4"),
        ("", "invalid --autodeploy-shard value '': expected K/N with whole numbers K and N, e.g. 1/4"),
        ("2", "invalid --autodeploy-shard value '2': expected K/N with whole numbers K and N, e.g. 1/4"),
        ("-1/4", "invalid --autodeploy-shard value '-1/4': expected K/N with whole numbers K and N, e.g. 1/4"),
        ("1.5/4", "invalid --autodeploy-shard value '1.5/4': expected K/N with whole numbers K and N, e.g. 1/4"),
        ("1/4/2", "invalid --autodeploy-shard value '1/4/2': expected K/N with whole numbers K and N, e.g. 1/4"),
        ("١/٤", "invalid --autodeploy-shard value '١/٤': expected K/N with whole numbers K and N, e.g. 1/4"),
    ],
)
def test_parse_shard_spec_rejects(text: str, message: str) -> None:
    with pytest.raises(ShardSpecError) as excinfo:
        parse_shard_spec(text)

    assert str(excinfo.value) == message
    assert isinstance(excinfo.value, ValueError)


def test_parse_shard_spec_names_option() -> None:
    with pytest.raises(ShardSpecError, match="^invalid autodeploy_shard value '5/4'"):
        parse_shard_spec("5/4", option="autodeploy_shard")

    assert SHARD_OPTION == "--autodeploy-shard"
