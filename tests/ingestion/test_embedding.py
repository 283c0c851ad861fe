"""The one way catalogue rows are embedded: batches in catalogue order, a bad photo failing its own row only, the same
vectors as the encoder gives the same photos and texts, progress per row, and no decode thread left behind."""

from __future__ import annotations

import shutil
import threading

import numpy as np

from pipeline import model_repo as mr
from pipeline.inference.ort_backend import OrtBackend
from pipeline.ingestion.catalog_reader import read_catalog
from pipeline.ingestion.embedding import Tracker, embed_batches, photo_batches
from pipeline.inputs import load_image
from pipeline.query.encoder import Encoder
from pipeline.query.preprocess import Preprocessor

from ..conftest import DEMO_CATALOG


def _rows(tmp_path, broken: set[int]):
    """The demo catalogue in a folder of its own, with the photos of rows ``broken`` (0-based) replaced by text."""
    folder = tmp_path / "cat"
    shutil.copytree(DEMO_CATALOG.parent, folder)
    products = read_catalog(folder / DEMO_CATALOG.name).products
    for i in broken:
        products[i].photos[0].write_bytes(b"not a photo")
    return products


def test_batches_keep_catalogue_order_and_a_bad_photo_fails_only_its_row(tmp_path):
    products = _rows(tmp_path, {1, 6})
    batches = list(photo_batches(products[:10], None, 4))
    assert [b.rows for b in batches] == [4, 4, 2]
    assert [p.id for b in batches for p in b.products] == [p.id for i, p in enumerate(products[:10]) if i not in {1, 6}]
    assert [p.id for b in batches for p, _ in b.failed] == [products[1].id, products[6].id]
    assert all("not a supported image" in str(err) for b in batches for _, err in b.failed)
    assert all(b.pixels is None for b in batches), "no preprocessor: decoded only"


def test_embeddings_are_the_encoders_and_progress_counts_every_row(tmp_path, model_repo):
    card = mr.ModelCard.load(model_repo)
    encoder = Encoder(card, Preprocessor(model_repo, card), OrtBackend(model_repo))
    products = _rows(tmp_path, {2})[:9]
    told = []
    with Tracker(len(products), "embedding", "test", on_progress=lambda *a: told.append(a)) as tracker:
        batches = list(embed_batches(encoder, products, 4, tracker=tracker))
    good = [p for b in batches for p in b.products]
    assert len(good) == 8 and told[0] == (0, 9, "embedding") and told[-1] == (9, 9, "embedding")
    images = np.concatenate([b.image_vectors for b in batches])
    texts = np.concatenate([b.text_vectors for b in batches])
    want_images = encoder.encode_images([load_image(p.photos[0]) for p in good])
    np.testing.assert_allclose(images, want_images, atol=1e-5)
    for b in batches:
        np.testing.assert_allclose(b.text_vectors, encoder.encode_texts(b.texts), atol=1e-6)
    assert texts.shape == (8, card.embedding_dim)


def test_a_caller_that_stops_early_leaves_no_decode_thread(tmp_path):
    products = _rows(tmp_path, set())
    batches = photo_batches(products, None, 2)
    next(batches)
    batches.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("decode")]
