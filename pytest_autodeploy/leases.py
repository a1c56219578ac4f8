"""Machine-wide GPU leases held with OS file locks.

Each GPU id has a lock file ``gpu-<id>.lock`` in a lock folder that every session on the
host shares. A GPU is leased while an open file description of its lock file holds an
exclusive flock, so the kernel frees it when the last process that holds one exits.

Queue policy: every decision to take GPUs runs under the flock on ``mutex.lock``, and a
request that cannot be served at once registers a ticket in ``queue/``. The ticket is named
by its creation time and flocked while the request waits, so the ticket of a dead waiter can
be locked and is deleted as stale. To decide, a request goes through the live tickets older
than its own, oldest first. An older request that fits in the free GPUs of its pool is
assumed to take them, and one that does not fit reserves every free GPU left in its pool.
A request takes only the GPUs left after that, so a stream of small requests cannot
overtake a large one forever.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
import stat
import tempfile
import time
import weakref
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

# filelock's UnixFileLock objects keep their descriptor private, and a second instance on
# the same path in the same thread raises a deadlock RuntimeError on a blocking acquire
# (checked with filelock 4.3.2). The lease needs its descriptors for pass_fds, so it locks
# descriptors it opens itself with filelock's flock wrappers: each os.open creates its own
# open file description, and two of them conflict even within one process.
from filelock import lock_descriptor, unlock_descriptor

logger = logging.getLogger(__name__)

MUTEX_FILE_NAME = "mutex.lock"
# Seconds between log warnings while a request waits for its GPUs.
WAIT_REPORT_SECONDS = 60.0
QUEUE_DIR_NAME = "queue"
TICKET_SUFFIX = ".ticket"

# Folders and lock files are open to every user so that two users' sessions on one host
# share the leases. The folder has no sticky bit, so any user may delete a dead waiter's
# ticket. No code here deletes a lock file, because a new opener would then lock a new
# inode while the old one is still held.
_FOLDER_MODE = 0o777
_LOCK_FILE_MODE = 0o666
# Other users must be able to read a ticket to test whether it is stale.
_TICKET_MODE = 0o644
# Every session replaces an owner file instead of writing into it, so others only read it.
_OWNER_FILE_MODE = 0o644
# An owner file contains three short lines, so only this many bytes of one are read.
_OWNER_FILE_MAX_BYTES = 4096

# Any user can create entries in the shared folder, including symbolic links to files of
# the user who runs the session, so no file there is opened through a symbolic link.
_NO_FOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC

# A decision under the mutex takes milliseconds, so even a zero timeout waits this long
# for the mutex before giving up.
_MIN_MUTEX_WAIT_S = 1.0
_MUTEX_POLL_S = 0.001


class LeaseRequestError(ValueError):
    """Lease request that can never be served, such as more GPUs than the session has."""


class LeaseTimeout(TimeoutError):
    """No lease could be taken before the timeout."""


class LeaseError(OSError):
    """A file in the lock folder cannot be used safely, such as a lock file that is a symbolic link."""


def default_lock_dir() -> Path:
    """Return the lock folder shared by every session on this host.

    NOTE: the path follows TMPDIR, so sessions that run with different TMPDIR values do not
    see each other's leases.
    """
    return Path(tempfile.gettempdir()) / "pytest-autodeploy-gpu-locks"


def lock_file_name(gpu_id: str) -> str:
    """Return the lock file name of a GPU id.

    MIG ids contain '/', so every character outside letters, digits and "_.-~" is
    percent-encoded. The encoding keeps distinct ids distinct.
    """
    return f"gpu-{quote(gpu_id, safe='')}.lock"


def owner_file_name(gpu_id: str) -> str:
    """Return the name of the informative owner file next to a GPU's lock file."""
    return f"gpu-{quote(gpu_id, safe='')}.owner"


def choose_gpus(pool: Sequence[str], free: Collection[str], count: int) -> tuple[str, ...] | None:
    """Choose `count` of the `free` GPUs, in pool order, or return None if too few are free.

    For a power-of-two count the first fully free aligned block of positions in `pool` wins
    (positions [0,1], [2,3] for 2; [0..3], [4..7] for 4). Such blocks usually share the
    fastest links. Otherwise the free GPUs at the lowest positions are chosen.
    """
    free_in_pool = [gpu_id for gpu_id in pool if gpu_id in free]
    if len(free_in_pool) < count:
        return None
    if count == 0:
        return ()

    is_power_of_two = count & (count - 1) == 0
    if count > 1 and is_power_of_two:
        for start in range(0, len(pool) - count + 1, count):
            block = pool[start : start + count]
            if all(gpu_id in free for gpu_id in block):
                return tuple(block)

    return tuple(free_in_pool[:count])


class Lease:
    """Exclusive use of some GPUs, held through open, flocked lock file descriptors.

    `release` closes the descriptors without unlocking them. A flock belongs to the open
    file description, so a child that inherited a descriptor (subprocess ``pass_fds``, or a
    fork) keeps the GPU locked until the child exits too. That also holds when the parent
    dies first. The kernel frees the GPU when the last such descriptor closes.
    """

    def __init__(self, gpus: tuple[str, ...], fds: tuple[int, ...], owner: str) -> None:
        self.gpus = gpus
        self.fds = fds
        self.owner = owner
        # weakref.finalize calls its callback at most once, so release is idempotent. The
        # callback also closes the descriptors if the lease is garbage-collected unreleased.
        self._finalizer = weakref.finalize(self, _close_descriptors, fds, gpus, owner)

    @property
    def released(self) -> bool:
        """Whether `release` has closed the descriptors."""
        return not self._finalizer.alive

    def release(self) -> None:
        """Close this process's lock descriptors. Later calls do nothing."""
        self._finalizer()

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "released" if self.released else "held"
        return f"Lease(gpus={list(self.gpus)}, owner={self.owner!r}, {state})"


@dataclass(frozen=True)
class _TicketRequest:
    """A waiting request as read from its ticket."""

    name: str
    count: int
    pool: tuple[str, ...]


@dataclass(frozen=True)
class _Decision:
    """The outcome of one attempt, kept for the timeout message."""

    lease: Lease | None
    busy: tuple[str, ...]
    reserved: tuple[str, ...]


class _Ticket:
    """This process's place in the queue: a flocked file in the queue folder."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd: int | None = fd

    def remove(self) -> None:
        """Delete and unlock the ticket. Later calls do nothing."""
        if self.fd is None:
            return
        fd, self.fd = self.fd, None

        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        _unlock_and_close(fd)


class LeaseManager:
    """Lease GPUs out of `gpu_ids`, machine-wide, through the lock files in `lock_dir`.

    Sessions that share `lock_dir` never hold the same GPU id at the same time, whether
    they are threads, processes or users. Their `gpu_ids` may differ.

    NOTE: ids are compared as strings, so a session that names a GPU by index and one that
    names it by UUID do not exclude each other.
    """

    def __init__(
        self, lock_dir: Path, gpu_ids: Sequence[str], *, poll_interval: float = 0.05
    ) -> None:
        for gpu_id in gpu_ids:
            if not isinstance(gpu_id, str) or not gpu_id:
                raise ValueError(f"GPU id {gpu_id!r} is invalid; GPU ids must be non-empty strings")
        duplicates = sorted(gpu_id for gpu_id, seen in Counter(gpu_ids).items() if seen > 1)
        if duplicates:
            raise ValueError(f"GPU ids {duplicates} are listed twice in {list(gpu_ids)}")
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval!r}")

        self.lock_dir = Path(lock_dir)
        self.gpu_ids = tuple(gpu_ids)
        self.poll_interval = poll_interval
        self._queue_dir = self.lock_dir / QUEUE_DIR_NAME

    def acquire(self, count: int, *, owner: str, timeout: float | None = None) -> Lease:
        """Block until `count` GPUs are free and no older request waits for them, then lease them.

        `owner` names the holder in the owner files and in log messages. `timeout` is in
        seconds, and None waits forever. Raises LeaseTimeout when the timeout passes first,
        LeaseRequestError at once when `count` exceeds the number of GPUs, and LeaseError
        when a lock file is a symbolic link or not a regular file.
        """
        self._check_count(count)
        if count == 0:
            return Lease((), (), owner)

        self._ensure_folders()
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        next_report = WAIT_REPORT_SECONDS
        ticket: _Ticket | None = None
        try:
            while True:
                with self._mutex(deadline, count, owner):
                    decision = self._try_take(count, owner, ticket)
                    timed_out = deadline is not None and time.monotonic() >= deadline
                    if decision.lease is None and ticket is None and not timed_out:
                        ticket = self._register_ticket(count, owner)
                    elif decision.lease is not None and ticket is not None:
                        ticket.remove()

                if decision.lease is not None:
                    logger.debug(
                        "%s leased GPUs %s after %.3f s",
                        owner,
                        ",".join(decision.lease.gpus),
                        time.monotonic() - start,
                    )
                    self._write_owner_files(decision.lease)
                    return decision.lease

                if timed_out:
                    raise LeaseTimeout(self._timeout_message(count, owner, timeout, decision))
                waited = time.monotonic() - start
                if waited >= next_report:
                    # A silent wait looks like a hang, so log who has the GPUs.
                    logger.warning(
                        "%s has waited %.0f s for %d GPUs: %s",
                        owner,
                        waited,
                        count,
                        self._timeout_message(count, owner, waited, decision),
                    )
                    next_report += WAIT_REPORT_SECONDS
                time.sleep(self.poll_interval)
        finally:
            # Covers the timeout and any interruption while waiting, such as KeyboardInterrupt.
            if ticket is not None:
                ticket.remove()

    def free_gpus(self) -> tuple[str, ...]:
        """Return the GPUs whose lock files are not held right now, ignoring waiting requests.

        The result can be stale by the time the caller reads it. It serves diagnostics and tests.
        """
        self._ensure_folders()
        locked_fds = self._lock_free_gpus(self.gpu_ids)
        for fd in locked_fds.values():
            _unlock_and_close(fd)
        return tuple(gpu_id for gpu_id in self.gpu_ids if gpu_id in locked_fds)

    def _check_count(self, count: int) -> None:
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise LeaseRequestError(
                f"cannot lease {count!r} GPUs: the GPU count must be an integer of 0 or more"
            )
        if count > len(self.gpu_ids):
            raise LeaseRequestError(
                f"cannot lease {count} GPUs: only {len(self.gpu_ids)} GPUs "
                f"[{','.join(self.gpu_ids)}] are available; request at most "
                f"{len(self.gpu_ids)} or make more GPUs available"
            )

    def _ensure_folders(self) -> None:
        self.lock_dir.parent.mkdir(parents=True, exist_ok=True)
        _make_shared_folder(self.lock_dir)
        _make_shared_folder(self._queue_dir)

    @contextlib.contextmanager
    def _mutex(self, deadline: float | None, count: int, owner: str) -> Iterator[None]:
        fd = _open_lock_file(self.lock_dir / MUTEX_FILE_NAME)
        try:
            mutex_deadline = None
            if deadline is not None:
                mutex_deadline = max(deadline, time.monotonic() + _MIN_MUTEX_WAIT_S)

            while not lock_descriptor(fd, blocking=False):
                if mutex_deadline is not None and time.monotonic() >= mutex_deadline:
                    raise LeaseTimeout(
                        f"timed out waiting for {self.lock_dir / MUTEX_FILE_NAME} while "
                        f"requesting {count} GPUs for {owner}; a process that holds it may "
                        f"be stopped"
                    )
                time.sleep(_MUTEX_POLL_S)
            yield
        finally:
            _unlock_and_close(fd)

    def _try_take(self, count: int, owner: str, ticket: _Ticket | None) -> _Decision:
        """Lease `count` GPUs if they are left after older waiting requests. Needs the mutex."""
        older = self._read_live_tickets(before=None if ticket is None else ticket.path.name)

        # Waiters may use other pools, so every GPU that any of them wants gets probed.
        candidates = list(self.gpu_ids)
        for request in older:
            candidates.extend(gpu_id for gpu_id in request.pool if gpu_id not in candidates)
        locked_fds = self._lock_free_gpus(candidates)

        try:
            left = set(locked_fds)
            for request in older:
                assumed = choose_gpus(request.pool, left, request.count)
                if assumed is None:
                    assumed = tuple(gpu_id for gpu_id in request.pool if gpu_id in left)
                left.difference_update(assumed)

            busy = tuple(gpu_id for gpu_id in self.gpu_ids if gpu_id not in locked_fds)
            reserved = tuple(
                gpu_id for gpu_id in self.gpu_ids if gpu_id in locked_fds and gpu_id not in left
            )
            chosen = choose_gpus(self.gpu_ids, left, count)
            if chosen is None:
                return _Decision(lease=None, busy=busy, reserved=reserved)

            fds = tuple(locked_fds.pop(gpu_id) for gpu_id in chosen)
            return _Decision(lease=Lease(chosen, fds, owner), busy=busy, reserved=reserved)
        finally:
            # Unlocking before closing frees a probe even if a fork copied the descriptor.
            for fd in locked_fds.values():
                _unlock_and_close(fd)

    def _lock_free_gpus(self, gpu_ids: Sequence[str]) -> dict[str, int]:
        """Lock every GPU whose lock file is free and return their descriptors."""
        locked_fds: dict[str, int] = {}
        try:
            for gpu_id in gpu_ids:
                fd = _open_lock_file(self.lock_dir / lock_file_name(gpu_id))
                if lock_descriptor(fd, blocking=False):
                    locked_fds[gpu_id] = fd
                else:
                    os.close(fd)
        except BaseException:
            for fd in locked_fds.values():
                _unlock_and_close(fd)
            raise
        return locked_fds

    def _register_ticket(self, count: int, owner: str) -> _Ticket:
        """Create and lock a ticket for a waiting request. Needs the mutex.

        The mutex orders ticket creation, so names sort in queue order.
        NOTE: the name starts with the wall-clock time, so a clock stepped backwards
        can put a later ticket first.
        """
        name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}{TICKET_SUFFIX}"
        path = self._queue_dir / name
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NO_FOLLOW, _TICKET_MODE)
        try:
            # Readers only run under the mutex, so no reader sees the ticket before it is
            # locked. The file was just created, so the lock cannot be contended.
            lock_descriptor(fd, blocking=False)
            with contextlib.suppress(PermissionError):
                os.fchmod(fd, _TICKET_MODE)
            content = {
                "count": count,
                "gpus": list(self.gpu_ids),
                "owner": owner,
                "pid": os.getpid(),
            }
            os.write(fd, json.dumps(content).encode())
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            _unlock_and_close(fd)
            raise

        logger.debug("%s waits for %d GPUs with ticket %s", owner, count, path)
        return _Ticket(path, fd)

    def _read_live_tickets(self, before: str | None) -> list[_TicketRequest]:
        """Return the live tickets older than `before`, oldest first. Deletes stale tickets."""
        try:
            names = sorted(
                entry.name
                for entry in os.scandir(self._queue_dir)
                if entry.name.endswith(TICKET_SUFFIX)
            )
        except FileNotFoundError:
            return []

        requests: list[_TicketRequest] = []
        for name in names:
            if before is not None and name >= before:
                break
            request = self._read_ticket(name)
            if request is not None:
                requests.append(request)
        return requests

    def _read_ticket(self, name: str) -> _TicketRequest | None:
        path = self._queue_dir / name
        try:
            fd = _open_regular_file(path, os.O_RDONLY, "waiter ticket")
        except FileNotFoundError:
            return None
        except OSError as error:
            # A ticket that is unreadable or a symbolic link does not count as a waiter.
            logger.warning("ignoring unreadable waiter ticket %s: %s", path, error)
            return None

        try:
            if lock_descriptor(fd, blocking=False):
                # The waiter that held this lock has died without removing its ticket.
                logger.info("removing stale waiter ticket %s", path)
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
                except PermissionError as error:
                    logger.warning("cannot remove stale waiter ticket %s: %s", path, error)
                return None

            return _parse_ticket(name, _read_all(fd))
        finally:
            _unlock_and_close(fd)

    def _write_owner_files(self, lease: Lease) -> None:
        # The owner files only inform humans, so a failure to write one is logged and ignored.
        acquired = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        text = f"owner: {lease.owner}\npid: {os.getpid()}\nacquired: {acquired}\n"
        for gpu_id in lease.gpus:
            path = self.lock_dir / owner_file_name(gpu_id)
            try:
                _replace_file(path, text.encode(), _OWNER_FILE_MODE)
            except OSError as error:
                logger.debug("cannot write owner file %s: %s", path, error)

    def _timeout_message(
        self, count: int, owner: str, timeout: float | None, decision: _Decision
    ) -> str:
        message = (
            f"timed out after {timeout:g} s waiting for {count} of the GPUs "
            f"[{','.join(self.gpu_ids)}] for {owner}"
        )
        if decision.busy:
            holders = "; ".join(
                f"GPU {gpu_id}: {self._read_owner(gpu_id)}" for gpu_id in decision.busy
            )
            message += f"; busy: {holders}"
        if decision.reserved:
            message += f"; reserved for older waiting requests: {','.join(decision.reserved)}"
        return message + f"; lock folder {self.lock_dir}"

    def _read_owner(self, gpu_id: str) -> str:
        path = self.lock_dir / owner_file_name(gpu_id)
        try:
            fd = _open_regular_file(path, os.O_RDONLY, "owner file")
        except OSError:
            return "holder unknown"
        try:
            text = os.read(fd, _OWNER_FILE_MAX_BYTES).decode("utf-8", errors="replace")
        except OSError:
            return "holder unknown"
        finally:
            os.close(fd)
        fields = [line.strip() for line in text.splitlines() if line.strip()]
        return "last taken by " + ", ".join(fields)


def _make_shared_folder(path: Path) -> None:
    # Only a folder created here is opened to all users, never one that the caller owns.
    try:
        os.mkdir(path, _FOLDER_MODE)
    except FileExistsError:
        return

    # mkdir applies the umask, which usually strips write access for other users. Another
    # user may swap the new folder for a symbolic link before the chmod, so the chmod goes
    # through a descriptor that refuses links and only to a folder this user owns.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | _NO_FOLLOW)
    except OSError as error:
        logger.warning("cannot open the new lock folder %s to share it: %s", path, error)
        return
    try:
        if os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, _FOLDER_MODE)
    except PermissionError:
        pass
    finally:
        os.close(fd)


def _open_lock_file(path: Path) -> int:
    """Open a lock file, creating it writable for every user.

    Raises LeaseError when the name is a symbolic link or not a regular file, because
    locking the target would lock a file of some other program.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NO_FOLLOW, _LOCK_FILE_MODE)
    except FileExistsError:
        pass
    else:
        # os.open applies the umask, which usually strips write access for other users.
        # O_EXCL made this file, so the chmod cannot reach a file of someone else.
        with contextlib.suppress(PermissionError):
            os.fchmod(fd, _LOCK_FILE_MODE)
        return fd

    try:
        return _open_regular_file(path, os.O_RDWR)
    except PermissionError:
        # flock needs no write access, so a file created with a stricter mode still works.
        return _open_regular_file(path, os.O_RDONLY)


def _open_regular_file(path: Path, flags: int, kind: str = "lock file") -> int:
    """Open an existing file of the lock folder without following a symbolic link.

    Raises LeaseError, with `kind` naming the file, when `path` is a symbolic link or not
    a regular file.
    """
    # O_NONBLOCK keeps a FIFO planted under the name from blocking the open.
    try:
        fd = os.open(path, flags | _NO_FOLLOW | os.O_NONBLOCK)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise LeaseError(f"{kind} {path} is a symbolic link; remove it") from None
        raise

    try:
        is_regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except BaseException:
        os.close(fd)
        raise
    if not is_regular:
        os.close(fd)
        raise LeaseError(f"{kind} {path} is not a regular file; remove it")
    return fd


def _replace_file(path: Path, content: bytes, mode: int) -> None:
    """Write `content` to a new file in the folder of `path`, then rename it over `path`.

    rename replaces a symbolic link itself, never its target, so a link that another user
    planted at `path` cannot redirect the write.
    """
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            # mkstemp created this file with O_EXCL, so the chmod reaches only this run's file.
            os.fchmod(fd, mode)
            os.write(fd, content)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _unlock_and_close(fd: int) -> None:
    try:
        unlock_descriptor(fd)
    finally:
        os.close(fd)


def _close_descriptors(fds: tuple[int, ...], gpus: tuple[str, ...], owner: str) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    if fds:
        logger.debug("%s released GPUs %s", owner, ",".join(gpus))


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    offset = 0
    while True:
        chunk = os.pread(fd, 65536, offset)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)


def _parse_ticket(name: str, raw: bytes) -> _TicketRequest | None:
    try:
        content = json.loads(raw)
        count = content["count"]
        pool = tuple(content["gpus"])
    except (ValueError, KeyError, TypeError) as error:
        logger.warning("ignoring invalid waiter ticket %s: %s", name, error)
        return None

    if not isinstance(count, int) or not all(isinstance(gpu_id, str) for gpu_id in pool):
        logger.warning("ignoring invalid waiter ticket %s: %r", name, content)
        return None
    return _TicketRequest(name=name, count=count, pool=pool)
