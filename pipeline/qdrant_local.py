"""Two fixes for qdrant-client's local mode, applied in one place: search in the vectors' own precision, and commit
upserts without an fsync per point.

qdrant-client 1.20's local mode turns the query into a float64 array and ``np.dot(float32 matrix, float64 query)`` then
converts the whole matrix to float64 on every search: 31 ms a query on 10,000 products with 1024-d vectors, 6.6x the
cost of the same product in float32 (``bench/vector_search.py``). Casting the query to the matrix's dtype keeps the
arithmetic (and the ranking) the same and removes the copy. ``evaluate --check`` compares the results with brute force.

Local mode also stores each point in its own SQLite transaction with SQLite's defaults (rollback journal,
synchronous=FULL): fsyncs for every point, 1.2-1.6 ms a point on a quiet disk and up to 19 ms on a busy one.
``relax_sync`` switches each collection's file to WAL with synchronous=NORMAL, ~20x faster upserts. What it gives up:
after a power cut (not a crash of the app) the last few upserts may be missing; the index is derived data, and the next
ingest re-adds them (it skips only products whose stored content hash matches).
"""

from __future__ import annotations

import sqlite3

import numpy as np

_installed = False


def install() -> None:
    """Wrap local mode's dot product once per process; a no-op if qdrant-client's internals have moved."""
    global _installed
    if _installed:
        return
    try:
        from qdrant_client.local import distances
    except ImportError:
        return
    original = getattr(distances, "dot_product", None)
    if original is None or getattr(original, "_casts_query", False):
        _installed = True
        return

    def dot_product(query, vectors):
        if isinstance(query, np.ndarray) and isinstance(vectors, np.ndarray) and query.dtype != vectors.dtype:
            query = query.astype(vectors.dtype)
        return original(query, vectors)

    dot_product._casts_query = True
    distances.dot_product = dot_product
    _installed = True


def relax_sync(client) -> bool:
    """WAL + synchronous=NORMAL on every local-mode collection file; False if qdrant-client's internals have moved."""
    try:
        # an in-memory collection has no storage: nothing to relax
        connections = [getattr(c.storage, "storage", None) for c in client._client.collections.values()]
    except AttributeError:
        return False
    try:
        for connection in connections:
            if connection is None:
                continue
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
    except (AttributeError, sqlite3.Error):
        return False
    return True
