"""The embedded vector store: Qdrant Edge (``qdrant-edge-py``), Qdrant's own engine in this process, one shard per
collection under ``DATA_DIR/vectors/<collection>/``.

Edge has no collection metadata, so the collection's identity, model and catalogue version live in
``collection.json`` beside the shard, written atomically. Only one process may open a shard (this store holds a
``flock`` on the folder: shards are made without Edge's write-ahead log, which was Edge's own lock); the sentence for
that case names the alternatives.

Edge's calls hold the GIL, and ``optimize()`` (the HNSW build) takes tens of seconds on a large catalogue, during which
no other thread of the process runs. A serving app therefore optimises a copy of the shard in a child process and swaps
it in when it is done (queries wait only for the swap, well under a second); writes wait for the whole optimisation.
A command-line ingest optimises in place.

Opening a shard, a child process reads its files into the page cache ahead of the engine, and once it is open
another reads what the first queries would read from disk: the compact copies (memory-mapped by default) and the
payloads, and with VECTOR_WARM=1 the float32 originals (page_cache.py says why and what).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import IO

import numpy as np

from ...errors import BackendUnavailable, PipelineError
from ...model_repo import ModelCard
from .lexical import document_vector
from .page_cache import files_read_on_open, hot_list, read_in_background, warm_list
from .store import IndexTuning, VectorStore, full_scan_kb, scroll_page
from .types import (
    FLOAT_FIELDS,
    FUSED,
    KEYWORD_FIELDS,
    LEXICAL,
    CollectionInfo,
    Filters,
    Hit,
    IndexedProduct,
    point_id,
)

log = logging.getLogger("pipeline.storage.vectors")
INFO_FILE = "collection.json"
SHARD = "shard"
LOCK_FILE = "lock"
FLUSH_EVERY_S = 1.0  # during a change, what was written is flushed at least this often (see _create; 18 ms a flush)
# One sentence for every command: searching and changing the catalogue both go through the process that holds it.
IN_USE = (
    "The vector index in {path} is open in another process (the app, or an ingest): search and change the catalogue "
    "through that app (its Search and Catalogue tabs, or its API), stop that process first, or run a Qdrant server "
    "(QDRANT_URL) and a MongoDB server (MONGODB_URI), which several processes can share."
)


def edge_version() -> str:
    try:
        return metadata.version("qdrant-edge-py")
    except metadata.PackageNotFoundError:
        return "unknown"


def _edge():
    import qdrant_edge

    return qdrant_edge


def edge_filter(filters: Filters | None):
    q = _edge()
    must: list = [q.FieldCondition(key=name, match=q.MatchAny(list(values))) for name, values in
                  (filters.keyword_conditions if filters else [])]  # fmt: skip
    if filters and filters.price_range:
        low, high = filters.price_range
        must.append(q.FieldCondition(key="price", range=q.RangeFloat(gte=low, lte=high)))
    return q.Filter(must=must) if must else None


def _dir_bytes(path: Path) -> int:
    """Bytes really on disk: Edge pre-allocates sparse 32 MiB chunks and WAL files, so sizes overstate it."""
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def mapped_resident_bytes(path: Path) -> int:
    """Resident memory of this process's mappings of files under ``path`` (memory-mapped vectors and indexes)."""
    root, total, inside = str(path.resolve()), 0, False
    try:
        with open("/proc/self/smaps", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                first = line.split(maxsplit=1)[0]
                if "-" in first and not first.endswith(":"):  # a mapping's header line
                    parts = line.split()
                    inside = len(parts) >= 6 and parts[5].startswith(root)
                elif inside and first == "Rss:":
                    total += int(line.split()[1]) * 1024
    except OSError:
        return 0
    return total


class EdgeVectorStore(VectorStore):
    engine = "Qdrant Edge"

    def __init__(self, root: Path, tuning: IndexTuning, optimize_in_child: bool = False) -> None:
        super().__init__(tuning)
        self._configured = tuning  # what a new collection is built with (self.tuning follows the open shard)
        self.root = Path(root)
        self.shard_dir = self.root / SHARD
        self.info_file = self.root / INFO_FILE
        self.where = str(self.root)
        self.optimize_in_child = optimize_in_child
        self._lock = threading.RLock()  # guards the shard object (closed and swapped under it)
        self._shard = None
        self._info: CollectionInfo | None = None
        self._readers: list[subprocess.Popen] = []  # children reading the shard's files ahead (page_cache)
        self._flushed_at = time.monotonic()
        self._hold = self._take_folder()
        try:
            self._open()
        except BaseException:
            self._hold.close()
            raise

    def _open(self) -> None:
        self._recover_swap()
        if self.shard_dir.is_dir():
            self._shard = self._load(self.shard_dir)
            config = self._built_config()
            self._add_lexical_vector(config)
            self._follow_built_storage(config)
            info = self._read_info()
            if info.writing:  # a change was cut short (crash, kill): its answers must not be served as current
                log.warning("The last change of %s did not finish; the catalogue version is bumped.", self.root)
                info.writing = False
                info.catalog_version += 1
                self._write_info(info)

    # -- opening ------------------------------------------------------------------------------------------------------
    def _take_folder(self) -> IO[str]:
        """An exclusive ``flock`` on ``<root>/lock`` for the life of this store: without a write-ahead log Edge takes
        no lock of its own, and two processes writing one shard would corrupt it. The kernel drops the lock when the
        holder dies, even by ``kill -9``."""
        self.root.mkdir(parents=True, exist_ok=True)
        handle = open(self.root / LOCK_FILE, "a+")  # noqa: SIM115 (held open until close())
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise BackendUnavailable(IN_USE.format(path=self.root)) from None
        return handle

    def _load(self, path: Path):
        """Open a shard while a child reads its files into the page cache ahead of the engine (see page_cache: the
        engine's own page faults read them at a fraction of the disk's speed), then have the compact copies it left on
        disk and the payloads read at full speed and (``warm_after_open``) the originals, steadily."""
        self._stop_reading()
        self._read_ahead(files_read_on_open(path))
        try:
            shard = _edge().EdgeShard.load(str(path))
        except Exception as err:  # Edge raises a plain Exception with the engine's message
            self._stop_reading()
            text = str(err)
            if "WouldBlock" in text or "Resource temporarily unavailable" in text:
                raise BackendUnavailable(IN_USE.format(path=self.root)) from None
            raise BackendUnavailable(f"The vector index in {self.root} cannot be opened: {text}") from err
        # Beside stored fused vectors the text vectors are searched only by a query at another weight: not read ahead.
        skip = ("text",) if FUSED in (self._built_config_of(path).get("vectors") or {}) else ()
        self._read_ahead(hot_list(path, skip), warm_list(path, skip) if self.tuning.warm_after_open else [])
        return shard

    def _read_ahead(self, first: list[Path], then_steadily: list[Path] | tuple = ()) -> None:
        reader = read_in_background(first, then_steadily)
        if reader is not None:
            self._readers.append(reader)

    def _stop_reading(self) -> None:
        readers, self._readers = self._readers, []
        for reader in readers:
            if reader.poll() is None:
                reader.terminate()
            reader.wait()

    def _recover_swap(self) -> None:
        """Finish or undo an optimisation swap that a crash interrupted (see ``_optimize_in_child``)."""
        old, new = self.root / "shard.old", self.root / "shard.next"
        if not self.shard_dir.exists() and old.is_dir():
            os.replace(old, self.shard_dir)
        for leftover in (old, new):
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)

    def _built_config(self) -> dict:
        """The shard's own ``edge_config.json`` (what it was built with), or {} where it cannot be read."""
        return self._built_config_of(self.shard_dir)

    @staticmethod
    def _built_config_of(shard_dir: Path) -> dict:
        try:
            return json.loads((shard_dir / "edge_config.json").read_text())
        except (OSError, ValueError):
            return {}

    def _add_lexical_vector(self, config: dict) -> None:
        """Shards made before the lexical vector existed get it (their products gain one when next ingested)."""
        if config and LEXICAL not in (config.get("sparse_vectors") or {}):
            q = _edge()
            with self._lock:
                self._shard.update(q.UpdateOperation.create_sparse_vector(LEXICAL, modifier=q.Modifier.Idf))

    def _follow_built_storage(self, config: dict) -> None:
        """A shard keeps the storage it was built with, whatever VECTOR_STORAGE says now: search it (and report it) as
        built; an int8 shard rescored at turbo8's oversampling would lose recall."""
        kinds = set()
        for v in (config.get("vectors") or {}).values():
            quantizer = next(iter(v.get("quantization_config") or {}), None)
            kinds.add({"scalar": "int8", "turbo": "turbo8", None: "disk" if v.get("memory") == "cold" else "ram"}
                      .get(quantizer))  # fmt: skip
        if len(kinds) == 1 and None not in kinds and kinds != {self.tuning.storage}:
            self.tuning = replace(self.tuning, storage=kinds.pop())

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
            data = None
            if self.info_file.is_file() and self._shard is not None:
                try:
                    data = json.loads(self.info_file.read_text())
                except (OSError, ValueError) as err:
                    message = f"{self.info_file} cannot be read ({err}); re-ingest with --reset."
                    raise BackendUnavailable(message) from err
            self._info = CollectionInfo.from_dict(data)
        return CollectionInfo(**self._info.to_dict())

    def _write_info(self, info: CollectionInfo) -> None:
        data = {**info.to_dict(), "engine": f"qdrant-edge-py {edge_version()}"}
        tmp = self.info_file.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            fh.write(json.dumps(data, indent=2) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.info_file)
        self._info = CollectionInfo(**info.to_dict())

    def _create(self, card: ModelCard, info: CollectionInfo) -> None:
        q = _edge()
        t = self.tuning
        dim = card.embedding_dim
        # Qdrant counts this threshold in KB of one vector name's float32 vectors.
        threshold_kb = max(1, int(t.exact_below * dim * 4 / 1024))
        compact = q.Memory.Cold if t.compact_memory == "cold" else q.Memory.Pinned
        memory = q.Memory.Cached if t.storage == "ram" else q.Memory.Cold  # quantized: the originals on disk
        quantization = None
        if t.storage == "int8":
            quantization = q.ScalarQuantizationConfig(type=q.ScalarType.Int8, quantile=0.99, memory=compact)
        elif t.storage == "turbo8":
            quantization = q.TurboQuantQuantizationConfig(bits=q.TurboQuantBitSize.Bits8, memory=compact)
        config = q.EdgeConfig(
            vectors={
                name: q.EdgeVectorParams(
                    size=dim, distance=q.Distance.Dot, memory=memory, quantization_config=quantization
                )
                for name in info.dense_vectors()
            },
            hnsw_config=q.HnswIndexConfig(
                m=t.hnsw_m, ef_construct=t.hnsw_ef_construct, full_scan_threshold=full_scan_kb(dim)
            ),
            # segments smaller than this stay unindexed: brute force over them is as fast as HNSW, and exact
            optimizers=q.EdgeOptimizersConfig(indexing_threshold=threshold_kb),
            sparse_vectors={LEXICAL: q.EdgeSparseVectorParams(modifier=q.Modifier.Idf)},
            # No write-ahead log: it held every vector a second time until the next optimisation (4.9 GB after
            # upserting 1,000,000 products), opening reads all of it (a CRC of every entry), and writing it cost a
            # third of the upsert speed. Changes are flushed instead: their first write at once, then every
            # FLUSH_EVERY_S and when they end, before their catalogue version is announced. A crash keeps the shard
            # as of the last flush (kill -9 tested); the next ingest re-embeds what it finds missing, and the
            # interrupted change's version is skipped (``writing``).
            wal_enabled=False,
        )
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._shard = q.EdgeShard.create(str(self.shard_dir), config)
            # Payload indexes memory-mapped and read into the page cache on opening (Cached). Held on the heap
            # (Qdrant's default) they were rebuilt on every open: 5.5 of the 9.6 s it took to open 1,000,000
            # products. Cold (mapped, not read ahead): 8.3 s to open from an empty page cache against 4.5 s, and
            # filtered queries 6.2 instead of 3.7 ms p50 until the index pages are in.
            cached = q.Memory.Cached
            for name in KEYWORD_FIELDS:
                self._shard.update(q.UpdateOperation.create_field_index(name, q.KeywordIndexParams(memory=cached)))
            for name in FLOAT_FIELDS:
                self._shard.update(q.UpdateOperation.create_field_index(name, q.FloatIndexParams(memory=cached)))
            self._shard.flush()
        self._write_info(info)

    def _drop(self) -> None:
        with self._lock:
            if self._shard is not None:
                self._shard.close()
                self._shard = None
            self._stop_reading()
            shutil.rmtree(self.shard_dir, ignore_errors=True)
            self.info_file.unlink(missing_ok=True)
            self._info = None
            self.tuning = self._configured

    # -- points -------------------------------------------------------------------------------------------------------
    def _upsert(self, products: list[IndexedProduct]) -> None:
        q = _edge()
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
            self.shard.update(_edge().UpdateOperation.delete_points([point_id(p) for p in product_ids]))
            self._flush_if_due()

    def _begin_change(self) -> None:
        # The first write of a change is flushed at once, then at most FLUSH_EVERY_S of it is lost to a crash: a
        # change cut short early keeps what it wrote, whenever the store was opened (kill -9 tested).
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
        q = _edge()
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
            return self.shard.count(_edge().CountRequest(exact=True))

    # -- search -------------------------------------------------------------------------------------------------------
    def _params(self, exact: bool):
        q = _edge()
        quantization = None
        if self.tuning.quantized:  # exact search compares the float32 originals, not the compact copies
            quantization = q.QuantizationSearchParams(
                ignore=exact, rescore=self._rescore(), oversampling=self.tuning.rescore_oversampling()
            )
        return q.SearchParams(hnsw_ef=self._ef(), exact=exact, quantization=quantization)

    def _batch(self, requests, filters: Filters, exact: bool, with_payload: bool) -> list:
        """One query request per (vector, vector name, limit), all with the same filter; the dense ones with the same
        search parameters, a sparse one (``LEXICAL``) with none (they are HNSW's and quantization's)."""
        q = _edge()
        flt, params = edge_filter(filters), self._params(exact)
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
        q = _edge()
        batch = self._batch(requests, filters, exact, with_payload=True)
        with self._lock:
            answers = self.shard.query_batch(q.QueryBatchRequest(batch)) if len(batch) > 1 else [
                self.shard.query(batch[0])
            ]  # fmt: skip
        return [[Hit(p.payload["product_id"], float(p.score), dict(p.payload)) for p in points] for points in answers]

    def _scored(self, requests, filters: Filters, exact: bool) -> list[list]:
        if self._shard is None:
            return [[] for _ in requests]
        q = _edge()
        batch = self._batch(requests, filters, exact, with_payload=False)
        with self._lock:
            answers = self.shard.query_batch(q.QueryBatchRequest(batch))
        return [[(p.id, float(p.score)) for p in points] for points in answers]

    def _scored_among(self, vector: np.ndarray, wanted: list[tuple[str, list]]) -> list[dict]:
        q = _edge()
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
            response = self.shard.facet(_edge().FacetRequest(key=field, limit=limit, exact=True))
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
        work, old = self.root / "shard.next", self.root / "shard.old"
        shutil.rmtree(work, ignore_errors=True)
        with self._lock:
            self.shard.flush()
            shutil.copytree(self.shard_dir, work)
        worker = [sys.executable, "-m", "pipeline.storage.vectors.optimize_worker", str(work)]
        done = subprocess.run(worker, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            shutil.rmtree(work, ignore_errors=True)
            raise PipelineError(f"Optimising the vector index failed: {done.stderr.strip()[-300:]}")
        with self._lock:
            self._shard.close()
            self._shard = None
            os.replace(self.shard_dir, old)
            os.replace(work, self.shard_dir)
            try:
                self._shard = self._load(self.shard_dir)
            except PipelineError:
                os.replace(self.shard_dir, work)
                os.replace(old, self.shard_dir)
                self._shard = self._load(self.shard_dir)
                raise
        shutil.rmtree(old, ignore_errors=True)
        return json.loads(done.stdout or "{}").get("optimized", True)

    def warmed(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` s for the read-ahead of the last open (page_cache) to end; True once it has."""
        try:
            for reader in list(self._readers):
                reader.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def stats(self) -> dict:
        out = {
            "engine": f"Qdrant Edge {edge_version()}",
            "where": str(self.root),
            "points": 0,
            "indexed_vectors": 0,
            "segments": 0,
            "hnsw": False,
            "storage": self.tuning.storage,
            "disk_bytes": _dir_bytes(self.shard_dir),
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
            self._stop_reading()
            self._hold.close()
