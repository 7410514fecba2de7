"""The lock of a run folder: one training at a time writes into it.

``run_lock(folder)`` holds an exclusive ``flock`` on folder/.lock (POSIX) for as long as the training
runs; the file records the holder's pid and host. The OS releases the lock when the process ends in
any way (SIGKILL included), so a lock is never left stale: the .lock file of a dead run holds none.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

LOCK = ".lock"


class RunFolderError(ValueError):
    """A run folder that this training may not use: locked by another one, or holding a run (names it)."""


@contextlib.contextmanager
def run_lock(folder: str | Path) -> Iterator[None]:
    """Holds the lock of ``folder`` (created if missing) inside; RunFolderError naming the folder and the
    holder's pid when another process holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            raise RunFolderError(
                f"run folder {folder} is in use by another training (pid {holder}); wait for it to "
                "finish, or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
