"""The embedded vector store: Qdrant Edge (``qdrant-edge-py``), Qdrant's own engine in this process, one shard per
collection under ``DATA_DIR/vectors/<collection>/``: the store's calls onto the engine.

The folder, its lock and info file, the schema and optimise-and-swap are ``edge_shard``'s; reading the shard ahead
is ``page_cache``'s. Edge's calls hold the GIL and an HNSW build takes long on a large catalogue, so a serving app
optimises a copy in a child process and swaps it in (queries wait only for the swap); a command-line ingest optimises
in place.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from ...errors import BackendUnavailable, PipelineError
from ...model_repo import ModelCard
from . import conditions
from .edge_shard import IN_USE, ShardFolder, dialect, edge, edge_version, index_payload, schema
from .lexical import document_vector
from .page_cache import ReadAhead, disk_bytes, files_read_on_open, hot_list, mapped_resident_bytes, warm_list
from .store import IndexTuning, VectorStore, scroll_page
from .types import FUSED, LEXICAL, CollectionInfo, Filters, Hit, IndexedProduct, point_id

__all__ = ["IN_USE", "EdgeVectorStore", "edge_version"]

log = logging.getLogger("pipeline.storage.vectors")
FLUSH_EVERY_S = 1.0  # during a change, what was written is flushed at least this often (see _begin_change)


class EdgeVectorStore(VectorStore):
    engine = "Qdrant Edge"

    def __init__(self, root: Path, tuning: IndexTuning, optimize_in_child: bool = False) -> None:
        super().__init__(tuning)
        self._configured = tuning  # what a new collection is built with (self.tuning follows the open shard)
        self.folder = ShardFolder(root)
        self.root, self.shard_dir, self.info_file = self.folder.root, self.folder.shard_dir, self.folder.info_file
        self.where = str(self.root)
        self.optimize_in_child = optimize_in_child
        self._lock = threading.RLock()  # guards the shard object (closed and swapped under it)
        self._shard = None
        self._info: CollectionInfo | None = None
        self._read_ahead = ReadAhead()
        self._flushed_at = time.monotonic()
        self._hold = self.folder.take()
        try:
            self._open()
        except BaseException:
            self._hold.close()
            raise

    def _open(self) -> None:
        self.folder.recover_swap()
        if self.shard_dir.is_dir():
            self._shard = self._load(self.shard_dir)
            built = ShardFolder.built_storage(ShardFolder.built_config(self.shard_dir))
            if built is not None and built != self.tuning.storage:
                self.tuning = replace(self.tuning, storage=built)
            info = self._read_info()
            if info.writing:  # a change was cut short (crash, kill): its answers must not be served as current
                log.warning("The last change of %s did not finish; the catalogue version is bumped.", self.root)
                info.writing = False
                info.catalog_version += 1
                self._write_info(info)

    def _load(self, path: Path):
        """Open a shard while a child reads its files into the page cache ahead of the engine, then have what the
        first queries read (and, with ``warm_after_open``, the originals) read the same way."""
        self._read_ahead.stop()
        self._read_ahead.start(files_read_on_open(path))
        try:
            shard = edge().EdgeShard.load(str(path))
        except Exception as err:  # Edge raises a plain Exception with the engine's message
            self._read_ahead.stop()
            text = str(err)
            if "WouldBlock" in text or "Resource temporarily unavailable" in text:
                raise BackendUnavailable(IN_USE.format(path=self.root)) from None
            raise BackendUnavailable(f"The vector index in {self.root} cannot be opened: {text}") from err
        # Beside stored fused vectors the text vectors are searched only by a query at another weight: not read ahead.
        skip = ("text",) if FUSED in (ShardFolder.built_config(path).get("vectors") or {}) else ()
        self._read_ahead.start(hot_list(path, skip), warm_list(path, skip) if self.tuning.warm_after_open else [])
        return shard

    @property
    def shard(self):
        if self._shard is None:
            raise BackendUnavailable(
                "The catalogue is empty: ingest one with 'python -m pipeline ingest CATALOG'."
            )  # never reached by searches: they check first
        return self._shard

    # -- metadata -----------------------------------------------------------------------------------------------------
    def _read_info(self) -> CollectionInfo:
        if self._info is None:
            self._info = CollectionInfo.from_dict(self.folder.read_info() if self._shard is not None else None)
        return CollectionInfo(**self._info.to_dict())

    def _write_info(self, info: CollectionInfo) -> None:
        self.folder.write_info(info)
        self._info = CollectionInfo(**info.to_dict())

    def _create(self, card: ModelCard, info: CollectionInfo) -> None:
        config = schema(self.tuning, card.embedding_dim, info.dense_vectors())
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._shard = edge().EdgeShard.create(str(self.shard_dir), config)
            index_payload(self._shard)
            self._shard.flush()
        self._write_info(info)

    def _drop(self) -> None:
        with self._lock:
            if self._shard is not None:
                self._shard.close()
                self._shard = None
            self._read_ahead.stop()
            self.folder.remove()
            self._info = None
            self.tuning = self._configured

    # -- points -------------------------------------------------------------------------------------------------------
    def _upsert(self, products: list[IndexedProduct]) -> None:
        q = edge()
        info = self._read_info()
        points = []
        for p in products:
            vectors: dict = info.dense_of(p)
            if words := document_vector(p.lexical):
                vectors[LEXICAL] = q.SparseVector(*words)
            points.append(q.Point(point_id(p.product_id), vectors, {"product_id": p.product_id, **p.payload}))
        with self._lock:
            self.shard.update(q.UpdateOperation.upsert_points(points))
            self._flush_if_due()

    def _delete(self, product_ids: list[str]) -> None:
        with self._lock:
            self.shard.update(edge().UpdateOperation.delete_points([point_id(p) for p in product_ids]))
            self._flush_if_due()

    def _begin_change(self) -> None:
        # Without a write-ahead log, flushes are what a crash keeps: a change's first write at once, then every
        # FLUSH_EVERY_S and when it ends, before its catalogue version is announced (kill -9 tested).
        self._flushed_at = float("-inf")

    def _flush_if_due(self) -> None:
        if time.monotonic() - self._flushed_at >= FLUSH_EVERY_S:
            self._persist()

    def _persist(self) -> None:
        with self._lock:
            if self._shard is not None:
                self._shard.flush()
            self._flushed_at = time.monotonic()

    def _vectors(self, product_ids: list[str], using: str) -> dict[str, list[float]]:
        if not product_ids or self._shard is None:
            return {}
        with self._lock:
            records = self.shard.retrieve(
                [point_id(p) for p in product_ids], with_payload=["product_id"], with_vector=[using]
            )
        return {r.payload["product_id"]: (r.vector or {}).get(using) for r in records}

    def _retrieve(self, product_ids: list[str], fields: list[str]) -> list[dict]:
        if not product_ids or self._shard is None:
            return []
        with self._lock:
            records = self.shard.retrieve([point_id(p) for p in product_ids], with_payload=fields, with_vector=False)
        return [dict(r.payload or {}) for r in records]

    def _scroll(self, fields: list[str], vector: str | None = None) -> Iterator[tuple[dict, list[float] | None]]:
        if self._shard is None:
            return
        q = edge()
        offset = None
        limit = scroll_page(vector)
        while True:
            with self._lock:
                records, offset = self.shard.scroll(
                    q.ScrollRequest(
                        offset=offset, limit=limit, with_payload=fields, with_vector=[vector] if vector else False
                    )
                )
            for r in records:
                yield dict(r.payload or {}), (r.vector or {}).get(vector) if vector else None
            if offset is None:
                return

    def count(self) -> int:
        if self._shard is None:
            return 0
        with self._lock:
            return self.shard.count(edge().CountRequest(exact=True))

    def _count_with_photo(self) -> int:
        if self._shard is None:
            return 0
        q = edge()
        with self._lock:
            return self.shard.count(q.CountRequest(exact=True, filter=q.Filter(must=[q.HasVectorCondition("image")])))

    # -- search -------------------------------------------------------------------------------------------------------
    def _params(self, exact: bool):
        return conditions.search_params(dialect(), self.tuning, self._ef(), self._rescore(), exact)

    def _batch(self, requests, filters: Filters, exact: bool, with_payload: bool) -> list:
        """One query request per (vector, vector name, limit), all with the same filter; the dense ones with the same
        search parameters, a sparse one (``LEXICAL``) with none (they are HNSW's and quantization's)."""
        q = edge()
        flt, params = conditions.payload_filter(dialect(), filters), self._params(exact)
        return [
            q.QueryRequest(limit=int(limit), query=q.Query.Nearest(q.SparseVector(*vector), using=LEXICAL),
                           filter=flt, with_payload=with_payload)
            if using == LEXICAL else
            q.QueryRequest(limit=int(limit), query=q.Query.Nearest(vector.tolist(), using=using), filter=flt,
                           params=params, with_payload=with_payload)
            for vector, using, limit in requests
        ]  # fmt: skip

    def _nearest(self, requests, filters: Filters, exact: bool) -> list[list[Hit]]:
        if self._shard is None:
            return [[] for _ in requests]
        q = edge()
        batch = self._batch(requests, filters, exact, with_payload=True)
        with self._lock:
            answers = self.shard.query_batch(q.QueryBatchRequest(batch)) if len(batch) > 1 else [
                self.shard.query(batch[0])
            ]  # fmt: skip
        return [[Hit(p.payload["product_id"], float(p.score), dict(p.payload)) for p in points] for points in answers]

    def _scored(self, requests, filters: Filters, exact: bool) -> list[list]:
        if self._shard is None:
            return [[] for _ in requests]
        q = edge()
        batch = self._batch(requests, filters, exact, with_payload=False)
        with self._lock:
            answers = self.shard.query_batch(q.QueryBatchRequest(batch))
        return [[(p.id, float(p.score)) for p in points] for points in answers]

    def _scored_among(self, vector: np.ndarray, wanted: list[tuple[str, list]]) -> list[dict]:
        q = edge()
        asked = [(using, keys) for using, keys in wanted if keys]
        if not asked or self._shard is None:
            return [{} for _ in wanted]
        query = vector.tolist()
        batch = [
            q.QueryRequest(limit=len(keys), query=q.Query.Nearest(query, using=using),
                           filter=q.Filter(must=[q.HasIdCondition(set(keys))]), params=q.SearchParams(exact=True),
                           with_payload=False)
            for using, keys in asked
        ]  # fmt: skip
        with self._lock:
            answers = iter(self.shard.query_batch(q.QueryBatchRequest(batch)))
        return [{p.id: float(p.score) for p in next(answers)} if keys else {} for _, keys in wanted]

    def _payloads(self, keys: list) -> dict:
        if not keys or self._shard is None:
            return {}
        with self._lock:
            records = self.shard.retrieve(list(keys), with_payload=True, with_vector=False)
        return {r.id: dict(r.payload or {}) for r in records}

    def facet(self, field: str, limit: int = 1000) -> list[tuple[str, int]]:
        if self._shard is None:
            return []
        with self._lock:
            response = self.shard.facet(edge().FacetRequest(key=field, limit=limit, exact=True))
        return [(str(h.value), int(h.count)) for h in response]

    # -- index maintenance --------------------------------------------------------------------------------------------
    def searches_exactly(self) -> bool:
        """No HNSW graph: the engine counts each point's lexical vector as indexed, and HNSW adds each dense one."""
        if self._shard is None:
            return True
        with self._lock:
            info = self.shard.info()
        return info.indexed_vectors_count <= info.points_count

    def optimize(self) -> dict:
        if self._shard is None:
            return {"optimized": False, "seconds": 0.0}
        started = time.perf_counter()
        with self._write_lock:
            large = self.count() >= self.tuning.exact_below
            if self.optimize_in_child and large:
                changed = self._optimize_in_child()
            else:
                with self._lock:
                    changed = bool(self.shard.optimize())
                    self.shard.flush()
        return {"optimized": changed, "seconds": round(time.perf_counter() - started, 3)}

    def _optimize_in_child(self) -> bool:
        """Optimise a copy in a child process while this one keeps answering, then swap it in."""
        with self._lock:
            self.shard.flush()
            self.folder.copy()
        changed = self.folder.optimise_copy()
        with self._lock:
            self._shard.close()
            self._shard = None
            self.folder.swap_in()
            try:
                self._shard = self._load(self.shard_dir)
            except PipelineError:
                self.folder.swap_back()
                self._shard = self._load(self.shard_dir)
                raise
        self.folder.drop_old()
        return changed

    def warmed(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` s for the read-ahead of the last open to end; True once it has."""
        return self._read_ahead.wait(timeout)

    def stats(self) -> dict:
        out = {
            "engine": f"Qdrant Edge {edge_version()}",
            "where": str(self.root),
            "points": 0,
            "indexed_vectors": 0,
            "segments": 0,
            "hnsw": False,
            "storage": self.tuning.storage,
            "disk_bytes": disk_bytes(self.shard_dir),
            "mapped_resident_bytes": mapped_resident_bytes(self.shard_dir),
        }
        if self._shard is not None:
            with self._lock:
                info = self.shard.info()
            out.update(
                points=info.points_count,
                indexed_vectors=info.indexed_vectors_count,
                segments=info.segments_count,
                hnsw=info.indexed_vectors_count > info.points_count,
            )
        return out

    def close(self) -> None:
        with self._lock:
            if self._shard is not None:
                with contextlib.suppress(Exception):
                    self._shard.flush()
                self._shard.close()
                self._shard = None
            self._read_ahead.stop()
            self._hold.close()
