"""Launcher for model commands: ``python -I -S _launch.py PROGRAM ARGS...``.

It imports only the standard library, so it runs in isolated mode without
site-packages and starts fast.

The launcher leads the command's process group and stays alive while the
program runs. Through prctl(PR_SET_PDEATHSIG) the Linux kernel signals it
when the parent (the pytest process) dies, and it then kills the whole group
with SIGKILL. So a crashed or killed pytest worker leaves nothing running on
GPUs that its lease no longer covers, not even a process that the program
started, such as a rank of torchrun. Only a process that moved to another
process group escapes.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from types import FrameType

_PR_SET_PDEATHSIG = 1
# The signal the kernel sends the launcher when its parent dies. SIGKILL
# could not be caught, and the launcher must kill its group first.
_PARENT_DIED_SIGNAL = signal.SIGHUP


def _kill_own_group(signum: int, frame: FrameType | None) -> None:
    os.killpg(0, signal.SIGKILL)


def _ignore(signum: int, frame: FrameType | None) -> None:
    """Keep the launcher alive on SIGTERM.

    pytest sends SIGTERM to the whole group, so the program gets it directly and
    may use the grace period to exit. The launcher waits for the program, so
    that pytest still receives the program's exit status. A handler, unlike
    SIG_IGN, is not inherited by the program.
    """


def _exit_like(returncode: int) -> None:
    """Exit with the program's status, dying of the same signal if it did."""
    if returncode < 0:
        if returncode != -signal.SIGKILL:  # SIGKILL has no handler to reset
            signal.signal(-returncode, signal.SIG_DFL)
        os.kill(os.getpid(), -returncode)
    sys.exit(returncode if returncode >= 0 else 128 - returncode)


def main() -> None:
    argv = sys.argv[1:]
    if not argv:
        sys.exit("usage: python _launch.py PROGRAM [ARGS...]")

    parent = os.getppid()
    signal.signal(_PARENT_DIED_SIGNAL, _kill_own_group)
    signal.signal(signal.SIGTERM, _ignore)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, _PARENT_DIED_SIGNAL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the process group kill still covers normal exits
    # The parent may have died before prctl took effect.
    if os.getppid() != parent:
        _kill_own_group(_PARENT_DIED_SIGNAL, None)

    # fork and exec directly: importing subprocess would slow every start.
    # The child keeps the inheritable descriptors, among them the GPU lease
    # locks that pytest handed to the launcher, and exec resets the handlers.
    child = os.fork()
    if child == 0:
        try:
            os.execvp(argv[0], argv)
        except OSError as error:
            os.write(2, f"pytest-autodeploy: cannot run {argv[0]!r}: {error.strerror}\n".encode())
        os._exit(127)

    _, status = os.waitpid(child, 0)
    _exit_like(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()
