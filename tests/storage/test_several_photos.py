"""Several photos per product and products without one, in both vector stores: a photo query scores each product by
its best photo (MaxSim) and returns it once, a text query fuses the text with the best photo (a product without a
photo by its text alone), on every fusion path, and the photo to show is the one that matched; all equal to numpy
brute force over the same vectors."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import ModelMismatch
from pipeline.storage.vectors import Filters, IndexedProduct

from . import test_vector_store as contract
from .test_vector_store import CATEGORIES, FUSION_PATHS, card, filled, filled_for, unit

store = contract.store  # the same fixture: each test runs on Qdrant Edge and on the server adapter

N = 240


@pytest.fixture
def shop():
    """N products with 0 to 3 photos each (every seventh has none), photos of one product close to each other."""
    rng = np.random.default_rng(5)
    texts = unit(rng, N)
    photos, products = [], []
    for i in range(N):
        count = 0 if i % 7 == 0 else 1 + i % 3
        base = unit(rng, 1)[0]
        rows = base + 0.6 * unit(rng, count) if count else np.zeros((0, texts.shape[1]), np.float32)
        rows = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32) if count else rows
        photos.append(rows)
        files = [f"{i:02x}/{i}-{j}.jpg" for j in range(count)]
        payload = {"name": f"Product {i}", "category": CATEGORIES[i % 4], "image_files": files,
                   "image_file": files[0] if files else None}  # fmt: skip
        products.append(IndexedProduct(f"p{i}", rows if count else None, texts[i], payload))
    return photos, texts, products


def best_photo_scores(photos, q) -> np.ndarray:
    return np.array([float((rows @ q).max()) if len(rows) else -np.inf for rows in photos])


def ranked(scores: np.ndarray, k: int, keep: np.ndarray | None = None) -> list[str]:
    if keep is not None:
        scores = np.where(keep, scores, -np.inf)
    order = [i for i in np.argsort(-scores, kind="stable") if np.isfinite(scores[i])]
    return [f"p{i}" for i in order[:k]]


def test_a_photo_query_finds_each_product_once_by_its_best_photo(store, shop):
    photos, _texts, products = shop
    filled(store, products)
    for i in (1, 2, 5, 11):  # a product's second or third photo as the query finds it first
        q = photos[i][-1]
        hits = store.search(q, "image", 10)
        assert hits[0].product_id == f"p{i}" and hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert len({h.product_id for h in hits}) == len(hits), "each product once"
        assert [h.product_id for h in hits] == ranked(best_photo_scores(photos, q), 10)
        assert len(photos[i]) > 1 and store.best_photos(q, hits)[f"p{i}"] == len(photos[i]) - 1  # the one shown
    shoes = Filters(categories=("Shoes",))
    q = unit(np.random.default_rng(1), 1)[0]
    keep = np.array([p.payload["category"] == "Shoes" for p in products])
    assert [h.product_id for h in store.search(q, "image", 10, shoes)] == ranked(best_photo_scores(photos, q), 10, keep)
    # products without a photo are never a photo query's answer
    everything = store.search(q, "image", N)
    assert len(everything) == sum(1 for rows in photos if len(rows))


@pytest.mark.parametrize("path", FUSION_PATHS)
def test_text_queries_fuse_the_best_photo_and_photoless_products_by_their_text(store, shop, path):
    photos, texts, products = shop
    w = 0.6
    filled_for(store, products, w, path)
    rng = np.random.default_rng(9)
    for q in [*unit(rng, 3), texts[14], texts[21]]:  # 14 and 21 have no photo: their own text finds them first
        by_photo = best_photo_scores(photos, q)
        fused = w * (texts @ q) + (1 - w) * np.where(np.isfinite(by_photo), by_photo, texts @ q)
        for k in (1, 10, 50):
            hits = store.search_text(q, w, k)
            assert [h.product_id for h in hits] == ranked(fused, k)
            for h in hits:
                assert h.score == pytest.approx(float(fused[int(h.product_id[1:])]), abs=1e-5)
    assert store.search_text(texts[14], w, 1)[0].product_id == "p14"


def test_stored_vectors_per_photo_and_the_main_one(store, shop):
    photos, _texts, products = shop
    filled(store, products)
    got = store.photo_vectors(["p2", "p3", "p7"])
    assert set(got) == {"p2", "p3"}  # p7 has no photo
    np.testing.assert_allclose(got["p2"], photos[2], atol=1e-6)
    main = store.vectors(["p2", "p7"], "image")
    assert set(main) == {"p2"}
    np.testing.assert_allclose(main["p2"], photos[2][0], atol=1e-6)
    owners, rows = store.all_photo_vectors()
    assert len(owners) == len(rows) == sum(len(r) for r in photos)
    ids, mains = store.all_vectors("image")
    assert len(ids) == sum(1 for r in photos if len(r)) and mains.shape[1] == photos[1].shape[1]


def test_a_collection_of_the_earlier_layout_is_refused_with_a_sentence(store, shop):
    filled(store, shop[2][:5])
    info = store.info()
    info.layout = 1
    store._write_info(info)
    with pytest.raises(ModelMismatch, match=r"earlier version of the app.*--reset"):
        store.check_model(card())
