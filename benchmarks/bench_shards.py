"""Balance of CI shards: max / mean GPU-seconds per shard.

The script generates a list of models with the TensorRT-LLM world-size mix
(about 40% 1 GPU, 27% 2, 19% 4, 14% 8) and varied durations: a seeded
lognormal, longer for wider models. It splits the list into N shards with the
function that ``--autodeploy-shard`` and ``matrix`` use. Then it reports the
largest shard's GPU-seconds divided by the mean (target: at most 1.05), and
checks that every model lands in exactly one shard.

    python benchmarks/bench_shards.py [--models 140] [--shards 8] [--seeds 20] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys

from pytest_autodeploy.shards import split_shards

WORLD_SIZE_MIX = [1] * 40 + [2] * 27 + [4] * 19 + [8] * 14
# An estimate of minutes per world size: wider models load and compile longer.
MINUTES_PER_WORLD_SIZE = {1: 5.0, 2: 7.5, 4: 10.0, 8: 15.0}


def generate(models: int, seed: int) -> list[tuple[str, float]]:
    """Return (key, GPU-seconds) pairs for a generated registry."""
    rng = random.Random(seed)
    items = []
    for index in range(models):
        world_size = rng.choice(WORLD_SIZE_MIX)
        seconds = 60 * MINUTES_PER_WORLD_SIZE[world_size] * rng.lognormvariate(0.0, 0.6)
        items.append((f"org/model-{index}", world_size * seconds))
    return items


def measure(models: int, shards: int, seed: int) -> dict[str, float]:
    items = generate(models, seed)
    weights = dict(items)
    split = split_shards(items, shards)

    placed = [key for shard in split for key in shard]
    if sorted(placed) != sorted(weights):
        raise SystemExit(f"seed {seed}: the shards do not cover every model exactly once")

    totals = [sum(weights[key] for key in shard) for shard in split]
    mean = statistics.fmean(totals)
    return {
        "seed": seed,
        "max_over_mean": max(totals) / mean,
        # No split can beat the largest single model, so report it too.
        "largest_model_over_mean": max(weights.values()) / mean,
        "empty_shards": sum(1 for shard in split if not shard),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=140, help="Models per generated registry (default: 140)")
    parser.add_argument("--shards", type=int, default=8, help="Number of shards (default: 8)")
    parser.add_argument("--seeds", type=int, default=20, help="Generated registries to measure (default: 20)")
    parser.add_argument("--json", metavar="FILE", help="Also write the results as JSON")
    args = parser.parse_args()

    results = [measure(args.models, args.shards, seed) for seed in range(args.seeds)]
    ratios = [result["max_over_mean"] for result in results]

    print(f"{args.models} models, {args.shards} shards, {args.seeds} generated registries")
    print(f"max/mean GPU-seconds: median {statistics.median(ratios):.4f}, worst {max(ratios):.4f} (target <= 1.05)")
    limited = [result for result in results if result["max_over_mean"] > 1.05]
    for result in limited:
        print(
            f"  seed {result['seed']}: {result['max_over_mean']:.4f}; its largest model alone is "
            f"{result['largest_model_over_mean']:.4f} x the mean shard"
        )
    print(f"empty shards: {sum(result['empty_shards'] for result in results)}")

    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"models": args.models, "shards": args.shards, "results": results}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
