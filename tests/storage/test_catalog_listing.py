"""The catalogue's listing (the Catalogue tab's pages): the same answers as the MongoDB query it replaced (exact id or a
literal, case-blind part of the name, in id order), read from the vector index once per catalogue version, with the
products' documents from a real MongoDB-protocol server, and the index's payload where MongoDB cannot give them."""

from __future__ import annotations

import random
import re

import pytest

from bench.catalogue_page import mongodb_page
from pipeline.processes.ports import free_port
from pipeline.storage.catalog_listing import CatalogListing, Listing, Packed
from pipeline.storage.catalog_store import CatalogStore, connect
from pipeline.storage.vectors import IndexedProduct, IndexTuning
from pipeline.storage.vectors.edge import EdgeVectorStore

from .test_vector_store import card, unit

WORDS = [
    "Black",
    "shirt",
    "T-Shirt",
    "café",
    "Straße",
    "a.b*c",
    "(x)",
    "77",
    "",
    "$gt",
    "Ünï",
    "İstanbul",
    "ΣΊΣΥΦΟΣ",
    "two\nlines",
]


def test_packed_strings_and_their_search():
    packed = Packed(["ab\0", "", "cab\0", "b\0"])
    assert len(packed) == 4 and list(packed) == ["ab\0", "", "cab\0", "b\0"]
    assert packed.matching(re.compile("b")) == [0, 2, 3], "each string once, in order"
    assert packed.matching(re.compile("AB", re.I)) == [0, 2] and packed.matching(re.compile("zz")) == []
    with pytest.raises(IndexError):
        packed[4]


def test_a_listing_answers_as_the_mongodb_query_did(mongo_uri):
    rng = random.Random(3)
    pairs = [
        (f"{rng.choice(['p', 'P', 'sku-', ''])}{rng.randrange(500)}-{i}", " ".join(rng.sample(WORDS, 3)))
        for i in range(300)
    ]
    client = connect(mongo_uri, 3000)
    store = CatalogStore(client)
    store.collection.insert_many([{"_id": pid, "name": name} for pid, name in pairs])
    listing = Listing.read(("c", 1), pairs)
    queries = ["", "  ", "shirt", "SHIRT", "t-shirt", "Café", "CAFÉ", "straße", "STRASSE", "ss", "a.b*c", ".*",
               "(x)", "77", '{"$gt": ""}', "ünï", "istanbul", "ΣΊΣ", "σίσυφος", "φοσ", "o\nl", pairs[5][0],
               pairs[5][0].upper(), f"  {pairs[9][0]} ", "zzz"]  # fmt: skip
    try:
        for query in queries:
            for offset, limit in ((0, 20), (20, 20), (0, 1), (290, 50), (1000, 20)):
                total, docs = mongodb_page(store, query, offset, limit)
                assert listing.find(query, offset, limit) == (total, [d["_id"] for d in docs]), (query, offset)
    finally:
        client.close()
    odd = Listing.read(("c", 1), [("x", "line\nbreak"), ("y", "nul\0byte")])
    assert odd.find("line\nbreak", 0, 5) == (1, ["x"]) and odd.find("line break", 0, 5) == (0, [])
    assert odd.find("nulbyte", 0, 5) == (1, ["y"]) and odd.find("nul\0", 0, 5) == (0, []), "NUL is the separator"


@pytest.fixture
def stores(tmp_path, mongo_uri):
    index = EdgeVectorStore(tmp_path / "vectors", IndexTuning())
    client = connect(mongo_uri, 3000)
    yield index, CatalogStore(client)
    index.close()
    client.close()


def _add(index, store, ids: list[str]) -> None:
    import numpy as np

    vectors = unit(np.random.default_rng(len(ids)), len(ids))
    rows = [{"id": pid, "name": f"Name of {pid}", "brand": "Acme", "category": "Bags", "price": 9.5} for pid in ids]
    store.upsert_many(rows)
    with index.changing():
        index.upsert([IndexedProduct(r["id"], v, v, {k: r[k] for k in ("name", "brand", "category", "price")})
                      for r, v in zip(rows, vectors, strict=True)])  # fmt: skip


def test_pages_are_read_once_per_catalogue_version_and_a_deleted_product_goes(stores):
    index, store = stores
    listing = CatalogListing(index, store)
    assert listing.page() == (0, []), "no collection yet: an empty catalogue"
    index.ensure(card())
    _add(index, store, [f"p{i:02d}" for i in range(30)])
    total, docs = listing.page("", 20, 20)
    assert total == 30 and [d["id"] for d in docs] == [f"p{i}" for i in range(20, 30)]
    assert docs[0] == {"id": "p20", "name": "Name of p20", "brand": "Acme", "category": "Bags", "price": 9.5}
    assert listing.page("NAME OF P0", 0, 5)[0] == 10 and listing.page("p07")[1][0]["id"] == "p07"
    assert listing.reads == 2, "the same catalogue version: read once (after the empty one)"
    with index.changing():
        index.delete(["p07"])
    assert listing.page("p07") == (0, []) and listing.page()[0] == 29 and listing.reads == 3
    with index.changing():  # while a change is written, the finished catalogue before it is listed
        index.delete(["p08"])
        assert listing.page()[0] == 29 and listing.reads == 3
    assert listing.page()[0] == 28 and listing.reads == 4


def test_a_page_without_mongodb_comes_from_the_index(stores):
    index, store = stores
    index.ensure(card())
    _add(index, store, ["a1", "a2", "a3"])
    store.collection.delete_one({"_id": "a2"})  # in the index, not in MongoDB (an import cut short between the two)
    docs = CatalogListing(index, store).page()[1]
    assert [d["id"] for d in docs] == ["a1", "a2", "a3"] and docs[1]["name"] == "Name of a2"
    nobody = CatalogStore(connect(f"mongodb://127.0.0.1:{free_port()}/?directConnection=true", 300))
    total, docs = CatalogListing(index, nobody).page("a3")
    assert total == 1 and docs == [dict(id="a3", name="Name of a3", brand="Acme", category="Bags", price=9.5)]


def test_whole_catalogue_reads_wait_long_but_a_down_server_is_said_in_seconds():
    """ids, count, distinct, emptying and the photo index are given minutes (a million documents on the local server
    take 7-15 s), yet with no server they fail as fast as any query: a ping within the usual timeout comes first."""
    import time

    from pipeline.errors import BackendUnavailable

    nobody = CatalogStore(connect(f"mongodb://127.0.0.1:{free_port()}/?directConnection=true", 300))
    photo = "ab/" + "a" * 32 + ".jpg"
    for read in (nobody.ping, nobody.ids, nobody.count, lambda: nobody.distinct("image_file"), nobody.clear,
                 lambda: nobody.delete_many(["a"]), lambda: nobody.photos_in_use([photo])):  # fmt: skip
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match="MongoDB does not answer"):
            read()
        assert time.monotonic() - started < 5
