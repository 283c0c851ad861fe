"""One contract for both vector stores: Qdrant Edge for real, and the server adapter against qdrant-client's
``:memory:`` mode (it speaks the server's API; no Qdrant server binary can be had here).

Rankings are compared with numpy brute force over the same vectors; filters, deletes, facets, metadata and the
text-query fusion must behave the same in both stores.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from dataclasses import replace

import numpy as np
import pytest

from pipeline.errors import BackendUnavailable, ModelMismatch
from pipeline.model_repo import ModelCard
from pipeline.storage.vectors import PAYLOAD_FIELDS, Filters, IndexedProduct, IndexTuning, open_vector_store
from pipeline.storage.vectors.edge import EdgeVectorStore
from pipeline.storage.vectors.page_cache import compact_on_disk, files_read_on_open, originals_on_disk
from pipeline.storage.vectors.server import ServerVectorStore

DIM = 16
N = 400
CATEGORIES = ("Shoes", "Bags", "Watches", "Shirts")
BRANDS = ("Acme", "Northwind", "Globex")


def card(dim: int = DIM, identity: str = "a", text_weight: float = 0.5) -> ModelCard:
    return ModelCard(
        "test model", "clip", "s", "r", "fp32", dim, 77, 64, {"clip_text": identity, "clip_visual": "b"},
        text_weight=text_weight,
    )  # fmt: skip


def unit(rng, n: int, d: int = DIM) -> np.ndarray:
    v = rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture(params=["edge", "server"])
def store(request, tmp_path):
    tuning = IndexTuning()
    if request.param == "edge":
        s = EdgeVectorStore(tmp_path / "vectors" / "products", tuning)
    else:
        from qdrant_client import QdrantClient

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = ServerVectorStore("products", tuning, client=QdrantClient(":memory:"), serialize=True)
    yield s
    s.close()


@pytest.fixture
def catalogue():
    rng = np.random.default_rng(7)
    images, texts = unit(rng, N), unit(rng, N)
    products = [
        IndexedProduct(
            f"p{i}",
            images[i],
            texts[i],
            {
                "name": f"Product {i}",
                "category": CATEGORIES[i % 4],
                "brand": BRANDS[i % 3],
                "color": "red" if i % 5 == 0 else "blue",
                "price": None if i % 10 == 0 else float(i % 97),
                "content_hash": f"h{i}",
            },
        )
        for i in range(N)
    ]
    return images, texts, products


def filled(store, products, text_weight: float = 0.5):
    """The store holding ``products``, made for a model whose text weight (that of its stored fused vectors) is
    ``text_weight``."""
    store.ensure(card(text_weight=text_weight))
    with store.changing():
        for start in range(0, len(products), 128):
            store.upsert(products[start : start + 128])
    return store


def mask(products, f: Filters) -> np.ndarray:
    keep = []
    for p in products:
        ok = all(p.payload.get(name) in values for name, values in f.keyword_conditions)
        if ok and f.price_range:
            low, high = f.price_range
            price = p.payload.get("price")
            ok = price is not None and (low is None or price >= low) and (high is None or price <= high)
        keep.append(ok)
    return np.array(keep)


def brute(scores: np.ndarray, keep: np.ndarray, k: int) -> list[str]:
    scores = np.where(keep, scores, -np.inf)
    order = np.argsort(-scores, kind="stable")
    return [f"p{i}" for i in order[:k] if keep[i]]


FILTERS = [
    Filters(),
    Filters(categories=("Shoes",)),
    Filters(categories=("Shoes", "Bags"), brands=("Acme",)),
    Filters(colors=("red",)),
    Filters(min_price=10.0, max_price=40.0),
    Filters(max_price=5.0, categories=("Watches",)),
    Filters(brands=("Nobody",)),
]


def test_metadata_identity_and_model_check(store):
    assert not store.info().exists and store.count() == 0 and store.search(np.ones(DIM), "image", 5) == []
    info = store.ensure(card())
    assert info.exists and len(info.collection_id) == 32 and info.catalog_version == 0
    assert store.ensure(card()).collection_id == info.collection_id, "ensure keeps the existing collection"
    with pytest.raises(ModelMismatch, match="built by another model"):
        store.ensure(card(identity="other"))
    reset = store.ensure(card(identity="other"), reset=True)
    assert reset.collection_id != info.collection_id and reset.model_identity == card(identity="other").identity


def test_changing_marks_writes_and_bumps_the_version(store, catalogue):
    store.ensure(card())
    with store.changing():
        assert store.info().writing
        store.upsert(catalogue[2][:10])
    assert not store.info().writing and store.version() == 1
    with pytest.raises(RuntimeError), store.changing():
        raise RuntimeError("a failed ingest")
    assert store.version() == 2, "a failed change still bumps the version: its partial writes are never stale"


@pytest.mark.parametrize("f", FILTERS, ids=lambda f: str(f.key()))
def test_image_search_and_filters_equal_brute_force(store, catalogue, f):
    images, _, products = catalogue
    filled(store, products)
    rng = np.random.default_rng(1)
    keep = mask(products, f)
    for q in unit(rng, 5):
        hits = store.search(q, "image", 10, f)
        assert [h.product_id for h in hits] == brute(images @ q, keep, 10)
        if hits:
            assert hits[0].score == pytest.approx(float(np.max(np.where(keep, images @ q, -np.inf))), abs=1e-5)
            assert hits[0].payload["name"].startswith("Product")


# "stored": the collection's fused vectors were made at the query's weight (one search); "other weight": at another
# weight, and "none": a collection made without them (as before they existed), so the threshold algorithm fuses the
# two vectors' rankings.
FUSION_PATHS = ["stored", "other weight", "none"]


def filled_for(store, products, w: float, path: str):
    if path == "none":
        store.tuning = replace(store.tuning, fused_vector=False)
    filled(store, products, text_weight=0.3 if path == "other weight" else w)
    assert store._stores_fused(w) is (path == "stored")
    assert len(store.info().dense_vectors()) == (2 if path == "none" else 3)
    return store


@pytest.mark.parametrize("path", FUSION_PATHS)
@pytest.mark.parametrize("f", FILTERS[:5], ids=lambda f: str(f.key()))
@pytest.mark.parametrize("w", [0.5, 0.7, 0.95])
def test_text_fusion_equals_brute_force(store, catalogue, f, w, path):
    images, texts, products = catalogue
    filled_for(store, products, w, path)
    keep = mask(products, f)
    rng = np.random.default_rng(2)
    for q in unit(rng, 4):
        for k in (1, 10, 60):
            hits = store.search_text(q, w, k, f)
            fused = w * (texts @ q) + (1 - w) * (images @ q)
            assert [h.product_id for h in hits] == brute(fused, keep, k)
            for h in hits:
                i = int(h.product_id[1:])
                assert h.score == pytest.approx(float(fused[i]), abs=1e-5)


@pytest.mark.parametrize("path", FUSION_PATHS)
def test_text_fusion_stays_exact_when_text_and_photo_disagree(store, path):
    """Text and photo vectors pointing away from each other push the best fused products deep into both lists, so
    the query-time fusion must widen its candidate lists before it can stop (the stored one has nothing to widen)."""
    rng = np.random.default_rng(3)
    q = unit(rng, 1)[0]
    texts = unit(rng, N)
    texts += 0.9 * q * rng.choice([-1, 1], size=(N, 1)).astype(np.float32)
    texts /= np.linalg.norm(texts, axis=1, keepdims=True)
    images = -texts + 0.05 * unit(rng, N)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    products = [IndexedProduct(f"p{i}", images[i], texts[i], {"name": str(i)}) for i in range(N)]
    filled_for(store, products, 0.6, path)
    fused = 0.6 * (texts @ q) + 0.4 * (images @ q)
    hits = store.search_text(q, 0.6, 10)
    assert [h.product_id for h in hits] == brute(fused, np.ones(N, bool), 10)


WORDS = ("red", "scarf", "wool", "leather", "bag", "shoe", "blue")


@pytest.mark.parametrize("path", FUSION_PATHS)
@pytest.mark.parametrize("f", FILTERS[:4], ids=lambda f: str(f.key()))
def test_hybrid_search_is_its_definition_over_brute_force(store, catalogue, f, path):
    """The dense ranking by brute force, the engine's BM25 ranking, fused by reciprocal rank fusion sorted over every
    candidate (pinned names first, ties by product id), each hit keeping its exact dense score: whatever the store
    reads (or skips) to get there."""
    images, texts, products = catalogue
    rng = np.random.default_rng(5)
    named = []
    for i, p in enumerate(products):
        name = "red wool scarf" if i % 50 == 7 else " ".join(rng.choice(WORDS, size=3))
        named.append(replace(p, payload={**p.payload, "name": name}, lexical=f"{name} {p.payload['brand']}"))
    filled_for(store, named, 0.5, path)
    keep = mask(named, f)
    for query in ("red wool scarf", "Red Wool  Scarf!", "leather bag acme", "the of", "zzz unknown"):
        for k in (1, 5, 12):
            q = unit(rng, 1)[0]
            hits = store.search_hybrid(q, 0.5, query, k, f, 20)
            fused = 0.5 * (texts @ q) + 0.5 * (images @ q)
            depth = max(50, 3 * k)
            dense = brute(fused, keep, depth)
            lexical = _lexical_ids(store, query, depth, f)
            want = brute(fused, keep, k) if not lexical else _rrf(dense, lexical, named, query, k, 20)
            assert [h.product_id for h in hits] == want, (query, k)
            for h in hits:
                assert h.score == pytest.approx(float(fused[int(h.product_id[1:])]), abs=1e-5)
                assert h.payload["product_id"] == h.product_id


def _lexical_ids(store, query, depth, f) -> list[str]:
    """The engine's BM25 ranking as product ids (BM25 itself is the engine's; only the fusion is checked here)."""
    keys = [k for k, _ in store._lexical_keys(query, depth, f)]
    return [p["product_id"] for p in map(store._payloads(keys).get, keys)]


def _rrf(dense, lexical, products, query, k, rrf_k) -> list[str]:
    from pipeline.storage.vectors.lexical import normalised

    score = {}
    for ranking in (dense, lexical):
        for rank, pid in enumerate(ranking, start=1):
            score[pid] = score.get(pid, 0.0) + 1.0 / (rrf_k + rank)
    names = {p.product_id: p.payload["name"] for p in products}
    first = {pid for pid in lexical if normalised(names[pid]) == normalised(query)}
    return sorted(score, key=lambda pid: (pid not in first, -score[pid], pid))[:k]


def test_a_server_text_query_reads_no_metadata_the_query_path_has_just_read(catalogue):
    """The matcher reads the collection's metadata for the cache key right before it searches; the server adapter
    decides on the stored fused vectors from that read, not from a second round trip per query."""
    from qdrant_client import QdrantClient

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client = QdrantClient(":memory:")
        store = filled(ServerVectorStore("products", IndexTuning(), client=client, serialize=True), catalogue[2])
        reads = []
        real = client.get_collection
        client.get_collection = lambda *a, **k: reads.append(a) or real(*a, **k)  # counts, then asks the real one
        q = unit(np.random.default_rng(4), 1)[0]
        store.info()
        assert len(reads) == 1
        assert [h.product_id for h in store.search_text(q, 0.5, 5)] and len(reads) == 1
        assert store.search_hybrid(q, 0.5, "Product 3", 5) and len(reads) == 1
    store.close()


def test_delete_facets_hashes_and_vectors(store, catalogue):
    images, _, products = catalogue
    filled(store, products)
    assert store.count() == N
    assert dict(store.facet("category")) == dict.fromkeys(CATEGORIES, N // 4)
    assert sum(c for _, c in store.facet("brand")) == N
    assert store.content_hashes(["p1", "p2", "nope"]) == {"p1": "h1", "p2": "h2"}
    ids, vectors = store.all_vectors("image")
    order = [int(p[1:]) for p in ids]
    np.testing.assert_allclose(vectors, images[order], atol=1e-6)
    q = images[5]
    assert store.search(q, "image", 1)[0].product_id == "p5"
    with store.changing():
        assert store.delete(["p5", "p6", "unknown"]) == 2
    assert store.count() == N - 2
    assert "p5" not in [h.product_id for h in store.search(q, "image", 20)]
    assert "p5" not in [h.product_id for h in store.search_text(q, 0.5, 20)]
    assert "p5" not in store.product_ids() and len(store.product_ids()) == N - 2
    assert dict(store.facet("category"))["Bags"] == N // 4 - 1  # p5 was a bag


def test_names_and_products_for_the_catalogue_listing(store, catalogue):
    _, _, products = catalogue
    assert list(store.names()) == [] and store.products(["p1"]) == {}, "no collection yet"
    filled(store, products)
    assert sorted(store.names()) == sorted((p.product_id, p.payload["name"]) for p in products)
    got = store.products(["p3", "p10", "nobody"])
    assert got == {
        pid: {"product_id": pid, **{k: v for k, v in products[int(pid[1:])].payload.items() if k in PAYLOAD_FIELDS}}
        for pid in ("p3", "p10")
    }, "the payload's page fields, a missing price as None; no content hash"


def test_edge_reopens_with_its_data_and_metadata(tmp_path, catalogue):
    root = tmp_path / "vectors" / "products"
    first = filled(EdgeVectorStore(root, IndexTuning()), catalogue[2])
    info = first.info()
    first.close()
    again = EdgeVectorStore(root, IndexTuning())
    try:
        assert again.info() == info and again.count() == N
        assert again.search(catalogue[0][3], "image", 1)[0].product_id == "p3"
    finally:
        again.close()


def test_edge_refuses_a_second_process_with_one_sentence(tmp_path, catalogue):
    root = tmp_path / "vectors" / "products"
    holder = filled(EdgeVectorStore(root, IndexTuning()), catalogue[2][:5])
    try:
        code = textwrap.dedent(
            f"""
            from pipeline.storage.vectors.edge import EdgeVectorStore
            from pipeline.storage.vectors import IndexTuning
            from pipeline.errors import PipelineError
            try:
                EdgeVectorStore({str(root)!r}, IndexTuning())
            except PipelineError as err:
                print(err)
            """
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert "is open in another process" in out.stdout and "Catalogue tab" in out.stdout, out
        assert "Traceback" not in out.stderr
    finally:
        holder.close()


def test_edge_crash_during_a_change_bumps_the_version_on_reopen(tmp_path, catalogue):
    root = tmp_path / "vectors" / "products"
    store = filled(EdgeVectorStore(root, IndexTuning()), catalogue[2][:5])
    info = store.info()
    info.writing = True  # what a kill -9 inside ``changing()`` leaves behind
    store._write_info(info)
    store.close()
    again = EdgeVectorStore(root, IndexTuning())
    try:
        assert not again.info().writing and again.version() == info.catalog_version + 1
    finally:
        again.close()


def test_edge_kill_9_during_a_change_keeps_the_last_flush_and_the_next_ingest_completes(tmp_path, catalogue):
    """Edge shards have no write-ahead log (see ``EdgeVectorStore._create``): a process killed in the middle of a change
    leaves the shard as of its last flush, which opens, searches and filters consistently; the interrupted change's
    version is skipped, and writing the missing points again completes the catalogue."""
    root = tmp_path / "vectors" / "products"
    filled(EdgeVectorStore(root, IndexTuning()), catalogue[2][:100]).close()
    code = textwrap.dedent(
        f"""
        import os, signal, pickle
        from pipeline.storage.vectors import edge
        from pipeline.storage.vectors.edge import EdgeVectorStore
        from pipeline.storage.vectors import IndexTuning
        edge.FLUSH_EVERY_S = 3600  # only the explicit flush below, however slow the machine
        products = pickle.load(open({str(tmp_path / "products.pkl")!r}, "rb"))
        store = EdgeVectorStore({str(root)!r}, IndexTuning())
        with store.changing():
            store.upsert(products[100:200])
            store.delete(["p0", "p1"])
            store._persist()  # what FLUSH_EVERY_S does during a long change
            store.upsert(products[200:300])
            store.delete(["p2"])
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    (tmp_path / "products.pkl").write_bytes(pickle.dumps(catalogue[2]))
    before = EdgeVectorStore(root, IndexTuning())
    version = before.version()
    before.close()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == -9, done.stderr
    store = EdgeVectorStore(root, IndexTuning())
    try:
        assert store.version() > version and not store.info().writing
        kept = set(store.product_ids())
        assert kept == {f"p{i}" for i in range(2, 200)}  # the flushed writes, none of the later ones
        bags = Filters(categories=("Bags",))
        assert {h.product_id for h in store.search(catalogue[0][5], "image", 400, bags)} == {
            f"p{i}" for i in range(2, 200) if i % 4 == 1
        }
        with store.changing():
            store.upsert(catalogue[2][200:300])
        assert store.count() == 298
    finally:
        store.close()


def test_edge_optimises_in_a_child_while_queries_go_on(tmp_path):
    """A serving process builds the HNSW index on a copy in a child process: queries keep being answered (Edge holds
    the GIL while it optimises in-process), and the swapped-in index answers like brute force."""
    rng = np.random.default_rng(4)
    n, dim = 4000, 64
    images, texts = unit(rng, n, dim), unit(rng, n, dim)
    tuning = replace(IndexTuning(), exact_below=1000, hnsw_ef=256)
    store = EdgeVectorStore(tmp_path / "v" / "products", tuning, optimize_in_child=True)
    try:
        store.ensure(card(dim))
        with store.changing():
            for s in range(0, n, 500):
                store.upsert(
                    [IndexedProduct(f"p{i}", images[i], texts[i], {"category": "x"}) for i in range(s, s + 500)]
                )
        assert store.searches_exactly()
        answered, done = [], threading.Event()

        def query():
            while not done.is_set():
                q = images[len(answered) % n]
                answered.append(store.search(q, "image", 1)[0].product_id == f"p{len(answered) % n}")
                time.sleep(0.001)

        worker = threading.Thread(target=query)
        worker.start()
        try:
            report = store.optimize()
        finally:
            done.set()
            worker.join()
        assert report["optimized"] and report["seconds"] > 0
        assert len(answered) > 10 and all(answered), "queries were answered, correctly, during the optimisation"
        assert not store.searches_exactly() and store.stats()["hnsw"]
        assert not (store.root / "shard.next").exists() and not (store.root / "shard.old").exists()
        hits = store.search(images[17], "image", 10)
        assert hits[0].product_id == "p17"
        assert [h.product_id for h in hits] == brute(images @ images[17], np.ones(n, bool), 10)
    finally:
        store.close()


def test_open_vector_store_picks_edge_or_server(settings):
    edge = open_vector_store(settings)
    try:
        assert isinstance(edge, EdgeVectorStore) and edge.root == settings.vectors_path / "products"
    finally:
        edge.close()
    server = open_vector_store(settings.with_(qdrant_url="http://127.0.0.1:9"))
    try:
        assert isinstance(server, ServerVectorStore)
        with pytest.raises(BackendUnavailable, match="does not answer"):
            server.count()
    finally:
        server.close()


@pytest.mark.parametrize("storage", ["int8", "turbo8"])
def test_edge_quantized_storage_searches_the_graph_and_rescores(tmp_path, storage):
    """Compact copies in RAM and an HNSW graph: the served top 10 keeps the brute-force top 10 (filtered too, where
    Qdrant scans the compact copies), ``exact`` is brute force over the float32 originals, and a reopened shard
    answers the same."""
    rng = np.random.default_rng(11)
    n, dim = 3000, 64
    centres = unit(rng, 60, dim)
    images = centres[rng.integers(0, 60, n)] + 0.3 * unit(rng, n, dim)
    images = (images / np.linalg.norm(images, axis=1, keepdims=True)).astype(np.float32)
    cats = np.array([CATEGORIES[i % 4] for i in range(n)])
    tuning = replace(IndexTuning(), storage=storage, exact_below=1000)
    root = tmp_path / "v" / "products"
    store = EdgeVectorStore(root, tuning)
    try:
        store.ensure(card(dim))
        with store.changing():
            store.upsert([IndexedProduct(f"p{i}", images[i], images[i], {"category": cats[i]}) for i in range(n)])
        store.optimize()
        assert store.stats()["hnsw"] and not store.searches_exactly()
        kind = "turbo" if storage == "turbo8" else "scalar"
        built = [
            json.loads(f.read_text()) for f in root.glob("shard/segments/*/vector_storage-*/quantized.config.json")
        ]
        full = [b for b in built if b["vector_parameters"].get("count") == n]
        assert len(full) == len(store.info().dense_vectors()) == 3  # image, text and the stored fused vector
        assert {kind} == {next(iter(b["quantization_config"])) for b in full}
        # The files read ahead on opening, the compact copies read after it (cold by default) and the originals
        # warmed later are the pinned engine's names for them
        ahead = {(p.parent.name, p.name) for p in files_read_on_open(root / "shard")}
        hot = {(p.parent.name, p.name) for p in compact_on_disk(root / "shard")}
        for name in ("image", "text", "fused"):
            assert (f"vector_storage-{name}", "quantized.data") in hot
            assert (f"vector_index-{name}", "links_compressed.bin") in ahead
        originals = {(p.parent.name, p.name) for p in originals_on_disk(root / "shard")}
        assert ("vector_storage-text", "matrix.dat") in originals
        # The photos, held as rows per product (MaxSim), are stored in chunks with each point's offsets
        assert {("vectors", "chunk_0.mmap"), ("offsets", "chunk_0.mmap")} <= originals
        assert not any(p.name == "matrix.dat" for p in files_read_on_open(root / "shard"))
        queries = unit(rng, 30, dim)
        shoes = Filters(categories=("Shoes",))

        def answers(s) -> list[list[str]]:
            return [[h.product_id for h in s.search(q, "image", 10, f)] for q in queries for f in (None, shoes)]

        truth = [brute(images @ q, cats == "Shoes" if f else np.ones(n, bool), 10) for q in queries for f in (0, 1)]
        served = answers(store)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(served, truth, strict=True)])
        assert recall >= 0.95, recall
        assert [[h.product_id for h in store.search(q, "image", 10, exact=True)] for q in queries] == truth[::2]
    finally:
        store.close()
    again = EdgeVectorStore(root, tuning)
    try:
        assert answers(again) == served
    finally:
        again.close()

    def score_errors(s) -> np.ndarray:  # served score - float32 dot product, every hit of every query
        return np.array([h.score - float(images[int(h.product_id[1:])] @ q) for q in queries
                         for h in s.search(q, "image", 10)])  # fmt: skip

    for rescore in (True, False):
        told = EdgeVectorStore(root, replace(tuning, rescore=rescore))
        try:  # rescored: the originals' scores; not: the compact copies' own, close to them
            errors = np.abs(score_errors(told))
            assert errors.max() < 1e-4 if rescore else 1e-4 < errors.max() < 0.05, errors.max()
        finally:
            told.close()
    other = "int8" if storage == "turbo8" else "turbo8"
    later = EdgeVectorStore(root, replace(IndexTuning(), storage=other, exact_below=1000))
    try:  # VECTOR_STORAGE changed since the build: the shard is searched as it was built
        assert later.tuning.storage == storage and later.tuning.rescore_oversampling() == tuning.rescore_oversampling()
        assert answers(later) == served
        later.ensure(card(dim), reset=True)  # a new collection is built as VECTOR_STORAGE says now
        assert later.tuning.storage == other
    finally:
        later.close()


def test_long_product_lists_are_read_and_deleted_in_bounded_calls(store, catalogue, monkeypatch):
    """A sync may delete hundreds of thousands of products: the index is asked in calls of ``POINTS_PER_CALL`` ids (a
    Qdrant server refuses a request over 32 MB), and the answers are the same as in one call."""
    import pipeline.storage.vectors.store as vector_store

    _, _, products = catalogue
    filled(store, products)
    monkeypatch.setattr(vector_store, "POINTS_PER_CALL", 64)
    calls: dict[str, list[int]] = {"_retrieve": [], "_delete": []}
    for name, sizes in calls.items():
        method = getattr(store, name)
        monkeypatch.setattr(store, name, lambda ids, *rest, m=method, s=sizes: (s.append(len(ids)), m(ids, *rest))[1])
    ids = [f"p{i}" for i in range(N)]
    assert store.content_hashes([*ids, "nope"]) == {p.product_id: p.payload["content_hash"] for p in products}
    assert sorted(store.products(ids[:300])) == sorted(ids[:300])
    with store.changing():
        assert store.delete([*ids[: N - 5], "nope"]) == N - 5
    assert sorted(store.product_ids()) == sorted(ids[N - 5 :])
    assert calls["_retrieve"] and max(calls["_retrieve"]) <= 64 and max(calls["_delete"]) <= 64
    assert sum(calls["_delete"]) == N - 5 and len(calls["_delete"]) == -(-(N - 5) // 64)
