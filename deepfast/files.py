"""Atomic file writes: a reader (or the next run) sees the old file or the new one, never half of one.

``atomic_file(path)`` gives a file to write into: a temporary ``.NAME.XXXXXXXX.tmp`` in the folder of
``path``, flushed to disk and renamed over ``path`` when the block ends, deleted when it raises. A
process killed meanwhile leaves the temporary file: ``remove_temp_files`` deletes those.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file whose contents replace ``path`` (folders created; mode 0o666 less the umask, as
    ``open`` gives) when the block exits normally; on any error the temporary file is deleted and
    ``path`` left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """fsync a folder, so that a rename in it survives a power cut (where the OS allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.EBADF, errno.EACCES):
            raise
    finally:
        os.close(fd)


def remove_temp_files(folder: str | Path, name: str) -> list[Path]:
    """Deletes the temporary files that ``atomic_file`` of folder/NAME leaves when killed mid-write
    (``name`` may be a glob: "*.png"); returns them. Call it only while no other process writes
    there (a run folder's lock)."""
    stale = sorted(Path(folder).glob(f".{name}.*.tmp"))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
