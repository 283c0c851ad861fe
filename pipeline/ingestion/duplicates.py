"""Pairs of products whose photos are near-identical (the same photo under two ids, a re-encoded or cropped copy), so
a shop can merge or fix them: the ``duplicates`` command and a section of every ingest report.

Each stored photo vector is searched against the others (no re-embedding). The threshold depends on the model: the
card's ``thresholds["duplicate"]``, else ``DEFAULT_THRESHOLD`` (how it was chosen: README "Search features").
"""

from __future__ import annotations

from collections.abc import Iterable

from ..batches import chunks
from ..errors import InvalidInput
from ..progress import counter

DEFAULT_THRESHOLD = 0.995
NEIGHBOURS = 5


def threshold_for(card) -> float:
    value = (card.thresholds or {}).get("duplicate") if card is not None else None
    return float(value) if isinstance(value, (int, float)) else DEFAULT_THRESHOLD


def near_duplicates(index, product_ids: Iterable[str] | None, threshold: float, progress: bool = False) -> list[dict]:
    """Pairs ``{"a", "b", "cosine"}`` (a < b, best first) among ``product_ids`` (None: the whole catalogue) and
    everything else in the index."""
    if not 0.0 < threshold <= 1.0:
        raise InvalidInput("The duplicate threshold must be a cosine between 0 and 1.")
    ids = list(product_ids) if product_ids is not None else index.product_ids()
    pairs: dict[tuple[str, str], float] = {}
    bar = counter(len(ids), "duplicates", "product", enabled=progress)
    for chunk in chunks(ids, 256):
        photos = index.photo_vectors(chunk)
        for pid in chunk:
            for vector in photos.get(pid, ()):  # every photo of the product; its own other photos are no pair
                for hit in index.search(vector, "image", NEIGHBOURS + 1):
                    if hit.product_id != pid and hit.score + 1e-6 >= threshold:
                        key = tuple(sorted((pid, hit.product_id)))
                        pairs[key] = max(pairs.get(key, -1.0), round(float(hit.score), 6))
        bar.update(len(chunk))
    bar.close()
    return [{"a": a, "b": b, "cosine": c} for (a, b), c in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))]
