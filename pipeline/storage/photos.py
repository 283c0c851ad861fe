"""Catalogue photos as the app serves them: one folder under ``DATA_DIR`` (the only folder the page may serve files
from, decided at start-up), so photos of catalogues ingested later are served too, and nothing outside it ever is.

Each photo is stored once, named by the hash of its source bytes, as a JPEG re-encoded from the decoded picture
(orientation applied, at most ``MAX_SIDE`` pixels a side): no EXIF block (places, cameras) and no format a browser could
be tricked with leaves the server, whatever was uploaded.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from PIL import Image

MAX_SIDE = 1024
QUALITY = 90


class PhotoStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_for(self, source_bytes: bytes) -> Path:
        digest = hashlib.sha256(source_bytes).hexdigest()
        return self.root / digest[:2] / f"{digest[:32]}.jpg"

    def put(self, source_bytes: bytes, image: Image.Image) -> Path:
        """Store ``image`` (decoded from ``source_bytes``) unless it is there already; returns its path."""
        target = self.path_for(source_bytes)
        if target.is_file():
            return target
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
        return target

    def contains(self, path: str | Path) -> bool:
        return Path(path).resolve().is_relative_to(self.root.resolve())

    def remove_unused(self, used: set[str]) -> int:
        """Delete stored photos no product refers to any more; returns how many."""
        removed = 0
        if not self.root.is_dir():
            return 0
        keep = {str(Path(p).resolve()) for p in used}
        for photo in self.root.glob("*/*.jpg"):
            if str(photo.resolve()) not in keep:
                photo.unlink(missing_ok=True)
                removed += 1
        return removed
