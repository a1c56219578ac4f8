"""Running one model's command in its own process group, with a timeout.

The command runs as an argv list, never through a shell. It starts in a new
session so that a timeout or Ctrl-C can kill the whole process group,
children included. On Linux it also goes through a small launcher that
kills the whole group if the pytest process dies first.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

_LAUNCHER = Path(__file__).with_name("_launch.py")
_PR_SET_PDEATHSIG = 1
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

# Seconds between SIGTERM and SIGKILL when a process group is stopped.
KILL_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class CommandResult:
    returncode: int | None  # None when the command was killed for the timeout
    timed_out: bool
    seconds: float
    log_path: Path

    def tail(self, lines: int = 40) -> str:
        """Return the last ``lines`` lines of the command's output, safe to print."""
        try:
            with self.log_path.open("r", encoding="utf-8", errors="replace") as handle:
                text = "".join(deque(handle, maxlen=lines))
        except OSError as error:
            return f"(output unavailable: {error.strerror})"
        if not text:
            return "(no output)"
        # Escape sequences and NUL bytes from the command must not reach the terminal.
        return _CONTROL_CHARACTERS.sub("?", text)


def _kill_group(process: subprocess.Popen, grace: float) -> None:
    """Stop the command's process group: SIGTERM, then SIGKILL after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait)
            if sig == signal.SIGTERM:
                # The leader exited, but its children may still run in the group.
                os.killpg(process.pid, signal.SIGKILL)
            break
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            break
    try:
        process.wait(timeout=KILL_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        pass


def launcher_argv(argv: Sequence[str]) -> list[str]:
    """Prefix argv with the launcher that ties the life of the command's group to ours (Linux only)."""
    if sys.platform.startswith("linux"):
        return [sys.executable, "-I", "-S", str(_LAUNCHER), *argv]
    return list(argv)


def run_command(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log_path: Path,
    timeout: float | None,
    pass_fds: Sequence[int] = (),
    grace: float = KILL_GRACE_SECONDS,
) -> CommandResult:
    """Run ``argv`` to completion, writing stdout and stderr to ``log_path``.

    Raises ``FileNotFoundError``/``PermissionError`` when the program cannot
    start. On KeyboardInterrupt the process group is killed before re-raising.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            launcher_argv(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,
            pass_fds=tuple(pass_fds),
        )
        try:
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process, grace)
            return CommandResult(None, True, time.monotonic() - start, log_path)
        except BaseException:
            _kill_group(process, grace=1.0)
            raise

        # The leader is gone; kill what it left behind in its group, because
        # those processes could still be using the GPUs of this lease.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return CommandResult(returncode, False, time.monotonic() - start, log_path)


def stop_on_sigterm(restore: list) -> None:
    """Make SIGTERM interrupt this process like Ctrl-C, so model commands get killed.

    CI systems cancel a job with SIGTERM, often to the main process only. The
    previous handler is appended to ``restore`` for the caller to put back.
    Only the main thread may set handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt("received SIGTERM")

    restore.append(signal.signal(signal.SIGTERM, interrupt))


def terminate_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent dies.

    An xdist worker whose controller was killed would otherwise finish its
    current model first, which can take as long as the model's timeout.
    """
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    # The parent may have died before prctl took effect.
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)
