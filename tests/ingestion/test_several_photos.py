"""Several photos per product, products without a photo and shop links, through the real ingest and query path
(the tests' small CLIP, the MongoDB-protocol server, Qdrant Edge): every photo of a product is embedded, a query with
any of them finds that product first and shows that photo, a product without a photo goes in and is found by its
title, and its link comes back with the answer."""

from __future__ import annotations

import json
import shutil

import pytest

from pipeline.errors import InvalidInput
from pipeline.ingestion.duplicates import near_duplicates
from pipeline.ingestion.ingest import ingest
from pipeline.storage.photos import PhotoStore

from ..conftest import shared

PHOTOS = ["10049.jpg", "10174.jpg", "10183.jpg", "10194.jpg", "10213.jpg", "10215.jpg"]


def _catalogue(tmp_path):
    folder = tmp_path / "cat"
    (folder / "images").mkdir(parents=True)
    for name in PHOTOS:
        shutil.copy(shared("fashion", "images", name), folder / "images" / name)
    rows = [
        {"id": "three", "name": "Striped linen shirt", "price": 30, "url": "https://shop.example/p/three",
         "image_paths": [f"images/{n}" for n in PHOTOS[:3]]},
        {"id": "one", "name": "Leather belt", "price": 12, "image_path": f"images/{PHOTOS[3]}",
         "url": "javascript:alert(1)"},
        {"id": "two", "name": "Canvas tote bag", "price": 9, "image_paths": [f"images/{n}" for n in PHOTOS[4:]]},
        {"id": "none", "name": "Gift card for the whole shop", "price": 25},
    ]  # fmt: skip
    (folder / "catalog.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return folder


def test_every_photo_is_embedded_and_any_of_them_finds_its_product(pipeline, tmp_path):
    folder = _catalogue(tmp_path)
    report = ingest(pipeline, folder / "catalog.jsonl", progress=False)
    assert (report.added, report.bad, report.photos, report.without_photo) == (4, [], 6, 1)
    assert "6 photos embedded; 1 products without a photo" in report.summary()
    held = pipeline.index.photo_vectors(["three", "one", "two", "none"])
    assert {pid: len(rows) for pid, rows in held.items()} == {"three": 3, "one": 1, "two": 2}
    doc = pipeline.store.get_many(["three"])["three"]
    keys = [PhotoStore.key_for((folder / "images" / n).read_bytes()) for n in PHOTOS[:3]]
    assert doc["image_files"] == keys and doc["image_file"] == keys[0]
    for owner, names in (("three", PHOTOS[:3]), ("one", PHOTOS[3:4]), ("two", PHOTOS[4:])):
        for name in names:
            result = pipeline.matcher.match_image(folder / "images" / name, top_k=4)
            first = result.matches[0]
            assert first.id == owner and first.score > 0.999, (name, [(m.id, m.score) for m in result.matches])
            assert first.image.endswith(PhotoStore.key_for((folder / "images" / name).read_bytes()))
            assert len({m.id for m in result.matches}) == len(result.matches), "each product once"
            assert "none" not in {m.id for m in result.matches}, "no photo: not a photo query's answer"


def test_a_product_without_a_photo_is_found_by_its_title_and_links_come_back(pipeline, tmp_path):
    folder = _catalogue(tmp_path)
    ingest(pipeline, folder / "catalog.jsonl", progress=False)
    result = pipeline.matcher.match_text("Gift card for the whole shop", top_k=4)
    assert result.matches[0].id == "none" and result.matches[0].image is None
    links = {m.id: m.url for m in pipeline.matcher.match_text("shirt belt bag", top_k=4).matches}
    assert links["three"] == "https://shop.example/p/three"
    assert links["one"] is None, "only http(s) links are links"
    assert pipeline.matcher.match_text("Striped linen shirt", top_k=1).to_json()["matches"][0]["url"] == (
        "https://shop.example/p/three"
    )


def test_more_like_this_diversity_and_near_duplicates_take_every_photo(pipeline, tmp_path):
    folder = _catalogue(tmp_path)
    # a fifth product showing the tote bag's second photo again: a near-identical pair, found through that photo
    shutil.copy(folder / "images" / PHOTOS[5], folder / "images" / "copy.jpg")
    rows = [json.loads(line) for line in (folder / "catalog.jsonl").read_text().splitlines()]
    rows.append({"id": "copy", "name": "Tote bag again", "image_paths": ["images/copy.jpg"]})
    (folder / "catalog.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    report = ingest(pipeline, folder / "catalog.jsonl", progress=False)
    assert [(d["a"], d["b"]) for d in report.duplicates] == [("copy", "two")]
    assert [(d["a"], d["b"]) for d in near_duplicates(pipeline.index, None, 0.995)] == [("copy", "two")]
    similar = pipeline.matcher.similar("three", top_k=3)
    assert similar.matches and "three" not in {m.id for m in similar.matches}
    with pytest.raises(InvalidInput, match="has no photo to compare with"):
        pipeline.matcher.similar("none", top_k=3)
    diverse = pipeline.matcher.match_text("bag", top_k=4, diverse=True)
    assert len({m.id for m in diverse.matches}) == len(diverse.matches)


def test_a_second_import_of_the_same_file_changes_nothing_and_a_photo_removed_updates(pipeline, tmp_path):
    folder = _catalogue(tmp_path)
    ingest(pipeline, folder / "catalog.jsonl", progress=False)
    again = ingest(pipeline, folder / "catalog.jsonl", progress=False)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 4)
    rows = [json.loads(line) for line in (folder / "catalog.jsonl").read_text().splitlines()]
    rows[0]["image_paths"] = rows[0]["image_paths"][1:]
    (folder / "catalog.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    changed = ingest(pipeline, folder / "catalog.jsonl", progress=False, sync=True)
    assert (changed.updated, changed.unchanged) == (1, 3)
    assert len(pipeline.index.photo_vectors(["three"])["three"]) == 2
    gone = pipeline.photos.path(PhotoStore.key_for((folder / "images" / PHOTOS[0]).read_bytes()))
    assert not gone.is_file(), "the photo no product shows any more is removed"


def test_a_shopify_export_goes_in_as_it_is_and_a_variant_sku_finds_its_product(pipeline, tmp_path):
    """Variant rows and extra image rows of one Handle make one product, with every photo, the lowest price and
    every SKU searchable; the product link comes from SHOP_URL."""
    import csv
    from dataclasses import replace

    folder = _catalogue(tmp_path)
    header = ["Handle", "Title", "Body (HTML)", "Vendor", "Type", "Tags", "Variant SKU", "Variant Price",
              "Image Src", "Image Position"]  # fmt: skip
    rows = [
        header,
        ["linen-shirt", "Striped linen shirt", "<p>Cool &amp; light</p>", "Acme", "Shirts", "summer", "LIN-S", "35.00",
         f"images/{PHOTOS[1]}", "2"],
        ["linen-shirt", "", "", "", "", "", "LIN-M-BLUE-7731", "29.50", f"images/{PHOTOS[0]}", "1"],
        ["canvas-tote", "Canvas tote bag", "Roomy", "Acme", "Bags", "", "TOTE-1", "9.00", f"images/{PHOTOS[4]}", "1"],
    ]  # fmt: skip
    with open(folder / "products_export.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    pipeline.settings = replace(pipeline.settings, shop_url="https://shop.example")
    report = ingest(pipeline, folder / "products_export.csv", progress=False)
    assert report.format.startswith("Read products_export.csv as a Shopify") and (report.added, report.photos) == (2, 3)
    doc = pipeline.store.get_many(["linen-shirt"])["linen-shirt"]
    assert doc["price"] == 29.5 and doc["description"] == "Cool & light" and doc["brand"] == "Acme"
    assert len(doc["image_files"]) == 2 and doc["image_file"] == PhotoStore.key_for(
        (folder / "images" / PHOTOS[0]).read_bytes()
    ), "the photo at position 1 is the main one"
    first = pipeline.matcher.match_text("LIN-M-BLUE-7731", top_k=2).matches[0]
    assert first.id == "linen-shirt" and first.url == "https://shop.example/products/linen-shirt"
    assert pipeline.matcher.match_image(folder / "images" / PHOTOS[1], top_k=1).matches[0].id == "linen-shirt"
