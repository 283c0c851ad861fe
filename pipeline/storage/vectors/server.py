"""A Qdrant server or Qdrant Cloud (``QDRANT_URL``, ``QDRANT_API_KEY``) through qdrant-client: the way out when one
machine is not enough, and the store several processes may write to at once.

The collection's identity, model and catalogue version are Qdrant's own collection metadata, read on every query (one
round trip), so an ingest by another process is seen at once. The server indexes in the background by itself:
``optimize`` only reports. The contract tests run this adapter against qdrant-client's ``:memory:`` mode, which speaks
the same API; pass ``serialize=True`` there, local mode is not thread-safe.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from importlib import metadata

import numpy as np

from ...errors import BackendUnavailable, PipelineError
from ...model_repo import ModelCard
from . import conditions
from .lexical import document_vector
from .store import IndexTuning, VectorStore, scroll_page
from .types import (
    FLOAT_FIELDS,
    KEYWORD_FIELDS,
    LEXICAL,
    MULTI,
    CollectionInfo,
    Filters,
    Hit,
    IndexedProduct,
    point_id,
)


@functools.cache
def _dialect() -> conditions.Dialect:
    from qdrant_client import models

    return conditions.Dialect(
        any_of=lambda key, values: models.FieldCondition(key=key, match=models.MatchAny(any=values)),
        between=lambda key, low, high: models.FieldCondition(key=key, range=models.Range(gte=low, lte=high)),
        all_of=lambda must: models.Filter(must=must),
        quantization_search=models.QuantizationSearchParams,
        search=models.SearchParams,
        int8=lambda: models.ScalarQuantization(
            scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, quantile=0.99, always_ram=True)
        ),
        turbo8=lambda: models.TurboQuantization(
            turbo=models.TurboQuantQuantizationConfig(bits=models.TurboQuantBitSize.BITS8, always_ram=True)
        ),
    )


class ServerVectorStore(VectorStore):
    engine = "Qdrant server"

    def __init__(
        self,
        collection: str,
        tuning: IndexTuning,
        url: str | None = None,
        api_key: str | None = None,
        client=None,
        serialize: bool = False,
    ) -> None:
        super().__init__(tuning)
        from qdrant_client import QdrantClient

        self.collection = collection
        self.client = client if client is not None else QdrantClient(url=url, api_key=api_key, timeout=10)
        self.where = url or "qdrant-client :memory:"
        self._lock = threading.RLock() if serialize else contextlib.nullcontext()
        self._seen: CollectionInfo | None = None  # the metadata as last read (see _stores_fused)

    @contextlib.contextmanager
    def _call(self, what: str) -> Iterator[None]:
        with self._lock:
            try:
                yield
            except PipelineError:
                raise
            except Exception as err:  # qdrant-client raises many transport types; one clear sentence for all
                raise BackendUnavailable(f"Qdrant at {self.where} does not answer ({what}): {err}") from err

    # -- metadata -----------------------------------------------------------------------------------------------------
    def _read_info(self) -> CollectionInfo:
        with self._call("reading the collection"):
            if not self.client.collection_exists(self.collection):
                return CollectionInfo()
            meta = dict(self.client.get_collection(self.collection).config.metadata or {})
        self._seen = CollectionInfo.from_dict(meta)
        return CollectionInfo.from_dict(meta)

    def _stores_fused(self, w: float) -> bool:
        """From the metadata as last read: the query path has just read it for the cache key (the catalogue version),
        so a text query costs no second round trip for it. A collection recreated by another process between the two
        reads can fail that one query."""
        seen = self._seen if self._seen is not None else self._read_info()
        return seen.fused_weight == float(w)

    def _write_info(self, info: CollectionInfo) -> None:
        with self._call("updating the collection's metadata"):
            self.client.update_collection(self.collection, metadata=info.to_dict())

    def _create(self, card: ModelCard, info: CollectionInfo) -> None:
        from qdrant_client import models

        t, dim = self.tuning, card.embedding_dim
        max_sim = models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM)
        with self._call("creating the collection"):
            self.client.create_collection(
                self.collection,
                vectors_config={
                    name: models.VectorParams(
                        size=dim,
                        distance=models.Distance.DOT,
                        on_disk=t.storage != "ram",
                        multivector_config=max_sim if name in MULTI else None,
                    )
                    for name in info.dense_vectors()
                },
                hnsw_config=models.HnswConfigDiff(
                    m=t.hnsw_m, ef_construct=t.hnsw_ef_construct, full_scan_threshold=conditions.full_scan_kb(dim)
                ),
                optimizers_config=models.OptimizersConfigDiff(
                    indexing_threshold=conditions.indexing_threshold_kb(t, dim)
                ),
                quantization_config=conditions.quantization(_dialect(), t),
                sparse_vectors_config={LEXICAL: models.SparseVectorParams(modifier=models.Modifier.IDF)},
                metadata=info.to_dict(),
            )
            for name in KEYWORD_FIELDS:
                self.client.create_payload_index(self.collection, name, models.PayloadSchemaType.KEYWORD)
            for name in FLOAT_FIELDS:
                self.client.create_payload_index(self.collection, name, models.PayloadSchemaType.FLOAT)

    def _drop(self) -> None:
        with self._call("deleting the collection"):
            self.client.delete_collection(self.collection)

    # -- points -------------------------------------------------------------------------------------------------------
    def _upsert(self, products: list[IndexedProduct]) -> None:
        from qdrant_client import models

        info = self._read_info()
        points = []
        for p in products:
            vectors: dict = info.dense_of(p)
            if words := document_vector(p.lexical):
                vectors[LEXICAL] = models.SparseVector(indices=words[0], values=words[1])
            points.append(
                models.PointStruct(
                    id=point_id(p.product_id), vector=vectors, payload={"product_id": p.product_id, **p.payload}
                )
            )
        with self._call("saving vectors"):
            self.client.upsert(self.collection, points=points, wait=True)

    def _delete(self, product_ids: list[str]) -> None:
        from qdrant_client import models

        with self._call("deleting products"):
            self.client.delete(
                self.collection, points_selector=models.PointIdsList(points=[point_id(p) for p in product_ids])
            )

    def _vectors(self, product_ids: list[str], using: str) -> dict[str, list[float]]:
        if not product_ids:
            return {}
        with self._call("reading vectors"):
            if not self.client.collection_exists(self.collection):
                return {}
            points = self.client.retrieve(
                self.collection, [point_id(p) for p in product_ids], with_payload=["product_id"], with_vectors=[using]
            )
        return {p.payload["product_id"]: (p.vector or {}).get(using) for p in points}

    def _retrieve(self, product_ids: list[str], fields: list[str]) -> list[dict]:
        if not product_ids:
            return []
        with self._call("reading products"):
            if not self.client.collection_exists(self.collection):
                return []
            points = self.client.retrieve(self.collection, [point_id(p) for p in product_ids], with_payload=fields)
        return [dict(p.payload or {}) for p in points]

    def _scroll(self, fields: list[str], vector: str | None = None) -> Iterator[tuple[dict, list[float] | None]]:
        with self._call("reading products"):
            if not self.client.collection_exists(self.collection):
                return
        offset = None
        while True:
            with self._call("reading products"):
                points, offset = self.client.scroll(
                    self.collection,
                    limit=scroll_page(vector),
                    offset=offset,
                    with_payload=fields,
                    with_vectors=[vector] if vector else False,
                )
            for p in points:
                yield dict(p.payload or {}), (p.vector or {}).get(vector) if vector else None
            if offset is None:
                return

    def count(self) -> int:
        with self._call("counting products"):
            if not self.client.collection_exists(self.collection):
                return 0
            return self.client.count(self.collection, exact=True).count

    def _count_with_photo(self) -> int:
        from qdrant_client import models

        with self._call("counting products"):
            if not self.client.collection_exists(self.collection):
                return 0
            has_photo = models.Filter(must=[models.HasVectorCondition(has_vector="image")])
            return self.client.count(self.collection, count_filter=has_photo, exact=True).count

    # -- search -------------------------------------------------------------------------------------------------------
    def _params(self, exact: bool):
        return conditions.search_params(_dialect(), self.tuning, self._ef(), self._rescore(), exact)

    def _nearest(self, requests, filters: Filters, exact: bool) -> list[list[Hit]]:
        from qdrant_client import models

        flt, params = conditions.payload_filter(_dialect(), filters), self._params(exact)
        batch = [
            models.QueryRequest(
                query=_query(vector, using), using=using, limit=int(limit), filter=flt, params=params, with_payload=True
            )
            for vector, using, limit in requests
        ]
        with self._call("searching"):
            if not self.client.collection_exists(self.collection):
                return [[] for _ in requests]
            answers = self.client.query_batch_points(self.collection, batch)
        return [[Hit(p.payload["product_id"], float(p.score), dict(p.payload)) for p in a.points] for a in answers]

    def _scored(self, requests, filters: Filters, exact: bool) -> list[list]:
        from qdrant_client import models

        flt, params = conditions.payload_filter(_dialect(), filters), self._params(exact)
        batch = [
            models.QueryRequest(query=models.SparseVector(indices=vector[0], values=vector[1]), using=LEXICAL,
                                limit=int(limit), filter=flt, with_payload=False)
            if using == LEXICAL else
            models.QueryRequest(query=_query(vector, using), using=using, limit=int(limit), filter=flt,
                                params=params, with_payload=False)
            for vector, using, limit in requests
        ]  # fmt: skip
        with self._call("searching"):
            if not self.client.collection_exists(self.collection):
                return [[] for _ in requests]
            answers = self.client.query_batch_points(self.collection, batch)
        return [[(str(p.id), float(p.score)) for p in a.points] for a in answers]

    def _scored_among(self, vector: np.ndarray, wanted: list[tuple[str, list]]) -> list[dict]:
        from qdrant_client import models

        asked = [(using, keys) for using, keys in wanted if keys]
        if not asked:
            return [{} for _ in wanted]
        batch = [
            models.QueryRequest(query=_query(vector, using), using=using, limit=len(keys), with_payload=False,
                                filter=models.Filter(must=[models.HasIdCondition(has_id=list(keys))]),
                                params=models.SearchParams(exact=True))
            for using, keys in asked
        ]  # fmt: skip
        with self._call("searching"):
            answers = iter(self.client.query_batch_points(self.collection, requests=batch))
        return [{str(p.id): float(p.score) for p in next(answers).points} if keys else {} for _, keys in wanted]

    def _payloads(self, keys: list) -> dict:
        if not keys:
            return {}
        with self._call("reading products"):
            points = self.client.retrieve(self.collection, list(keys), with_payload=True)
        return {str(p.id): dict(p.payload or {}) for p in points}

    def facet(self, field: str, limit: int = 1000) -> list[tuple[str, int]]:
        with self._call("listing filter values"):
            if not self.client.collection_exists(self.collection):
                return []
            response = self.client.facet(self.collection, field, limit=limit, exact=True)
        return [(str(h.value), int(h.count)) for h in response.hits]

    # -- index maintenance --------------------------------------------------------------------------------------------
    def optimize(self) -> dict:
        """The server builds its indexes in the background while it keeps answering; nothing to start here."""
        return {"optimized": False, "seconds": 0.0, "note": "the Qdrant server optimises in the background"}

    def searches_exactly(self) -> bool:
        with self._call("reading the collection"):
            if not self.client.collection_exists(self.collection):
                return True
            info = self.client.get_collection(self.collection)
            return (info.indexed_vectors_count or 0) <= (info.points_count or 0)

    def stats(self) -> dict:
        out = {"engine": "Qdrant server", "where": self.where, "client": f"qdrant-client {_client_version()}"}
        with self._call("reading the collection"):
            if self.client.collection_exists(self.collection):
                info = self.client.get_collection(self.collection)
                out.update(
                    points=info.points_count or 0,
                    indexed_vectors=info.indexed_vectors_count or 0,
                    segments=info.segments_count,
                    status=str(info.status.value if hasattr(info.status, "value") else info.status),
                    hnsw=(info.indexed_vectors_count or 0) > (info.points_count or 0),
                )
        out["storage"] = self.tuning.storage
        return out

    def close(self) -> None:
        with self._lock, contextlib.suppress(Exception):
            self.client.close()


def _query(vector: np.ndarray, using: str) -> list:
    """A query vector as the server takes it for ``using``: a one-row multivector for those held per photo."""
    return [vector.tolist()] if using in MULTI else vector.tolist()


def _client_version() -> str:
    try:
        return metadata.version("qdrant-client")
    except metadata.PackageNotFoundError:
        return "unknown"
