"""The catalogue in product-id order, for browsing it: the Catalogue tab, its ``/catalogue`` API and the page's
examples.

MongoDB holds the products' metadata, but the local MongoDB-protocol server (SecantusDB) answers only lookups by id
quickly: a sorted, skipped, counted or searched ``find`` reads every document in Python, and every other request waits
meanwhile (docs/operations.md has the figures). So the listing
is the vector index's: the ids and names of the products it holds, read once per catalogue version (one scroll of two
payload fields), sorted by id, and kept compact; a page is then a slice, or a search of the names in memory, and one
``$in`` lookup of its products in MongoDB. What a page shows is what the index holds, the products searches can return;
a product the index holds and MongoDB lacks is shown from the index's payload.

A listing belongs to one catalogue version of one collection: any change (an import, a delete) bumps the version, and
the next page reads the listing again. While a change is being written, the listing read before it goes on being shown
(the page shows finished catalogues, as the result cache does).
"""

from __future__ import annotations

import bisect
import logging
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import BackendUnavailable

log = logging.getLogger("pipeline.listing")
SEPARATOR = "\x00"  # ends each name in the packed names (taken out of the names: no product name holds one)


class Packed(Sequence[str]):
    """Strings kept as one text and the offsets where each starts: about a byte a character (ASCII) and 8 bytes of
    offset instead of a Python object each (docs/operations.md has the listing's memory)."""

    def __init__(self, items: Iterable[str]) -> None:
        items = list(items)
        self.text = "".join(items)
        self.starts = np.zeros(len(items) + 1, dtype=np.int64)
        np.cumsum(np.fromiter((len(s) for s in items), dtype=np.int64, count=len(items)), out=self.starts[1:])

    def __len__(self) -> int:
        return len(self.starts) - 1

    def __getitem__(self, i):  # type: ignore[override]  (ints only: what bisect and the pages ask)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.text[self.starts[i] : self.starts[i + 1]]

    def matching(self, pattern: re.Pattern) -> list[int]:
        """The positions of the strings in which ``pattern`` is found, in order (each string once)."""
        at = np.fromiter((hit.start() for hit in pattern.finditer(self.text)), dtype=np.int64)
        return np.unique(np.searchsorted(self.starts, at, side="right") - 1).tolist()


def name_pattern(text: str) -> re.Pattern | None:
    """What MongoDB's ``{"$regex": re.escape(text), "$options": "i"}`` matched: the text as a literal, case not
    counted (the same ``re`` semantics, so the same answers: a test compares them on a real server). None for a text
    that holds the separator (no name does)."""
    return None if SEPARATOR in text else re.compile(re.escape(text), re.IGNORECASE)


@dataclass(frozen=True)
class Listing:
    """One catalogue version's products: their ids sorted, and their names in the same order."""

    key: tuple[str, int]  # (collection id, catalogue version)
    ids: Packed
    names: Packed

    @classmethod
    def read(cls, key: tuple[str, int], pairs: Iterable[tuple[str, str]]) -> Listing:
        ordered = sorted(pairs)
        return cls(
            key,
            Packed(pid for pid, _ in ordered),
            Packed(name.replace(SEPARATOR, "") + SEPARATOR for _, name in ordered),
        )

    def __len__(self) -> int:
        return len(self.ids)

    def find(self, query: str, offset: int, limit: int) -> tuple[int, list[str]]:
        """(how many products match, the ids of one page of them, in id order): ``query`` is an exact id or a part of
        the name (a literal, case not counted, as ``name_pattern``); empty: every product."""
        text = query.strip()
        if not text:
            return len(self), [self.ids[i] for i in range(offset, min(len(self), offset + limit))]
        pattern = name_pattern(text)
        hits = set(self.names.matching(pattern)) if pattern is not None else set()
        at = bisect.bisect_left(self.ids, text)
        if at < len(self) and self.ids[at] == text:
            hits.add(at)
        ordered = sorted(hits)
        return len(ordered), [self.ids[i] for i in ordered[offset : offset + limit]]


class CatalogListing:
    """The current ``Listing`` of the pipeline's index, read again when the catalogue version changes."""

    def __init__(self, index, store) -> None:
        self.index = index
        self.store = store
        self._lock = threading.Lock()
        self._listing: Listing | None = None
        self.reads = 0  # how many times the listing was read from the index (tests: once per version)

    def current(self) -> Listing:
        info = self.index.info()
        key = (info.collection_id or "", info.catalog_version)
        with self._lock:
            held = self._listing
            if held is not None and (held.key == key or (info.writing and held.key[0] == key[0])):
                return held
            listing = Listing.read(key, self.index.names() if info.exists else ())
            self.reads += 1
            self._listing = listing
            return listing

    def page(self, query: str = "", offset: int = 0, limit: int = 20) -> tuple[int, list[dict]]:
        """(how many products match, one page of them by id, as MongoDB holds them): ``query`` is an exact id or a
        part of the name, always a literal. Where MongoDB does not answer or lacks a product, the index's payload (the
        same fields the page shows) stands in, and the page still comes."""
        total, ids = self.current().find(str(query or ""), max(0, offset), max(1, limit))
        try:
            docs = self.store.get_many(ids)
        except BackendUnavailable as err:
            log.warning("Catalogue page without MongoDB (%s): shown from the vector index", err)
            docs = {}
        missing = [pid for pid in ids if pid not in docs]
        if missing:
            for pid, payload in self.index.products(missing).items():
                docs[pid] = {"id": pid, **{k: v for k, v in payload.items() if k != "product_id"}}
        return total, [docs[pid] for pid in ids if pid in docs]
