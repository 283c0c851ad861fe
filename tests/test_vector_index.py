"""The local-mode float32 fix ranks exactly like numpy brute force, and the catalogue version/model identity live in
the collection."""

from __future__ import annotations

import contextlib
import sqlite3

import numpy as np

from pipeline.model_repo import ModelCard
from pipeline.qdrant_local import install
from pipeline.vector_index import IndexedProduct, VectorIndex


def _unit(rng, n, d):
    v = rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_local_search_equals_brute_force_in_float32(settings):
    install()
    from qdrant_client.local import distances

    rng = np.random.default_rng(0)
    matrix, query = _unit(rng, 50, 8), _unit(rng, 1, 8)[0].astype(np.float64)
    got = distances.dot_product(query, matrix)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, matrix @ query.astype(np.float32), rtol=1e-6)

    card = ModelCard("t", "clip", "s", "r", "fp32", 8, 77, 64, {"clip_text": "a", "clip_visual": "b"})
    index = VectorIndex(settings)
    try:
        index.ensure(card)
        images, texts = _unit(rng, 300, 8), _unit(rng, 300, 8)
        index.upsert([IndexedProduct(f"p{i}", images[i], texts[i], {"price": float(i)}) for i in range(300)])
        assert index.bump_version() == 1
        q = _unit(rng, 1, 8)[0]
        hits = index.search(q, "image", 10)
        expected = np.argsort(-(images @ q))[:10]
        assert [h.product_id for h in hits] == [f"p{i}" for i in expected]
        fused = index.search(np.concatenate([0.7 * q, 0.3 * q]), "fused", 5)
        scores = 0.7 * (texts @ q) + 0.3 * (images @ q)
        assert [h.product_id for h in fused] == [f"p{i}" for i in np.argsort(-scores)[:5]]
        assert abs(fused[0].score - float(scores.max())) < 1e-5
    finally:
        index.close()
    reopened = VectorIndex(settings)
    try:
        assert reopened.version() == 1 and reopened.count() == 300
        assert reopened.metadata()["model_identity"] == card.identity
    finally:
        reopened.close()
    # upserts commit through SQLite's write-ahead log, not an fsync'd rollback journal per point
    (storage,) = settings.qdrant_path.glob(f"collection/{settings.qdrant_collection}/storage.sqlite")
    with contextlib.closing(sqlite3.connect(storage)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
