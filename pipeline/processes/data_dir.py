"""One serving app per data folder.

The embedded stores (Qdrant Edge's shard, the local MongoDB-protocol server, the photo store) belong to one serving
process: a second app on the same ``DATA_DIR`` would start, fail to open the index and serve a page that answers
nothing. The app therefore takes ``DATA_DIR/app.lock`` before it opens anything, and a second one stops with one
sentence naming the first.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

from ..errors import BackendUnavailable
from .locks import holder, try_lock

LOCK_FILE = "app.lock"


class DataDirInUse(BackendUnavailable):
    pass


def hold_data_dir(data_dir: Path) -> IO[str]:
    """Take the folder for this process; keep the returned file open while serving (closing it releases the lock)."""
    handle = try_lock(data_dir / LOCK_FILE, record_pid=True)
    if handle is None:
        raise DataDirInUse(
            f"The data folder {data_dir} is in use by another app (pid {holder(data_dir / LOCK_FILE)}): stop that "
            "app, or give this one its own DATA_DIR (with QDRANT_URL and MONGODB_URI several apps may share one "
            "catalogue)."
        )
    return handle
