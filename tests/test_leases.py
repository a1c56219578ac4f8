from __future__ import annotations

import fcntl
import gc
import json
import os
import select
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_autodeploy.leases import (
    Lease,
    LeaseError,
    LeaseManager,
    LeaseRequestError,
    LeaseTimeout,
    choose_gpus,
    default_lock_dir,
    lock_file_name,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
FOUR_GPUS = ("0", "1", "2", "3")
EIGHT_GPUS = tuple(str(index) for index in range(8))

# Child scripts get: lock folder, comma-separated GPU ids, then their own arguments.
HOLDER_SCRIPT = """
import json, sys
from pathlib import Path
from pytest_autodeploy.leases import LeaseManager

manager = LeaseManager(Path(sys.argv[1]), sys.argv[2].split(","), poll_interval=0.01)
lease = manager.acquire(int(sys.argv[3]), owner="holder", timeout=10)
print(json.dumps(list(lease.gpus)), flush=True)
sys.stdin.read()
"""

# Leases GPUs, starts a sleeping grandchild that inherits the lock descriptors, prints the
# grandchild's pid and waits to be killed.
INHERITING_HOLDER_SCRIPT = """
import subprocess, sys
from pathlib import Path
from pytest_autodeploy.leases import LeaseManager

manager = LeaseManager(Path(sys.argv[1]), sys.argv[2].split(","), poll_interval=0.01)
lease = manager.acquire(int(sys.argv[3]), owner="parent", timeout=10)
grandchild = subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(60)"], pass_fds=lease.fds
)
print(grandchild.pid, flush=True)
sys.stdin.read()
"""

# Three threads lease one GPU each, hold it for 50 ms and ask again at once, until the
# stop file exists.
STREAM_SCRIPT = """
import sys, threading, time
from pathlib import Path
from pytest_autodeploy.leases import LeaseManager

manager = LeaseManager(Path(sys.argv[1]), sys.argv[2].split(","), poll_interval=0.01)
stop_file = Path(sys.argv[3])

def stream(index):
    while not stop_file.exists():
        with manager.acquire(1, owner=f"stream-{index}", timeout=10):
            time.sleep(0.05)

threads = [threading.Thread(target=stream, args=(index,)) for index in range(3)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print("done", flush=True)
"""


class Children:
    """Child Python processes of one test, killed at teardown."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []
        self.stray_pids: list[int] = []

    def spawn(self, script: str, *args: str) -> subprocess.Popen[bytes]:
        environment = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        process = subprocess.Popen(
            [sys.executable, "-c", script, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            env=environment,
        )
        self.processes.append(process)
        return process

    def kill_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=5)
        for pid in self.stray_pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def children() -> Iterator[Children]:
    spawned = Children()
    yield spawned
    spawned.kill_all()


def read_line(process: subprocess.Popen[bytes], timeout: float = 5.0) -> str:
    """Return the next stdout line of a child, failing the test if none comes in time."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, f"child {process.pid} printed nothing within {timeout} s"
    return process.stdout.readline().decode().strip()


def wait_until(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"condition not met within {timeout} s"
        time.sleep(0.01)


def tickets(lock_dir: Path) -> list[str]:
    queue = lock_dir / "queue"
    if not queue.exists():
        return []
    return sorted(path.name for path in queue.iterdir())


@pytest.fixture
def lock_dir(tmp_path: Path) -> Path:
    return tmp_path / "locks"


@pytest.mark.parametrize(
    ("pool", "free", "count", "expected"),
    [
        (EIGHT_GPUS, set(EIGHT_GPUS), 8, EIGHT_GPUS),
        (EIGHT_GPUS, set(EIGHT_GPUS) - {"0"}, 4, ("4", "5", "6", "7")),
        (EIGHT_GPUS, {"1", "2", "3", "4", "5"}, 4, ("1", "2", "3", "4")),
        (EIGHT_GPUS, {"1", "2", "3"}, 2, ("2", "3")),
        (EIGHT_GPUS, {"1", "3", "5", "6"}, 2, ("1", "3")),
        (EIGHT_GPUS, {"1", "2", "5"}, 2, ("1", "2")),
        (EIGHT_GPUS, {"3", "5", "6", "7"}, 1, ("3",)),
        (EIGHT_GPUS, {"0", "1", "2", "4", "5", "6"}, 3, ("0", "1", "2")),
        (EIGHT_GPUS, {"0", "1"}, 3, None),
        (("4", "5", "6", "7"), {"6", "7"}, 2, ("6", "7")),
        (("7", "3", "5", "1"), {"7", "5", "1"}, 2, ("5", "1")),
        (FOUR_GPUS, set(), 0, ()),
    ],
)
def test_choose_gpus(
    pool: tuple[str, ...], free: set[str], count: int, expected: tuple[str, ...] | None
) -> None:
    assert choose_gpus(pool, free, count) == expected


def test_lock_file_names_are_distinct_and_flat() -> None:
    mig = "MIG-GPU-8d2f6c1e/1/2"

    assert lock_file_name("0") == "gpu-0.lock"
    assert lock_file_name(mig) == "gpu-MIG-GPU-8d2f6c1e%2F1%2F2.lock"
    assert lock_file_name("a/b") != lock_file_name("a%2Fb")


def test_default_lock_dir_in_temp_folder() -> None:
    assert default_lock_dir() == Path(tempfile.gettempdir()) / "pytest-autodeploy-gpu-locks"


def test_manager_rejects_duplicate_ids(lock_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"GPU ids \['1'\] are listed twice"):
        LeaseManager(lock_dir, ["0", "1", "1"])


def test_acquire_too_many_rejected(lock_dir: Path) -> None:
    manager = LeaseManager(lock_dir, FOUR_GPUS)

    with pytest.raises(LeaseRequestError) as excinfo:
        manager.acquire(5, owner="test", timeout=0)

    assert str(excinfo.value) == (
        "cannot lease 5 GPUs: only 4 GPUs [0,1,2,3] are available; "
        "request at most 4 or make more GPUs available"
    )
    assert isinstance(excinfo.value, ValueError)


@pytest.mark.parametrize("count", [-1, True, 1.5])
def test_acquire_invalid_count_rejected(lock_dir: Path, count: object) -> None:
    manager = LeaseManager(lock_dir, FOUR_GPUS)

    with pytest.raises(LeaseRequestError, match="must be an integer of 0 or more"):
        manager.acquire(count, owner="test")  # type: ignore[arg-type]


def test_acquire_zero_is_empty(lock_dir: Path) -> None:
    manager = LeaseManager(lock_dir, [])

    lease = manager.acquire(0, owner="test", timeout=0)

    assert lease.gpus == ()
    assert lease.fds == ()


def test_folders_and_lock_files_shared(lock_dir: Path) -> None:
    manager = LeaseManager(lock_dir, ["0"])

    with manager.acquire(1, owner="test", timeout=1):
        pass

    assert stat.S_IMODE(lock_dir.stat().st_mode) == 0o777
    assert stat.S_IMODE((lock_dir / "queue").stat().st_mode) == 0o777
    assert stat.S_IMODE((lock_dir / "gpu-0.lock").stat().st_mode) == 0o666
    assert stat.S_IMODE((lock_dir / "mutex.lock").stat().st_mode) == 0o666


def test_existing_folder_mode_kept(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    manager = LeaseManager(tmp_path, ["0"])

    manager.acquire(1, owner="test", timeout=1).release()

    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o700


def test_aligned_blocks_chosen(lock_dir: Path) -> None:
    manager = LeaseManager(lock_dir, EIGHT_GPUS)

    single = manager.acquire(1, owner="single", timeout=1)
    pair = manager.acquire(2, owner="pair", timeout=1)
    quad = manager.acquire(4, owner="quad", timeout=1)
    last = manager.acquire(1, owner="last", timeout=1)

    assert single.gpus == ("0",)
    assert pair.gpus == ("2", "3")
    assert quad.gpus == ("4", "5", "6", "7")
    assert last.gpus == ("1",)
    assert manager.free_gpus() == ()


def test_release_frees_gpus(lock_dir: Path) -> None:
    manager = LeaseManager(lock_dir, FOUR_GPUS)

    with manager.acquire(2, owner="test", timeout=1) as lease:
        assert manager.free_gpus() == ("2", "3")
        assert not lease.released

    assert lease.released
    assert manager.free_gpus() == FOUR_GPUS
    lease.release()
    assert manager.free_gpus() == FOUR_GPUS


def test_owner_file_written(lock_dir: Path) -> None:
    manager = LeaseManager(lock_dir, ["0"])

    with manager.acquire(1, owner="tests/test_x.py::test_y", timeout=1):
        text = (lock_dir / "gpu-0.owner").read_text()

    assert "owner: tests/test_x.py::test_y\n" in text
    assert f"pid: {os.getpid()}\n" in text


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file of the user who runs the session, which a symbolic link in the lock folder targets."""
    path = tmp_path / "victim"
    path.write_text("precious\n")
    path.chmod(0o600)
    return path


def test_owner_file_symlink_replaced(lock_dir: Path, victim: Path) -> None:
    lock_dir.mkdir()
    (lock_dir / "gpu-0.owner").symlink_to(victim)
    manager = LeaseManager(lock_dir, ["0"])

    manager.acquire(1, owner="test", timeout=1).release()

    assert victim.read_text() == "precious\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert not (lock_dir / "gpu-0.owner").is_symlink()
    assert "owner: test\n" in (lock_dir / "gpu-0.owner").read_text()
    assert sorted(path.name for path in lock_dir.iterdir()) == [
        "gpu-0.lock", "gpu-0.owner", "mutex.lock", "queue"
    ]


def test_owner_file_mode(lock_dir: Path) -> None:
    manager = LeaseManager(lock_dir, ["0"])

    manager.acquire(1, owner="test", timeout=1).release()

    assert stat.S_IMODE((lock_dir / "gpu-0.owner").stat().st_mode) == 0o644


@pytest.mark.parametrize("name", ["gpu-0.lock", "mutex.lock"])
def test_symlinked_lock_file_rejected(lock_dir: Path, victim: Path, name: str) -> None:
    lock_dir.mkdir()
    (lock_dir / name).symlink_to(victim)
    (lock_dir / "gpu-0.owner").symlink_to(victim)
    manager = LeaseManager(lock_dir, ["0"])

    with pytest.raises(LeaseError) as excinfo:
        manager.acquire(1, owner="test", timeout=1)

    assert str(excinfo.value) == f"lock file {lock_dir / name} is a symbolic link; remove it"
    assert victim.read_text() == "precious\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600


def test_fifo_lock_file_rejected(lock_dir: Path) -> None:
    lock_dir.mkdir()
    os.mkfifo(lock_dir / "gpu-0.lock")
    manager = LeaseManager(lock_dir, ["0"])

    with pytest.raises(LeaseError, match=r"gpu-0\.lock is not a regular file; remove it$"):
        manager.acquire(1, owner="test", timeout=1)


def test_symlinked_owner_file_not_read(lock_dir: Path, victim: Path) -> None:
    holder = LeaseManager(lock_dir, ["0"]).acquire(1, owner="holder", timeout=1)
    (lock_dir / "gpu-0.owner").unlink()
    (lock_dir / "gpu-0.owner").symlink_to(victim)

    try:
        with pytest.raises(LeaseTimeout) as excinfo:
            LeaseManager(lock_dir, ["0"]).acquire(1, owner="test", timeout=0)
    finally:
        holder.release()

    assert "GPU 0: holder unknown" in str(excinfo.value)
    assert "precious" not in str(excinfo.value)


def test_symlinked_ticket_ignored(lock_dir: Path, victim: Path) -> None:
    # A locked target would make the link look like a live waiter that reserves GPU 0.
    victim.write_text(json.dumps({"count": 1, "gpus": ["0"]}))
    victim_fd = os.open(victim, os.O_RDONLY)
    fcntl.flock(victim_fd, fcntl.LOCK_EX)
    lock_dir.mkdir()
    (lock_dir / "queue").mkdir()
    (lock_dir / "queue" / f"{0:020d}-1-ab.ticket").symlink_to(victim)
    manager = LeaseManager(lock_dir, ["0"])

    try:
        lease = manager.acquire(1, owner="test", timeout=0)
    finally:
        os.close(victim_fd)

    assert lease.gpus == ("0",)
    lease.release()


def test_collected_lease_frees_gpus(lock_dir: Path) -> None:
    manager = LeaseManager(lock_dir, ["0"])
    lease = manager.acquire(1, owner="test", timeout=1)
    assert manager.free_gpus() == ()

    del lease
    gc.collect()

    assert manager.free_gpus() == ("0",)


def test_mig_ids_leased(lock_dir: Path) -> None:
    ids = ["MIG-GPU-aaaa/1/0", "MIG-GPU-aaaa/2/0"]
    manager = LeaseManager(lock_dir, ids)

    with manager.acquire(2, owner="test", timeout=1) as lease:
        assert lease.gpus == tuple(ids)
        assert manager.free_gpus() == ()

    assert (lock_dir / "gpu-MIG-GPU-aaaa%2F1%2F0.lock").exists()


def test_timeout_raises_and_removes_ticket(lock_dir: Path) -> None:
    manager = LeaseManager(lock_dir, ["0", "1"], poll_interval=0.01)
    holder = manager.acquire(2, owner="holder", timeout=1)

    start = time.monotonic()
    with pytest.raises(LeaseTimeout) as excinfo:
        manager.acquire(1, owner="waiter", timeout=0.2)
    elapsed = time.monotonic() - start

    message = str(excinfo.value)
    assert message.startswith("timed out after 0.2 s waiting for 1 of the GPUs [0,1] for waiter")
    assert f"busy: GPU 0: last taken by owner: holder, pid: {os.getpid()}, acquired: " in message
    assert message.endswith(f"; lock folder {lock_dir}")
    assert 0.2 <= elapsed < 1.5
    assert tickets(lock_dir) == []
    holder.release()


def test_zero_timeout_tries_once(lock_dir: Path) -> None:
    manager = LeaseManager(lock_dir, ["0"])
    holder = manager.acquire(1, owner="holder", timeout=0)

    with pytest.raises(LeaseTimeout):
        manager.acquire(1, owner="waiter", timeout=0)

    assert tickets(lock_dir) == []
    holder.release()


def test_two_managers_in_one_process_exclusive(lock_dir: Path) -> None:
    first = LeaseManager(lock_dir, ["0", "1"])
    second = LeaseManager(lock_dir, ["0", "1"])
    lease = first.acquire(1, owner="first", timeout=1)

    other = second.acquire(1, owner="second", timeout=1)

    assert lease.gpus == ("0",)
    assert other.gpus == ("1",)
    with pytest.raises(LeaseTimeout):
        second.acquire(1, owner="third", timeout=0.1)


def test_threads_never_share_gpu(lock_dir: Path) -> None:
    manager = LeaseManager(lock_dir, ["0", "1"], poll_interval=0.005)
    users: dict[str, int] = {"0": 0, "1": 0}
    max_users = {"0": 0, "1": 0}
    counter_lock = threading.Lock()
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            for _ in range(5):
                with manager.acquire(1, owner=f"thread-{index}", timeout=10) as lease:
                    (gpu_id,) = lease.gpus
                    with counter_lock:
                        users[gpu_id] += 1
                        max_users[gpu_id] = max(max_users[gpu_id], users[gpu_id])
                    time.sleep(0.003)
                    with counter_lock:
                        users[gpu_id] -= 1
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)

    assert errors == []
    assert not any(thread.is_alive() for thread in threads)
    assert max_users == {"0": 1, "1": 1}
    assert manager.free_gpus() == ("0", "1")


def test_exclusive_across_processes(lock_dir: Path, children: Children) -> None:
    child = children.spawn(HOLDER_SCRIPT, str(lock_dir), ",".join(FOUR_GPUS), "2")
    child_gpus = tuple(json.loads(read_line(child)))
    manager = LeaseManager(lock_dir, FOUR_GPUS, poll_interval=0.01)

    lease = manager.acquire(2, owner="parent", timeout=1)

    assert child_gpus == ("0", "1")
    assert lease.gpus == ("2", "3")

    result: list[Lease] = []
    waiter = threading.Thread(
        target=lambda: result.append(manager.acquire(1, owner="third", timeout=10))
    )
    waiter.start()
    time.sleep(0.3)
    assert waiter.is_alive()
    assert len(tickets(lock_dir)) == 1

    assert child.stdin is not None
    child.stdin.close()
    child.wait(timeout=5)
    waiter.join(timeout=5)

    assert not waiter.is_alive()
    assert result[0].gpus == ("0",)
    assert tickets(lock_dir) == []


def test_killed_holder_frees_gpus(lock_dir: Path, children: Children) -> None:
    child = children.spawn(HOLDER_SCRIPT, str(lock_dir), ",".join(FOUR_GPUS), "4")
    assert json.loads(read_line(child)) == list(FOUR_GPUS)
    manager = LeaseManager(lock_dir, FOUR_GPUS, poll_interval=0.01)
    assert manager.free_gpus() == ()

    child.send_signal(signal.SIGKILL)
    child.wait(timeout=5)

    lease = manager.acquire(4, owner="parent", timeout=2)
    assert lease.gpus == FOUR_GPUS


def test_waiting_request_reserves_gpus(lock_dir: Path, children: Children) -> None:
    manager = LeaseManager(lock_dir, FOUR_GPUS, poll_interval=0.01)
    small = manager.acquire(1, owner="small", timeout=1)
    big = children.spawn(HOLDER_SCRIPT, str(lock_dir), ",".join(FOUR_GPUS), "4")
    wait_until(lambda: len(tickets(lock_dir)) == 1)

    # GPUs 1-3 are free but reserved for the older request for 4 GPUs.
    with pytest.raises(LeaseTimeout, match="reserved for older waiting requests: 1,2,3"):
        manager.acquire(1, owner="newcomer", timeout=0.2)

    small.release()
    assert json.loads(read_line(big)) == list(FOUR_GPUS)


def test_dead_waiter_ticket_ignored(lock_dir: Path, children: Children) -> None:
    manager = LeaseManager(lock_dir, FOUR_GPUS, poll_interval=0.01)
    small = manager.acquire(1, owner="small", timeout=1)
    waiter = children.spawn(HOLDER_SCRIPT, str(lock_dir), ",".join(FOUR_GPUS), "4")
    wait_until(lambda: len(tickets(lock_dir)) == 1)

    waiter.send_signal(signal.SIGKILL)
    waiter.wait(timeout=5)
    assert len(tickets(lock_dir)) == 1

    lease = manager.acquire(1, owner="newcomer", timeout=0.5)

    assert lease.gpus == ("1",)
    assert tickets(lock_dir) == []
    small.release()


def test_other_pool_not_blocked_by_waiter(lock_dir: Path) -> None:
    left = LeaseManager(lock_dir, ["0", "1"], poll_interval=0.01)
    right = LeaseManager(lock_dir, ["2", "3"], poll_interval=0.01)
    holder = left.acquire(1, owner="holder", timeout=1)
    result: list[Lease] = []
    waiter = threading.Thread(
        target=lambda: result.append(left.acquire(2, owner="pair", timeout=10))
    )
    waiter.start()
    wait_until(lambda: len(tickets(lock_dir)) == 1)

    other = right.acquire(2, owner="other", timeout=0.2)

    assert other.gpus == ("2", "3")
    holder.release()
    waiter.join(timeout=5)
    assert result[0].gpus == ("0", "1")


def test_inherited_descriptor_outlives_release(lock_dir: Path, children: Children) -> None:
    manager = LeaseManager(lock_dir, ["0", "1"], poll_interval=0.01)
    lease = manager.acquire(2, owner="parent", timeout=1)
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], pass_fds=lease.fds
    )
    children.processes.append(sleeper)

    # release() closes this process's descriptors without unlocking the shared open file
    # descriptions, so the child still holds both GPUs.
    lease.release()
    assert manager.free_gpus() == ()

    sleeper.kill()
    sleeper.wait(timeout=5)
    assert manager.free_gpus() == ("0", "1")


def test_inherited_descriptor_outlives_parent(lock_dir: Path, children: Children) -> None:
    parent = children.spawn(INHERITING_HOLDER_SCRIPT, str(lock_dir), "0,1", "2")
    grandchild_pid = int(read_line(parent))
    children.stray_pids.append(grandchild_pid)
    manager = LeaseManager(lock_dir, ["0", "1"], poll_interval=0.01)

    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=5)

    with pytest.raises(LeaseTimeout):
        manager.acquire(1, owner="next", timeout=0.2)

    # The grandchild is not our child, so its exit shows up as the GPUs becoming free.
    os.kill(grandchild_pid, signal.SIGKILL)
    lease = manager.acquire(2, owner="next", timeout=5)
    assert lease.gpus == ("0", "1")


def test_big_request_not_starved(lock_dir: Path, children: Children) -> None:
    stop_file = lock_dir.parent / "stop"
    manager = LeaseManager(lock_dir, FOUR_GPUS, poll_interval=0.01)
    stream = children.spawn(STREAM_SCRIPT, str(lock_dir), ",".join(FOUR_GPUS), str(stop_file))
    wait_until(lambda: len(manager.free_gpus()) <= 1)

    start = time.monotonic()
    try:
        lease = manager.acquire(4, owner="big", timeout=5)
        waited = time.monotonic() - start
        lease.release()
    finally:
        stop_file.touch()

    # Each streamed lease lasts 50 ms, so the big request waits for about one of them.
    assert waited < 2.0
    assert read_line(stream, timeout=10) == "done"
