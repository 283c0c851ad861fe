"""Product metadata in MongoDB (``product_db.product_metadata``), keyed by product id, through pymongo only."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import pymongo
from pymongo import MongoClient, ReplaceOne
from pymongo.errors import PyMongoError

from ..batches import chunks
from ..errors import BackendUnavailable

PRODUCT_DB = "product_db"
PRODUCT_COLLECTION = "product_metadata"
# A read or delete of the whole catalogue (its ids, a field's values, a count, emptying it) is given this long: the
# local server (SecantusDB) visits every document in Python, seconds per million products, past the socket
# timeout that keeps a query from hanging on a dead server (``connect``).
WHOLE_CATALOGUE_TIMEOUT_S = 600.0
# Ids (or photo keys) per ``$in``. The local server checks each document a ``$in`` finds against the whole list, in
# Python, so one ``$in`` of m ids costs m²; lists of 50 were the fastest measured (docs/operations.md). A real
# MongoDB refuses a command over 16 MB, which one ``$in`` of a million ids is.
IN_CHUNK = 50


def connect(uri: str, timeout_ms: int) -> MongoClient:
    """A client that fails fast: a down server is a clear error in seconds, not a 30 s hang."""
    return MongoClient(
        uri,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=max(timeout_ms * 5, 10_000),
        appname="product-matcher",
    )


def unavailable(err: Exception, what: str) -> BackendUnavailable:
    return BackendUnavailable(f"MongoDB does not answer ({what}): {str(err).split(',')[0][:200]}")


class CatalogStore:
    def __init__(self, client: MongoClient) -> None:
        self.collection = client[PRODUCT_DB][PRODUCT_COLLECTION]
        self._photo_index = False  # whether the index on image_files is known to exist (photos_in_use)

    @contextlib.contextmanager
    def _whole_catalogue(self) -> Iterator[None]:
        """The long timeout of ``WHOLE_CATALOGUE_TIMEOUT_S``, once MongoDB has answered a ping within the usual one: a
        server that is down is still said in seconds."""
        self.collection.database.command("ping")
        with pymongo.timeout(WHOLE_CATALOGUE_TIMEOUT_S):
            yield

    def ping(self) -> None:
        """That MongoDB answers, within the usual timeout: what the app checks as it starts (a count reads every
        product on the local server: seconds at a million)."""
        try:
            self.collection.database.command("ping")
        except PyMongoError as err:
            raise unavailable(err, "ping") from err

    def upsert_many(self, products: list[dict]) -> None:
        """Replace each product by id (idempotent: the same rows twice leave the same documents)."""
        if not products:
            return
        ops = [ReplaceOne({"_id": p["id"]}, {"_id": p["id"], **p}, upsert=True) for p in products]
        try:
            self.collection.bulk_write(ops, ordered=False)
        except PyMongoError as err:
            raise unavailable(err, "saving products") from err

    def delete_many(self, ids: Iterable[str]) -> int:
        ids = list(ids)
        if not ids:
            return 0
        try:
            with self._whole_catalogue():
                return sum(
                    self.collection.delete_many({"_id": {"$in": part}}).deleted_count for part in chunks(ids, IN_CHUNK)
                )
        except PyMongoError as err:
            raise unavailable(err, "deleting products") from err

    def clear(self) -> None:
        try:
            with self._whole_catalogue():
                self.collection.delete_many({})
        except PyMongoError as err:
            raise unavailable(err, "removing the products") from err

    def ids(self) -> list[str]:
        try:
            with self._whole_catalogue():
                return [doc["_id"] for doc in self.collection.find({}, {"_id": 1})]
        except PyMongoError as err:
            raise unavailable(err, "listing products") from err

    def get_many(self, ids: Iterable[str]) -> dict[str, dict]:
        """All requested products, one round trip per ``IN_CHUNK`` ids (a query's usual answer and a page are one)."""
        ids = list(ids)
        if not ids:
            return {}
        try:
            return {
                doc["_id"]: _public(doc)
                for part in chunks(ids, IN_CHUNK)
                for doc in self.collection.find({"_id": {"$in": part}})
            }
        except PyMongoError as err:
            raise unavailable(err, "reading products") from err

    def photos_in_use(self, keys: Iterable[str]) -> set[str]:
        """Which of these photo keys some product still names (among its ``image_files``): one lookup in an index on
        them (made on the first call, once; a lookup is then milliseconds where a ``distinct`` of every product's
        photos read the whole catalogue)."""
        keys = sorted({k for k in keys if k})
        if not keys:
            return set()
        try:
            if not self._photo_index:
                with self._whole_catalogue():
                    self.collection.create_index("image_files")
                self._photo_index = True
            asked = set(keys)
            return {
                str(v)
                for part in chunks(keys, IN_CHUNK)
                for v in self.collection.distinct("image_files", {"image_files": {"$in": part}})
                if str(v) in asked  # a product's other photos come along with the one asked for
            }
        except PyMongoError as err:
            raise unavailable(err, "reading which photos are in use") from err

    def count(self) -> int:
        try:
            with self._whole_catalogue():
                return self.collection.estimated_document_count()
        except PyMongoError as err:
            raise unavailable(err, "counting products") from err

    def distinct(self, field: str) -> list[str]:
        try:
            with self._whole_catalogue():
                values = self.collection.distinct(field)
        except PyMongoError as err:
            raise unavailable(err, f"listing {field} values") from err
        return sorted({str(v) for v in values if v not in (None, "")})


def _public(doc: dict) -> dict:
    doc = dict(doc)
    doc.pop("_id", None)
    return doc
