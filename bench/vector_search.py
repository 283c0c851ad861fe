"""Vector search alone: Qdrant local mode vs numpy brute force on the same vectors (issue 6, item 4).

10,000 products with synthetic unit vectors (512-d ``image`` and ``text``; ``fused`` = [text, image], 1024-d, as the
app stores them). Per-query latency, top 10, measured interleaved in one process, each as a ratio to numpy brute force
(matrix product + argpartition) on the same matrix:

- the app's own layout and call: ``VectorIndex.ensure`` (named vectors image/text/fused, ``Distance.DOT``, local mode
  on disk as the app runs it) and ``VectorIndex.search`` (payload returned, hits converted);
- the same collection through ``client.query_points`` directly, with and without payload;
- a second collection with ``Distance.COSINE`` (same named vectors), and single-vector collections (one unnamed vector
  per collection, DOT), to see which distance and layout make local mode fastest.

Each Qdrant top 10 is checked against numpy's (same ids). Also reports the upsert rate of the app's collection.

Run: ``.venv/bin/python -m bench.vector_search [--products 10000] [--repeats 200] [--json OUT]``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as c
from pipeline.model_repo import ModelCard
from pipeline.settings import Settings
from pipeline.vector_index import IndexedProduct, VectorIndex, point_id

DIM = 512
TOP_K = 10
TEXT_WEIGHT = 0.5


def synthetic_card(dim: int) -> ModelCard:
    return ModelCard(
        name="bench-synthetic",
        kind="clip",
        source="synthetic",
        revision="-",
        precision="fp32",
        embedding_dim=dim,
        text_max_length=77,
        image_size=224,
        sha256={"clip_text": "0", "clip_visual": "0"},
    )


def brute_force(matrix: np.ndarray, query: np.ndarray, k: int = TOP_K) -> np.ndarray:
    scores = matrix @ query
    top = np.argpartition(-scores, k)[:k]
    return top[np.argsort(-scores[top])]


def main(argv: list[str] | None = None) -> int:
    from qdrant_client import QdrantClient, models

    p = c.parser(__doc__)
    p.add_argument("--products", type=int, default=None, help="number of vectors (default 10,000; 100 with --smoke)")
    args = p.parse_args(argv)
    n = args.products or (100 if args.smoke else 10_000)
    rounds = c.repeats(args, 200)
    info = c.machine()
    rng = np.random.default_rng(0)
    image, text = c.unit_vectors(rng, n, DIM), c.unit_vectors(rng, n, DIM)
    fused = np.concatenate([text, image], axis=1)
    ids = [f"p{i:06d}" for i in range(n)]
    payloads = [
        {"name": f"product {i}", "brand": f"brand{i % 37}", "category": f"cat{i % 4}", "color": f"color{i % 10}",
         "price": float(i % 200), "image_file": f"images/{i}.jpg", "content_hash": str(i)}
        for i in range(n)
    ]  # fmt: skip
    queries = c.unit_vectors(rng, rounds + 1, DIM)
    fused_queries = np.concatenate([TEXT_WEIGHT * queries, (1 - TEXT_WEIGHT) * queries], axis=1)

    with tempfile.TemporaryDirectory(prefix="bench-vectors-") as tmp:
        settings = Settings(data_dir=Path(tmp) / "data")
        index = VectorIndex(settings)  # the app's own code: local mode on disk
        index.ensure(synthetic_card(DIM))
        # As the app writes them: batches of 500 through VectorIndex.upsert (SQLite in WAL mode, see
        # pipeline/qdrant_local.py: relax_sync).
        upsert_s: dict[str, tuple[int, float]] = {}
        c.note(f"upserting {n} products into the app's collection (local mode on disk) ...")
        started = time.perf_counter()
        for s in range(0, n, 500):
            batch = range(s, min(s + 500, n))
            index.upsert([IndexedProduct(ids[i], image[i], text[i], payloads[i]) for i in batch])
        upsert_s["app (WAL, synchronous=NORMAL)"] = (n, time.perf_counter() - started)
        c.note(f"... {upsert_s}")
        app = index.client

        mem = QdrantClient(location=":memory:")  # comparison collections; search is the same code as on disk
        named = {"image": DIM, "text": DIM, "fused": 2 * DIM}
        mem.create_collection(
            "cosine",
            vectors_config={k: models.VectorParams(size=d, distance=models.Distance.COSINE) for k, d in named.items()},
        )
        for name, dim in (("single_image", DIM), ("single_fused", 2 * DIM)):
            mem.create_collection(name, vectors_config=models.VectorParams(size=dim, distance=models.Distance.DOT))
        for s in range(0, n, 1000):
            rows = range(s, min(s + 1000, n))
            pids = [point_id(ids[i]) for i in rows]
            pls = [{"product_id": ids[i], **payloads[i]} for i in rows]
            mem.upsert(
                "cosine",
                models.Batch(
                    ids=pids,
                    vectors={"image": image[rows].tolist(), "text": text[rows].tolist(), "fused": fused[rows].tolist()},
                    payloads=pls,
                ),
            )
            mem.upsert("single_image", models.Batch(ids=pids, vectors=image[rows].tolist(), payloads=pls))
            mem.upsert("single_fused", models.Batch(ids=pids, vectors=fused[rows].tolist(), payloads=pls))

        coll = settings.qdrant_collection
        checks: dict[str, bool] = {}

        def qp(client, collection, using, payload):
            def run(vec):
                return client.query_points(
                    collection, query=vec.tolist(), using=using, limit=TOP_K, with_payload=payload
                ).points

            return run

        def float32_query(fn):
            """The same call with local mode's dot product fed a float32 query (a patch, only for this call).

            qdrant-client's local mode turns the query list into a float64 array (``np.array(query)``), so
            ``np.dot(float32 matrix, float64 query)`` converts the whole matrix to float64 on every query; this row
            shows what that costs.
            """
            from qdrant_client.local import distances

            def run(vec):
                original = distances.dot_product
                distances.dot_product = lambda q, vectors: original(q.astype(vectors.dtype, copy=False), vectors)
                try:
                    return fn(vec)
                finally:
                    distances.dot_product = original

            return run

        variants = {
            "image": {
                "numpy": lambda v: brute_force(image, v),
                "app: VectorIndex.search (named, DOT, payload)": lambda v: index.search(v, "image", TOP_K),
                "app, with local mode's query cast to float32 (patch)": float32_query(
                    lambda v: index.search(v, "image", TOP_K)
                ),
                "query_points named DOT, payload": qp(app, coll, "image", True),
                "query_points named DOT, no payload": qp(app, coll, "image", False),
                "query_points named COSINE, payload": qp(mem, "cosine", "image", True),
                "query_points single vector DOT, payload": qp(mem, "single_image", None, True),
                "query_points single vector DOT, no payload": qp(mem, "single_image", None, False),
            },
            "fused": {
                "numpy": lambda v: brute_force(fused, v),
                "app: VectorIndex.search (named, DOT, payload)": lambda v: index.search(v, "fused", TOP_K),
                "app, with local mode's query cast to float32 (patch)": float32_query(
                    lambda v: index.search(v, "fused", TOP_K)
                ),
                "query_points named DOT, payload": qp(app, coll, "fused", True),
                "query_points named DOT, no payload": qp(app, coll, "fused", False),
                "query_points named COSINE, payload": qp(mem, "cosine", "fused", True),
                "query_points single vector DOT, payload": qp(mem, "single_fused", None, True),
                "query_points single vector DOT, no payload": qp(mem, "single_fused", None, False),
            },
        }
        # same answers first: every variant's top 10 is numpy's
        for kind, fns in variants.items():
            q = queries[-1] if kind == "image" else fused_queries[-1]
            want = [point_id(ids[i]) for i in fns["numpy"](q)]
            for label, fn in fns.items():
                if label == "numpy":
                    continue
                got = fn(q)
                got_ids = [point_id(h.product_id) if hasattr(h, "product_id") else str(h.id) for h in got]
                checks[f"{kind}: {label}"] = got_ids == want

        steps = {}
        for kind, fns in variants.items():
            qs = queries if kind == "image" else fused_queries
            for label, fn in fns.items():
                steps[f"{kind}|{label}"] = lambda r, fn=fn, qs=qs: fn(qs[r])
        c.note(f"measuring {rounds} interleaved rounds of {len(steps)} searches ...")
        samples = c.interleave(steps, rounds, warmup=3)
        index.close()
        mem.close()

    rows = []
    fastest: dict[str, tuple[str, float]] = {}
    for kind, fns in variants.items():
        base = f"{kind}|numpy"
        for label in fns:
            key = f"{kind}|{label}"
            ms = samples.median_ms(key)
            if label == "numpy":
                rows.append([f"{kind} ({DIM if kind == 'image' else 2 * DIM}-d)", label, ms, 1.0, "-", "-"])
                continue
            ratio = samples.ratio(key, base)
            same = "yes" if checks[f"{kind}: {label}"] else "NO"
            rows.append(["", label, ms, ratio.median, ratio.spread(), same])
            if label.startswith("query_points") and (kind not in fastest or ms < fastest[kind][1]):
                fastest[kind] = (label, ms)
    best = "; ".join(f"{kind}: {label} ({ms:.2f} ms)" for kind, (label, ms) in fastest.items())
    payload = c.report(
        "vector_search",
        info,
        f"Vector search, {n} products, top {TOP_K}, {rounds} rounds (median ms per query; ratio to numpy brute force)",
        ["vector", "search", "median ms", "x numpy", "p25-p75", "same top 10"],
        rows,
        fastest_local_mode=best,
        app_upsert="VectorIndex.upsert, local mode on disk, batches of 500: "
        + "; ".join(f"{label}: {k} points in {s:.1f} s ({k / s:.0f}/s)" for label, (k, s) in upsert_s.items() if k),
    )
    c.write_json(args.json, payload)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
