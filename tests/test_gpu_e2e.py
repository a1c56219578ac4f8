"""End-to-end runs of pytest with xdist, GPU leases and a fake model command.

No GPU is needed: the fake command only records the ``CUDA_VISIBLE_DEVICES``
it received and the time it ran. From those records the tests check that the
plugin hands out GPU ids exclusively, frees them after crashes, timeouts and
Ctrl-C, and leaves no process behind.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any, Mapping, Sequence

import pytest

from pytest_autodeploy.durations import load_durations
from pytest_autodeploy.leases import LeaseManager, lock_file_name

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the command launcher and /proc checks need Linux"
)

# Seconds a fake model runs unless its behavior sets "sleep".
DEFAULT_SLEEP = 0.3

# Seconds allowed for one inner pytest run, so a hang fails the test instead of blocking the suite.
RUN_TIMEOUT = 90.0

# Seconds that each wait for another session may take before the waiting item fails. Two
# pytest sessions started together on a busy machine can start seconds apart.
RENDEZVOUS_TIMEOUT = 60.0

# The fake model command: python FAKE_MODEL RECORD BEHAVIOR MODEL WORLD_SIZE.
# BEHAVIOR maps a model name to {"sleep": s, "child": bool, "kill_worker": bool,
# "wait_for": [record, model], "meet": [flag, other_flag]}. With wait_for the command
# waits, holding its GPUs, until that record contains a start line of that model, and
# exits with status 1 if none appears within RENDEZVOUS_TIMEOUT. CONFTEST handles meet.
FAKE_MODEL = """
import json, os, signal, subprocess, sys, time

record, behavior_path, model, world_size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
with open(behavior_path, encoding="utf-8") as handle:
    behavior = json.load(handle).get(model, {})


def write(**fields):
    line = json.dumps({"model": model, "world_size": world_size, "pid": os.getpid(),
                       "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"), **fields})
    fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\\n").encode())
    finally:
        os.close(fd)


start = time.time()
child = None
if behavior.get("child"):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
write(event="start", time=start, parent=os.getppid(), child=child.pid if child else None)


def worker_pid():
    # The pytest worker is the nearest ancestor that is not the command launcher.
    pid = os.getppid()
    while "pytest_autodeploy/_launch.py" in open(f"/proc/{pid}/cmdline").read():
        with open(f"/proc/{pid}/stat") as handle:
            pid = int(handle.read().rsplit(")", 1)[1].split()[1])
    return pid


def has_started(path, other):
    try:
        with open(path, encoding="utf-8") as handle:
            lines = [json.loads(line) for line in handle if line.strip()]
    except FileNotFoundError:
        return False
    return any(line["event"] == "start" and line["model"] == other for line in lines)


if behavior.get("wait_for"):
    deadline = time.monotonic() + %(rendezvous_timeout)r
    while not has_started(*behavior["wait_for"]):
        if time.monotonic() >= deadline:
            sys.exit(f"{model} timed out after %(rendezvous_timeout)r s waiting for a start line of {behavior['wait_for'][1]} in {behavior['wait_for'][0]}")
        time.sleep(0.05)

if behavior.get("kill_worker"):
    os.kill(worker_pid(), signal.SIGKILL)
    time.sleep(60)

time.sleep(behavior.get("sleep", %(sleep)r))
write(event="end", start=start, end=time.time())
""" % {"sleep": DEFAULT_SLEEP, "rendezvous_timeout": RENDEZVOUS_TIMEOUT}

# The fake project's conftest.py. For a model with "meet": [flag, other_flag] in BEHAVIOR,
# the item's setup, which runs before the item leases GPUs, creates `flag` and waits until
# `other_flag` exists. The item fails if `other_flag` does not appear within RENDEZVOUS_TIMEOUT.
CONFTEST = """
import json, os, time
from pathlib import Path

import pytest


def pytest_runtest_setup(item):
    behavior_path = Path(__file__).parent / "behavior.json"
    model = item.nodeid.split("::", 1)[1]
    flags = json.loads(behavior_path.read_text(encoding="utf-8")).get(model, {}).get("meet")
    if not flags:
        return

    flag, other_flag = flags
    Path(flag).touch()
    deadline = time.monotonic() + %(rendezvous_timeout)r
    while not os.path.exists(other_flag):
        if time.monotonic() >= deadline:
            pytest.fail(f"{model} timed out after %(rendezvous_timeout)r s waiting for the other session to create {other_flag}", pytrace=False)
        time.sleep(0.05)
""" % {"rendezvous_timeout": RENDEZVOUS_TIMEOUT}

# Sixteen models: six on 1 GPU, five on 2, three on 4 and two on 8.
MIXED_MODELS = (
    [(f"org/one-{index}", 1) for index in range(6)]
    + [(f"org/two-{index}", 2) for index in range(5)]
    + [(f"org/four-{index}", 4) for index in range(3)]
    + [(f"org/eight-{index}", 8) for index in range(2)]
)


@dataclass
class Project:
    """A folder with a registry, the fake command, its record file and a private lock folder."""

    root: Path
    record: Path
    behavior: Path
    lock_dir: Path

    def command(self) -> str:
        argv = [sys.executable, str(self.root / "fake_model.py"), str(self.record), str(self.behavior)]
        return shlex.join(argv) + " {model} {world_size}"

    def args(self, *extra: str, gpus: str | None = "8") -> list[str]:
        args = [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-rA",
            "--autodeploy-registry=registry",
            f"--autodeploy-command={self.command()}",
            f"--autodeploy-lock-dir={self.lock_dir}",
        ]
        if gpus is not None:
            args.append(f"--autodeploy-gpus={gpus}")
        return args + list(extra)

    def records(self, event: str = "end") -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        lines = self.record.read_text(encoding="utf-8").splitlines()
        return [entry for entry in map(json.loads, lines) if entry["event"] == event]


def make_project(
    root: Path,
    models: Sequence[tuple[str, int]],
    behavior: Mapping[str, Mapping[str, Any]] | None = None,
    lock_dir: Path | None = None,
) -> Project:
    configs = root / "registry" / "configs"
    configs.mkdir(parents=True)
    for world_size in sorted({world_size for _, world_size in models}):
        (configs / f"world_size_{world_size}.yaml").write_text(f"world_size: {world_size}\n", encoding="utf-8")

    lines = ["version: '2.0'", "description: fake models for end-to-end tests", "models:"]
    for name, world_size in models:
        lines += [f"- name: {name}", f"  yaml_extra: [world_size_{world_size}.yaml]"]
    (root / "registry" / "models.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")

    # An ini file pins the rootdir, so no configuration from a parent folder applies.
    (root / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    (root / "fake_model.py").write_text(FAKE_MODEL, encoding="utf-8")
    (root / "conftest.py").write_text(CONFTEST, encoding="utf-8")
    (root / "behavior.json").write_text(json.dumps(behavior or {}), encoding="utf-8")
    return Project(
        root=root,
        record=root / "record.jsonl",
        behavior=root / "behavior.json",
        lock_dir=lock_dir or root / "locks",
    )


def clean_env(**extra: str) -> dict[str, str]:
    """Return the environment for an inner run, without settings that would change its GPUs or options."""
    env = {key: value for key, value in os.environ.items() if key not in ("CUDA_VISIBLE_DEVICES", "PYTEST_ADDOPTS", "PYTEST_XDIST_AUTO_NUM_WORKERS")}
    env.update(extra)
    return env


def run_pytest(project: Project, args: list[str], env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=project.root,
        env=dict(env if env is not None else clean_env()),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


def overlaps(records: Sequence[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """Return (model, model, GPU id) for every two records that held one GPU at overlapping times."""
    found = []
    for first, second in combinations(records, 2):
        shared = set(first["CUDA_VISIBLE_DEVICES"].split(",")) & set(second["CUDA_VISIBLE_DEVICES"].split(","))
        if shared and first["start"] < second["end"] and second["start"] < first["end"]:
            found.append((first["model"], second["model"], min(shared)))
    return found


def concurrent_pairs(records: Sequence[dict[str, Any]]) -> int:
    """Return how many pairs of records ran at overlapping times, on any GPUs."""
    return sum(1 for first, second in combinations(records, 2) if first["start"] < second["end"] and second["start"] < first["end"])


def gpu_count_mismatches(records: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """Return (model, CUDA_VISIBLE_DEVICES) for every record whose GPU list does not match its world size."""
    wrong = []
    for entry in records:
        ids = entry["CUDA_VISIBLE_DEVICES"].split(",")
        if len(ids) != entry["world_size"] or len(set(ids)) != len(ids):
            wrong.append((entry["model"], entry["CUDA_VISIBLE_DEVICES"]))
    return wrong


def is_alive(pid: int) -> bool:
    """Return whether a process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state follows the command name, which is in parentheses.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def live_pids(pids: Sequence[int], wait: float = 5.0) -> list[int]:
    """Return the pids still alive after up to `wait` seconds."""
    deadline = time.monotonic() + wait
    alive = [pid for pid in pids if is_alive(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in alive if is_alive(pid)]
    return alive


def recorded_pids(project: Project) -> list[int]:
    """Return the pids of every fake command, its launcher and its child."""
    pids = []
    for entry in project.records("start"):
        pids += [entry["pid"], entry["parent"]]
        if entry["child"] is not None:
            pids.append(entry["child"])
    return pids


def kill_leftovers(pids: Sequence[int]) -> None:
    # Only processes this test started through its fake command are killed.
    for pid in pids:
        if is_alive(pid):
            os.kill(pid, signal.SIGKILL)


def outcomes(output: str) -> dict[str, str]:
    """Return the model test id and outcome of each -rA summary line."""
    result = {}
    for line in output.splitlines():
        parts = line.split(" ", 1)
        if len(parts) == 2 and parts[0] in ("PASSED", "FAILED", "SKIPPED", "ERROR") and "::" in parts[1]:
            nodeid = parts[1].split(" - ", 1)[0]
            result[nodeid.split("::", 1)[1]] = parts[0]
    return result


# --- exclusive GPUs -----------------------------------------------------------


def test_mixed_registry_on_eight_workers(tmp_path: Path) -> None:
    project = make_project(tmp_path, MIXED_MODELS)

    result = run_pytest(project, project.args("-n", "8"))

    assert result.returncode == 0, result.stdout + result.stderr
    records = project.records()
    assert sorted(entry["model"] for entry in records) == sorted(name for name, _ in MIXED_MODELS)
    assert gpu_count_mismatches(records) == []
    assert overlaps(records) == []
    # Without items running side by side, the overlap check above would prove nothing.
    assert concurrent_pairs(records) > 0
    assert {gpu for entry in records for gpu in entry["CUDA_VISIBLE_DEVICES"].split(",")} == {str(index) for index in range(8)}


def test_visible_devices_limit_gpu_ids(tmp_path: Path) -> None:
    models = [(f"org/one-{index}", 1) for index in range(4)] + [("org/two", 2), ("org/four", 4)]
    project = make_project(tmp_path, models)

    result = run_pytest(project, project.args("-n", "auto", gpus=None), env=clean_env(CUDA_VISIBLE_DEVICES="4,5,6,7"))

    assert result.returncode == 0, result.stdout + result.stderr
    records = project.records()
    assert len(records) == len(models)
    assert {gpu for entry in records for gpu in entry["CUDA_VISIBLE_DEVICES"].split(",")} <= {"4", "5", "6", "7"}
    assert gpu_count_mismatches(records) == []
    assert overlaps(records) == []


def test_auto_workers_follow_visible_devices(tmp_path: Path) -> None:
    # -n auto must start one worker per visible GPU, not one per CPU core.
    project = make_project(tmp_path, [("org/one", 1)])

    result = run_pytest(project, project.args("-n", "auto", gpus=None), env=clean_env(CUDA_VISIBLE_DEVICES="4,5,6,7"))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 workers [1 item]" in result.stdout


def test_two_sessions_share_lock_folder(tmp_path: Path) -> None:
    lock_dir = tmp_path / "locks"
    models = [(f"org/one-{index}", 1) for index in range(3)] + [(f"org/two-{index}", 2) for index in range(2)]
    models += [("org/four", 4)]
    # The org/one-0 items of the two sessions meet twice, so the sessions surely run side by
    # side. First each one's setup waits, holding no GPU, until the other has reached its
    # setup too. Then each one's command waits, holding its GPU, until the other's command has
    # started. Without the first meeting, a session that starts a few seconds late blocks,
    # because its org/four needs the GPU that the other session's waiting command holds. After
    # it, both sessions are running org/one-0, so neither scheduler starts an org/four alongside.
    projects = []
    for name, other in (("first", "second"), ("second", "first")):
        behavior = {
            "org/one-0": {
                "meet": [str(tmp_path / f"{name}.ready"), str(tmp_path / f"{other}.ready")],
                "wait_for": [str(tmp_path / other / "record.jsonl"), "org/one-0"],
            }
        }
        projects.append(make_project(tmp_path / name, models, behavior=behavior, lock_dir=lock_dir))

    # Output goes to files, because a session blocked on a full pipe would stall the other one.
    logs = [tmp_path / f"{project.root.name}.log" for project in projects]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for project, log in zip(projects, logs):
            with log.open("wb") as handle:
                processes.append(
                    subprocess.Popen(
                        project.args("-n", "4", gpus="4"),
                        cwd=project.root,
                        env=clean_env(),
                        stdout=handle,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        deadline = time.monotonic() + RUN_TIMEOUT + 2 * RENDEZVOUS_TIMEOUT
        for process in processes:
            process.wait(timeout=max(deadline - time.monotonic(), 0.0))
    finally:
        # Only after a failure or timeout is anything left to stop.
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        kill_leftovers(live_pids([pid for project in projects for pid in recorded_pids(project)]))
    outputs = [log.read_text(encoding="utf-8", errors="replace") for log in logs]

    assert [process.returncode for process in processes] == [0, 0], "\n".join(outputs)
    records = [entry for project in projects for entry in project.records()]
    assert len(records) == 2 * len(models)
    assert overlaps(records) == []
    first, second = (project.records() for project in projects)
    assert concurrent_pairs(first + second) > concurrent_pairs(first) + concurrent_pairs(second)
    assert LeaseManager(lock_dir, ["0", "1", "2", "3"]).free_gpus() == ("0", "1", "2", "3")


# --- failures -----------------------------------------------------------------


def test_killed_worker_fails_only_its_model(tmp_path: Path) -> None:
    # The crashing model sorts first among the 8-GPU models, so it runs first,
    # and the other 8-GPU model can only run if the crash freed every GPU.
    models = [("org/a-crash", 8), ("org/big", 8)] + [(f"org/one-{index}", 1) for index in range(3)]
    project = make_project(tmp_path, models, behavior={"org/a-crash": {"kill_worker": True}})

    try:
        result = run_pytest(project, project.args("-n", "4"))
    finally:
        pids = recorded_pids(project)
        leftovers = live_pids(pids)
        kill_leftovers(leftovers)

    assert result.returncode == 1, result.stdout + result.stderr
    results = outcomes(result.stdout)
    assert results == {
        "org/a-crash": "FAILED",
        "org/big": "PASSED",
        "org/one-0": "PASSED",
        "org/one-1": "PASSED",
        "org/one-2": "PASSED",
    }
    assert "crashed while running 'registry/models.yaml::org/a-crash'" in result.stdout
    assert sorted(entry["model"] for entry in project.records()) == ["org/big", "org/one-0", "org/one-1", "org/one-2"]
    crash_time = next(entry["time"] for entry in project.records("start") if entry["model"] == "org/a-crash")
    big_start = next(entry["start"] for entry in project.records() if entry["model"] == "org/big")
    assert big_start > crash_time
    assert overlaps(project.records()) == []
    assert leftovers == []
    assert LeaseManager(project.lock_dir, [str(index) for index in range(8)]).free_gpus() == tuple(str(index) for index in range(8))


def test_timeout_kills_command_and_child(tmp_path: Path) -> None:
    models = [("org/hang", 1), ("org/quick", 1)]
    project = make_project(tmp_path, models, behavior={"org/hang": {"sleep": 60, "child": True}})

    try:
        result = run_pytest(project, project.args("--autodeploy-timeout=1", gpus="1"))
    finally:
        pids = recorded_pids(project)
        leftovers = live_pids(pids)
        kill_leftovers(leftovers)

    assert result.returncode == 1, result.stdout + result.stderr
    assert outcomes(result.stdout) == {"org/hang": "FAILED", "org/quick": "PASSED"}
    assert "timed out after 1 s" in result.stdout
    # Each model's command and launcher, and the child of the hanging one.
    assert len(pids) == 5
    assert leftovers == []


def test_ctrl_c_stops_run_and_frees_gpus(tmp_path: Path) -> None:
    models = [(f"org/slow-{index}", 2) for index in range(4)]
    behavior = {name: {"sleep": 60, "child": True} for name, _ in models}
    project = make_project(tmp_path, models, behavior=behavior)
    log = (tmp_path / "pytest.log").open("w")

    process = subprocess.Popen(
        project.args("-n", "2", gpus="4"),
        cwd=project.root,
        env=clean_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        # Wait until both workers run a model, then press Ctrl-C for the whole group.
        deadline = time.monotonic() + 60
        while len(project.records("start")) < 2 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
        started = len(project.records("start"))
        os.killpg(process.pid, signal.SIGINT)
        returncode = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        log.close()
        pids = recorded_pids(project)
        leftovers = live_pids(pids)
        kill_leftovers(leftovers)

    output = (tmp_path / "pytest.log").read_text()
    assert started == 2, output
    assert returncode == 2, output
    assert project.records("end") == []
    assert len(pids) == 6
    assert leftovers == []
    assert (project.lock_dir / lock_file_name("0")).exists()
    assert LeaseManager(project.lock_dir, ["0", "1", "2", "3"]).free_gpus() == ("0", "1", "2", "3")


# --- durations ----------------------------------------------------------------


def test_durations_written_and_reused(tmp_path: Path) -> None:
    # The 1-GPU model runs longest. With default estimates the 2-GPU model
    # has more GPU-seconds and runs first; with measured ones it runs second.
    models = [("org/slow", 1), ("org/fast", 2)]
    project = make_project(tmp_path, models, behavior={"org/slow": {"sleep": 1.0}, "org/fast": {"sleep": 0.1}})
    durations = tmp_path / "durations.json"
    args = project.args("-n", "1", f"--autodeploy-durations={durations}", gpus="2")

    first = run_pytest(project, args)
    first_order = [entry["model"] for entry in project.records()]
    table = load_durations(durations)
    project.record.unlink()
    second = run_pytest(project, args)
    second_order = [entry["model"] for entry in project.records()]

    assert first.returncode == 0, first.stdout + first.stderr
    assert sorted(table) == ["org/fast", "org/slow"]
    assert table["org/slow"].world_size == 1
    assert table["org/slow"].seconds > table["org/fast"].seconds
    assert first_order == ["org/fast", "org/slow"]
    assert second.returncode == 0, second.stdout + second.stderr
    assert second_order == ["org/slow", "org/fast"]
