"""Checks for the generated demo catalogue in ``assets/demo_catalog``.

The committed files must equal a fresh run of ``assets/make_demo_catalog.py``: that keeps the images
provably our own drawings (no hand-added photos) and catches edits to the script that were not regenerated.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ASSETS = Path(__file__).resolve().parent.parent / "assets"
CATALOG_DIR = ASSETS / "demo_catalog"
SCRIPT = ASSETS / "make_demo_catalog.py"
FIELDS = ("id", "SKU", "name", "brand", "category", "color", "price", "description", "text", "image_path")
STRING_FIELDS = tuple(f for f in FIELDS if f != "price")


def load_rows(catalog: Path) -> list[dict[str, object]]:
    with open(catalog, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def rows() -> list[dict[str, object]]:
    return load_rows(CATALOG_DIR / "catalog.jsonl")


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo_catalog")
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], check=True, capture_output=True, text=True)
    return out


def test_committed_catalog_matches_generator(regenerated: Path) -> None:
    hint = "assets/demo_catalog is stale: rerun `python assets/make_demo_catalog.py`"
    assert (regenerated / "catalog.jsonl").read_bytes() == (CATALOG_DIR / "catalog.jsonl").read_bytes(), hint
    committed = sorted(p.name for p in (CATALOG_DIR / "images").iterdir())
    generated = sorted(p.name for p in (regenerated / "images").iterdir())
    assert committed == generated, hint
    for name in generated:
        assert (regenerated / "images" / name).read_bytes() == (CATALOG_DIR / "images" / name).read_bytes(), (
            f"{name}: {hint}"
        )


def test_generator_is_deterministic(regenerated: Path, tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], check=True, capture_output=True)
    for path in sorted(regenerated.rglob("*")):
        if path.is_file():
            assert (tmp_path / path.relative_to(regenerated)).read_bytes() == path.read_bytes(), path.name


def test_schema(rows: list[dict[str, object]]) -> None:
    for row in rows:
        assert set(FIELDS) <= row.keys(), row
        for field in STRING_FIELDS:
            assert isinstance(row[field], str) and row[field].strip(), (row["id"], field)
        assert isinstance(row["price"], float) and 0 < row["price"] < 1000, row["id"]
        assert row["image_path"] == f"images/{row['id']}.jpg"
        assert str(row["color"]).lower() in str(row["description"]).lower(), row["id"]


def test_size_and_variety(rows: list[dict[str, object]]) -> None:
    assert len(rows) >= 24
    ids = [row["id"] for row in rows]
    assert len(set(ids)) == len(ids)
    assert len({row["SKU"] for row in rows}) == len(rows)
    assert len({row["category"] for row in rows}) >= 6
    assert len({row["color"] for row in rows}) >= 6


def test_images(rows: list[dict[str, object]]) -> None:
    total = 0
    for row in rows:
        path = CATALOG_DIR / str(row["image_path"])
        assert path.is_file(), path
        total += path.stat().st_size
        with Image.open(path) as im:
            assert im.format == "JPEG"
            assert im.mode == "RGB"
            assert im.size == (256, 256)
    assert total < 1_000_000
