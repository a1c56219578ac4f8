"""Benchmark: collecting a 10,000-entry registry against an equivalent parametrize module.

Run from the repository root with the project's environment::

    python benchmarks/bench_collection.py [--entries N] [--repeats N] [--cache] [--json FILE]

In a temporary folder it writes a v2.0 registry of ``--entries`` models and a
plain test module that parametrizes one test over the same test ids. It then
times ``python -m pytest --co -q`` as a subprocess (wall clock, fresh
interpreter each time) for:

- registry: ``--autodeploy-registry=DIR``
- parametrize: the plain module (the plugin is loaded but disabled)
- startup: a module with a single test, the fixed cost of starting pytest

The series run interleaved (registry, parametrize, startup, registry, ...) so
that a change in machine load affects them alike, and the medians are reported.
The main result is registry/parametrize, also after subtracting the startup
median from both. Nothing here needs a GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The world size mix of the TensorRT-LLM AutoDeploy registry, rounded.
WORLD_SIZE_WEIGHTS = {1: 40, 2: 27, 4: 19, 8: 14}
# Runtime configs that some entries list as a third file.
EXTRA_CONFIGS = {
    "multimodal.yaml": "model_factory: AutoModelForImageTextToText\nmax_seq_len: 4096\n",
    "demollm_triton.yaml": "runtime: demollm\nattn_backend: triton\n",
    "simple_shard_only.yaml": "transforms:\n  detect_sharding:\n    simple_shard_only: true\n",
}
BASELINE_CONFIG = """\
runtime: trtllm
attn_backend: flashinfer
compile_backend: torch-cudagraph
benchmark_enabled: true
max_seq_len: 2048
max_batch_size: 8
cuda_graph_config:
  enable_padding: false
  max_batch_size: 8
transforms:
  detect_sharding:
    simple_shard_only: false
"""
# Share of entries that list a third config file, and of entries that repeat
# the previous name with another config_id (test id "name[config_id]").
THIRD_CONFIG_SHARE = 0.15
CONFIG_ID_SHARE = 0.05
TARGET_RATIO = 1.3


@dataclass(frozen=True)
class Entry:
    name: str
    config_id: str | None
    yaml_extra: tuple[str, ...]

    @property
    def test_id(self) -> str:
        # The plugin's id rule: a name used by several entries gets its config_id.
        return self.name if self.config_id is None else f"{self.name}[{self.config_id}]"


def make_entries(count: int, seed: int) -> list[Entry]:
    """Create ``count`` registry entries with the world size mix above.

    Names carry no parameter count such as "7B", because the registry lint
    would warn about names whose size disagrees with the world size.
    """
    rng = random.Random(seed)
    sizes = list(WORLD_SIZE_WEIGHTS)
    weights = list(WORLD_SIZE_WEIGHTS.values())
    extras = sorted(EXTRA_CONFIGS)

    entries: list[Entry] = []
    while len(entries) < count:
        index = len(entries)
        world_size = rng.choices(sizes, weights)[0]
        files = ["dashboard_default.yaml", f"world_size_{world_size}.yaml"]
        if rng.random() < THIRD_CONFIG_SHARE:
            files.append(rng.choice(extras))
        name = f"org{index % 97}/model-{index:05d}"

        if entries and entries[-1].config_id is None and rng.random() < CONFIG_ID_SHARE:
            # Give the previous entry and this one the same name and distinct config_ids.
            previous = entries[-1]
            entries[-1] = Entry(previous.name, "base", previous.yaml_extra)
            entries.append(Entry(previous.name, f"ws{world_size}", tuple(files)))
            continue
        entries.append(Entry(name, None, tuple(files)))
    return entries[:count]


def write_registry(folder: Path, entries: list[Entry]) -> None:
    configs = folder / "configs"
    configs.mkdir(parents=True)
    (configs / "dashboard_default.yaml").write_text(BASELINE_CONFIG, encoding="utf-8")
    for world_size in WORLD_SIZE_WEIGHTS:
        (configs / f"world_size_{world_size}.yaml").write_text(f"world_size: {world_size}\n", encoding="utf-8")
    for name, text in EXTRA_CONFIGS.items():
        (configs / name).write_text(text, encoding="utf-8")

    lines = ["version: '2.0'", "description: Generated registry for the collection benchmark", "models:"]
    for entry in entries:
        lines.append(f"- name: {entry.name}")
        if entry.config_id is not None:
            lines.append(f"  config_id: {entry.config_id}")
        lines.append(f"  yaml_extra: [{', '.join(entry.yaml_extra)}]")
    (folder / "models.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_parametrize_module(path: Path, test_ids: list[str]) -> None:
    # pytest uses a str parameter unchanged as its id (for ASCII text), so the
    # node ids end in the same test ids that the plugin produces.
    lines = ["import pytest", "", "TEST_IDS = ["]
    lines.extend(f"    {test_id!r}," for test_id in test_ids)
    lines += ["]", "", "", '@pytest.mark.parametrize("test_id", TEST_IDS)', "def test_model(test_id):", "    pass", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


@dataclass
class Series:
    """A pytest command and the wall times of its runs."""

    name: str
    argv: list[str]
    expected_items: int
    seconds: list[float] = field(default_factory=list)
    collected: int | None = None
    warned: bool = False
    node_ids: list[str] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def parse_collected(output: str) -> int | None:
    """Return the item count from the summary line of ``pytest --co -q``, such as "10000 tests collected in 0.9s"."""
    for line in reversed(output.splitlines()):
        words = line.split()
        if len(words) >= 3 and words[0].isdigit() and words[1] in ("test", "tests") and words[2] == "collected":
            return int(words[0])
    return None


def time_once(series: Series, cwd: Path, timeout: float) -> None:
    start = time.perf_counter()
    result = subprocess.run(series.argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    elapsed = time.perf_counter() - start

    if result.returncode != 0:
        raise SystemExit(
            f"{series.name}: pytest exited with code {result.returncode}: {' '.join(series.argv)}\n"
            f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    collected = parse_collected(result.stdout)
    if collected != series.expected_items:
        raise SystemExit(f"{series.name}: expected {series.expected_items} items, pytest collected {collected}")
    series.collected = collected
    # Printing warnings (registry lints, for example) is extra work that only
    # one series would do, so the table shows where they appeared.
    series.warned = "warnings summary" in result.stdout
    series.node_ids = [line for line in result.stdout.splitlines() if "::" in line]
    series.seconds.append(elapsed)


def extract_test_id(node_id: str) -> str:
    """Return the test id in a registry node id (``models.yaml::ID``) or a parametrize one (``test_x.py::test_model[ID]``)."""
    _, _, rest = node_id.partition("::")
    if rest.startswith("test_model[") and rest.endswith("]"):
        return rest[len("test_model[") : -1]
    return rest


def check_same_test_ids(registry: Series, parametrize: Series) -> None:
    registry_ids = [extract_test_id(node_id) for node_id in registry.node_ids]
    parametrize_ids = [extract_test_id(node_id) for node_id in parametrize.node_ids]
    if registry_ids != parametrize_ids:
        raise SystemExit("the registry and the parametrize module collected different test ids, so their times are not comparable")


def pytest_argv(*args: str, cache: bool = False) -> list[str]:
    argv = [sys.executable, "-m", "pytest", "--co", "-q"]
    if not cache:
        argv += ["-p", "no:cacheprovider"]
    return argv + list(args)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=10_000, help="Registry entries to generate (default: 10000)")
    parser.add_argument("--repeats", type=int, default=5, help="Timed runs of each command (default: 5)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="Untimed rounds before the timed ones, so that byte-code caches are written (default: 1)",
    )
    parser.add_argument("--seed", type=int, default=1, help="Seed of the generated registry (default: 1)")
    parser.add_argument(
        "--cache",
        action="store_true",
        help="Also time the registry with pytest's cache provider enabled, after two warm-up runs",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="Seconds before one pytest run is killed (default: 300)")
    parser.add_argument("--json", metavar="FILE", type=Path, help="Write the results as JSON to FILE")
    args = parser.parse_args(argv)
    if args.entries < 1 or args.repeats < 1:
        parser.error("--entries and --repeats must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be 0 or more")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-collection-") as temp:
        root = Path(temp)
        # An ini file here makes the folder pytest's rootdir, so no config
        # file from an enclosing folder changes the runs.
        (root / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
        entries = make_entries(args.entries, args.seed)
        write_registry(root / "registry", entries)
        write_parametrize_module(root / "test_parametrize.py", [entry.test_id for entry in entries])
        (root / "test_startup.py").write_text("def test_startup():\n    pass\n", encoding="utf-8")

        registry_arg = f"--autodeploy-registry={root / 'registry'}"
        series = [
            Series("registry", pytest_argv(registry_arg), len(entries)),
            Series("parametrize", pytest_argv("test_parametrize.py"), len(entries)),
            Series("startup", pytest_argv("test_startup.py"), 1),
        ]
        if args.cache:
            cached = Series("registry+cache", pytest_argv(registry_arg, cache=True), len(entries))
            for _ in range(2):
                subprocess.run(cached.argv, cwd=root, capture_output=True, timeout=args.timeout, check=False)
            series.insert(1, cached)

        for _ in range(args.warmup):
            for command in series:
                subprocess.run(command.argv, cwd=root, capture_output=True, timeout=args.timeout, check=False)

        for repeat in range(args.repeats):
            for command in series:
                time_once(command, root, args.timeout)
            print(f"run {repeat + 1}/{args.repeats}: " + ", ".join(f"{command.name} {command.seconds[-1]:.2f} s" for command in series), flush=True)
            if repeat == 0:
                check_same_test_ids(series[0], next(command for command in series if command.name == "parametrize"))

    return summarize(args, series)


def summarize(args: argparse.Namespace, series: list[Series]) -> dict[str, Any]:
    medians = {command.name: command.median for command in series}
    startup = medians["startup"]
    results: dict[str, Any] = {
        "benchmark": "collection",
        "entries": args.entries,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "series": {
            command.name: {
                "argv": command.argv[1:],
                "seconds": command.seconds,
                "median_s": command.median,
                "collected": command.collected,
                "warnings_summary": command.warned,
            }
            for command in series
        },
        "ratio": medians["registry"] / medians["parametrize"],
        "ratio_without_startup": (medians["registry"] - startup) / (medians["parametrize"] - startup),
        "target_ratio": TARGET_RATIO,
    }
    if "registry+cache" in medians:
        results["ratio_cache"] = medians["registry+cache"] / medians["parametrize"]
        results["ratio_cache_without_startup"] = (medians["registry+cache"] - startup) / (medians["parametrize"] - startup)
    return results


def print_results(results: dict[str, Any]) -> None:
    print()
    print(f"collection of {results['entries']} items, median of {results['repeats']} runs")
    print(f"{'series':<16}{'median s':>10}{'min s':>9}{'max s':>9}{'warnings':>10}")
    for name, measured in results["series"].items():
        print(f"{name:<16}{measured['median_s']:>10.3f}{min(measured['seconds']):>9.3f}{max(measured['seconds']):>9.3f}{'yes' if measured['warnings_summary'] else 'no':>10}")
    print()
    target = results["target_ratio"]
    ratio = results["ratio"]
    print(f"registry/parametrize: {ratio:.2f} (target <= {target}: {'met' if ratio <= target else 'NOT met'})")
    print(f"registry/parametrize without startup: {results['ratio_without_startup']:.2f}")
    if "ratio_cache" in results:
        print(f"registry+cache/parametrize: {results['ratio_cache']:.2f}")
        print(f"registry+cache/parametrize without startup: {results['ratio_cache_without_startup']:.2f}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    results = run(args)
    print_results(results)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
