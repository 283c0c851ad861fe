"""The catalogue service: what the command line and the app's Catalogue tab do to a catalogue (import a file or an
upload, update / sync / replace; delete products; report near-identical photos), so that neither wires the steps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidInput
from .duplicates import near_duplicates, threshold_for
from .ingest import IngestReport, delete_products, ingest
from .uploads import unpacked_upload

# How an import treats what the catalogue holds: keep the rest, delete what the file no longer has, or start empty.
MODES = {"update": {}, "sync": {"sync": True}, "replace": {"reset": True}}


def check_mode(mode: object) -> str:
    if mode not in MODES:
        raise InvalidInput(f"Choose how to import: {', '.join(MODES)}.")
    return mode


@dataclass
class Deleted:
    deleted: list[str]
    unknown: list[str]  # asked for, not in the catalogue
    catalog_version: int


@dataclass
class DuplicatesReport:
    threshold: float
    pairs: list[dict]  # {"a", "b", "cosine"}, best first
    names: dict[str, str]  # product id -> name, for the pairs' products

    def to_json(self) -> dict:
        return {"threshold": self.threshold, "pairs": self.pairs}

    def render(self) -> str:
        if not self.pairs:
            return f"No two products have near-identical photos (cosine >= {self.threshold:g})."
        plural = "s" if len(self.pairs) != 1 else ""
        lines = [
            f"{len(self.pairs)} pair{plural} of products with near-identical photos (cosine >= {self.threshold:g}):"
        ]
        for p in self.pairs:
            left, right = self.names.get(p["a"], ""), self.names.get(p["b"], "")
            lines.append(f"  {p['cosine']:.4f}  {p['a']} ({left})  ~  {p['b']} ({right})")
        return "\n".join(lines)


class Catalogue:
    """The catalogue of one ``Pipeline``: every change goes through here."""

    def __init__(self, pipe) -> None:
        self.pipe = pipe

    def ingest(
        self,
        catalog: Path,
        images_dir: Path | None = None,
        reset: bool = False,
        sync: bool = False,
        progress: bool = True,
        on_progress=None,
        fmt: str = "auto",
        mapping: dict | None = None,
    ) -> IngestReport:
        """A catalogue file: its products added and updated; ``sync`` also deletes what it no longer has, ``reset``
        starts from an empty catalogue; ``fmt``, ``mapping``: how the file is read (``ingest.ingest``)."""
        return ingest(self.pipe, Path(catalog), images_dir, reset=reset, sync=sync, progress=progress,
                      on_progress=on_progress, fmt=fmt, mapping=mapping)  # fmt: skip

    def ingest_upload(
        self,
        catalogue: Path | None,
        archive: Path | None = None,
        photos: list[Path] | None = None,
        mode: str = "update",
        on_progress=None,
        fmt: str = "auto",
        mapping: dict | None = None,
    ) -> IngestReport:
        """An upload (a catalogue file and its photos, or a zip of both; ``uploads``), imported in ``mode`` (one of
        ``MODES``) from a private folder that is gone afterwards. The report names the file as it was uploaded."""
        flags = MODES[check_mode(mode)]
        uploads = self.pipe.settings.uploads_path
        uploads.mkdir(parents=True, exist_ok=True)
        with unpacked_upload(catalogue, archive, photos, work_dir=uploads) as upload:
            report = ingest(
                self.pipe,
                upload.catalogue,
                images_dir=upload.folder,
                progress=False,
                image_roots=upload.image_roots,
                on_progress=on_progress,
                images_label="among the uploaded photos",
                fmt=fmt,
                mapping=mapping,
                **flags,
            )
            report.catalog = Path(catalogue).name if catalogue else Path(archive).name
            report.skipped = list(upload.skipped)
        return report

    def delete(self, product_ids: list[str]) -> Deleted:
        gone, unknown = delete_products(self.pipe, product_ids)
        return Deleted(gone, unknown, self.pipe.index.version())

    def duplicates(self, threshold: float | None = None, progress: bool = False) -> DuplicatesReport:
        """Every pair of products whose photos are near-identical (``duplicates``); ``threshold``: the model card's,
        else ``duplicates.DEFAULT_THRESHOLD``."""
        pipe = self.pipe
        threshold = threshold if threshold is not None else threshold_for(pipe.card)
        pipe.index.check_model(pipe.card)
        pairs = near_duplicates(pipe.index, None, threshold, progress=progress)
        docs = pipe.store.get_many(sorted({p["a"] for p in pairs} | {p["b"] for p in pairs}))
        return DuplicatesReport(threshold, pairs, {pid: doc.get("name", "") for pid, doc in docs.items()})
