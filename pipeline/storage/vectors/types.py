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
LEXICAL = "bm25"  # the sparse vector: BM25 over the product's words (name, brand, SKU, category, colour, description)
# What each point carries besides its vectors: enough to answer when MongoDB is down, and to filter and facet.
PAYLOAD_FIELDS = ("name", "brand", "category", "color", "price", "image_file", "SKU")
KEYWORD_FIELDS = ("category", "brand", "color")
FLOAT_FIELDS = ("price",)
FACET_FIELDS = ("category", "brand", "color")


def fused_vector(image: np.ndarray, text: np.ndarray, weight: float) -> np.ndarray:
    """The stored vector whose dot product with a query is ``w·cos(q, text) + (1−w)·cos(q, image)`` (both unit)."""
    return (weight * np.asarray(text, np.float32) + (1.0 - weight) * np.asarray(image, np.float32)).astype(np.float32)


def point_id(product_id: str) -> str:
    """Qdrant wants an int or UUID; product ids are arbitrary strings, so derive a stable UUID."""
    return str(uuid.uuid5(ID_NAMESPACE, product_id))


@dataclass
class IndexedProduct:
    product_id: str
    image: np.ndarray
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
        )

    def to_dict(self) -> dict:
        return {
            "collection_id": self.collection_id,
            "model_identity": self.model_identity,
            "model_name": self.model_name,
            "catalog_version": self.catalog_version,
            "writing": self.writing,
            "fused_weight": self.fused_weight,
        }

    def dense_vectors(self) -> tuple[str, ...]:
        """The named dense vectors each point of this collection has."""
        return (*VECTOR_NAMES, FUSED) if self.fused_weight is not None else VECTOR_NAMES

    def dense_of(self, product: IndexedProduct) -> dict[str, list[float]]:
        """A product's dense vectors as this collection stores them (lists, as both clients take them)."""
        vectors = {"image": np.asarray(product.image, np.float32), "text": np.asarray(product.text, np.float32)}
        if self.fused_weight is not None:
            vectors[FUSED] = fused_vector(vectors["image"], vectors["text"], self.fused_weight)
        return {name: v.tolist() for name, v in vectors.items()}

    @property
    def exists(self) -> bool:
        return bool(self.collection_id)
