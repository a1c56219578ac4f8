"""Launcher for model commands: ``python -m pytest_autodeploy._launch PROGRAM ARGS...``.

It asks the Linux kernel to send SIGKILL when the parent (the pytest process)
dies, then replaces itself with the program, so a crashed or killed pytest
worker never leaves a command running on GPUs that its lease no longer covers.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def main() -> None:
    argv = sys.argv[1:]
    if not argv:
        sys.exit("usage: python -m pytest_autodeploy._launch PROGRAM [ARGS...]")

    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the process group kill still covers normal exits
    # The parent may have died before prctl took effect.
    if os.getppid() != parent:
        sys.exit(1)

    try:
        os.execvp(argv[0], argv)
    except OSError as error:
        sys.stderr.write(f"pytest-autodeploy: cannot run {argv[0]!r}: {error.strerror}\n")
        sys.exit(127)


if __name__ == "__main__":
    main()
