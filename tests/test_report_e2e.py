"""The JSON report through the real plugin: complete after Ctrl-C and after a killed worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from pytest_autodeploy.leases import LeaseManager

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses the Linux launcher and /proc")

COMMAND = '''
import os, sys, time
model, marker_dir = sys.argv[1], sys.argv[2]
with open(os.path.join(marker_dir, model.replace("/", "_")), "w") as marker:
    marker.write(str(os.getpid()))
if model == "org/crash":
    # Kill the pytest worker: the nearest ancestor that is not the launcher.
    pid = os.getppid()
    while "_launch.py" in open(f"/proc/{pid}/cmdline").read():
        pid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    os.kill(pid, 9)
    time.sleep(30)
if model == "org/slow":
    time.sleep(30)
'''


def make_project(root: Path, names: list[str]) -> list[str]:
    (root / "reg" / "configs").mkdir(parents=True)
    (root / "reg" / "configs" / "world_size_1.yaml").write_text("world_size: 1\n")
    entries = "".join(f"- name: {name}\n  yaml_extra: [world_size_1.yaml]\n" for name in names)
    (root / "reg" / "models.yaml").write_text("version: '2.0'\nmodels:\n" + entries)
    (root / "fake_command.py").write_text(COMMAND)
    (root / "markers").mkdir()
    return [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        f"--autodeploy-registry={root / 'reg'}",
        "--autodeploy-gpus=2",
        f"--autodeploy-lock-dir={root / 'locks'}",
        f"--autodeploy-command={sys.executable} {root / 'fake_command.py'} {{model}} {root / 'markers'}",
        f"--autodeploy-report={root / 'report.json'}",
    ]


def is_running(pid: int) -> bool:
    # A killed process whose parent is gone may stay a zombie here, because
    # this container's init does not reap orphans; a zombie runs nothing.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def statuses(root: Path) -> dict[str, str]:
    document = json.loads((root / "report.json").read_text())
    return {record["model"]: record["status"] for record in document["records"]}


def interrupt_during_slow_model(root: Path, argv: list[str], send: Callable[[int], None]) -> subprocess.Popen:
    """Start pytest in its own session, call ``send(pid)`` while org/slow runs, and wait for the exit."""
    process = subprocess.Popen(argv, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (root / "markers" / "org_slow").exists():
            assert time.monotonic() < deadline, "org/slow never started"
            time.sleep(0.05)
        time.sleep(0.3)

        send(process.pid)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process


def test_report_after_killed_worker(tmp_path: Path) -> None:
    argv = make_project(tmp_path, ["org/a", "org/crash", "org/b", "org/c"])

    result = subprocess.run([*argv, "-n", "2"], cwd=tmp_path, capture_output=True, text=True, timeout=180)
    document = json.loads((tmp_path / "report.json").read_text())

    assert result.returncode == 1, result.stdout[-2000:]
    assert statuses(tmp_path) == {"org/a": "passed", "org/crash": "failed", "org/b": "passed", "org/c": "passed"}
    assert document["complete"] is False
    crashed = next(record for record in document["records"] if record["model"] == "org/crash")
    assert "crashed while running" in crashed["reason"]
    # The launcher killed the command when its worker died.
    command_pid = int((tmp_path / "markers" / "org_crash").read_text())
    deadline = time.monotonic() + 10
    while is_running(command_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_running(command_pid)


def test_report_after_ctrl_c(tmp_path: Path) -> None:
    argv = make_project(tmp_path, ["org/a", "org/b", "org/slow", "org/never"])
    # Ctrl-C reaches the terminal's foreground process group.
    process = interrupt_during_slow_model(tmp_path, argv, lambda pid: os.killpg(pid, signal.SIGINT))

    document = json.loads((tmp_path / "report.json").read_text())
    assert process.returncode == pytest.ExitCode.INTERRUPTED
    assert statuses(tmp_path) == {"org/a": "passed", "org/b": "passed"}
    assert document["complete"] is False
    assert not (tmp_path / "markers" / "org_never").exists()


def test_sigterm_to_main_process_stops_commands(tmp_path: Path) -> None:
    # CI systems cancel a job with SIGTERM to the main process only.
    argv = make_project(tmp_path, ["org/slow", "org/a", "org/b"])
    interrupt_during_slow_model(tmp_path, [*argv, "-n", "2"], lambda pid: os.kill(pid, signal.SIGTERM))

    # Checked at once: pytest must not exit while a model command still runs.
    command_pid = int((tmp_path / "markers" / "org_slow").read_text())
    assert not is_running(command_pid)
    assert LeaseManager(tmp_path / "locks", ["0", "1"]).free_gpus() == ("0", "1")
