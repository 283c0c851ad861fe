"""Catalogue parsing and validation: every bad row is reported with its line and reason, the good ones go on."""

from __future__ import annotations

import json

import pytest

from pipeline.errors import CatalogError
from pipeline.ingestion.catalog_reader import product_text, read_catalog

from ..conftest import shared


def _write_jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")


@pytest.fixture
def image_dir(tmp_path):
    from PIL import Image

    folder = tmp_path / "cat" / "images"
    folder.mkdir(parents=True)
    for name, colour in (("a.jpg", "red"), ("b.jpg", "blue"), ("c.jpg", "green")):
        Image.new("RGB", (32, 32), colour).save(folder / name)
    return folder


def test_bad_rows_are_reported_with_line_and_reason(tmp_path, image_dir):
    (tmp_path / "outside.jpg").write_bytes((image_dir / "a.jpg").read_bytes())
    catalog = tmp_path / "cat" / "catalog.jsonl"
    _write_jsonl(
        catalog,
        [
            {"id": "1", "name": "Red thing", "price": 10, "image_path": "images/a.jpg"},
            {"name": "no id", "image_path": "images/a.jpg"},
            {"id": "1", "name": "dup", "image_path": "images/b.jpg"},
            {"id": "3", "name": "price", "price": "ten euros", "image_path": "images/b.jpg"},
            {"id": "4", "name": "missing image", "image_path": "images/nope.jpg"},
            {"id": "5", "name": "escape", "image_path": "../outside.jpg"},
            "{not json",
            {"id": "6", "name": "no image path"},
            {"id": 7, "name": "Blue thing", "price": "12.50", "image_path": "images/b.jpg", "extra": {"x": 1}},
        ],
    )
    rows = read_catalog(catalog)
    assert rows.total == 9
    assert [p.id for p in rows.products] == ["1", "6", "7"]  # 6 goes in without a photo, found by its text
    reasons = {bad.line: bad.reason for bad in rows.bad}
    assert reasons[2] == "missing id"
    assert reasons[3].startswith("duplicate id (first seen on line 1)")
    assert "not a number" in reasons[4]
    assert "not found" in reasons[5]
    assert "outside the catalogue folder" in reasons[6]
    assert "not valid JSON" in reasons[7]
    assert 8 not in reasons and rows.products[1].photos == []
    blue = rows.products[2]
    assert blue.fields["price"] == 12.5 and blue.fields["extra"] == {"x": 1}


def test_images_dir_resolves_absolute_and_foreign_paths(tmp_path, image_dir):
    catalog = tmp_path / "cat" / "catalog.json"
    catalog.write_text(
        json.dumps(
            [
                {"id": "1", "name": "a", "image_path": "/home/someone/Dataset/a.jpg"},
                {"id": "2", "name": "b", "image_path": "C:\\photos\\b.jpg"},
                {"id": "3", "name": "x", "image_path": "/elsewhere/x.jpg"},
            ],
            indent=2,
        )
    )
    without = read_catalog(catalog)
    assert not without.products and "pass --images" in without.bad[0].reason
    rows = read_catalog(catalog, images_dir=image_dir)
    assert [p.photos[0].name for p in rows.products] == ["a.jpg", "b.jpg"]
    assert [b.line for b in rows.bad] == [12] and "not found under" in rows.bad[0].reason


def test_csv_and_composed_text(tmp_path, image_dir):
    catalog = tmp_path / "cat" / "catalog.csv"
    catalog.write_text(
        "id,name,brand,category,color,price,description,image_path\n"
        "1,Trail shoe,Acme,Shoes,red,59.9,Light runner,images/a.jpg\n"
        "2,Bad,Acme,Shoes,red,cheap,x,images/b.jpg\n"
    )
    rows = read_catalog(catalog)
    assert rows.products[0].text == "Trail shoe Acme Shoes red Light runner"
    assert rows.bad[0].line == 3
    assert product_text({"text": "  given   text ", "name": "n"}) == "given text"


def test_prices_as_shops_write_them(tmp_path, image_dir):
    """Thousands separators and currency signs are read; a decimal comma is a bad row that says so, never 12,50 read
    as 1250; a negative price says it is negative; an empty-looking cell is no price."""
    catalog = tmp_path / "cat" / "catalog.csv"
    prices = ["1,250", "12,345.50", "€ 9.99", "$1,000", "  ", "", "12,50", "1.234,56", "1,25,000", "-3", "ten"]
    catalog.write_text(
        "id,name,price,image_path\n"
        + "".join(f'p{n},Thing {n},"{price}",images/a.jpg\n' for n, price in enumerate(prices))
    )
    rows = read_catalog(catalog)
    assert {p.id: p.fields["price"] for p in rows.products} == {
        "p0": 1250.0, "p1": 12345.5, "p2": 9.99, "p3": 1000.0, "p4": None, "p5": None,
    }  # fmt: skip
    reasons = {b.product_id: b.reason for b in rows.bad}
    for pid, price in (("p6", "12,50"), ("p7", "1.234,56"), ("p8", "1,25,000")):
        assert (
            reasons[pid]
            == f"price {price!r} has a comma that is not a thousands separator: write decimals with a point (12.50)"
        )
    assert reasons["p9"] == "price '-3' is negative" and reasons["p10"] == "price 'ten' is not a number"


def test_unreadable_catalogue_is_one_error(tmp_path):
    with pytest.raises(CatalogError, match="does not exist"):
        read_catalog(tmp_path / "missing.jsonl")
    broken = tmp_path / "broken.json"
    broken.write_text('[{"id": 1,')
    with pytest.raises(CatalogError, match="not valid JSON"):
        read_catalog(broken)


def test_shared_samples_parse():
    assert len(read_catalog(shared("seed_sample", "catalog.jsonl")).products) == 10
    original = shared("seed_sample", "metadata.json")
    rows = read_catalog(original, images_dir=original.parent / "images")
    assert len(rows.products) == 10 and not rows.bad
    fashion = read_catalog(shared("fashion", "catalog.jsonl"))
    assert len(fashion.products) == 1000 and not fashion.bad
