"""The one file lock: an exclusive ``flock`` that the kernel drops when its holder dies, even by ``kill -9``.

A stale lock file therefore never blocks a restart; a lock is held for as long as its file stays open.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def try_lock(path: Path, record_pid: bool = False) -> IO[str] | None:
    """Take ``path``'s lock without waiting: the open file while held (closing it releases), None if another process
    holds it. ``record_pid`` writes this process's pid into the file, for the sentence another process shows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 (held open for as long as the lock is)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    if record_pid:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
    return handle


def holder(path: Path) -> str:
    """The pid recorded by the lock's holder, or "unknown"."""
    try:
        return path.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


@contextlib.contextmanager
def locked(path: Path, blocking: bool = True) -> Iterator[bool]:
    """Hold ``path``'s lock for a block; yields False (without the lock) if ``blocking`` is off and another process
    holds it. Raises FileNotFoundError if the folder is gone (the lock file is made, its folder is not)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock
