"""Atomic file replacement, for every file that a reader must never see half-written."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Union

PathLike = Union[str, "os.PathLike[str]"]


def write_text_atomic(path: PathLike, text: str, *, create_parents: bool = True) -> None:
    """Replace ``path`` with ``text`` so that readers see the old or the new file, never a part.

    The text goes to a temporary file in the same folder, which is flushed to
    disk and renamed over ``path``. On any error the temporary file is removed
    and ``path`` is left as it was. Raises ``OSError`` when the folder is
    missing (and ``create_parents`` is false) or not writable.
    """
    path = Path(path)
    if create_parents:
        path.parent.mkdir(parents=True, exist_ok=True)

    descriptor, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())

        # mkstemp creates the file with mode 0600. Keep the mode of the file
        # being replaced, or use the usual 0644, so other users can still read it.
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            mode = 0o644
        os.chmod(temp_name, mode)

        os.replace(temp_name, path)
    except BaseException:
        try:
            os.unlink(temp_name)
        except FileNotFoundError:
            pass
        raise

    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    # Syncing the folder makes the rename itself durable. Windows cannot open
    # a folder this way, and the replace is already done, so skip it there.
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
