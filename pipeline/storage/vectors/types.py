"""What the vector stores take and give, with no engine imported: the app, the matcher and tests use these freely."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import numpy as np

from ...query.types import Filters

__all__ = ["Filters"]  # the query's filters, turned into each engine's conditions by the adapters

ID_NAMESPACE = uuid.UUID("8f5d3a52-8a3e-4c55-9d5b-3f0a2c1f7e11")
VECTOR_NAMES = ("image", "text")
LEXICAL = "bm25"  # the sparse vector: BM25 over the product's words (name, brand, SKU, category, colour, description)
# What each point carries besides its vectors: enough to answer when MongoDB is down, and to filter and facet.
PAYLOAD_FIELDS = ("name", "brand", "category", "color", "price", "image_file", "SKU")
KEYWORD_FIELDS = ("category", "brand", "color")
FLOAT_FIELDS = ("price",)
FACET_FIELDS = ("category", "brand", "color")


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
    """

    collection_id: str = ""
    model_identity: str = ""
    model_name: str = ""
    catalog_version: int = 0
    writing: bool = False

    @classmethod
    def from_dict(cls, data: dict | None) -> CollectionInfo:
        data = data or {}
        return cls(
            collection_id=str(data.get("collection_id", "")),
            model_identity=str(data.get("model_identity", "")),
            model_name=str(data.get("model_name", "")),
            catalog_version=int(data.get("catalog_version", 0) or 0),
            writing=bool(data.get("writing", False)),
        )

    def to_dict(self) -> dict:
        return {
            "collection_id": self.collection_id,
            "model_identity": self.model_identity,
            "model_name": self.model_name,
            "catalog_version": self.catalog_version,
            "writing": self.writing,
        }

    @property
    def exists(self) -> bool:
        return bool(self.collection_id)
