"""One query, from text or photo to ranked products with metadata, a score and a match level.

The path: validate -> embedding (cached by the raw query) -> results (cached by the embedding and everything that
changes the answer) -> Qdrant -> MongoDB in one round trip. Every query and every error is written to the event log
once, here; nothing below re-logs. When MongoDB is down the products are built from what the index holds, and the result
says so.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailable, InvalidInput, PipelineError
from .preprocess import ImageSource, clean_text, load_image, read_image_bytes
from .types import Filters, Match, MatchResult, level_for


class Matcher:
    def __init__(self, pipeline) -> None:
        self.pipeline = pipeline
        self.settings = pipeline.settings

    # -- public API ----------------------------------------------------------------------------------------------------
    def match_text(self, text: str | None, top_k: int = 10, filters: Filters | None = None) -> MatchResult:
        def embed() -> tuple[bytes, callable]:
            cleaned = clean_text(text, self.settings.max_text_chars)
            return cleaned.encode(), lambda: self.pipeline.encoder.encode_texts([cleaned])[0]

        return self._run("text", embed, top_k, filters, {"text_chars": len(text or "")})

    def match_image(self, image: ImageSource | None, top_k: int = 10, filters: Filters | None = None) -> MatchResult:
        def embed() -> tuple[bytes, callable]:
            if image is None or (isinstance(image, (bytes, str)) and not image):
                raise InvalidInput("Please upload a photo of the product you are looking for.")
            limits = (int(self.settings.max_image_mb * 2**20), self.settings.max_image_pixels)
            if isinstance(image, (str, Path, bytes)):
                # The cache key is the file's bytes: a repeated photo is answered without decoding it again.
                data = read_image_bytes(image, limits[0])
                return data, lambda: self.pipeline.encoder.encode_images([load_image(data, *limits)])[0]
            decoded = load_image(image, *limits)  # an in-memory picture, keyed by its pixels
            raw = decoded.tobytes() + repr(decoded.size).encode()
            return raw, lambda: self.pipeline.encoder.encode_images([decoded])[0]

        return self._run("image", embed, top_k, filters, {})

    # -- the one query path --------------------------------------------------------------------------------------------
    def _run(self, kind: str, prepare, top_k: int, filters: Filters | None, log_fields: dict) -> MatchResult:
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
            raw, compute = prepare()
            lap("validate")
            result = self._answer(kind, raw, compute, top_k, filters, lap)
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
        result.timings_ms = {**timings, "total": round((time.perf_counter() - started) * 1000, 3)}
        self.pipeline.events.write(
            "match",
            query_kind=kind,
            top_k=top_k,
            filters=list(filters.key()),
            cache_hit=result.cache_hit,
            timings_ms=result.timings_ms,
            result_ids=[m.id for m in result.matches],
            best_level=result.best_level,
            catalog_version=result.catalog_version,
            warnings=result.warnings,
            **log_fields,
        )
        return result

    def _answer(self, kind: str, raw: bytes, compute, top_k: int, filters: Filters, lap) -> MatchResult:
        pipe = self.pipeline
        card = pipe.card
        cache = pipe.cache
        qkey = cache.query_key(card.identity, kind, hashlib.sha256(raw).digest())
        embedding = cache.get(qkey)
        if embedding is None:
            embedding = np.asarray(compute(), dtype=np.float32)
            cache.set(qkey, embedding)
        lap("embed")
        index = pipe.index
        index.check_model(card)
        collection = index.info()
        version = collection.catalog_version
        # The collection's own id is in the key: another collection at the same version never shares answers.
        rkey = cache.result_key(
            card.identity,
            embedding,
            kind=kind,
            collection=collection.collection_id,
            version=version,
            k=top_k,
            filters=filters.key(),
            w=card.text_weight,
        )
        cached = cache.get(rkey)
        lap("cache")
        warnings: list[str] = []
        if cached is not None:
            rows = cached
        else:
            if kind == "text":
                hits = index.search_text(embedding, card.text_weight, top_k, filters)
            else:
                hits = index.search(embedding, "image", top_k, filters)
            lap("search")
            try:
                docs = pipe.store.get_many([h.product_id for h in hits])
            except BackendUnavailable as err:
                docs = None
                warnings.append(f"Product details are unavailable right now ({err}); showing what the index holds.")
            lap("metadata")
            rows = [(h.product_id, h.score, (docs or {}).get(h.product_id) or h.payload) for h in hits]
            # Not cached while the catalogue is being changed: the next version would not reach it anyway, and the
            # answer may mix old and new products.
            if docs is not None and not collection.writing:
                cache.set(rkey, rows)
        match_t, similar_t = level_thresholds(self.pipeline.card, self.settings, kind)
        matches = [_to_match(pid, score, doc, match_t, similar_t, pipe.photos) for pid, score, doc in rows]
        return MatchResult(kind, matches, cached is not None, {}, version, warnings)


def level_thresholds(card, settings, kind: str) -> tuple[float, float]:
    """(match, similar) for ``kind``: the model card's, unless MATCH_THRESHOLD / SIMILAR_THRESHOLD override them."""
    match_t, similar_t = card.threshold(kind)
    if settings.match_threshold is not None:
        match_t = settings.match_threshold
    if settings.similar_threshold is not None:
        similar_t = settings.similar_threshold
    return match_t, similar_t


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
    )
