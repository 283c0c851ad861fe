"""Hostile uploads: real zip files built here, unpacked by the same code the Catalogue tab and ``/ingest`` use."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from pipeline.errors import InvalidInput
from pipeline.ingestion.uploads import UploadLimits, check_archive, unpacked_upload


def _photo_bytes(color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buf, "JPEG")
    return buf.getvalue()


def _zip(path: Path, entries: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def _leftovers(work: Path) -> list[Path]:
    return [p for p in work.rglob("*") if p.is_file()]


def test_catalogue_and_photos_unpack_and_are_removed_afterwards(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    archive = _zip(
        tmp_path / "shop.zip",
        {
            "shop/catalog.jsonl": b'{"id": "1", "name": "Red mug", "image_path": "img/1.jpg"}\n',
            "shop/img/1.jpg": _photo_bytes(),
            "shop/notes.txt": b"not a photo",
            "__MACOSX/shop/._1.jpg": b"junk",
        },
    )
    with unpacked_upload(None, archive, work_dir=work) as up:
        assert up.catalogue.name == "catalog.jsonl" and up.photos == 1
        assert up.image_roots[0] == up.catalogue.parent
        assert any("notes.txt" in s for s in up.skipped) and any("__MACOSX" in s for s in up.skipped)
        assert (up.catalogue.parent / "img" / "1.jpg").is_file()
    assert _leftovers(work) == [], "the unpacked upload is removed when the ingest is done"


def test_separate_catalogue_and_single_photos(tmp_path):
    catalogue = tmp_path / "products.csv"
    catalogue.write_text("id,name,image_path\n1,Red mug,1.jpg\n")
    photo = tmp_path / "1.jpg"
    photo.write_bytes(_photo_bytes())
    readme = tmp_path / "README.md"
    readme.write_text("hello")
    with unpacked_upload(catalogue, photos=[photo, readme], work_dir=tmp_path) as up:
        assert up.catalogue.suffix == ".csv" and (up.folder / "1.jpg").is_file() and up.photos == 1
        assert up.skipped == ["README.md: not a photo"]


@pytest.mark.parametrize(
    "name",
    ["../escape.jpg", "shop/../../escape.jpg", "/etc/passwd.jpg", "C:/Windows/evil.jpg", "..\\escape.jpg"],
)
def test_entries_that_escape_refuse_the_whole_archive(tmp_path, name):
    work = tmp_path / "work"
    work.mkdir()
    archive = _zip(tmp_path / "bad.zip", {"catalog.jsonl": b"{}\n", name: _photo_bytes()})
    with pytest.raises(InvalidInput, match="points outside the archive"), unpacked_upload(None, archive, work_dir=work):
        pass
    assert _leftovers(work) == [] and not (tmp_path / "escape.jpg").exists()


def test_symbolic_links_are_refused(tmp_path):
    archive = _zip(tmp_path / "link.zip", {"catalog.jsonl": b"{}\n"}, symlinks={"photo.jpg": "/etc/passwd"})
    with pytest.raises(InvalidInput, match="symbolic link"):
        check_archive(archive, UploadLimits())


def test_a_zip_bomb_is_refused_and_nothing_is_written(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    archive = _zip(tmp_path / "bomb.zip", {"catalog.jsonl": b"{}\n", "big.png": b"\0" * (64 * 2**20)})
    assert archive.stat().st_size < 200 * 1024, "a few KB that expand to 64 MB"
    with pytest.raises(InvalidInput, match="zip bomb"), unpacked_upload(None, archive, work_dir=work):
        pass
    limits = UploadLimits(max_total_bytes=16 * 2**20, max_ratio=10**9)
    with pytest.raises(InvalidInput, match="expands to"), unpacked_upload(None, archive, limits=limits, work_dir=work):
        pass
    assert _leftovers(work) == []


def test_too_many_entries_and_not_a_zip(tmp_path):
    archive = _zip(tmp_path / "many.zip", {f"{i}.jpg": b"x" for i in range(30)})
    with pytest.raises(InvalidInput, match="30 entries"):
        check_archive(archive, UploadLimits(max_entries=20))
    fake = tmp_path / "photos.zip"
    fake.write_bytes(b"PK but not really a zip")
    with pytest.raises(InvalidInput, match="not a zip archive"):
        check_archive(fake, UploadLimits())


def test_catalogue_problems_are_sentences(tmp_path):
    archive = _zip(tmp_path / "none.zip", {"a.jpg": _photo_bytes()})
    with pytest.raises(InvalidInput, match="No catalogue in the upload"), unpacked_upload(None, archive):
        pass
    two = _zip(tmp_path / "two.zip", {"a/catalog.jsonl": b"{}", "b/catalog.csv": b"id"})
    with pytest.raises(InvalidInput, match="several catalogue files"), unpacked_upload(None, two):
        pass
    not_catalogue = tmp_path / "catalogue.pdf"
    not_catalogue.write_bytes(b"%PDF")
    with pytest.raises(InvalidInput, match="not a catalogue file"), unpacked_upload(not_catalogue):
        pass
