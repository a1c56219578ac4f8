"""Benchmark: the plugin's GPU scheduling against fixed-slice and round-robin xdist runs.

Run from the repository root with the project's environment::

    python benchmarks/bench_gpu_schedule.py [--entries N] [--scale X] [--warm] [--json FILE]

No GPU is needed. In a temporary folder the script writes a registry of
``--entries`` models and a fake model command, ``python -I -S fake.py MODEL
WORLD_SIZE RECORD_FILE STATE_DIR``, which every run below uses alike. The
nominal work of a model is the number of seconds at the end of its name
(``bench/m042-d1.35`` has 1.35 s of work). The command models GPU
time-sharing: k processes that share a GPU each progress at 1/k speed, so an
item alone on its GPUs takes its nominal time. FAKE_SCRIPT below describes
the model. Every run simulates one node with 8 GPUs:

- ours-cold: ``-n auto --autodeploy-gpus 8 --autodeploy-command ...`` with a
  durations file that does not exist yet, so the scheduler estimates each
  model from its world size. The run writes the durations file.
- ours-warm, only with ``--warm``: the same command, which now reads the
  measured durations.
- baseline-slices: one pytest run per world size w in 1, 2, 4, 8, each with
  ``-n 8//w --dist load -m world_size_w`` over a test module that uses the
  ``autodeploy_model`` fixture. Worker gwK runs on GPUs K*w .. K*w+w-1.
- baseline-round-robin: one run with ``-n 8 --dist load`` over the same module.
  Worker gwK runs on GPUs K .. K+w-1 modulo 8, so items can share GPUs and
  then slow each other down.

From the records each run gets its makespan (first start to last end) and
the ratio makespan/LB. The lower bound LB = max(longest nominal work, sum(world
size x nominal work) / 8) comes from the nominal work, not from the measured
item times, which include the slowdown of shared GPUs. Each run also gets the
number of oversubscriptions (pairs of items that held the same GPU id at
overlapping times), the mean slowdown (item time over nominal work) and the
items whose CUDA_VISIBLE_DEVICES did not list exactly world-size distinct GPUs.

NOTE: the time-sharing model is an estimate of real contention. A real GPU
that two model servers share may instead run out of memory and fail both
items, which would make the round-robin baseline worse than measured here.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

GPU_COUNT = 8
# Shares of the world sizes, in percent. The rest of the entries get 1 GPU.
WORLD_SIZE_SHARES = {2: 27, 4: 19, 8: 10}
# Larger models load and compile longer. These factors follow the ratios of
# the plugin's default estimates per world size (300, 450, 600 and 900 s).
DURATION_FACTORS = {1: 1.0, 2: 1.5, 4: 2.0, 8: 3.0}
# Lognormal spread of the base duration, clipped so that no item dominates.
LOGNORMAL_SIGMA = 0.5
BASE_SECONDS_RANGE = (0.3, 3.0)

TARGET_MAKESPAN_OVER_LB = 1.10

# The fake model command. It must start fast and import only the standard
# library, because it runs as "python -I -S" once per item.
FAKE_SCRIPT = '''\
"""fake.py MODEL WORLD_SIZE RECORD_FILE STATE_DIR: a model command that models GPU time-sharing.

The nominal work, in seconds, is the number after the last "-d" in MODEL.
The process registers itself on each GPU id in CUDA_VISIBLE_DEVICES by
creating the file STATE_DIR/gpu-<id>/<pid>. Then, in steps of at most
20 ms, it adds the elapsed time divided by the maximum number of processes
registered on one of its GPUs to its progress, and it ends when the progress
reaches the nominal work. So a process alone on its GPUs takes its nominal
time, and k processes that share a GPU each run at 1/k speed.

This is an estimate of real contention. Real GPUs may instead fail with
out-of-memory errors when processes share them.

At the end the process removes its files and appends one line to
RECORD_FILE: model, world size, CUDA_VISIBLE_DEVICES, start and end time
(seconds since the epoch) and the nominal work. The line goes out in one
os.write() call on an O_APPEND file descriptor, so lines of parallel
processes do not interleave.
"""

from __future__ import annotations

import os
import sys
import time

STEP_SECONDS = 0.02


def main() -> None:
    model, world_size, record, state = sys.argv[1:5]
    work = float(model.rsplit("-d", 1)[1])
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    # dict.fromkeys drops repeated ids, which would otherwise fail to register twice.
    gpus = list(dict.fromkeys(gpu for gpu in visible.split(",") if gpu))
    folders = [os.path.join(state, f"gpu-{gpu}") for gpu in gpus]

    registered = []
    start = time.time()
    try:
        for folder in folders:
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, str(os.getpid()))
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            registered.append(path)

        progress = 0.0
        last = time.monotonic()
        while progress < work:
            # The count includes this process, so it is at least 1.
            sharers = max((len(os.listdir(folder)) for folder in folders), default=1)
            time.sleep(min(STEP_SECONDS, (work - progress) * sharers))
            now = time.monotonic()
            progress += (now - last) / sharers
            last = now
    finally:
        for path in registered:
            os.remove(path)
    end = time.time()

    line = f"{model} {world_size} {visible or '-'} {start:.6f} {end:.6f} {work}\\n"
    fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


if __name__ == "__main__":
    main()
'''

BASELINE_MODULE = """\
import os
import subprocess
import sys
from pathlib import Path

FAKE_COMMAND = Path(__file__).with_name("fake.py")
GPU_COUNT = 8


def worker_gpus(worker: int, world_size: int) -> list[int]:
    # BENCH_GPU_MODE picks the fixed placement that a plain xdist run would use.
    if os.environ["BENCH_GPU_MODE"] == "slices":
        return list(range(worker * world_size, worker * world_size + world_size))
    return [(worker + offset) % GPU_COUNT for offset in range(world_size)]


def test_model(autodeploy_model):
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    gpus = worker_gpus(worker, autodeploy_model.world_size)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=",".join(str(gpu) for gpu in gpus))
    argv = [
        sys.executable,
        "-I",
        "-S",
        str(FAKE_COMMAND),
        autodeploy_model.name,
        str(autodeploy_model.world_size),
        os.environ["BENCH_RECORD"],
        os.environ["BENCH_STATE"],
    ]
    subprocess.run(argv, env=env, check=True, timeout=600)
"""


@dataclass(frozen=True)
class Model:
    name: str
    world_size: int
    seconds: float


@dataclass(frozen=True)
class Record:
    """One line that the fake command wrote."""

    model: str
    world_size: int
    gpus: tuple[str, ...]
    start: float
    end: float
    # Nominal work in seconds, the item time on GPUs that no other item uses.
    work: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class RunResult:
    """The measurements of one benchmark run, which may span several pytest runs."""

    name: str
    commands: list[str]
    wall_s: float
    makespan_s: float
    lower_bound_s: float
    makespan_over_lb: float
    # Nominal GPU-seconds over 8 x makespan, so time lost to sharing a GPU does not count as use.
    gpu_utilization: float
    oversubscriptions: int
    # Mean of item time over nominal work: about 1 for an item alone on its
    # GPUs, up to k for an item that shares a GPU with k - 1 others.
    mean_slowdown: float
    median_handover_s: float | None
    wrong_gpu_count: int
    missing: int
    duplicated: int
    items: int
    # Every record line as [model, world size, GPU ids, start, end, nominal work], for timeline plots.
    records: list[list[Any]]
    # xdist workers of each pytest run, None where its status line was not found.
    workers: list[int | None] = field(default_factory=list)


def make_models(count: int, scale: float, seed: int) -> list[Model]:
    """Create ``count`` models with the world size shares above and seeded lognormal durations."""
    rng = random.Random(seed)
    sizes: list[int] = []
    for world_size, share in WORLD_SIZE_SHARES.items():
        sizes += [world_size] * round(count * share / 100)
    sizes += [1] * (count - len(sizes))
    rng.shuffle(sizes)

    models = []
    low, high = BASE_SECONDS_RANGE
    for index, world_size in enumerate(sizes):
        base = min(max(rng.lognormvariate(0.0, LOGNORMAL_SIGMA), low), high)
        seconds = round(base * DURATION_FACTORS[world_size] * scale, 2)
        # The name carries the duration, so the fake command needs no lookup.
        # It has no "7B"-style size, which the registry lint would compare
        # with the world size.
        models.append(Model(f"bench/m{index:03d}-d{seconds:.2f}", world_size, seconds))
    return models


def write_registry(folder: Path, models: list[Model]) -> None:
    configs = folder / "configs"
    configs.mkdir(parents=True)
    (configs / "dashboard_default.yaml").write_text("runtime: trtllm\nbenchmark_enabled: true\n", encoding="utf-8")
    for world_size in DURATION_FACTORS:
        (configs / f"world_size_{world_size}.yaml").write_text(f"world_size: {world_size}\n", encoding="utf-8")

    lines = ["version: '2.0'", "description: Generated registry for the GPU scheduling benchmark", "models:"]
    for model in models:
        lines.append(f"- name: {model.name}")
        lines.append(f"  yaml_extra: [dashboard_default.yaml, world_size_{model.world_size}.yaml]")
    (folder / "models.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_records(path: Path) -> list[Record]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        model, world_size, gpus, start, end, work = line.split()
        gpu_ids = () if gpus == "-" else tuple(gpus.split(","))
        records.append(Record(model, int(world_size), gpu_ids, float(start), float(end), float(work)))
    return records


def count_oversubscriptions(records: list[Record]) -> int:
    """Count pairs of records that share a GPU id and overlap in time."""
    pairs = 0
    for first, second in itertools.combinations(records, 2):
        overlap = first.start < second.end and second.start < first.end
        if overlap and set(first.gpus) & set(second.gpus):
            pairs += 1
    return pairs


def median_handover(records: list[Record]) -> float | None:
    """Return the median time from one item's end to the next item's start on the same GPU.

    This is the per-item overhead that a GPU sits idle for when work is waiting:
    pytest, xdist, the lease and the command's start-up.
    """
    gaps = []
    for gpu in {gpu for record in records for gpu in record.gpus}:
        on_gpu = sorted((record for record in records if gpu in record.gpus), key=lambda record: record.start)
        gaps += [later.start - earlier.end for earlier, later in zip(on_gpu, on_gpu[1:]) if later.start >= earlier.end]
    return statistics.median(gaps) if gaps else None


def nominal_lower_bound(models: list[Model]) -> float:
    """Return max(longest nominal work, nominal GPU-seconds / 8), a lower bound of any run's makespan."""
    longest = max(model.seconds for model in models)
    gpu_seconds = sum(model.world_size * model.seconds for model in models)
    return max(longest, gpu_seconds / GPU_COUNT)


def measure(name: str, commands: list[str], wall_s: float, records: list[Record], models: list[Model]) -> RunResult:
    if not records:
        raise SystemExit(f"{name}: the fake command wrote no records. Run this command by hand to see why: {commands[0]}")
    makespan = max(record.end for record in records) - min(record.start for record in records)
    lower_bound = nominal_lower_bound(models)
    gpu_seconds = sum(model.world_size * model.seconds for model in models)
    # A model with 0 nominal work has no slowdown to measure.
    slowdowns = [record.seconds / record.work for record in records if record.work > 0]

    valid_ids = {str(gpu) for gpu in range(GPU_COUNT)}
    wrong = [
        record
        for record in records
        if len(set(record.gpus)) != record.world_size
        or len(record.gpus) != record.world_size
        or not set(record.gpus) <= valid_ids
    ]
    seen = [record.model for record in records]
    expected = {model.name for model in models}

    return RunResult(
        name=name,
        commands=commands,
        wall_s=wall_s,
        makespan_s=makespan,
        lower_bound_s=lower_bound,
        makespan_over_lb=makespan / lower_bound,
        gpu_utilization=gpu_seconds / (GPU_COUNT * makespan),
        oversubscriptions=count_oversubscriptions(records),
        mean_slowdown=statistics.fmean(slowdowns) if slowdowns else 1.0,
        median_handover_s=median_handover(records),
        wrong_gpu_count=len(wrong),
        missing=len(expected - set(seen)),
        duplicated=len(seen) - len(set(seen)),
        items=len(records),
        records=[
            [record.model, record.world_size, ",".join(record.gpus), record.start, record.end, record.work]
            for record in records
        ],
    )


def run_pytest(args: list[str], cwd: Path, env: dict[str, str], timeout: float) -> tuple[float, str]:
    """Run ``python -m pytest ARGS`` and return its wall time and output. Exit when it fails.

    pytest runs in its own session, so that a timeout kills the xdist workers
    and the fake commands with it.
    """
    argv = [sys.executable, "-m", "pytest", *args]
    start = time.perf_counter()
    process = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise SystemExit(f"timed out after {timeout:g} s: {shlex.join(argv)}") from None
    wall = time.perf_counter() - start

    if process.returncode != 0:
        raise SystemExit(f"pytest exited with code {process.returncode}: {shlex.join(argv)}\n{output[-3000:]}")
    return wall, output


def count_workers(output: str) -> int | None:
    """Return the xdist worker count from its status line, such as "8 workers [100 items]"."""
    match = re.search(r"^(\d+) workers? \[\d+ items?\]", output, re.MULTILINE)
    return int(match.group(1)) if match else None


class Bench:
    """The temporary folder with the registry, the fake command and the baseline module."""

    def __init__(self, root: Path, models: list[Model], timeout: float, workers: str) -> None:
        self.root = root
        self.models = models
        self.timeout = timeout
        self.workers = workers
        self.registry = root / "registry"
        self.fake = root / "fake.py"
        self.lock_dir = root / "gpu-locks"
        self.durations = root / "durations.json"

        write_registry(self.registry, models)
        self.fake.write_text(FAKE_SCRIPT, encoding="utf-8")
        (root / "test_baseline.py").write_text(BASELINE_MODULE, encoding="utf-8")
        # An ini file here makes the folder pytest's rootdir, so no config
        # file from an enclosing folder changes the runs.
        (root / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")

    def state_dir(self, name: str) -> Path:
        """Create the folder where the fake commands of run ``name`` register on their GPUs.

        Each run gets its own folder, so a file left by a killed command of an
        earlier run cannot slow down a later one.
        """
        folder = self.root / f"{name}.gpus"
        folder.mkdir()
        return folder

    def common_args(self) -> list[str]:
        # Not -q: at the default verbosity xdist prints "8 workers [100 items]".
        return ["-p", "no:cacheprovider", f"--autodeploy-registry={self.registry}"]

    def run_ours(self, name: str) -> RunResult:
        record = self.root / f"{name}.records"
        state = self.state_dir(name)
        command = shlex.join([sys.executable, "-I", "-S", str(self.fake), "{model}", "{world_size}", str(record), str(state)])
        args = self.common_args() + [
            "-n",
            self.workers,
            "--autodeploy-gpus",
            str(GPU_COUNT),
            f"--autodeploy-lock-dir={self.lock_dir}",
            f"--autodeploy-durations={self.durations}",
            f"--autodeploy-command={command}",
        ]
        wall, output = run_pytest(args, self.root, dict(os.environ), self.timeout)
        result = measure(name, [shlex.join(args)], wall, read_records(record), self.models)
        result.workers = [count_workers(output)]
        return result

    def run_baseline(self, name: str, mode: str, runs: list[list[str]]) -> RunResult:
        record = self.root / f"{name}.records"
        env = dict(os.environ, BENCH_GPU_MODE=mode, BENCH_RECORD=str(record), BENCH_STATE=str(self.state_dir(name)))
        commands = []
        workers = []
        wall = 0.0
        for extra in runs:
            args = self.common_args() + extra + ["test_baseline.py"]
            commands.append(shlex.join(args))
            seconds, output = run_pytest(args, self.root, env, self.timeout)
            wall += seconds
            workers.append(count_workers(output))
        result = measure(name, commands, wall, read_records(record), self.models)
        result.workers = workers
        return result

    def run_slices(self) -> RunResult:
        runs = [["-n", str(GPU_COUNT // size), "--dist", "load", "-m", f"world_size_{size}"] for size in (1, 2, 4, 8)]
        return self.run_baseline("baseline-slices", "slices", runs)

    def run_round_robin(self) -> RunResult:
        return self.run_baseline("baseline-round-robin", "round-robin", [["-n", str(GPU_COUNT), "--dist", "load"]])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100, help="Registry entries to generate (default: 100)")
    parser.add_argument(
        "--scale",
        type=float,
        default=0.32,
        help="Factor on the nominal work of every model (default: 0.32)",
    )
    parser.add_argument(
        "--warm",
        action="store_true",
        help="Also run ours a second time with the durations file that the first run wrote",
    )
    parser.add_argument(
        "--workers",
        default="auto",
        help="The -n value of the plugin's runs: auto (one worker per GPU is expected) or a number (default: auto)",
    )
    parser.add_argument("--seed", type=int, default=1, help="Seed of the world sizes and durations (default: 1)")
    parser.add_argument("--timeout", type=float, default=300.0, help="Seconds before one pytest run is killed (default: 300)")
    parser.add_argument("--json", metavar="FILE", type=Path, help="Write the results as JSON to FILE")
    args = parser.parse_args(argv)
    if args.entries < 1:
        parser.error("--entries must be at least 1")
    if not args.scale > 0:
        parser.error("--scale must be greater than 0")
    return args


def simulate_policy(models: list[Model]) -> dict[str, float]:
    """Replay the plugin's backfill policy with exact durations and no per-item overhead.

    The gap between this makespan and ours-warm is the cost of running the
    plan: pytest, xdist, the leases and process starts. Ours-cold adds the
    cost of scheduling by estimates per world size.
    """
    from pytest_autodeploy.backfill import Job, simulate

    jobs = [Job(model.name, model.world_size, model.seconds) for model in models]
    makespan = simulate(jobs, GPU_COUNT).makespan
    lower_bound = nominal_lower_bound(models)
    return {"makespan_s": makespan, "lower_bound_s": lower_bound, "makespan_over_lb": makespan / lower_bound}


def run(args: argparse.Namespace) -> dict[str, Any]:
    models = make_models(args.entries, args.scale, args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-gpu-schedule-") as temp:
        bench = Bench(Path(temp), models, args.timeout, args.workers)
        steps = [lambda: bench.run_ours("ours-cold")]
        if args.warm:
            steps.append(lambda: bench.run_ours("ours-warm"))
        steps += [bench.run_slices, bench.run_round_robin]

        runs = []
        for step in steps:
            result = step()
            worker_counts = ", ".join("?" if count is None else str(count) for count in result.workers)
            print(f"{result.name}: wall {result.wall_s:.1f} s, makespan {result.makespan_s:.1f} s, xdist workers {worker_counts}", flush=True)
            runs.append(result)

    sizes = [model.world_size for model in models]
    return {
        "benchmark": "gpu_schedule",
        "entries": args.entries,
        "scale": args.scale,
        "seed": args.seed,
        "gpus": GPU_COUNT,
        "world_sizes": {str(size): sizes.count(size) for size in sorted(set(sizes))},
        "work_seconds_total": round(sum(model.seconds for model in models), 2),
        "gpu_seconds_total": round(sum(model.world_size * model.seconds for model in models), 2),
        "lower_bound_s": nominal_lower_bound(models),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "workers_option": args.workers,
        "policy_simulation": simulate_policy(models),
        "runs": [asdict(result) for result in runs],
        "ratios": ratios(runs),
        "targets": targets(runs),
    }


def our_runs(runs: list[RunResult]) -> list[str]:
    return [result.name for result in runs if result.name.startswith("ours-")]


def ratios(runs: list[RunResult]) -> dict[str, float]:
    by_name = {result.name: result for result in runs}
    values = {}
    for ours, baseline in itertools.product(our_runs(runs), ("baseline-slices", "baseline-round-robin")):
        values[f"{ours}/{baseline} makespan"] = by_name[ours].makespan_s / by_name[baseline].makespan_s
        values[f"{ours}/{baseline} wall"] = by_name[ours].wall_s / by_name[baseline].wall_s
    return values


def targets(runs: list[RunResult]) -> dict[str, bool]:
    by_name = {result.name: result for result in runs}
    met = {}
    for ours in our_runs(runs):
        result = by_name[ours]
        met[f"{ours} makespan/LB <= {TARGET_MAKESPAN_OVER_LB}"] = result.makespan_over_lb <= TARGET_MAKESPAN_OVER_LB
        for baseline in ("baseline-slices", "baseline-round-robin"):
            met[f"{ours} makespan < {baseline}"] = result.makespan_s < by_name[baseline].makespan_s
        met[f"{ours} started one xdist worker per GPU"] = result.workers == [GPU_COUNT]
        met[f"{ours} has no oversubscription"] = result.oversubscriptions == 0
        met[f"{ours} ran every item once on world-size GPUs"] = (
            result.wrong_gpu_count == 0 and result.missing == 0 and result.duplicated == 0
        )
    return met


def print_results(results: dict[str, Any]) -> None:
    print()
    sizes = ", ".join(f"{count} x {size}" for size, count in results["world_sizes"].items())
    print(
        f"{results['entries']} models (world sizes: {sizes}) on {results['gpus']} simulated GPUs, "
        f"scale {results['scale']}, {results['gpu_seconds_total']} nominal GPU-seconds, "
        f"LB {results['lower_bound_s']:.2f} s"
    )
    header = (
        f"{'run':<22}{'workers':>9}{'wall s':>8}{'makespan s':>12}{'makespan/LB':>13}{'GPU use':>9}"
        f"{'oversub':>9}{'slowdown':>10}{'handover s':>12}{'bad GPUs':>10}{'missing':>9}"
    )
    print(header)
    for run in results["runs"]:
        handover = "-" if run["median_handover_s"] is None else f"{run['median_handover_s']:.3f}"
        workers = "+".join("?" if count is None else str(count) for count in run["workers"])
        print(
            f"{run['name']:<22}{workers:>9}{run['wall_s']:>8.1f}{run['makespan_s']:>12.2f}"
            f"{run['makespan_over_lb']:>13.3f}{run['gpu_utilization']:>9.0%}{run['oversubscriptions']:>9}"
            f"{run['mean_slowdown']:>10.2f}{handover:>12}{run['wrong_gpu_count']:>10}{run['missing'] + run['duplicated']:>9}"
        )
    simulation = results["policy_simulation"]
    print(
        f"the backfill policy alone, simulated with exact durations: makespan {simulation['makespan_s']:.2f} s, "
        f"makespan/LB {simulation['makespan_over_lb']:.3f}"
    )
    print()
    for name, value in results["ratios"].items():
        print(f"{name}: {value:.2f}")
    print()
    for name, met in results["targets"].items():
        print(f"target {name}: {'met' if met else 'NOT met'}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    results = run(args)
    print_results(results)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
