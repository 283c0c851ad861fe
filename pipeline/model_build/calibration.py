"""Calibration data for static INT8: a catalogue's photos and product texts, preprocessed as the app preprocesses them.

Static quantisation fixes every activation's scale once, from the ranges it sees on calibration inputs. Those inputs
must be what the towers meet in service, so they come from a real catalogue and go through the project's own
torch-free ``Preprocessor`` (the tokenizer and image steps saved beside the graphs), never through transformers'
processors or random tensors: a range measured on noise clips real photos.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import model_repo as mr
from ..batches import chunks
from ..errors import CatalogError, PipelineError
from ..ingestion.catalog_reader import read_catalog
from ..ingestion.embedding import photo_batches
from ..query.preprocess import Preprocessor

#: Rows read from the calibration catalogue by default: a few hundred cover a catalogue's range of photos and texts,
#: and more cost build time without moving a range further.
DEFAULT_ROWS = 256
#: Inputs per calibration run; the calibrator keeps per-batch minima and maxima, so this bounds its memory.
BATCH = 16


@dataclass
class Calibration:
    """Input batches for each tower and where they came from (written into the model card)."""

    image_batches: list[dict[str, np.ndarray]]
    text_batches: list[dict[str, np.ndarray]]
    source: dict = field(default_factory=dict)


def check_catalogue(catalog: Path | None, precision: str) -> Path | None:
    """Refuse, before anything is exported, a static build without a catalogue or a catalogue that is not there."""
    if precision != "int8-static":
        if catalog is not None:
            raise PipelineError("--calibration is only used by --precision int8-static; leave it out for " + precision)
        return None
    if catalog is None:
        raise PipelineError(
            "--precision int8-static needs calibration data: add --calibration CATALOG (a catalogue file whose photos "
            "and product texts the static ranges are measured on)."
        )
    catalog = Path(catalog)
    if not catalog.is_file():
        raise CatalogError(f"The calibration catalogue {catalog} does not exist.")
    return catalog


def _spread(count: int, rows: int) -> np.ndarray:
    """Indices of ``rows`` products spread evenly over the file: catalogues are often sorted by category."""
    if count <= rows:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, rows).round().astype(int))


def load_calibration(catalog: Path, repo: Path, fields: dict, rows: int = DEFAULT_ROWS) -> Calibration:
    """Up to ``rows`` products of ``catalog`` as pixel and token batches, preprocessed with ``repo``'s saved files.

    ``fields`` are the model-card fields of the build in progress (image size, text length): the card itself does not
    exist yet, since its checksums are those of the quantised files.
    """
    if rows < 1:
        raise PipelineError(f"--calibration-rows must be at least 1, not {rows}.")
    products = read_catalog(Path(catalog)).products
    chosen = [products[i] for i in _spread(len(products), rows)]
    card = mr.ModelCard(**{**fields, "precision": "fp32", "sha256": {}})
    pre = Preprocessor(repo, card)
    # A photo that cannot be read calibrates nothing; the counts in ``source`` say how many did.
    decoded = [b.pixels for b in photo_batches(chosen, pre, BATCH) if b.pixels is not None]
    images = np.concatenate(decoded) if decoded else np.empty((0,))
    texts = [p.text for p in chosen if p.text.strip()]
    if not len(images) or not texts:
        raise CatalogError(
            f"{catalog} has no usable products to calibrate on ({len(images)} readable photos, {len(texts)} texts)."
        )
    image_batches = [{mr.VISUAL_INPUT: batch} for batch in chunks(images, BATCH)]
    text_batches = []
    for _index, batch in pre.tokenize_groups(texts):  # one padded width per batch, as the app sends them
        width_rows = {name: np.array_split(array, max(1, -(-len(array) // BATCH))) for name, array in batch.items()}
        text_batches += [dict(zip(width_rows, parts, strict=True)) for parts in zip(*width_rows.values(), strict=True)]
    source = {
        "file": Path(catalog).name,
        "sha256": mr.sha256_file(Path(catalog)),
        "rows": len(chosen),
        "images": len(images),
        "texts": len(texts),
    }
    return Calibration(image_batches, text_batches, source)
