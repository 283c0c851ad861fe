"""Catalogue uploads (the Catalogue tab and the ``/ingest`` API): a catalogue file and its photos, as a zip or as
single files, unpacked into a private folder that is removed when the ingest is done, whatever happened.

Uploads are hostile until proven otherwise: an entry that leaves the folder or is a symbolic link refuses the whole
zip, and so do limits crossed (counted on the bytes really written). Other entries that are neither a catalogue nor a
photo are skipped and reported; photos are checked by the ingest's own decoding, one bad photo being one bad row.
"""

from __future__ import annotations

import contextlib
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..errors import InvalidInput

CATALOGUE_SUFFIXES = (".json", ".jsonl", ".csv", ".tsv", ".xml")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
CHUNK = 1 << 16


@dataclass(frozen=True)
class UploadLimits:
    max_entries: int = 20_000
    max_total_bytes: int = 2 * 2**30  # uncompressed
    max_ratio: float = 100.0  # uncompressed / compressed, for the whole archive and for each large entry
    max_catalogue_bytes: int = 256 * 2**20


@dataclass
class Unpacked:
    """An upload unpacked into ``folder``: where the catalogue is, the folders its image paths are relative to, and
    what was skipped."""

    folder: Path
    catalogue: Path
    image_roots: list[Path]
    photos: int = 0
    skipped: list[str] = field(default_factory=list)


def _safe_name(name: str) -> PurePosixPath:
    """The entry's path inside the folder, or InvalidInput when it would leave it."""
    clean = name.replace("\\", "/")
    path = PurePosixPath(clean)
    if clean.startswith("/") or (len(clean) > 1 and clean[1] == ":") or ".." in path.parts:
        raise InvalidInput(f"The zip file is refused: its entry {name!r} points outside the archive.")
    return path


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def check_archive(archive: Path, limits: UploadLimits) -> list[zipfile.ZipInfo]:
    """Every check that needs no writing; returns the entries to unpack (files only)."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as err:
        raise InvalidInput(f"The photos file is not a zip archive we can read ({err}).") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_entries:
            raise InvalidInput(
                f"The zip file has {len(infos):,} entries, more than the {limits.max_entries:,} accepted."
            )
        files = []
        for info in infos:
            _safe_name(info.filename)
            if _is_symlink(info):
                raise InvalidInput(f"The zip file is refused: its entry {info.filename!r} is a symbolic link.")
            if not info.is_dir():
                files.append(info)
        declared = sum(i.file_size for i in files)
        compressed = max(1, sum(i.compress_size for i in files))
        if declared > limits.max_total_bytes:
            raise InvalidInput(_too_big(declared, limits))
        if declared / compressed > limits.max_ratio and declared > 1 << 20:
            raise InvalidInput(_bomb(declared / compressed, limits))
    return files


def _too_big(size: int, limits: UploadLimits) -> str:
    return (
        f"The zip file expands to {size / 2**20:,.0f} MB, more than the {limits.max_total_bytes / 2**20:,.0f} MB "
        "accepted; split the catalogue into smaller uploads."
    )


def _bomb(ratio: float, limits: UploadLimits) -> str:
    return (
        f"The zip file is refused: it expands {ratio:,.0f} times its size (at most {limits.max_ratio:g} accepted), "
        "which is what a zip bomb does."
    )


def _kind(name: str) -> str | None:
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in CATALOGUE_SUFFIXES:
        return "catalogue"
    if suffix in IMAGE_SUFFIXES:
        return "photo"
    return None


def _unpack(archive: Path, folder: Path, limits: UploadLimits, unpacked: Unpacked) -> list[Path]:
    """Write the catalogue and photo entries under ``folder``, counting the bytes as they are written."""
    entries = check_archive(archive, limits)
    written, catalogues = 0, []
    with zipfile.ZipFile(archive) as zf:
        for info in entries:
            name = _safe_name(info.filename)
            kind = _kind(info.filename)
            if kind is None or name.name.startswith(".") or "__MACOSX" in name.parts:
                unpacked.skipped.append(f"{info.filename}: not a catalogue file or a photo")
                continue
            target = folder.joinpath(*name.parts)
            if not target.resolve().is_relative_to(folder.resolve()):  # belt and braces over _safe_name
                raise InvalidInput(f"The zip file is refused: its entry {info.filename!r} points outside the archive.")
            target.parent.mkdir(parents=True, exist_ok=True)
            entry_bytes = 0
            with zf.open(info) as src, open(target, "wb") as dst:
                while chunk := src.read(CHUNK):
                    entry_bytes += len(chunk)
                    written += len(chunk)
                    if written > limits.max_total_bytes:
                        raise InvalidInput(_too_big(written, limits))
                    if entry_bytes > 1 << 20 and entry_bytes / max(1, info.compress_size) > limits.max_ratio:
                        raise InvalidInput(_bomb(entry_bytes / max(1, info.compress_size), limits))
                    dst.write(chunk)
            if kind == "catalogue":
                catalogues.append(target)
            else:
                unpacked.photos += 1
    return catalogues


@contextlib.contextmanager
def unpacked_upload(
    catalogue: Path | None,
    archive: Path | None = None,
    photos: list[Path] | None = None,
    limits: UploadLimits | None = None,
    work_dir: Path | None = None,
) -> Iterator[Unpacked]:
    """The upload in a private folder for the length of the ``with`` block, then removed.

    ``catalogue``: the catalogue file (or None when the zip holds it); ``archive``: a zip of photos (and maybe the
    catalogue); ``photos``: single photo files. Image paths resolve against the catalogue's folder, then the zip's
    root; a name not found there is looked up by file name among the uploaded photos.
    """
    limits = limits or UploadLimits()
    folder = Path(tempfile.mkdtemp(prefix="upload-", dir=work_dir))
    try:
        unpacked = Unpacked(folder, folder, [folder])
        in_zip = _unpack(Path(archive), folder, limits, unpacked) if archive else []
        for photo in photos or []:
            photo = Path(photo)
            if _kind(photo.name) != "photo":
                unpacked.skipped.append(f"{photo.name}: not a photo")
                continue
            shutil.copyfile(photo, folder / _safe_name(photo.name).name)
            unpacked.photos += 1
        if catalogue is not None:
            catalogue = Path(catalogue)
            if _kind(catalogue.name) != "catalogue":
                raise InvalidInput(
                    f"{catalogue.name} is not a catalogue file: upload a .json, .jsonl, .csv, .tsv or .xml file (the "
                    "sample schema, a Shopify or WooCommerce product export, or a Google Merchant feed)."
                )
            if catalogue.stat().st_size > limits.max_catalogue_bytes:
                raise InvalidInput(
                    f"The catalogue file is {catalogue.stat().st_size / 2**20:,.0f} MB, more than the "
                    f"{limits.max_catalogue_bytes / 2**20:,.0f} MB accepted."
                )
            # Under its own name (what reports and refusals call it), in a folder of its own so that no photo or
            # catalogue of the zip is overwritten; image paths still resolve against the upload's root.
            own = Path(tempfile.mkdtemp(prefix=".catalogue-", dir=folder))
            unpacked.catalogue = own / catalogue.name
            shutil.copyfile(catalogue, unpacked.catalogue)
        elif len(in_zip) == 1:
            unpacked.catalogue = in_zip[0]
            unpacked.image_roots = [in_zip[0].parent, folder]
        elif not in_zip:
            raise InvalidInput(
                "No catalogue in the upload: add a .json, .jsonl, .csv, .tsv or .xml file (the sample schema, a "
                "Shopify or WooCommerce product export, or a Google Merchant feed)."
            )
        else:
            names = ", ".join(str(p.relative_to(folder)) for p in in_zip[:4])
            raise InvalidInput(f"The zip file holds several catalogue files ({names}); upload one at a time.")
        yield unpacked
    finally:
        shutil.rmtree(folder, ignore_errors=True)
