"""Column mappings for catalogues in a schema of their own, remembered per catalogue.

A shop that exports "Product Name, Picture, Cost" picks once, in the Catalogue tab, which of its columns is the name,
the photo and the price; the next upload of a file with the same columns comes with that choice made. A catalogue is
known by its set of column names (a shop's export keeps its header from one week to the next, whatever the file is
called). The choices live in one small JSON file in the data folder, written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path

from ..errors import CatalogError

# The sample schema's fields a column can be mapped onto, in the order the page offers them.
TARGETS = (
    "id",
    "name",
    "brand",
    "category",
    "color",
    "price",
    "currency",
    "description",
    "SKU",
    "image_path",
    "additional_image_paths",
    "url",
    "tags",
)
ALIASES = {"image_paths": "image_path", "sku": "SKU", "link": "url"}
MAX_REMEMBERED = 200  # catalogues; the oldest choice goes first


def signature(columns: list[str]) -> str:
    """Which catalogue a file is: its column names, whatever their order."""
    names = sorted({c.strip().lower() for c in columns if c and c.strip()})
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:24]


def suggested(columns: list[str], remembered: dict[str, str] | None = None) -> dict[str, str | None]:
    """For every target, the column that fills it: the remembered choice where its column is still there, else a
    column of that name (``Price`` for price), else none."""
    by_lower = {c.strip().lower(): c for c in columns if c}
    chosen: dict[str, str | None] = dict.fromkeys(TARGETS)
    for target in TARGETS:
        same = by_lower.get(target.lower()) or next(
            (by_lower[a] for a, t in ALIASES.items() if t == target and a in by_lower), None
        )
        chosen[target] = same
    for source, target in (remembered or {}).items():
        if target in chosen and source in columns:
            chosen[target] = source
    return chosen


def mapping_from_choices(choices: dict[str, str | None], columns: list[str]) -> dict[str, str]:
    """The ``--map`` of a set of choices (target -> column): only the renames; a column already named like its target
    needs none. One column cannot fill two targets."""
    mapping: dict[str, str] = {}
    for target, source in choices.items():
        if not source:
            continue
        if target not in TARGETS:
            raise CatalogError(f"{target!r} is not a field of the catalogue; choose among {', '.join(TARGETS)}.")
        if source not in columns:
            raise CatalogError(f"The file has no column {source!r}; its columns are {', '.join(columns)}.")
        if source in mapping:
            raise CatalogError(f"The column {source} is chosen for both {mapping[source]} and {target}: keep one.")
        if source.strip().lower() == target.lower() or ALIASES.get(source.strip().lower()) == target:
            continue
        mapping[source] = target
    return mapping


class ColumnMaps:
    """The remembered mappings (``DATA_DIR/column_maps.json``): catalogue signature -> {source column: target}."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def _load(self) -> dict:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}  # a damaged file only loses the remembered choices, which the next import writes again
        return data if isinstance(data, dict) else {}

    def get(self, columns: list[str]) -> dict[str, str] | None:
        entry = self._load().get(signature(columns))
        mapping = entry.get("mapping") if isinstance(entry, dict) else None
        if not isinstance(mapping, dict):
            return None
        return {str(s): str(t) for s, t in mapping.items() if str(t) in TARGETS}

    def put(self, columns: list[str], mapping: dict[str, str], file_name: str = "") -> None:
        """Remember ``mapping`` for the catalogue with these columns (an empty mapping forgets it)."""
        with self._lock:
            data = self._load()
            key = signature(columns)
            data.pop(key, None)
            if mapping:
                data[key] = {"file": file_name, "mapping": dict(mapping)}
            while len(data) > MAX_REMEMBERED:
                data.pop(next(iter(data)))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".column_maps-", suffix=".json")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    json.dump(data, handle, indent=1, ensure_ascii=False)
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise


def column_maps_for(settings) -> ColumnMaps:
    return ColumnMaps(Path(settings.data_dir) / "column_maps.json")
