"""Catalogue photos as the app serves them: one folder under ``DATA_DIR`` (the only folder the page may serve files
from, decided at start-up), so photos of catalogues ingested later are served too, and nothing outside it ever is.

Products name their photo by its key in the store (``ab/ab12...cd.jpg``), not by an absolute path, so a data folder that
moves (a copy, a new volume) keeps its photos. Each photo is stored once, named by the hash of its source bytes, as a
JPEG re-encoded from the decoded picture (orientation applied, at most ``MAX_SIDE`` pixels a side): no EXIF block
(places, cameras) and no format a browser could be tricked with leaves the server, whatever was uploaded.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

MAX_SIDE = 1024
QUALITY = 90
STORED_KEY = re.compile(r"[0-9a-f]{2}/[0-9a-f]{32}\.jpg")  # what key_for makes


class PhotoStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @staticmethod
    def key_for(source_bytes: bytes) -> str:
        digest = hashlib.sha256(source_bytes).hexdigest()
        return f"{digest[:2]}/{digest[:32]}.jpg"

    def path(self, key: str | None) -> Path | None:
        """Where a stored photo is (an absolute path from an older catalogue is returned as it is)."""
        if not key:
            return None
        given = Path(key)
        return given if given.is_absolute() else self.root / given

    def put(self, source_bytes: bytes, image: Image.Image) -> str:
        """Store ``image`` (decoded from ``source_bytes``) unless it is there already; returns its key."""
        key = self.key_for(source_bytes)
        target = self.root / key
        if target.is_file():
            return key
        target.parent.mkdir(parents=True, exist_ok=True)
        copy = image.convert("RGB")
        copy.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as fh:
                copy.save(fh, "JPEG", quality=QUALITY, optimize=True)
            os.replace(tmp, target)  # atomic: a reader never sees half a photo
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return key

    def remove(self, keys: Iterable[str]) -> int:
        """Delete these stored photos (keys this store made; anything else, an absolute path from an older catalogue
        included, is left alone); returns how many were there."""
        removed = 0
        for key in keys:
            if not (key and STORED_KEY.fullmatch(key)):
                continue
            photo = self.root / key
            if photo.is_file():
                photo.unlink(missing_ok=True)
                removed += 1
        return removed

    def remove_unused(self, used: set[str]) -> int:
        """Delete stored photos no product refers to any more (``used``: their keys); returns how many."""
        removed = 0
        if not self.root.is_dir():
            return 0
        keep = {str(self.path(k).resolve()) for k in used if k}
        for photo in self.root.glob("*/*.jpg"):
            if str(photo.resolve()) not in keep:
                photo.unlink(missing_ok=True)
                removed += 1
        return removed
