"""Catalogue photos given as http(s) URLs, downloaded during an ingest: a bounded pool of downloads, each through
``pipeline.url_fetch`` (its address checks, timeouts and size limit), and a record of what each URL gave.

The record (an sqlite database, ``DATA_DIR/photos/urls.sqlite`` for the ingest) maps a URL to the key the caller stored
its photo under, with the server's ``ETag`` / ``Last-Modified``. A URL seen before whose stored photo is still there is
asked for conditionally (304: the stored copy, nothing transferred); one whose server gave no validators is taken from
the stored copy without a request. Failures are ``Download.error``, one sentence; ``submit`` never raises. The photo's
bytes are not decoded here: the ingest's own decoding makes a bad photo one bad row.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..errors import PipelineError
from ..settings import Settings
from ..url_fetch import FetchLimits, fetch, short

QUEUED_PER_WORKER = 4  # submit waits while this many downloads per worker are queued or running


@dataclass
class Download:
    url: str
    data: bytes | None  # the photo's bytes (fresh, or the stored copy on 304 / reuse); None on failure
    error: str | None  # one sentence on failure
    downloaded: bool  # True when a body was transferred this time
    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class DownloadStats:
    fetched: int  # bodies transferred (200)
    not_modified: int  # 304: the stored copy
    reused: int  # stored copies taken without a request (the server gave no validators)
    failed: int
    bytes: int  # transferred
    seconds: float  # since the first submit

    @property
    def per_second(self) -> float:
        done = self.fetched + self.not_modified + self.reused + self.failed
        return done / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """The progress line: "photos: 120 fetched, 3 failed, 14.2/s" (304s and reuses named when there are any)."""
        parts = [f"{self.fetched} fetched"]
        if self.not_modified:
            parts.append(f"{self.not_modified} not modified")
        if self.reused:
            parts.append(f"{self.reused} reused")
        parts.append(f"{self.failed} failed")
        return f"photos: {', '.join(parts)}, {self.per_second:.1f}/s"


def limits_of(settings: Settings) -> FetchLimits:
    """The fetch limits the settings give: ``MAX_IMAGE_MB``, ``PHOTO_URL_TIMEOUT_S``, ``ALLOW_PRIVATE_PHOTO_URLS``."""
    return FetchLimits(
        max_bytes=int(settings.max_image_mb * 2**20),
        timeout_s=settings.photo_url_timeout_s,
        allow_private=settings.allow_private_photo_urls,
    )


def record_path(settings: Settings) -> Path:
    return settings.photos_path / "urls.sqlite"


@dataclass(frozen=True)
class _Record:
    key: str
    etag: str | None
    last_modified: str | None


class PhotoDownloads:
    """Downloads of photo URLs on ``workers`` threads; identical URLs in flight share one request."""

    def __init__(
        self,
        record_file: Path,
        stored_photo: Callable[[str], Path | None],
        limits: FetchLimits,
        workers: int = 16,
    ) -> None:
        record_file = Path(record_file)
        record_file.parent.mkdir(parents=True, exist_ok=True)
        self._stored_photo = stored_photo
        self._limits = limits
        self._db_lock = threading.Lock()
        self._db = sqlite3.connect(record_file, check_same_thread=False, isolation_level=None, timeout=30)
        with self._db_lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS urls (url TEXT PRIMARY KEY, key TEXT NOT NULL, etag TEXT, "
                "last_modified TEXT, fetched_at REAL NOT NULL)"
            )
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="photo-download")
        self._slots = threading.BoundedSemaphore(max(1, workers) * QUEUED_PER_WORKER)
        self._lock = threading.Lock()
        self._in_flight: dict[str, Future[Download]] = {}
        self._counts = {"fetched": 0, "not_modified": 0, "reused": 0, "failed": 0, "bytes": 0}
        self._started: float | None = None
        self._stopped: float | None = None
        self._closed = False

    # --- the caller's side

    def submit(self, url: str) -> Future[Download]:
        """The download of ``url``, running or queued (the same future for a URL already in flight). Never raises."""
        with self._lock:
            if self._started is None:
                self._started = time.monotonic()
            running = self._in_flight.get(url)
            if running is not None:
                return running
            if self._closed:
                return _done(Download(url, None, "Photo downloads are closed: the ingest has ended.", False))
        self._slots.acquire()  # waits while too many are queued: the pool stays bounded
        with self._lock:
            running = self._in_flight.get(url)  # submitted by another thread meanwhile
            if running is not None or self._closed:
                self._slots.release()
                if running is not None:
                    return running
                return _done(Download(url, None, "Photo downloads are closed: the ingest has ended.", False))
            future = self._pool.submit(self._download, url)
            self._in_flight[url] = future
        future.add_done_callback(lambda done: self._finished(url, done))
        return future

    def remember(self, url: str, key: str, etag: str | None, last_modified: str | None) -> None:
        """Record that ``url``'s photo is stored under ``key`` (after the caller stored it), with its validators."""
        with self._db_lock:
            self._db.execute(
                "INSERT OR REPLACE INTO urls (url, key, etag, last_modified, fetched_at) VALUES (?, ?, ?, ?, ?)",
                (url, key, etag, last_modified, time.time()),
            )

    def stats(self) -> DownloadStats:
        with self._lock:
            counts = dict(self._counts)
            started, stopped = self._started, self._stopped
        seconds = 0.0 if started is None else (stopped or time.monotonic()) - started
        return DownloadStats(seconds=seconds, **counts)

    def close(self) -> None:
        """Wait for the downloads submitted, then close the record. Closing twice is harmless."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._pool.shutdown(wait=True)
        with self._lock:
            self._stopped = time.monotonic()
        with self._db_lock:
            self._db.close()

    def __enter__(self) -> PhotoDownloads:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the workers' side

    def _finished(self, url: str, future: Future[Download]) -> None:
        with self._lock:
            if self._in_flight.get(url) is future:
                del self._in_flight[url]
        self._slots.release()

    def _count(self, name: str, size: int = 0) -> None:
        with self._lock:
            self._counts[name] += 1
            self._counts["bytes"] += size

    def _record(self, url: str) -> _Record | None:
        with self._db_lock:
            row = self._db.execute("SELECT key, etag, last_modified FROM urls WHERE url = ?", (url,)).fetchone()
        return _Record(*row) if row else None

    def _stored(self, record: _Record | None) -> bytes | None:
        """The stored copy of a recorded URL's photo, or None when there is none (any more)."""
        if record is None:
            return None
        path = self._stored_photo(record.key)
        if path is None:
            return None
        try:
            return Path(path).read_bytes()
        except OSError:
            return None

    def _download(self, url: str) -> Download:
        try:
            return self._get(url)
        except PipelineError as err:
            self._count("failed")
            return Download(url, None, str(err), False)
        except Exception as err:  # a bug or an unforeseen failure: still one row's sentence, never the ingest's end
            self._count("failed")
            reason = " ".join(str(err).split())[:120] or err.__class__.__name__
            return Download(url, None, f"Could not fetch {short(url)}: {reason}.", False)

    def _get(self, url: str) -> Download:
        record = self._record(url)
        stored = self._stored(record)
        if record is not None and stored is not None:
            if not record.etag and not record.last_modified:  # nothing to ask the server with: the URL is its content
                self._count("reused")
                return Download(url, stored, None, False)
            got = fetch(url, self._limits, etag=record.etag, last_modified=record.last_modified)
            if got.status == 304:
                self._count("not_modified")
                etag, modified = got.etag or record.etag, got.last_modified or record.last_modified
                with contextlib.suppress(sqlite3.Error):
                    self.remember(url, record.key, etag, modified)
                return Download(url, stored, None, False, etag, modified)
        else:
            got = fetch(url, self._limits)
        body = got.body or b""
        self._count("fetched", len(body))
        return Download(url, body, None, True, got.etag, got.last_modified)


def _done(download: Download) -> Future[Download]:
    future: Future[Download] = Future()
    future.set_result(download)
    return future
