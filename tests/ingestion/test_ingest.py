"""Ingestion into the real MongoDB-protocol server and Qdrant local mode."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pipeline.errors import CatalogError
from pipeline.ingestion.ingest import ingest
from pipeline.storage.catalog_store import PRODUCT_COLLECTION, PRODUCT_DB

from ..conftest import shared


def test_seed_sample_twice_changes_nothing(pipeline):
    catalog = shared("seed_sample", "catalog.jsonl")
    first = ingest(pipeline, catalog, progress=False)
    assert (first.rows, first.added, first.updated, first.unchanged, first.bad) == (10, 10, 0, 0, [])
    assert first.catalog_version == 1
    assert pipeline.index.count() == 10 and pipeline.store.count() == 10
    doc = pipeline.store.get_many(["1"])["1"]
    assert doc["SKU"] == "SKU-SONY-WH1000XM5-BEIGE" and doc["masterCategory"] == "Electronics"
    second = ingest(pipeline, catalog, progress=False)
    assert (second.added, second.updated, second.unchanged) == (0, 0, 10)
    assert second.catalog_version == 1, "an unchanged catalogue keeps its version"


def test_changed_row_updates_its_product(pipeline, tmp_path):
    source = shared("seed_sample")
    folder = tmp_path / "seed"
    shutil.copytree(source / "images", folder / "images")
    rows = [json.loads(line) for line in (source / "catalog.jsonl").read_text().splitlines()]
    (folder / "catalog.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    ingest(pipeline, folder / "catalog.jsonl", progress=False)
    before = dict(zip(*pipeline.index.all_vectors("text"), strict=True))
    rows[2]["price"] = 1.0
    rows[2]["text"] = "A completely different description of a cheap kettle"
    (folder / "catalog.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    report = ingest(pipeline, folder / "catalog.jsonl", progress=False)
    assert (report.updated, report.unchanged, report.catalog_version) == (1, 9, 2)
    assert pipeline.store.get_many(["3"])["3"]["price"] == 1.0
    after = dict(zip(*pipeline.index.all_vectors("text"), strict=True))
    assert not np.allclose(before["3"], after["3"])
    assert np.allclose(before["1"], after["1"])


def test_corrupt_and_bad_rows_do_not_stop_the_good_ones(pipeline, tmp_path):
    folder = tmp_path / "cat"
    (folder / "images").mkdir(parents=True)
    seed = shared("seed_sample", "images")
    shutil.copy(seed / "Adidas-1.jpg", folder / "images" / "good.jpg")
    (folder / "images" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (folder / "catalog.jsonl").write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"id": "g", "name": "Good jacket", "price": 5, "image_path": "images/good.jpg"},
                {"id": "c", "name": "Corrupt photo", "image_path": "images/corrupt.jpg"},
                {"id": "p", "name": "Bad price", "price": [1], "image_path": "images/good.jpg"},
            ]
        )
    )
    report = ingest(pipeline, folder / "catalog.jsonl", progress=False)
    assert report.added == 1
    assert [(b.line, b.product_id) for b in report.bad] == [(2, "c"), (3, "p")]
    assert "not a supported image" in report.bad[0].reason
    assert pipeline.index.count() == 1
    assert "line 2 (id c)" in report.summary()


def test_a_sync_or_replace_from_a_file_with_no_product_changes_nothing(pipeline, tmp_path):
    """An empty export, a header without an id column, photos left behind: every row bad. Syncing to such a file
    would delete the whole catalogue; it is refused with the reason, and nothing changes."""
    ingest(pipeline, shared("seed_sample", "catalog.jsonl"), progress=False)
    version = pipeline.index.version()
    (tmp_path / "empty.jsonl").write_text("")
    rows = [{"id": "x1", "name": "Kettle", "image_path": "images/gone.jpg"}, {"name": "no id"}]
    (tmp_path / "bad.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    for name, flags, words in (
        ("empty.jsonl", {"sync": True}, "(it has no rows)"),
        ("bad.jsonl", {"sync": True}, "(2 rows, every one bad: line 1 (id x1): "),
        ("bad.jsonl", {"reset": True}, "replacing the catalogue with it would delete all 10 products"),
    ):
        with pytest.raises(CatalogError, match="Nothing was changed") as err:
            ingest(pipeline, tmp_path / name, progress=False, **flags)
        assert words in str(err.value) and f"No product could be read from {name}" in str(err.value)
        assert (pipeline.index.count(), pipeline.store.count(), pipeline.index.version()) == (10, 10, version)
    assert ingest(pipeline, tmp_path / "empty.jsonl", progress=False).changed == 0  # a plain import of it: nothing


def test_an_empty_catalogue_can_be_synced_to_an_empty_file(pipeline, tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    assert ingest(pipeline, tmp_path / "empty.jsonl", sync=True, progress=False).changed == 0


def test_a_photo_goes_with_the_last_product_that_uses_it(pipeline, tmp_path):
    """Deleting products removes the photos only they used (two products with the same photo bytes share one file);
    a sync sweeps the photo folder of what no product uses."""
    from pipeline.ingestion.ingest import delete_products

    folder = tmp_path / "cat"
    (folder / "images").mkdir(parents=True)
    seed = shared("seed_sample", "images")
    for name in ("Adidas-1.jpg", "Adidas-1-copy.jpg"):
        shutil.copy(seed / "Adidas-1.jpg", folder / "images" / name)
    shutil.copy(
        seed / sorted(p.name for p in seed.iterdir() if p.name != "Adidas-1.jpg")[0], folder / "images" / "other.jpg"
    )
    rows = [{"id": "a", "name": "Shoe", "image_path": "images/Adidas-1.jpg"},
            {"id": "b", "name": "Same shoe", "image_path": "images/Adidas-1-copy.jpg"},
            {"id": "c", "name": "Other", "image_path": "images/other.jpg"},
            {"id": "d", "name": "Other again", "image_path": "images/other.jpg"}]  # fmt: skip
    (folder / "catalog.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    ingest(pipeline, folder / "catalog.jsonl", progress=False)
    photo = {pid: pipeline.photos.path(d["image_file"]) for pid, d in pipeline.store.get_many(["a", "b", "c"]).items()}
    assert photo["a"] == photo["b"] != photo["c"] and all(p.is_file() for p in photo.values()), "one file, shared"
    stray = pipeline.photos.root / "ff" / ("f" * 32 + ".jpg")  # a photo an interrupted import left behind
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(photo["c"].read_bytes())
    assert delete_products(pipeline, ["a"]) == (["a"], [])
    assert photo["a"].is_file(), "still used by b"
    assert delete_products(pipeline, ["b", "nobody"]) == (["b"], ["nobody"])
    assert not photo["b"].exists() and photo["c"].is_file() and stray.is_file(), "only the photo b was the last to use"
    (folder / "catalog.jsonl").write_text(json.dumps(rows[2]))
    assert ingest(pipeline, folder / "catalog.jsonl", progress=False, sync=True).deleted == 1  # d
    assert photo["c"].is_file() and not stray.exists(), "a sync that deletes sweeps what no product uses"


def test_fashion_thousand_products(pipeline):
    report = ingest(pipeline, shared("fashion", "catalog.jsonl"), progress=False)
    assert (report.added, len(report.bad)) == (1000, 0)
    assert pipeline.index.count() == 1000
    client = pipeline.mongo
    assert client[PRODUCT_DB][PRODUCT_COLLECTION].count_documents({}) == 1000
    pipeline.events.flush()
    event = client["log_db"]["system_logs"].find_one({"kind": "ingest"})
    assert event["added"] == 1000 and "vector" not in json.dumps(event, default=str)
