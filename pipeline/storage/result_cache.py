"""Result cache on disk (diskcache), so repeated queries are instant and survive restarts.

Two levels, both namespaced by the model identity:
- query -> embedding, keyed by a hash of the raw query (text, or the photo's bytes), so a hit skips the network;
- embedding -> ranked results, keyed by a hash of the embedding together with everything else that changes the answer:
  catalogue version, k, filters, query kind and fusion weight. Ingesting anything bumps the catalogue version, so a
  changed catalogue can never be served from stale entries (they age out under the size bound).

A cache is only ever a shortcut: when its folder is deleted or its database is corrupted under a running app, the
failing read is a miss, the folder is rebuilt empty (one warning in the log), and queries keep working.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import pickle
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("pipeline.cache")
# What a damaged cache raises: SQLite's errors (a corrupt or vanished database), OSError (a value file gone), and
# unpickling errors (a truncated value file).
DAMAGE = (sqlite3.Error, OSError, EOFError, pickle.UnpicklingError)
DB_FILE = "cache.db"  # diskcache's database in the folder
RETRY_S = 30.0  # while the cache cannot be opened, how often to try again


def _disk_full(err: BaseException) -> bool:
    return (isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)) or "disk is full" in str(err)


def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(np.ascontiguousarray(part, dtype=np.float32).tobytes())
        elif isinstance(part, bytes):
            h.update(part)
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()


class ResultCache:
    def __init__(self, directory: Path, size_mb: int = 256) -> None:
        self.directory = Path(directory)
        self.size_mb = size_mb
        self.rebuilds = 0
        self._lock = threading.Lock()
        self._retry_at = 0.0
        self.cache = None  # None while it cannot be opened (a full disk): answers are computed, not stored
        try:
            self.cache = self._open()
        except DAMAGE as err:
            self._damaged(None, err)

    def _open(self):
        import diskcache

        self.directory.mkdir(parents=True, exist_ok=True)
        # Evict the oldest stored entries, not the least recently read: a hit then only reads (with LRU every hit is
        # an SQLite write of its access time, which doubled a hit's cost; docs/operations.md), and the oldest entries
        # are mostly answers for catalogue versions that an ingest has since replaced, which no query can reach any
        # more.
        cache = diskcache.Cache(
            str(self.directory), size_limit=self.size_mb * 2**20, eviction_policy="least-recently-stored"
        )
        len(cache)  # reads the database: a corrupt one fails here, not on the first query
        return cache

    def _damaged(self, broken, err: BaseException) -> None:
        """A failed operation: on a full disk, go without the cache for a while (its entries are fine); otherwise
        replace the damaged cache with an empty one (once, whichever thread sees the damage first)."""
        with self._lock:
            if broken is not None and self.cache is not broken:
                return  # another thread has dealt with it already
            if _disk_full(err):
                if self.cache is not None or broken is None:
                    log.warning("The disk of the result cache %s is full; answering without it.", self.directory)
                self._retry_at = time.monotonic() + RETRY_S
                return
            log.warning("The result cache in %s is damaged (%s); starting it again empty.", self.directory, err)
            if broken is not None:
                with contextlib.suppress(Exception):
                    broken.close()
            self.cache = None
            shutil.rmtree(self.directory, ignore_errors=True)
            self.rebuilds += 1
            try:
                self.cache = self._open()
            except DAMAGE as again:  # the folder cannot be made at all (read-only): answer without it for a while
                log.warning("The result cache %s cannot be rebuilt (%s); answering without it.", self.directory, again)
                self._retry_at = time.monotonic() + RETRY_S

    def _guarded(self, operation: Callable[[Any], Any], default: Any = None) -> Any:
        cache = self.cache
        if cache is None:
            if time.monotonic() < self._retry_at:
                return default
            with self._lock:
                if self.cache is None:
                    try:
                        self.cache = self._open()
                    except DAMAGE:
                        self._retry_at = time.monotonic() + RETRY_S
                        return default
            cache = self.cache
        try:
            return operation(cache)
        except DAMAGE as err:
            self._damaged(cache, err)
            return default

    @staticmethod
    def query_key(model: str, kind: str, raw: bytes) -> str:
        return "q:" + _digest(model, kind, raw)

    @staticmethod
    def result_key(model: str, embedding: np.ndarray, **answer_inputs: Any) -> str:
        return "r:" + _digest(model, embedding, answer_inputs)

    def get(self, key: str) -> Any:
        return self._guarded(lambda cache: cache.get(key))

    def set(self, key: str, value: Any) -> None:
        def store(cache) -> None:
            if not (self.directory / DB_FILE).is_file():  # the folder was deleted: SQLite would write to nowhere
                raise FileNotFoundError(f"{self.directory / DB_FILE} is gone")
            cache.set(key, value)

        self._guarded(store)

    def clear(self) -> None:
        self._guarded(lambda cache: cache.clear())

    def __len__(self) -> int:
        return self._guarded(len, 0)

    def close(self) -> None:
        if self.cache is not None:
            with contextlib.suppress(Exception):
                self.cache.close()
