"""What the vector stores take and give, with no engine imported: the app, the matcher and tests use these freely."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import numpy as np

from ...types import Filters

__all__ = ["Filters"]  # the query's filters, turned into each engine's conditions by the adapters

ID_NAMESPACE = uuid.UUID("8f5d3a52-8a3e-4c55-9d5b-3f0a2c1f7e11")
VECTOR_NAMES = ("image", "text")
# w·text + (1−w)·image, stored beside the two in collections made with IndexTuning.fused_vector: a text query's
# score is then one search (store.py's module docstring).
FUSED = "fused"
# Vectors held as one row per photo and scored by MaxSim (a product's best photo): a product has any number of photos
# (none included). docs/vector-store.md, "Several photos per product", says why this design and not a point per photo.
MULTI = ("image", FUSED)
# The layout of a collection's points; one made by another layout is refused with a sentence (re-ingest with --reset).
# 2: photos as MaxSim multivectors, products without a photo.
LAYOUT = 2
LEXICAL = "bm25"  # the sparse vector: BM25 over the product's words (name, brand, SKU, category, colour, description)
# What each point carries besides its vectors: enough to answer when MongoDB is down, and to filter and facet.
PAYLOAD_FIELDS = ("name", "brand", "category", "color", "price", "currency", "image_file", "image_files", "SKU", "skus",
                  "url")  # fmt: skip
KEYWORD_FIELDS = ("category", "brand", "color")
FLOAT_FIELDS = ("price",)
FACET_FIELDS = ("category", "brand", "color")


def fused_vector(image: np.ndarray, text: np.ndarray, weight: float) -> np.ndarray:
    """The stored rows whose dot product with a query is ``w·cos(q, text) + (1−w)·cos(q, photo)``, one per photo, so
    MaxSim scores the product by its best photo. A product without a photo is scored by its text alone (one row,
    ``text``): on the same cosine scale, so its title still finds it first."""
    photos, text = photo_rows(image), np.asarray(text, np.float32)
    if not len(photos):
        return text[None, :].copy()
    return (weight * text[None, :] + (1.0 - weight) * photos).astype(np.float32)


def photo_rows(image: np.ndarray | None) -> np.ndarray:
    """A product's photo vectors as rows, (n, d); n is 0 for a product without a photo."""
    if image is None:
        return np.zeros((0, 0), np.float32)
    rows = np.asarray(image, np.float32)
    return rows[None, :] if rows.ndim == 1 else rows


def point_id(product_id: str) -> str:
    """Qdrant wants an int or UUID; product ids are arbitrary strings, so derive a stable UUID."""
    return str(uuid.uuid5(ID_NAMESPACE, product_id))


@dataclass
class IndexedProduct:
    product_id: str
    image: np.ndarray | None  # (d,) one photo, (n, d) several, None or (0, d): none
    text: np.ndarray
    payload: dict = field(default_factory=dict)
    lexical: str = ""  # the words the BM25 vector is made of (empty: no lexical vector)


@dataclass
class Hit:
    product_id: str
    score: float
    payload: dict


@dataclass
class CollectionInfo:
    """The collection's own metadata: who built it, which catalogue state it holds, and its identity.

    ``collection_id`` is made when the collection is created, so two collections (another ``QDRANT_COLLECTION``,
    another server, a deleted and rebuilt index folder) never share cached answers even at the same version.
    ``writing`` is set while an ingest or a delete is changing the points: answers computed then are not cached.
    ``fused_weight`` is the text weight of the collection's stored ``fused`` vectors (None: it has none, as a collection
    built with VECTOR_FUSED=0; its text queries are fused at query time).
    """

    collection_id: str = ""
    model_identity: str = ""
    model_name: str = ""
    catalog_version: int = 0
    writing: bool = False
    fused_weight: float | None = None
    layout: int = LAYOUT

    @classmethod
    def from_dict(cls, data: dict | None) -> CollectionInfo:
        data = data or {}
        return cls(
            collection_id=str(data.get("collection_id", "")),
            model_identity=str(data.get("model_identity", "")),
            model_name=str(data.get("model_name", "")),
            catalog_version=int(data.get("catalog_version", 0) or 0),
            writing=bool(data.get("writing", False)),
            fused_weight=None if data.get("fused_weight") is None else float(data["fused_weight"]),
            layout=int(data.get("layout", 1) or 1),
        )

    def to_dict(self) -> dict:
        return {
            "collection_id": self.collection_id,
            "model_identity": self.model_identity,
            "model_name": self.model_name,
            "catalog_version": self.catalog_version,
            "writing": self.writing,
            "fused_weight": self.fused_weight,
            "layout": self.layout,
        }

    def dense_vectors(self) -> tuple[str, ...]:
        """The named dense vectors each point of this collection has."""
        return (*VECTOR_NAMES, FUSED) if self.fused_weight is not None else VECTOR_NAMES

    def dense_of(self, product: IndexedProduct) -> dict[str, list]:
        """A product's dense vectors as this collection stores them (lists, as both clients take them): ``image`` and
        ``fused`` as rows (MULTI), ``text`` as one vector; no ``image`` for a product without a photo."""
        photos, text = photo_rows(product.image), np.asarray(product.text, np.float32)
        vectors: dict[str, list] = {"text": text.tolist()}
        if len(photos):
            vectors["image"] = photos.tolist()
        if self.fused_weight is not None:
            vectors[FUSED] = fused_vector(photos, text, self.fused_weight).tolist()
        return vectors

    @property
    def exists(self) -> bool:
        return bool(self.collection_id)
