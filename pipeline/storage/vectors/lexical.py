"""The lexical side of a text query: BM25 sparse vectors made by Qdrant's own BM25 embedder (``qdrant_edge.Bm25``,
in-process), for both stores, so Edge and a Qdrant server index the very same token ids. The collection's sparse
vector has Qdrant's IDF modifier: document vectors carry the term frequencies, the engine weighs them by the
collection's own IDF at query time.

A query made only of stop words ("the", "and") has no token and no lexical vector: the search is then dense only.
"""

from __future__ import annotations

import functools
import heapq
import re

LEXICAL_FIELDS = ("name", "brand", "SKU", "skus", "category", "color", "tags", "description")


@functools.lru_cache(maxsize=1)
def _bm25():
    from qdrant_edge import Bm25, Bm25Config

    return Bm25(Bm25Config())


def lexical_text(fields: dict) -> str:
    """The product words BM25 indexes (a list, as a product's variant SKUs or tags: each of its items)."""
    words = []
    for name in LEXICAL_FIELDS:
        value = fields.get(name)
        for item in value if isinstance(value, list) else [value]:
            if item not in (None, ""):
                words.append(str(item))
    return " ".join(words)


def document_vector(text: str) -> tuple[list[int], list[float]] | None:
    if not text.strip():
        return None
    vector = _bm25().embed_document(text)
    return (list(vector.indices), list(vector.values)) if vector.indices else None


def query_vector(text: str) -> tuple[list[int], list[float]] | None:
    vector = _bm25().embed_query(text or "")
    return (list(vector.indices), list(vector.values)) if vector.indices else None


_NOT_WORD = re.compile(r"[^\w]+")


def normalised(text: object) -> str:
    """For exact-name and SKU matches: case, punctuation and spacing do not count."""
    return " ".join(_NOT_WORD.sub(" ", str(text or "").lower()).split())


RRF_K = 60  # the usual constant of reciprocal rank fusion: ranks matter, raw BM25 and cosine scales do not


def pinned(lexical: list, names: dict, query: str) -> set:
    """The keys among the lexical matches whose SKU or whole name is the query: they come first in a hybrid answer."""
    wanted = normalised(query)
    if not wanted:
        return set()
    # A name equal to the query once normalised holds the query's first word as it is written, lower-cased: the
    # other names are passed over without normalising them (most of the time of this function).
    first = wanted.split(" ", 1)[0]
    return {
        k for k in lexical if any(n and first in str(n).lower() and normalised(n) == wanted for n in names.get(k, ()))
    }


class RankFusion:
    """One hybrid fusion of the dense ranking (keys best first) and the lexical one, scored once: reciprocal rank
    fusion, with any product whose SKU or whole name is the query first (``pin``)."""

    def __init__(self, dense: list, lexical: list, rrf_k: int = RRF_K) -> None:
        self.lexical = lexical
        self.scores: dict = {}
        for ranking in (dense, lexical):
            for rank, key in enumerate(ranking, start=1):
                self.scores[key] = self.scores.get(key, 0.0) + 1.0 / (rrf_k + rank)
        self.pinned: set = set()

    def pin(self, names: dict, query: str) -> RankFusion:
        """Put first the lexical matches whose SKU or whole name is ``query`` (``names``: key -> (SKU, name))."""
        self.pinned = pinned(self.lexical, names, query)
        return self

    def order(self, limit: int, ids: dict | None = None) -> list:
        """The first ``limit`` keys; equal fused ranks in product-id order (``ids``: key -> product id, when keys are
        not product ids; needed only for the ``contenders``)."""
        ids, scores, exact = ids or {}, self.scores, self.pinned
        return sorted(self.contenders(limit), key=lambda k: (k not in exact, -scores[k], str(ids.get(k, k))))[:limit]

    def contenders(self, limit: int) -> set:
        """The keys that can be among ``order(limit)``, whatever the product ids: the pinned ones and every key whose
        fused score reaches the ``limit``-th best. Only these need their product id (the tie-break), so a store
        reads the payloads of these and of the lexical matches (for ``names``), not of every candidate. Pinning
        only narrows them: the contenders before ``pin`` and the lexical matches hold those after it."""
        room = limit - len(self.pinned)
        rest = heapq.nlargest(room, (s for k, s in self.scores.items() if k not in self.pinned)) if room > 0 else []
        if not rest:
            return set(self.pinned)
        bar = rest[-1]
        return self.pinned | {key for key, score in self.scores.items() if score >= bar}


def fuse_rankings(
    dense: list, lexical: list, names: dict, query: str, limit: int, rrf_k: int = RRF_K, ids: dict | None = None
) -> list:
    """The hybrid order of keys (``RankFusion.order``). The one definition, used by the stores and by
    ``evaluate --check``'s reference."""
    return RankFusion(dense, lexical, rrf_k).pin(names, query).order(limit, ids)
