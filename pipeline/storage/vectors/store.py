"""The one small interface both vector stores implement, and what they share: the text-query fusion, the collection's
metadata rules, and the model check.

A store holds two named vectors per product, ``image`` (the photo) and ``text`` (the product text), L2-normalised at the
source so that ``Distance.Dot`` is the cosine (and, in most collections, the third one below). A text query scores
``w·cos(q, text) + (1−w)·cos(q, image)``, which is ``q · (w·text + (1−w)·image)``: collections made with
``IndexTuning.fused_vector`` store that weighted sum as a third vector (``fused``, the size of the others, not a
concatenation of both), and a text query at their weight is one search of it, exact as any other search. A collection
without it (VECTOR_FUSED=0), or a query at another weight, is fused at query time by Fagin's
threshold algorithm: the top ``depth`` by each vector, every candidate's missing score fetched exactly, and a stopping
rule that proves no unseen product can beat the k-th candidate (``w·t_depth + (1−w)·i_depth``, the best an unseen
product could score); otherwise ``depth`` grows. Over exact search both answers equal brute force; over HNSW they are
exact over what the index returns.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator

import numpy as np

from ...batches import chunks
from ...errors import ModelMismatch
from ...model_repo import ModelCard
from ...settings import IndexTuning
from .lexical import RRF_K, RankFusion, query_vector
from .types import FUSED, LAYOUT, LEXICAL, MULTI, PAYLOAD_FIELDS, CollectionInfo, Filters, Hit, IndexedProduct

__all__ = ["IndexTuning", "VectorStore"]

FIRST_DEPTH = 64  # candidates per vector in the first round of the fusion (at least 2k)
HYBRID_DEPTH = 50  # candidates of each ranking (dense, lexical) that reciprocal rank fusion combines
MAX_ROUNDS = 6
# Points per retrieve or delete of a list of products: a sync may delete hundreds of thousands, and a Qdrant server
# refuses a request over 32 MB (its default), which a million point ids are.
POINTS_PER_CALL = 1024


def scroll_page(vector: str | None) -> int:
    """Points one scroll call reads: large pages without vectors (fewer calls for the catalogue's listing), small ones
    with a vector (a Python list of floats each, so a page's memory stays small): docs/vector-store.md."""
    return 1024 if vector else 10_000


class VectorStore:
    """Products' vectors in one Qdrant collection; see ``EdgeVectorStore`` and ``ServerVectorStore``."""

    engine = "vector store"
    where = ""

    def __init__(self, tuning: IndexTuning) -> None:
        self.tuning = tuning
        self._write_lock = threading.RLock()  # one writer at a time (ingest, delete, optimise)
        self._points_now: int | None = None
        self._photoless_at: tuple[int, bool] | None = None  # (catalogue version, whether some product has no photo)

    def _points(self) -> int:
        """The collection's size, counted once and again after each change (the search parameters follow it)."""
        if self._points_now is None:
            self._points_now = self.count()
        return self._points_now

    def _ef(self) -> int:
        return self.tuning.ef_for(self._points())

    def _rescore(self) -> bool:
        return self.tuning.rescores(self._points())

    # -- what each engine provides ------------------------------------------------------------------------------------
    def _read_info(self) -> CollectionInfo:
        raise NotImplementedError

    def _write_info(self, info: CollectionInfo) -> None:
        raise NotImplementedError

    def _create(self, card: ModelCard, info: CollectionInfo) -> None:
        raise NotImplementedError

    def _drop(self) -> None:
        raise NotImplementedError

    def _begin_change(self) -> None:
        """Called when a change starts, after it is marked as being written (an engine that batches its flushes
        restarts its clock here)."""

    def _persist(self) -> None:
        """Make the changes so far durable (an engine that writes each one durably has nothing to do)."""

    def _nearest(self, requests: list[tuple[np.ndarray, str, int]], filters: Filters, exact: bool) -> list[list[Hit]]:
        """Top ``limit`` for each (vector, vector name, limit), all under the same filters."""
        raise NotImplementedError

    def _scored(self, requests: list[tuple[object, str, int]], filters: Filters, exact: bool) -> list[list]:
        """Like ``_nearest`` but (point key, score) pairs only: candidate lists of the fusion carry no payload
        (reading it costs more than the search itself). A point key is whatever the engine hands back as the point's
        id (Edge: a ``uuid.UUID``, not turned into a string on the query path), the same in every method of one store.
        A request for ``LEXICAL`` holds a sparse vector (indices, values) and is scored by BM25 (one engine method for
        both kinds of ranking)."""
        raise NotImplementedError

    def _scored_among(self, vector: np.ndarray, wanted: list[tuple[str, list]]) -> list[dict]:
        """For each (vector name, point keys): the exact score of ``vector`` against that vector of each point, by
        key; all in one call to the engine (a call has a fixed cost however few points it scores)."""
        raise NotImplementedError

    def _payloads(self, keys: list) -> dict:
        """Each point's payload, by key."""
        raise NotImplementedError

    def _retrieve(self, product_ids: list[str], fields: list[str]) -> list[dict]:
        raise NotImplementedError

    def _scroll(self, fields: list[str], vector: str | None = None) -> Iterator[tuple[dict, list[float] | None]]:
        raise NotImplementedError

    def _upsert(self, products: list[IndexedProduct]) -> None:
        raise NotImplementedError

    def _delete(self, product_ids: list[str]) -> None:
        raise NotImplementedError

    def count(self) -> int:
        raise NotImplementedError

    def _count_with_photo(self) -> int:
        """Products that have at least one photo vector."""
        raise NotImplementedError

    def facet(self, field: str, limit: int = 1000) -> list[tuple[str, int]]:
        """(value, number of products) for a keyword field, most frequent first."""
        raise NotImplementedError

    def optimize(self) -> dict:
        """Build what the index needs for fast search after an ingest (never per upsert)."""
        raise NotImplementedError

    def stats(self) -> dict:
        raise NotImplementedError

    def searches_exactly(self) -> bool:
        """True when every search is a brute-force scan (no HNSW graph is in use), so answers equal numpy's."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # -- the collection and its metadata ------------------------------------------------------------------------------
    def info(self) -> CollectionInfo:
        return self._read_info()

    def version(self) -> int:
        return self.info().catalog_version

    def ensure(self, card: ModelCard, reset: bool = False) -> CollectionInfo:
        """Create the collection for ``card``'s model (``reset``: a new, empty one), or check the existing one."""
        with self._write_lock:
            if reset and self.info().exists:
                self._drop()
            info = self.info()
            if not info.exists:
                import uuid

                w = float(card.text_weight)
                fused = w if self.tuning.fused_vector and 0.0 < w < 1.0 else None  # at 0 or 1 it is a stored one
                info = CollectionInfo(uuid.uuid4().hex, card.identity, card.label, 0, fused_weight=fused)
                self._create(card, info)
        self.check_model(card)
        return self.info()

    def check_model(self, card: ModelCard) -> None:
        info = self.info()
        if info.exists and info.layout != LAYOUT:
            raise ModelMismatch(
                f"The product index in {self.where} was built by an earlier version of the app (one photo per "
                "product); re-ingest the catalogue with 'python -m pipeline ingest CATALOG --reset'."
            )
        if info.exists and info.model_identity != card.identity:
            raise ModelMismatch(
                f"The product index was built by another model ({info.model_name or 'unknown'}) than the one "
                f"loaded ({card.label}); re-ingest the catalogue with 'python -m pipeline ingest CATALOG --reset'."
            )

    @contextlib.contextmanager
    def changing(self) -> Iterator[None]:
        """Wrap every change of the points: marks the collection as being written (answers computed meanwhile are
        not cached), and bumps the catalogue version when done, whatever happened, so no cached answer from before
        the change is ever served after it."""
        with self._write_lock:
            info = self.info()
            info.writing = True
            self._write_info(info)
            self._begin_change()
            try:
                yield
            finally:
                self._points_now = None
                self._persist()  # the new version is announced only once what it names is on disk
                info = self.info()
                info.catalog_version += 1
                info.writing = False
                self._write_info(info)

    # -- points -------------------------------------------------------------------------------------------------------
    # Writes go inside ``changing()``, which holds the writer lock for the whole change; they may run in a worker
    # thread of that change (the ingest's writer), so they do not take the lock themselves.
    def upsert(self, products: list[IndexedProduct]) -> None:
        if products:
            self._upsert(products)

    def delete(self, product_ids: Iterable[str]) -> int:
        """Remove these products; returns how many of them were in the collection."""
        present = [d["product_id"] for d in self._retrieve_all(sorted(set(product_ids)), ["product_id"])]
        for part in chunks(present, POINTS_PER_CALL):
            self._delete(part)
        return len(present)

    def _retrieve_all(self, product_ids: list[str], fields: list[str]) -> Iterator[dict]:
        for part in chunks(product_ids, POINTS_PER_CALL):
            yield from self._retrieve(part, fields)

    def content_hashes(self, product_ids: list[str]) -> dict[str, str]:
        """The stored content hash of each known product, so ingestion can skip what has not changed."""
        return {
            d["product_id"]: d.get("content_hash", "")
            for d in self._retrieve_all(product_ids, ["product_id", "content_hash"])
        }

    def product_ids(self) -> list[str]:
        return [payload["product_id"] for payload, _ in self._scroll(["product_id"])]

    def names(self) -> Iterator[tuple[str, str]]:
        """(product id, name) of every product, in the engine's order (the catalogue's listing reads these)."""
        for payload, _ in self._scroll(["product_id", "name"]):
            yield payload["product_id"], str(payload.get("name") or "")

    def products(self, product_ids: list[str]) -> dict[str, dict]:
        """What the index holds of each known product (its payload: the fields of ``PAYLOAD_FIELDS``), by id."""
        return {d["product_id"]: d for d in self._retrieve_all(list(product_ids), ["product_id", *PAYLOAD_FIELDS])}

    def vectors(self, product_ids: list[str], using: str) -> dict[str, np.ndarray]:
        """The stored ``using`` vector of each known product (more like this, diversity); of a vector held per photo
        (``MULTI``), the main photo's. A product without a photo has no ``image`` vector."""
        found = self._vectors(product_ids, using).items()
        if using in MULTI:
            return {pid: np.asarray(v[0], np.float32) for pid, v in found if v}
        return {pid: np.asarray(v, np.float32) for pid, v in found if v}

    def photo_vectors(self, product_ids: list[str]) -> dict[str, np.ndarray]:
        """Every photo vector of each known product that has a photo, (photos, d), in the order of its photos."""
        return {pid: np.asarray(v, np.float32) for pid, v in self._vectors(product_ids, "image").items() if v}

    def best_photos(self, vector: np.ndarray, hits: list[Hit]) -> dict[str, int]:
        """Which of its photos each hit with several photos is closest to ``vector`` by (the one to show): one read
        of those products' photo vectors, none when every hit has one photo or none."""
        several = [h.product_id for h in hits if len(h.payload.get("image_files") or ()) > 1]
        if not several:
            return {}
        q = np.asarray(vector, np.float32)
        return {pid: int(np.argmax(rows @ q)) for pid, rows in self.photo_vectors(several).items()}

    def _vectors(self, product_ids: list[str], using: str) -> dict[str, list[float]]:
        raise NotImplementedError

    def all_vectors(self, using: str) -> tuple[list[str], np.ndarray]:
        """Every product id and its vector (brute-force references, benchmarks); of a vector held per photo, the main
        photo's, and only of the products that have one."""
        ids, vectors = [], []
        for payload, vector in self._scroll(["product_id"], using):
            if not vector:
                continue
            ids.append(payload["product_id"])
            vectors.append(vector[0] if using in MULTI else vector)
        return ids, np.asarray(vectors, dtype=np.float32).reshape(len(ids), -1)

    def all_photo_vectors(self) -> tuple[list[str], np.ndarray]:
        """Every photo vector of every product, one row each, with the id of the product it belongs to (a product
        with three photos has three rows): the near-duplicate report and best-photo references."""
        ids, rows = [], []
        for payload, vector in self._scroll(["product_id"], "image"):
            for row in vector or ():
                ids.append(payload["product_id"])
                rows.append(row)
        return ids, np.asarray(rows, dtype=np.float32).reshape(len(ids), -1)

    def _photoless(self) -> bool:
        """Whether some product has no photo (its fused score is then its text score): counted once per version."""
        version = self.version()
        if self._photoless_at is None or self._photoless_at[0] != version:
            self._photoless_at = (version, self._count_with_photo() < self.count())
        return self._photoless_at[1]

    # -- search -------------------------------------------------------------------------------------------------------
    def search(
        self, vector: np.ndarray, using: str, limit: int, filters: Filters | None = None, exact: bool = False
    ) -> list[Hit]:
        return self._nearest([(np.asarray(vector, np.float32), using, limit)], filters or Filters(), exact)[0]

    def search_text(
        self, vector: np.ndarray, text_weight: float, limit: int, filters: Filters | None = None, exact: bool = False
    ) -> list[Hit]:
        """Products ranked by ``w·cos(q, text) + (1−w)·cos(q, image)`` (see the module docstring)."""
        q, stored = np.asarray(vector, np.float32), self._stores_fused(text_weight)
        return self._hits(self._fused(q, text_weight, limit, filters or Filters(), exact, stored))

    def _stores_fused(self, w: float) -> bool:
        """Whether the collection's stored ``fused`` vectors were made at this text weight."""
        return self.info().fused_weight == float(w)

    def _fused(
        self, q: np.ndarray, w: float, limit: int, filters: Filters, exact: bool, stored: bool
    ) -> list[tuple[float, str]]:
        """(fused score, point key), best first: one search of the stored fused vectors (``stored``), else the
        threshold algorithm of the module docstring."""
        if stored:
            return [(s, k) for k, s in self._scored([(q, FUSED, limit)], filters, exact)[0]]
        w = float(w)
        if w >= 1.0 or w <= 0.0:
            return [(s, k) for k, s in self._scored([(q, "text" if w >= 1.0 else "image", limit)], filters, exact)[0]]
        depth = max(FIRST_DEPTH, 2 * limit)
        for _ in range(MAX_ROUNDS):
            by_text, by_image = self._scored([(q, "text", depth), (q, "image", depth)], filters, exact)
            text, image = dict(by_text), dict(by_image)
            more_image, more_text = self._scored_among(
                q, [("image", [k for k in text if k not in image]), ("text", [k for k in image if k not in text])]
            )
            image.update(more_image)
            text.update(more_text)
            # A product without a photo is scored by its text alone (as its stored fused rows are: types.fused_vector).
            fused = sorted(((w * text[k] + (1 - w) * image.get(k, text[k]), k) for k in text), key=lambda x: -x[0])
            top = fused[:limit]
            # A short list holds every product that passes the filters: nothing is unseen (the text list holds every
            # product, with a photo or not).
            complete = len(by_text) < depth
            unseen_best = None
            if by_text:
                pictured = w * by_text[-1][1] + (1 - w) * by_image[-1][1] if len(by_image) >= depth else None
                photoless = by_text[-1][1] if self._photoless() else None
                bounds = [b for b in (pictured, photoless) if b is not None]
                unseen_best = max(bounds) if bounds else float("-inf")
            if complete or unseen_best is None or (len(top) == limit and top[-1][0] >= unseen_best):
                break
            depth *= 4
        return top

    def _fused_among(self, q: np.ndarray, w: float, keys: list, stored: bool) -> dict:
        """The fused score of these points exactly, whatever their rank."""
        if not keys:
            return {}
        if stored:
            return self._scored_among(q, [(FUSED, keys)])[0]
        text, image = self._scored_among(q, [("text", keys), ("image", keys)])
        return {k: w * text[k] + (1 - w) * image.get(k, text[k]) for k in keys if k in text}

    def _hits(self, ranked: list[tuple[float, str]]) -> list[Hit]:
        payloads = self._payloads([k for _, k in ranked])
        return [Hit(payloads[k]["product_id"], score, payloads[k]) for score, k in ranked if k in payloads]

    def search_lexical(self, text: str, limit: int, filters: Filters | None = None) -> list[tuple[str, float]]:
        """(point id as a string, BM25 score), best first; empty when the text has no word BM25 keeps (only stop
        words)."""
        return [(str(k), score) for k, score in self._lexical_keys(text, limit, filters or Filters())]

    def _lexical_keys(self, text: str, limit: int, filters: Filters) -> list:
        words = query_vector(text)
        return self._scored([(words, LEXICAL, limit)], filters, False)[0] if words else []

    def search_hybrid(
        self,
        vector: np.ndarray,
        text_weight: float,
        text: str,
        limit: int,
        filters: Filters | None = None,
        rrf_k: int = RRF_K,
    ) -> list[Hit]:
        """The dense ranking (as ``search_text``) and the BM25 ranking fused by reciprocal rank fusion; a product
        whose SKU or whole name is the query comes first. Each hit's score stays its dense score (what the match
        levels are calibrated on); only the order is hybrid. No lexical match: the dense ranking as it is."""
        q, filters, stored = np.asarray(vector, np.float32), filters or Filters(), self._stores_fused(text_weight)
        depth = max(HYBRID_DEPTH, 3 * limit)
        lexical = [k for k, _ in self._lexical_keys(text, depth, filters)]
        dense = self._fused(q, text_weight, depth if lexical else limit, filters, False, stored)
        if not lexical:
            return self._hits(dense)
        fusion = RankFusion([k for _, k in dense], lexical, rrf_k)
        # Whole payloads (asking Edge for fewer fields is slower, not faster) in one read, not of every candidate:
        # the lexical matches (their names decide which are pinned first) and the contenders before pinning (their
        # product ids break ties; pinning only narrows them).
        payloads = self._payloads(list(dict.fromkeys([*lexical, *fusion.contenders(limit)])))
        fusion.pin({k: (p.get("SKU"), p.get("name"), *(p.get("skus") or ())) for k, p in payloads.items()}, text)
        order = fusion.order(limit, {k: p.get("product_id") for k, p in payloads.items()})
        scores = {k: s for s, k in dense}
        scores.update(self._fused_among(q, text_weight, [k for k in order if k not in scores], stored))
        return [Hit(payloads[k]["product_id"], scores[k], payloads[k]) for k in order if k in payloads and k in scores]
