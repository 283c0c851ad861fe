"""The query's filters, the index's quantization and the search parameters, in Qdrant's terms, written once for both
stores: Qdrant Edge and qdrant-client have the same concepts under slightly different constructors, so each store
hands in a small ``Dialect`` of its engine's constructors and the decisions live here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...settings import IndexTuning
from ...types import Filters

PRICE = "price"
# Filters that leave fewer products than this are answered by scanning the compact copies (docs/vector-store.md).
FILTERED_SCAN_MAX = 50_000


@dataclass(frozen=True)
class Dialect:
    """One engine's constructors for what this module decides."""

    any_of: Callable[[str, list], Any]  # a keyword field that takes any of the values
    between: Callable[[str, float | None, float | None], Any]  # a float field in a closed range (None: open)
    all_of: Callable[[list], Any]  # conditions that must all hold
    quantization_search: Callable[..., Any]  # (ignore, rescore, oversampling)
    search: Callable[..., Any]  # (hnsw_ef, exact, quantization)
    int8: Callable[[], Any]  # the compact copies' configuration, by storage
    turbo8: Callable[[], Any]


def payload_filter(d: Dialect, filters: Filters | None):
    """Every keyword filter that is set, and the price range; None when nothing is filtered."""
    if not filters:
        return None
    must = [d.any_of(name, list(values)) for name, values in filters.keyword_conditions]
    if filters.price_range:
        must.append(d.between(PRICE, *filters.price_range))
    return d.all_of(must) if must else None


def search_params(d: Dialect, tuning: IndexTuning, hnsw_ef: int, rescore: bool, exact: bool):
    """Exact search compares the float32 originals, so it ignores the compact copies."""
    quantization = None
    if tuning.quantized:
        quantization = d.quantization_search(ignore=exact, rescore=rescore, oversampling=tuning.rescore_oversampling())
    return d.search(hnsw_ef=hnsw_ef, exact=exact, quantization=quantization)


def quantization(d: Dialect, tuning: IndexTuning):
    """The compact copies a collection is built with (None: float32 only)."""
    made = {"int8": d.int8, "turbo8": d.turbo8}.get(tuning.storage)
    return made() if made else None


def indexing_threshold_kb(tuning: IndexTuning, dim: int) -> int:
    """Segments under ``exact_below`` products stay unindexed (brute force is as fast there, and exact); Qdrant counts
    the threshold in KB of one vector name's float32 vectors."""
    return max(1, int(tuning.exact_below * dim * 4 / 1024))


def full_scan_kb(dim: int) -> int:
    """Qdrant's ``full_scan_threshold`` for ``FILTERED_SCAN_MAX`` products: a filter that leaves fewer scans the compact
    copies instead of walking the graph (docs/vector-store.md, "Filtered search")."""
    return FILTERED_SCAN_MAX * dim * 4 // 1024
