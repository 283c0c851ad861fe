"""The product vectors in Qdrant, through qdrant-client only (local mode by default, a server with ``QDRANT_URL``).

One collection, three named vectors per product: ``image`` (the photo), ``text`` (the product text) and ``fused`` (both,
concatenated). Vectors are L2-normalised at the source, so ``Distance.DOT`` ranks exactly like cosine and is 2-3x faster
in local mode. ``fused`` makes the text-query fusion exact in one search: the query ``[w*q, (1-w)*q]`` against
``[text, image]`` scores ``w*cos(q, text) + (1-w)*cos(q, image)``.

The collection's metadata records the model identity that built it (a query with another model is an error, never a
silent mix of spaces) and the catalogue version that result caches are keyed by. Local mode is not thread-safe and the
one lock that guards it lives here.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from .errors import BackendUnavailable, ModelMismatch, PipelineError
from .model_repo import ModelCard
from .qdrant_local import install, relax_sync
from .settings import Settings

ID_NAMESPACE = uuid.UUID("8f5d3a52-8a3e-4c55-9d5b-3f0a2c1f7e11")
PAYLOAD_FIELDS = ("name", "brand", "category", "color", "price", "image_file")
KEYWORD_FIELDS = ("category", "brand", "color")


def point_id(product_id: str) -> str:
    """Qdrant wants an int or UUID; product ids are arbitrary strings, so derive a stable UUID."""
    return str(uuid.uuid5(ID_NAMESPACE, product_id))


@dataclass(frozen=True)
class Filters:
    categories: tuple[str, ...] = ()
    brands: tuple[str, ...] = ()
    colors: tuple[str, ...] = ()
    min_price: float | None = None
    max_price: float | None = None

    def key(self) -> tuple:
        return (
            tuple(sorted(self.categories)),
            tuple(sorted(self.brands)),
            tuple(sorted(self.colors)),
            self.min_price,
            self.max_price,
        )

    def to_qdrant(self):
        from qdrant_client import models

        must = []
        for name, values in (("category", self.categories), ("brand", self.brands), ("color", self.colors)):
            if values:
                must.append(models.FieldCondition(key=name, match=models.MatchAny(any=list(values))))
        if self.min_price is not None or self.max_price is not None:
            must.append(models.FieldCondition(key="price", range=models.Range(gte=self.min_price, lte=self.max_price)))
        return models.Filter(must=must) if must else None


@dataclass
class IndexedProduct:
    product_id: str
    image: np.ndarray
    text: np.ndarray
    payload: dict = field(default_factory=dict)


@dataclass
class Hit:
    product_id: str
    score: float
    payload: dict


class VectorIndex:
    def __init__(self, settings: Settings) -> None:
        from qdrant_client import QdrantClient

        self.collection = settings.qdrant_collection
        self.remote = bool(settings.qdrant_url)
        if self.remote:
            self.client = QdrantClient(url=settings.qdrant_url, api_key=settings.qdrant_api_key, timeout=10)
            self.where = settings.qdrant_url
        else:
            install()
            settings.qdrant_path.mkdir(parents=True, exist_ok=True)
            try:
                self.client = QdrantClient(path=str(settings.qdrant_path))
            except RuntimeError as err:
                if "already accessed" in str(err):
                    raise BackendUnavailable(
                        f"The local vector index in {settings.qdrant_path} is open in another process (the app?). "
                        "Stop that process, or run a Qdrant server and set QDRANT_URL."
                    ) from err
                raise
            self.where = f"local mode at {settings.qdrant_path}"
            relax_sync(self.client)
        # One lock for local mode (not thread-safe); a server client needs none.
        self._lock = threading.RLock() if not self.remote else contextlib.nullcontext()
        self._meta: dict | None = None

    @contextlib.contextmanager
    def _call(self, what: str) -> Iterator[None]:
        with self._lock:
            try:
                yield
            except PipelineError:
                raise
            except Exception as err:
                if not self.remote:
                    raise
                # qdrant-client raises many transport types; one clear message for all of them.
                raise BackendUnavailable(f"Qdrant at {self.where} does not answer ({what}): {err}") from err

    # -- collection and its metadata -----------------------------------------------------------------------------------
    def metadata(self, refresh: bool = False) -> dict:
        if self._meta is None or refresh or self.remote:
            with self._call("reading the collection"):
                if not self.client.collection_exists(self.collection):
                    self._meta = {}
                else:
                    self._meta = dict(self.client.get_collection(self.collection).config.metadata or {})
        return self._meta

    def ensure(self, card: ModelCard, reset: bool = False) -> None:
        """Create the collection for ``card``'s model, or check that the existing one was built by it."""
        from qdrant_client import models

        with self._call("creating the collection"):
            if reset and self.client.collection_exists(self.collection):
                self.client.delete_collection(self.collection)
            if not self.client.collection_exists(self.collection):
                dim = card.embedding_dim
                self.client.create_collection(
                    self.collection,
                    vectors_config={
                        "image": models.VectorParams(size=dim, distance=models.Distance.DOT),
                        "text": models.VectorParams(size=dim, distance=models.Distance.DOT),
                        "fused": models.VectorParams(size=2 * dim, distance=models.Distance.DOT),
                    },
                    metadata={"model_identity": card.identity, "model_name": card.label, "catalog_version": 0},
                )
                if self.remote:
                    for name in KEYWORD_FIELDS:
                        self.client.create_payload_index(self.collection, name, models.PayloadSchemaType.KEYWORD)
                    self.client.create_payload_index(self.collection, "price", models.PayloadSchemaType.FLOAT)
                else:
                    relax_sync(self.client)
        self.metadata(refresh=True)
        self.check_model(card)

    def check_model(self, card: ModelCard) -> None:
        meta = self.metadata()
        if meta and meta.get("model_identity") != card.identity:
            raise ModelMismatch(
                f"The product index was built by another model ({meta.get('model_name', 'unknown')}) than the one "
                f"loaded ({card.label}); re-ingest the catalogue with 'python -m pipeline ingest CATALOG --reset'."
            )

    def version(self) -> int:
        return int(self.metadata().get("catalog_version", 0))

    def bump_version(self) -> int:
        new = self.version() + 1
        with self._call("updating the catalogue version"):
            self.client.update_collection(self.collection, metadata={"catalog_version": new})
        self.metadata(refresh=True)
        return new

    def count(self) -> int:
        with self._call("counting products"):
            if not self.client.collection_exists(self.collection):
                return 0
            return self.client.count(self.collection, exact=True).count

    # -- points --------------------------------------------------------------------------------------------------------
    def content_hashes(self, product_ids: list[str]) -> dict[str, str]:
        """The stored content hash of each known product, so ingestion can skip what has not changed."""
        if not product_ids:
            return {}
        with self._call("reading products"):
            points = self.client.retrieve(
                self.collection, [point_id(p) for p in product_ids], with_payload=["product_id", "content_hash"]
            )
        return {p.payload["product_id"]: p.payload.get("content_hash", "") for p in points}

    def upsert(self, products: list[IndexedProduct]) -> None:
        from qdrant_client import models

        if not products:
            return
        points = [
            models.PointStruct(
                id=point_id(p.product_id),
                vector={
                    "image": p.image.tolist(),
                    "text": p.text.tolist(),
                    "fused": np.concatenate([p.text, p.image]).tolist(),
                },
                payload={"product_id": p.product_id, **p.payload},
            )
            for p in products
        ]
        with self._call("saving vectors"):
            self.client.upsert(self.collection, points=points, wait=True)

    def search(self, vector: np.ndarray, using: str, limit: int, filters: Filters | None = None) -> list[Hit]:
        with self._call("searching"):
            if not self.client.collection_exists(self.collection):
                return []
            response = self.client.query_points(
                self.collection,
                query=np.asarray(vector, dtype=np.float32).tolist(),
                using=using,
                limit=limit,
                query_filter=filters.to_qdrant() if filters else None,
                with_payload=True,
            )
        return [Hit(p.payload["product_id"], float(p.score), dict(p.payload)) for p in response.points]

    def all_vectors(self, using: str) -> tuple[list[str], np.ndarray]:
        """Every product id and its vector (for brute-force reference checks and benchmarks)."""
        ids, vectors, offset = [], [], None
        with self._call("reading vectors"):
            while True:
                points, offset = self.client.scroll(
                    self.collection, limit=1024, offset=offset, with_payload=["product_id"], with_vectors=[using]
                )
                for p in points:
                    ids.append(p.payload["product_id"])
                    vectors.append(p.vector[using])
                if offset is None:
                    break
        return ids, np.asarray(vectors, dtype=np.float32).reshape(len(ids), -1)

    def close(self) -> None:
        with self._lock:
            self.client.close()
