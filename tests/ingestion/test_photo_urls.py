"""A Google Merchant feed whose photos are URLs, through the real ingest: photos served by a real HTTP server on
loopback (allowed by ALLOW_PRIVATE_PHOTO_URLS=1), downloaded during the ingest, every product's second photo finding
it, a broken URL named in the report while its product goes in, a product without a photo found by its title, and a
second import that downloads nothing; without the setting no request reaches the server."""

from __future__ import annotations

from dataclasses import replace

from pipeline.ingestion.ingest import ingest
from pipeline.storage.photos import PhotoStore

from ..conftest import shared
from ..test_url_fetch import PhotoServer

PHOTOS = ["10049.jpg", "10174.jpg", "10183.jpg", "10194.jpg", "10213.jpg"]


def _feed(tmp_path):
    server = PhotoServer()
    for n, name in enumerate(PHOTOS):
        server.photos[f"/p/{name}"] = shared("fashion", "images", name).read_bytes()
        server.etags[f"/p/{name}"] = f'"e{n}"'
    url = lambda name: server.url(f"/p/{name}")  # noqa: E731
    rows = [
        ["id", "title", "description", "link", "image_link", "additional_image_link", "price", "brand"],
        ["sh-1", "Striped linen shirt", "Light", "https://shop.example/sh-1", url(PHOTOS[0]),
         f"{url(PHOTOS[1])},{url(PHOTOS[2])}", "30.00 USD", "Acme"],
        ["tb-2", "Canvas tote bag", "Roomy", "https://shop.example/tb-2", url(PHOTOS[3]),
         f"{server.url('/p/missing.jpg')},{url(PHOTOS[4])}", "9.50 USD", "Acme"],
        ["gc-3", "Gift card for the whole shop", "Any amount", "https://shop.example/gc-3", "", "", "25.00 USD",
         "Acme"],
    ]  # fmt: skip
    feed = tmp_path / "feed.tsv"
    feed.write_text("\n".join("\t".join(r) for r in rows) + "\n")
    return server, feed


def test_a_merchant_feed_with_photo_urls_goes_in_and_a_second_import_downloads_nothing(pipeline, tmp_path):
    server, feed = _feed(tmp_path)
    try:
        pipeline.settings = replace(pipeline.settings, allow_private_photo_urls=True)
        report = ingest(pipeline, feed, progress=False)
        assert report.format.startswith("Read feed.tsv as a Google Merchant")
        assert (report.added, report.bad, report.photos, report.without_photo) == (3, [], 5, 1)
        assert [(b.product_id, "404" in b.reason) for b in report.failed_photos] == [("tb-2", True)]
        assert "missing.jpg" in report.failed_photos[0].reason and report.downloads["fetched"] == 5
        doc = pipeline.store.get_many(["sh-1"])["sh-1"]
        assert doc["price"] == 30.0 and doc["currency"] == "USD" and len(doc["image_files"]) == 3
        for owner, name in (("sh-1", PHOTOS[1]), ("sh-1", PHOTOS[2]), ("tb-2", PHOTOS[4])):  # second photos
            match = pipeline.matcher.match_image(shared("fashion", "images", name), top_k=3).matches[0]
            assert match.id == owner and match.image.endswith(PhotoStore.key_for(server.photos[f"/p/{name}"]))
        title = pipeline.matcher.match_text("Gift card for the whole shop", top_k=3).matches[0]
        assert (title.id, title.url, title.currency) == ("gc-3", "https://shop.example/gc-3", "USD")
        before = sum(server.hits.values())
        again = ingest(pipeline, feed, progress=False)
        assert (again.added, again.updated, again.unchanged) == (0, 0, 3)
        assert sum(server.hits.values()) == before, "an unchanged feed makes no request at all"
    finally:
        server.close()


def test_without_the_setting_no_loopback_url_is_fetched(pipeline, tmp_path):
    server, feed = _feed(tmp_path)
    try:
        report = ingest(pipeline, feed, progress=False)
        assert sum(server.hits.values()) == 0, "no connection is made to a refused address"
        assert report.added == 3 and report.photos == 0 and report.without_photo == 3
        reasons = {b.reason for b in report.failed_photos}
        assert len(report.failed_photos) == 6 and all("ALLOW_PRIVATE_PHOTO_URLS=1" in r for r in reasons)
        assert all("loopback" in r for r in reasons)
    finally:
        server.close()
