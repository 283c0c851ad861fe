"""One serving app per data folder.

The embedded stores (Qdrant Edge's shard, the local MongoDB-protocol server, the photo store) belong to one serving
process; a second app on the same ``DATA_DIR`` would otherwise start, fail to open the index and serve a page that
answers nothing. The app takes an exclusive ``flock`` on ``DATA_DIR/app.lock`` before it opens anything, so the second
one stops at once with one sentence. The kernel drops the lock when the holder dies, even by ``kill -9``: a stale lock
file never blocks a restart.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from pipeline.errors import BackendUnavailable

LOCK_FILE = "app.lock"


class DataDirInUse(BackendUnavailable):
    pass


def hold_data_dir(data_dir: Path) -> IO[str]:
    """Take the folder for this process; keep the returned file open while serving (closing it releases the lock)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    handle = open(data_dir / LOCK_FILE, "a+")  # noqa: SIM115 (held open for the life of the app)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise DataDirInUse(
            f"The data folder {data_dir} is in use by another app (pid {holder}): stop that app, or give this one "
            "its own DATA_DIR (with QDRANT_URL and MONGODB_URI several apps may share one catalogue)."
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle
