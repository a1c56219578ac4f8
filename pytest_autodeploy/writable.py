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
    """Raise ``pytest.UsageError`` unless ``path`` is, or can become, a writable folder."""
    if path.exists() and not path.is_dir():
        raise pytest.UsageError(f"{source}: '{path}' is not a folder; give a folder for the GPU lock files")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise pytest.UsageError(f"{source}: cannot create lock folder '{path}': {error.strerror}") from None
    if not os.access(path, os.W_OK):
        raise pytest.UsageError(f"{source}: lock folder '{path}' is not writable; choose another with --autodeploy-lock-dir")
