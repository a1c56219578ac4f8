"""Start-of-run checks that the files and folders a run writes to are usable.

An output that fails only after hours of tests would lose the run's results,
so each is checked before the first test starts.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def check_writable_file(path: Path, source: str) -> None:
    """Raise ``pytest.UsageError`` unless ``path`` can be written at the end of the run."""
    if path.is_dir():
        raise pytest.UsageError(f"{source}: '{path}' is a folder; give a file path")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise pytest.UsageError(f"{source}: cannot create folder '{folder}': {error.strerror}") from None
    if not os.access(folder, os.W_OK):
        raise pytest.UsageError(f"{source}: folder '{folder}' is not writable; choose another path")


def check_lock_dir(path: Path, source: str) -> None:
    """Raise ``pytest.UsageError`` unless ``path`` is a writable folder or can be created.

    The folder is not created here. The lease code creates it open to every user, so that
    sessions of other users can share it, and a folder made here under the umask is not.
    """
    # os.path.exists returns False for a path it cannot stat, so a search-protected folder
    # is reported through its nearest visible parent.
    if os.path.lexists(path) and not os.path.exists(path):
        raise pytest.UsageError(f"{source}: '{path}' is a broken symbolic link; remove it or choose another lock folder")
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise pytest.UsageError(f"{source}: '{path}' is not a folder; give a folder for the GPU lock files")
        if not os.access(path, os.W_OK | os.X_OK):
            raise pytest.UsageError(f"{source}: lock folder '{path}' is not writable; choose another with --autodeploy-lock-dir")
        return

    parent = next(parent for parent in path.absolute().parents if os.path.exists(parent))
    if not os.path.isdir(parent):
        raise pytest.UsageError(f"{source}: cannot create lock folder '{path}': '{parent}' is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise pytest.UsageError(
            f"{source}: cannot create lock folder '{path}': folder '{parent}' is not writable; "
            "choose another with --autodeploy-lock-dir"
        )
