"""One query, from text or photo to ranked products with metadata, a score and a match level.

The path: validate -> embedding (cached by the raw query) -> results (cached by the embedding and everything that
changes the answer) -> Qdrant -> MongoDB in one round trip. Every query and every error is written to the event log
once, here; nothing below re-logs. When MongoDB is down the products are built from what the index holds, and the result
says so.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailable, InvalidInput, PipelineError
from ..inputs import ImageSource, clean_text, load_image, read_image_bytes, text_was_cut
from ..types import Filters, Match, MatchResult, level_for, web_link


@dataclass
class Plan:
    """One query as the matcher runs it: how to get its embedding (cached by ``raw``), how to search with it, and
    everything else that changes the answer (part of the result cache's key)."""

    kind: str  # "text" or "image": which thresholds its levels use
    raw: bytes | None  # the query embedding's cache key (None: not cached, e.g. a stored product vector)
    compute: Callable[[], np.ndarray]
    search: Callable[[np.ndarray, int, Filters], list]
    answer_inputs: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # what the person should know about their query


class Matcher:
    def __init__(self, pipeline) -> None:
        self.pipeline = pipeline
        self.settings = pipeline.settings

    # -- public API ----------------------------------------------------------------------------------------------------
    def match_text(
        self, text: str | None, top_k: int = 10, filters: Filters | None = None, diverse: bool = False
    ) -> MatchResult:
        """Products for a description: the dense fusion of text and photo, with the BM25 ranking when hybrid search
        is on (``HYBRID_SEARCH``); ``diverse``: re-ranked by MMR over the photos."""

        def plan() -> Plan:
            cleaned = clean_text(text, self.settings.max_text_chars)
            w, hybrid = self.pipeline.card.text_weight, self.settings.hybrid_search
            index = self.pipeline.index
            if hybrid:
                rrf_k = self.settings.rrf_k
                search = lambda v, k, f: index.search_hybrid(v, w, cleaned, k, f, rrf_k)  # noqa: E731
            else:
                search = lambda v, k, f: index.search_text(v, w, k, f)  # noqa: E731
            cut = []
            if text_was_cut(text, self.settings.max_text_chars):
                cut.append(
                    f"Your description is long: only its first {self.settings.max_text_chars} characters were used "
                    "(the model reads about 60 words)."
                )
            return Plan(
                "text",
                cleaned.encode(),
                lambda: self.pipeline.encoder.encode_texts([cleaned])[0],
                search,
                {"w": w, "lexical": cleaned if hybrid else None, "rrf_k": self.settings.rrf_k if hybrid else None},
                cut,
            )

        return self._run("text", plan, top_k, filters, diverse, {"text_chars": len(text or "")})

    def match_image(
        self,
        image: ImageSource | None,
        top_k: int = 10,
        filters: Filters | None = None,
        refine: str | None = None,
        refine_weight: float | None = None,
        diverse: bool = False,
    ) -> MatchResult:
        """Products that look like a photo. ``refine`` ("in red", "but leather"): the photo's embedding is moved
        towards the words' by ``refine_weight`` (``REFINE_WEIGHT`` by default) and searched against the products'
        photos and texts, as a description is."""

        def plan() -> Plan:
            raw, compute = self._photo(image)
            words = " ".join((refine or "").split())
            if not words:
                index = self.pipeline.index
                return Plan("image", raw, compute, lambda v, k, f: index.search(v, "image", k, f))
            cleaned = clean_text(words, self.settings.max_text_chars)
            beta = self._refine_weight(refine_weight)
            return Plan(
                "image",
                raw + b"\0refine\0" + cleaned.encode() + repr(beta).encode(),
                lambda: _towards(compute(), self.pipeline.encoder.encode_texts([cleaned])[0], beta),
                lambda v, k, f: self.pipeline.index.search_text(v, self.pipeline.card.text_weight, k, f),
                {"refine": cleaned, "beta": beta, "w": self.pipeline.card.text_weight},
            )

        return self._run("image", plan, top_k, filters, diverse, {"refined": bool(refine and refine.strip())})

    def similar(
        self, product_id: str | None, top_k: int = 10, filters: Filters | None = None, diverse: bool = False
    ) -> MatchResult:
        """More like this: the products whose photos are closest to this product's stored photo vector, the product
        itself excluded, filters applied; nothing is embedded again."""

        def plan() -> Plan:
            pid = str(product_id or "").strip()
            if not pid:
                raise InvalidInput("Name the product to find similar ones for (its id).")
            index = self.pipeline.index
            vector = index.vectors([pid], "image").get(pid)
            if vector is None and index.products([pid]):
                raise InvalidInput(f"Product {pid!r} has no photo to compare with: search by its name instead.")
            if vector is None:
                raise InvalidInput(f"There is no product {pid!r} in the catalogue.")

            def search(v, k, f):
                return [h for h in index.search(v, "image", k + 1, f) if h.product_id != pid][:k]

            return Plan("image", None, lambda: vector, search, {"similar_to": pid})

        return self._run("similar", plan, top_k, filters, diverse, {"product_id": str(product_id or "")[:200]})

    # -- the one query path --------------------------------------------------------------------------------------------
    def _photo(self, image: ImageSource | None) -> tuple[bytes, Callable[[], np.ndarray]]:
        if image is None or (isinstance(image, str) and not image):  # empty bytes: an empty file, said by the reader
            raise InvalidInput("Please upload a photo of the product you are looking for.")
        limits = (int(self.settings.max_image_mb * 2**20), self.settings.max_image_pixels)
        encode = self.pipeline.encoder.encode_images
        if isinstance(image, (str, Path, bytes)):
            # The cache key is the file's bytes: a repeated photo is answered without decoding it again.
            data = read_image_bytes(image, limits[0])
            return data, lambda: encode([load_image(data, *limits)])[0]
        decoded = load_image(image, *limits)  # an in-memory picture, keyed by its pixels
        return decoded.tobytes() + repr(decoded.size).encode(), lambda: encode([decoded])[0]

    def _refine_weight(self, value: float | None) -> float:
        beta = self.settings.refine_weight if value is None else value
        try:
            beta = float(beta)
        except (TypeError, ValueError):
            raise InvalidInput("The weight of the words must be a number from 0 to 1.") from None
        if not 0.0 <= beta <= 1.0:
            raise InvalidInput("The weight of the words must be a number from 0 to 1.")
        return beta

    def _run(self, kind: str, prepare, top_k, filters, diverse: bool, log_fields: dict) -> MatchResult:
        timings: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[stage] = round((now - clock) * 1000, 3)
            clock = now

        started = clock
        filters = filters or Filters()
        try:
            top_k = _check_top_k(top_k)
            plan = prepare()
            lap("validate")
            result = self._answer(plan, top_k, filters, bool(diverse), lap)
        except PipelineError as err:
            self.pipeline.events.write(
                "error",
                query_kind=kind,
                error=str(err),
                error_type=type(err).__name__,
                timings_ms=timings,
                **log_fields,
            )
            raise
        except Exception as err:
            self.pipeline.events.write(
                "error",
                query_kind=kind,
                error=f"{type(err).__name__}: {err}",
                error_type="internal",
                timings_ms=timings,
                **log_fields,
            )
            raise
        result.kind = kind
        result.timings_ms = {**timings, "total": round((time.perf_counter() - started) * 1000, 3)}
        self.pipeline.events.write(
            "match",
            query_kind=kind,
            top_k=top_k,
            filters=list(filters.key()),
            diverse=bool(diverse),
            cache_hit=result.cache_hit,
            timings_ms=result.timings_ms,
            result_ids=[m.id for m in result.matches],
            best_level=result.best_level,
            catalog_version=result.catalog_version,
            warnings=result.warnings,
            **log_fields,
        )
        return result

    def _answer(self, plan: Plan, top_k: int, filters: Filters, diverse: bool, lap) -> MatchResult:
        pipe = self.pipeline
        card = pipe.card
        cache = pipe.cache
        index = pipe.index
        index.check_model(card)
        embedding = None
        if plan.raw is not None:
            qkey = cache.query_key(card.identity, plan.kind, hashlib.sha256(plan.raw).digest())
            embedding = cache.get(qkey)
        if embedding is None:
            embedding = np.asarray(plan.compute(), dtype=np.float32)
            if plan.raw is not None:
                cache.set(qkey, embedding)
        lap("embed")
        collection = index.info()
        version = collection.catalog_version
        # The collection's own id is in the key: another collection at the same version never shares answers.
        rkey = cache.result_key(
            card.identity,
            embedding,
            kind=plan.kind,
            collection=collection.collection_id,
            version=version,
            k=top_k,
            filters=filters.key(),
            diverse=diverse,
            **plan.answer_inputs,
        )
        cached = cache.get(rkey)
        lap("cache")
        warnings: list[str] = []
        if cached is not None:
            rows = cached
        else:
            if diverse:
                hits = diversify(index, plan.search(embedding, max(3 * top_k, MMR_CANDIDATES), filters), top_k)
            else:
                hits = plan.search(embedding, top_k, filters)
            best = index.best_photos(embedding, hits)  # which photo of a product with several to show
            lap("search")
            try:
                docs = pipe.store.get_many([h.product_id for h in hits])
            except BackendUnavailable as err:
                docs = None
                warnings.append(f"Product details are unavailable right now ({err}); showing what the index holds.")
            lap("metadata")
            rows = [
                (h.product_id, h.score, _showing((docs or {}).get(h.product_id) or h.payload, best.get(h.product_id)))
                for h in hits
            ]
            # Not cached while the catalogue is being changed: the next version would not reach it anyway, and the
            # answer may mix old and new products.
            if docs is not None and not collection.writing:
                cache.set(rkey, rows)
        match_t, similar_t = level_thresholds(self.pipeline.card, self.settings, plan.kind)
        matches = [_to_match(pid, score, doc, match_t, similar_t, pipe.photos) for pid, score, doc in rows]
        return MatchResult(plan.kind, matches, cached is not None, {}, version, [*plan.warnings, *warnings])


MMR_CANDIDATES = 30
MMR_LAMBDA = 0.5  # relevance against novelty in MMR: 1 is the plain ranking


def diversify(index, hits: list, k: int, lam: float = MMR_LAMBDA) -> list:
    """Maximal marginal relevance over the candidates' photos: each next result is the one whose relevance, less its
    closeness to a photo already chosen, is highest, so ten copies of one photo do not fill the page."""
    if len(hits) <= 1:
        return hits[:k]
    photos = index.vectors([h.product_id for h in hits], "image")
    hits = [h for h in hits if h.product_id in photos]
    matrix = np.stack([photos[h.product_id] for h in hits])
    relevance = np.array([h.score for h in hits], dtype=np.float32)
    chosen: list[int] = []
    closest = np.full(len(hits), -np.inf, dtype=np.float32)
    while len(chosen) < min(k, len(hits)):
        value = lam * relevance - (1 - lam) * np.where(np.isfinite(closest), closest, 0.0)
        value[chosen] = -np.inf
        pick = int(np.argmax(value))
        chosen.append(pick)
        closest = np.maximum(closest, matrix @ matrix[pick])
    return [hits[i] for i in chosen]


def _towards(photo: np.ndarray, words: np.ndarray, beta: float) -> np.ndarray:
    """The photo's embedding moved towards the words' (both unit vectors), normalised again."""
    mixed = (1.0 - beta) * np.asarray(photo, np.float32) + beta * np.asarray(words, np.float32)
    norm = float(np.linalg.norm(mixed))
    return mixed / norm if norm > 0 else np.asarray(photo, np.float32)


def level_thresholds(card, settings, kind: str) -> tuple[float, float]:
    """(match, similar) for ``kind``: the model card's, unless MATCH_THRESHOLD / SIMILAR_THRESHOLD override them."""
    match_t, similar_t = card.threshold(kind)
    if settings.match_threshold is not None:
        match_t = settings.match_threshold
    if settings.similar_threshold is not None:
        similar_t = settings.similar_threshold
    return match_t, similar_t


def _showing(doc: dict, i: int | None) -> dict:
    """The product with its ``i``-th photo (the one that matched best) as the one shown, where it has several."""
    files = doc.get("image_files") or []
    return {**doc, "image_file": files[i]} if i is not None and i < len(files) else doc


def _check_top_k(top_k: object) -> int:
    try:
        k = int(top_k)
    except (TypeError, ValueError) as err:
        raise InvalidInput("The number of results must be a whole number.") from err
    if not 1 <= k <= 100:
        raise InvalidInput("Ask for between 1 and 100 results.")
    return k


def _to_match(product_id: str, score: float, doc: dict, match_t: float, similar_t: float, photos) -> Match:
    metadata = {k: v for k, v in doc.items() if k not in ("content_hash", "product_id")}
    return Match(
        id=product_id,
        name=str(doc.get("name") or doc.get("text") or product_id),
        brand=doc.get("brand"),
        category=doc.get("category"),
        price=doc.get("price"),
        score=round(float(score), 6),
        level=level_for(score, match_t, similar_t),
        image=str(photo) if (photo := photos.path(doc.get("image_file"))) else None,
        metadata=metadata,
        url=web_link(doc.get("url")),
        currency=str(doc["currency"]) if doc.get("currency") else None,
    )
