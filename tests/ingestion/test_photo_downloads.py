"""Photo URLs downloaded for an ingest from the real loopback server of tests/test_url_fetch.py: the record of what
each URL gave, conditional requests, reuse without a request, failures as sentences, one request per URL in flight."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from pipeline.ingestion.photo_downloads import Download, DownloadStats, PhotoDownloads, limits_of, record_path
from pipeline.settings import Settings
from pipeline.url_fetch import FetchLimits

from ..test_url_fetch import LOCAL, PUBLIC_ONLY, PhotoServer


@pytest.fixture
def server():
    srv = PhotoServer()
    yield srv
    srv.close()


class Store:
    """The caller's photo store: files under a folder, by key."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def put(self, key: str, data: bytes) -> None:
        (self.folder / key).write_bytes(data)

    def path(self, key: str) -> Path | None:
        path = self.folder / key
        return path if path.is_file() else None


def _ingest(downloads: PhotoDownloads, store: Store, urls: list[str]) -> list[Download]:
    """What an ingest does: submit every URL, store each photo got, remember it."""
    results = [f.result(timeout=30) for f in [downloads.submit(u) for u in urls]]
    for i, got in enumerate(results):
        if got.data is not None:
            key = f"p{i}.img"
            store.put(key, got.data)
            downloads.remember(got.url, key, got.etag, got.last_modified)
    return results


def test_first_ingest_downloads_then_the_second_asks_conditionally(server, tmp_path):
    store = Store(tmp_path / "photos")
    record = tmp_path / "photos" / "urls.sqlite"
    urls = [server.url("/photo.jpg"), server.url("/photo.png")]
    with PhotoDownloads(record, store.path, LOCAL, workers=4) as downloads:
        first = _ingest(downloads, store, urls)
        stats = downloads.stats()
    assert [(d.downloaded, d.error) for d in first] == [(True, None), (True, None)]
    assert first[0].data == server.photos["/photo.jpg"] and first[0].etag == '"v1"'
    assert first[1].last_modified == server.modified
    assert (stats.fetched, stats.not_modified, stats.failed) == (2, 0, 0)
    assert stats.bytes == sum(len(server.photos[p]) for p in ("/photo.jpg", "/photo.png"))

    with PhotoDownloads(record, store.path, LOCAL, workers=4) as downloads:  # the record outlives the object
        second = [downloads.submit(u).result(timeout=30) for u in urls]
        stats = downloads.stats()
    assert [(d.downloaded, d.error) for d in second] == [(False, None), (False, None)]
    assert second[0].data == (store.folder / "p0.img").read_bytes() == server.photos["/photo.jpg"]
    assert second[1].data == server.photos["/photo.png"] and second[0].etag == '"v1"'
    assert server.headers["/photo.jpg"]["If-None-Match"] == '"v1"'
    assert server.headers["/photo.png"]["If-Modified-Since"] == server.modified
    assert server.hits["/photo.jpg"] == server.hits["/photo.png"] == 2
    assert (stats.fetched, stats.not_modified, stats.bytes) == (0, 2, 0)
    assert stats.line().startswith("photos: 0 fetched, 2 not modified, 0 failed, ") and stats.line().endswith("/s")


def test_a_changed_photo_is_downloaded_again(server, tmp_path):
    store = Store(tmp_path / "photos")
    url = server.url("/photo.jpg")
    with PhotoDownloads(tmp_path / "urls.sqlite", store.path, LOCAL) as downloads:
        _ingest(downloads, store, [url])
        server.photos["/photo.jpg"], server.etags["/photo.jpg"] = b"new bytes", '"v2"'
        again = downloads.submit(url).result(timeout=30)
    assert (again.downloaded, again.data, again.etag) == (True, b"new bytes", '"v2"')


def test_a_record_without_validators_is_reused_without_a_request(server, tmp_path):
    store = Store(tmp_path / "photos")
    store.put("k1", b"stored photo")
    url = server.url("/photo.jpg")
    with PhotoDownloads(tmp_path / "urls.sqlite", store.path, LOCAL) as downloads:
        downloads.remember(url, "k1", None, None)
        got = downloads.submit(url).result(timeout=30)
        stats = downloads.stats()
    assert (got.data, got.downloaded, got.error) == (b"stored photo", False, None)
    assert server.hits["/photo.jpg"] == 0 and stats.reused == 1


def test_a_record_whose_photo_is_gone_downloads_again(server, tmp_path):
    store = Store(tmp_path / "photos")
    url = server.url("/photo.jpg")
    with PhotoDownloads(tmp_path / "urls.sqlite", store.path, LOCAL) as downloads:
        downloads.remember(url, "missing", '"v1"', None)
        got = downloads.submit(url).result(timeout=30)
    assert got.downloaded and got.data == server.photos["/photo.jpg"]
    assert "If-None-Match" not in server.headers["/photo.jpg"]  # a 304 would have had nothing to give


def test_failures_are_sentences_never_exceptions(server, tmp_path):
    store = Store(tmp_path / "photos")
    urls = [server.url("/status/404"), server.url("/slow"), server.url("/reset"), "file:///etc/passwd",
            "ftp://example.com/a.jpg", "not a url"]  # fmt: skip
    with PhotoDownloads(tmp_path / "urls.sqlite", store.path, LOCAL, workers=8) as downloads:
        results = [downloads.submit(u).result(timeout=30) for u in urls]
        refused = downloads.submit(server.url("/photo.jpg")).result(timeout=30)
        stats = downloads.stats()
    for got in results:
        assert got.data is None and not got.downloaded and got.error, got
        assert "\n" not in got.error and "Traceback" not in got.error
    assert "HTTP 404 Not Found" in results[0].error and "timed out" in results[1].error
    assert "file:" in results[3].error and stats.failed == len(urls)
    assert refused.downloaded  # LOCAL allows loopback
    with PhotoDownloads(tmp_path / "urls2.sqlite", store.path, PUBLIC_ONLY) as downloads:
        private = downloads.submit(server.url("/photo.jpg")).result(timeout=30)
    assert private.data is None and "ALLOW_PRIVATE_PHOTO_URLS=1" in private.error
    assert server.hits["/photo.jpg"] == 1


def test_the_same_url_in_flight_is_one_request(server, tmp_path):
    store = Store(tmp_path / "photos")
    url = server.url("/gated/photo.jpg")  # answered once every submit is in
    with PhotoDownloads(tmp_path / "urls.sqlite", store.path, LOCAL, workers=4) as downloads:
        futures = [downloads.submit(url) for _ in range(10)]
        time.sleep(0.2)
        assert not futures[0].done()
        server.gate.set()
        results = [f.result(timeout=30) for f in futures]
        after = downloads.submit(url).result(timeout=30)  # no longer in flight: a request of its own
    assert len({id(f) for f in futures}) == 1 and server.hits["/gated/photo.jpg"] == 2
    assert all(r.data == server.photos["/photo.jpg"] and r.downloaded for r in results) and after.downloaded


def test_many_urls_run_on_the_bounded_pool(server, tmp_path):
    store = Store(tmp_path / "photos")
    urls = [server.url(f"/text?n={i}") for i in range(40)]  # distinct URLs, one path
    with PhotoDownloads(tmp_path / "urls.sqlite", store.path, LOCAL, workers=2) as downloads:
        results = [f.result(timeout=30) for f in [downloads.submit(u) for u in urls]]
        threads = {t.name for t in threading.enumerate() if t.name.startswith("photo-download")}
    assert all(r.downloaded for r in results) and server.hits["/text"] == 40
    assert len(threads) <= 2


def test_closed_downloads_answer_with_a_sentence(server, tmp_path):
    downloads = PhotoDownloads(tmp_path / "urls.sqlite", Store(tmp_path / "p").path, LOCAL)
    downloads.close()
    downloads.close()
    got = downloads.submit(server.url("/photo.jpg")).result(timeout=1)
    assert got.error and got.data is None and server.hits["/photo.jpg"] == 0


def test_limits_and_record_from_settings(tmp_path):
    settings = Settings.from_env(
        {"DATA_DIR": str(tmp_path), "MAX_IMAGE_MB": "5", "PHOTO_URL_TIMEOUT_S": "2.5", "ALLOW_PRIVATE_PHOTO_URLS": "1"}
    )
    assert limits_of(settings) == FetchLimits(max_bytes=5 * 2**20, timeout_s=2.5, max_redirects=3, allow_private=True)
    assert limits_of(Settings()) == FetchLimits()
    assert record_path(settings) == tmp_path / "photos" / "urls.sqlite"


def test_stats_line():
    stats = DownloadStats(fetched=120, not_modified=0, reused=0, failed=3, bytes=10, seconds=123 / 14.2)
    assert stats.line() == "photos: 120 fetched, 3 failed, 14.2/s"
