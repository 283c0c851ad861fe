"""Broken catalogue files, made here for real: one bad row is one bad row, a file that cannot be a catalogue is one
sentence, and a file too large to read at once is refused before it is read."""

from __future__ import annotations

import json
import os

import pytest

from pipeline.errors import CatalogError
from pipeline.ingestion import catalog_reader as cr
from pipeline.ingestion.ingest import ingest

from ..conftest import shared


def test_five_thousand_rows_with_three_bad_ones(pipeline, tmp_path):
    photo = shared("seed_sample", "images", "Adidas-1.jpg")
    (tmp_path / "p.jpg").write_bytes(photo.read_bytes())
    rows = [{"id": f"p{i}", "name": f"Product {i}", "price": i % 90, "image_path": "p.jpg"} for i in range(5000)]
    rows[100]["price"] = "abc"
    rows[2000] = {"name": "no id", "image_path": "p.jpg"}
    rows[4999]["image_path"] = "../../etc/passwd"
    (tmp_path / "big.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    report = ingest(pipeline, tmp_path / "big.jsonl", progress=False)
    assert report.added == 4997 and [b.line for b in report.bad] == [101, 2001, 5000]
    assert pipeline.index.count() == 4997 and pipeline.store.count() == 4997


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le-bom"])
def test_spreadsheet_csv_encodings(tmp_path, encoding):
    (tmp_path / "p.jpg").write_bytes(shared("seed_sample", "images", "Adidas-1.jpg").read_bytes())
    text = "id,name,price,image_path\n1,Caf\u00e9 cr\u00e8me mug,3.5,p.jpg\n"
    data = b"\xff\xfe" + text.encode("utf-16-le") if encoding == "utf-16-le-bom" else text.encode(encoding)
    (tmp_path / "c.csv").write_bytes(data)
    rows = cr.read_catalog(tmp_path / "c.csv")
    assert [p.fields["name"] for p in rows.products] == ["Caf\u00e9 cr\u00e8me mug"] and not rows.bad


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("c.xlsx", b"PK\x03\x04 a spreadsheet", "not a catalogue file"),
        ("c.jsonl", b"\x89PNG\r\n\x1a\n\x00\x00", "not UTF-8|binary"),
        ("c.json", b'{"products": 5}', "JSON array"),
        ("c.json", b'[{"id": 1,', "not valid JSON"),
        ("c.csv", b"\xc3\x28 broken utf8", "not UTF-8"),
    ],
)
def test_files_that_are_not_catalogues(tmp_path, name, content, words):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(CatalogError, match=words):
        cr.read_catalog(tmp_path / name)


def test_a_file_too_large_is_refused_before_it_is_read(tmp_path, monkeypatch):
    """A sparse 1 GB file: refused on its size, without reading (or allocating) it."""
    huge = tmp_path / "huge.jsonl"
    with open(huge, "wb") as fh:
        fh.truncate(2**30)
    assert os.stat(huge).st_blocks * 512 < 2**20, "sparse: nothing is really on disk"
    with pytest.raises(CatalogError, match="split it"):
        cr.read_catalog(huge)


def test_every_hostile_photo_and_bad_value_is_one_bad_row(pipeline, tmp_path):
    """The photos a query refuses, inside a catalogue: each is one bad row (line, id, reason), the others go in; and
    the prices and names that cannot be a product."""
    from PIL import Image

    from ..query.test_bad_inputs import ANSWERED, REFUSED

    photo = Image.open(shared("seed_sample", "images", "Adidas-1.jpg")).convert("RGB")
    rows = []
    for n, (case, (make, _)) in enumerate(REFUSED.items()):
        (tmp_path / f"bad{n}.jpg").write_bytes(make(photo))
        rows.append({"id": f"bad{n}", "name": case, "image_path": f"bad{n}.jpg"})
    for n, (case, make) in enumerate(ANSWERED.items()):
        (tmp_path / f"ok{n}.img").write_bytes(make(photo))
        rows.append({"id": f"ok{n}", "name": case, "image_path": f"ok{n}.img"})
    (tmp_path / "p.jpg").write_bytes(shared("seed_sample", "images", "Adidas-1.jpg").read_bytes())
    values = [{"price": "NaN"}, {"price": -3}, {"price": float("inf")}, {"name": ""}, {"name": None}]
    for n, value in enumerate(values):
        rows.append({"id": f"value{n}", "name": "a product", "image_path": "p.jpg", **value})
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    report = ingest(pipeline, tmp_path / "c.jsonl", progress=False)
    bad = {b.product_id: b for b in report.bad}
    assert set(bad) == {f"bad{n}" for n in range(len(REFUSED))} | {f"value{n}" for n in range(len(values))}
    assert report.added == len(ANSWERED) and pipeline.index.count() == pipeline.store.count() == len(ANSWERED)
    assert [b.line for b in report.bad] == sorted(b.line for b in report.bad) and all(b.reason for b in report.bad)
