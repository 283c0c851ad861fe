"""Product metadata in MongoDB (``product_db.product_metadata``), keyed by product id, through pymongo only."""

from __future__ import annotations

import re
from collections.abc import Iterable

from pymongo import MongoClient, ReplaceOne
from pymongo.errors import PyMongoError

from ..errors import BackendUnavailable

PRODUCT_DB = "product_db"
PRODUCT_COLLECTION = "product_metadata"


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
            return self.collection.delete_many({"_id": {"$in": ids}}).deleted_count
        except PyMongoError as err:
            raise unavailable(err, "deleting products") from err

    def clear(self) -> None:
        try:
            self.collection.delete_many({})
        except PyMongoError as err:
            raise unavailable(err, "removing the products") from err

    def ids(self) -> list[str]:
        try:
            return [doc["_id"] for doc in self.collection.find({}, {"_id": 1})]
        except PyMongoError as err:
            raise unavailable(err, "listing products") from err

    def get_many(self, ids: Iterable[str]) -> dict[str, dict]:
        """All requested products in one round trip."""
        ids = list(ids)
        if not ids:
            return {}
        try:
            return {doc["_id"]: _public(doc) for doc in self.collection.find({"_id": {"$in": ids}})}
        except PyMongoError as err:
            raise unavailable(err, "reading products") from err

    def page(self, query: str = "", offset: int = 0, limit: int = 20) -> tuple[int, list[dict]]:
        """(how many products match, one page of them by id): ``query`` is an exact id or a part of the name, always a
        literal (escaped), never a MongoDB expression."""
        text = str(query or "").strip()
        where: dict = {}
        if text:
            where = {"$or": [{"_id": text}, {"name": {"$regex": re.escape(text), "$options": "i"}}]}
        try:
            total = self.collection.count_documents(where)
            docs = self.collection.find(where).sort("_id", 1).skip(max(0, offset)).limit(max(1, limit))
            return total, [_public(doc) for doc in docs]
        except PyMongoError as err:
            raise unavailable(err, "listing products") from err

    def count(self) -> int:
        try:
            return self.collection.estimated_document_count()
        except PyMongoError as err:
            raise unavailable(err, "counting products") from err

    def distinct(self, field: str) -> list[str]:
        try:
            values = self.collection.distinct(field)
        except PyMongoError as err:
            raise unavailable(err, f"listing {field} values") from err
        return sorted({str(v) for v in values if v not in (None, "")})


def _public(doc: dict) -> dict:
    doc = dict(doc)
    doc.pop("_id", None)
    return doc
