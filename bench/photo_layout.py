"""How to hold several photos per product in Qdrant Edge, measured: the two designs side by side on the same data.

- ``multi``: one point per product, its photos as the rows of a multivector compared by MaxSim (a product scores
  its best photo's cosine). What the app does (``pipeline/storage/vectors``).
- ``points``: one point per photo, the product id in its payload; a query asks for ``k x photos`` points and keeps
  each product's first (asking again, twice as deep, when fewer than ``k`` products come back).

Both with the app's index settings (``IndexTuning()``: turbo8 compact copies rescored with the float32 originals,
HNSW m / ef_construct, ef by size), the data of ``bench.vector_scale --photos N`` (its ``Catalogue``), 200 queries
each made from one photo of a product. Recall@10 against the exact best-photo top 10 (numpy over every photo).
Build = upserts + the one optimisation. One process, the designs one after the other on a fresh shard each.

Run: ``.venv/bin/python -m bench.photo_layout [--products 100000] [--photos 3] [--dim 512] [--json OUT]``;
``--smoke``: 3,000 products, 64-d, 30 queries (proves it runs; measures nothing).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as c
from bench.vector_scale import TOP_K, Catalogue, percentile, recall


def build(design: str, root: Path, catalogue: Catalogue, n: int, tuning):
    import qdrant_edge as q

    from pipeline.storage.vectors import conditions
    from pipeline.storage.vectors.edge_shard import dialect

    dim = catalogue.dim
    quant = conditions.quantization(dialect(tuning.compact_memory), tuning)
    max_sim = q.MultiVectorConfig(q.MultiVectorComparator.MaxSim) if design == "multi" else None
    config = q.EdgeConfig(
        vectors={"image": q.EdgeVectorParams(size=dim, distance=q.Distance.Dot, memory=q.Memory.Cold,
                                             quantization_config=quant, multivector_config=max_sim)},
        hnsw_config=q.HnswIndexConfig(m=tuning.hnsw_m, ef_construct=tuning.hnsw_ef_construct,
                                      full_scan_threshold=conditions.full_scan_kb(dim)),
        optimizers=q.EdgeOptimizersConfig(indexing_threshold=conditions.indexing_threshold_kb(tuning, dim)),
        wal_enabled=False,
    )  # fmt: skip
    shard = q.EdgeShard.create(str(root), config)
    began = time.perf_counter()
    for start, data in catalogue.batches(n):
        photos = data["image"]
        if design == "multi":
            points = [
                q.Point(start + i + 1, {"image": photos[i].tolist()}, {"pid": start + i}) for i in range(len(photos))
            ]
        else:
            per = photos.shape[1]
            points = [q.Point((start + i) * per + j + 1, {"image": photos[i, j].tolist()}, {"pid": start + i})
                      for i in range(len(photos)) for j in range(per)]  # fmt: skip
        shard.update(q.UpdateOperation.upsert_points(points))
    upsert_s = time.perf_counter() - began
    shard.optimize()
    shard.flush()
    return shard, upsert_s, time.perf_counter() - began - upsert_s


def query(design: str, shard, vector, photos: int, params) -> tuple[list[int], int]:
    """Top 10 products, and how many searches it took."""
    import qdrant_edge as q

    limit = TOP_K if design == "multi" else TOP_K * photos
    searches = 0
    while True:
        searches += 1
        request = q.QueryRequest(limit=limit, query=q.Query.Nearest(vector.tolist(), using="image"), params=params,
                                 with_payload=True)  # fmt: skip
        points = shard.query(request)
        got = list(dict.fromkeys(p.payload["pid"] for p in points))[:TOP_K]
        if design == "multi" or len(got) >= TOP_K or len(points) < limit:
            return got, searches
        limit *= 2


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import qdrant_edge as q

    from pipeline.settings import IndexTuning

    p = c.parser(__doc__)
    p.add_argument("--products", type=int, default=None, help="products (default 100000; 3000 with --smoke)")
    p.add_argument("--photos", type=int, default=3, help="photos per product (default 3)")
    p.add_argument("--dim", type=int, default=None, help="vector dimension (default 512; 64 with --smoke)")
    p.add_argument("--queries", type=int, default=None, help="queries (default 200; 30 with --smoke)")
    args = p.parse_args(argv)
    n = args.products or (3000 if args.smoke else 100_000)
    dim = args.dim or (64 if args.smoke else 512)
    count = args.queries or (30 if args.smoke else 200)
    tuning = IndexTuning(exact_below=1000) if args.smoke else IndexTuning()
    info = c.machine()
    catalogue = Catalogue(dim, 0, args.photos)
    queries = catalogue.queries(n, count)["vectors"]
    flat = np.concatenate([d["image"].reshape(-1, dim) for _, d in catalogue.batches(n)])
    truth = []
    for v in queries:
        best = (flat @ v).reshape(n, args.photos).max(axis=1)
        truth.append(np.argsort(-best, kind="stable")[:TOP_K].tolist())
    del flat
    params = q.SearchParams(
        hnsw_ef=tuning.ef_for(n),
        quantization=q.QuantizationSearchParams(rescore=True, oversampling=tuning.rescore_oversampling()),
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-photo-layout-") as tmp:
        for design in ("multi", "points"):
            c.note(f"{design}: building {n:,} products x {args.photos} photos ...")
            shard, upsert_s, optimize_s = build(design, Path(tmp) / design, catalogue, n, tuning)
            for v in queries[:3]:
                query(design, shard, v, args.photos, params)
            times, found, searches = [], [], 0
            for v in queries:
                began = time.perf_counter()
                got, asked = query(design, shard, v, args.photos, params)
                times.append((time.perf_counter() - began) * 1000)
                found.append(got)
                searches += asked - 1
            info_ = shard.info()
            rows.append([design, f"{n:,}", args.photos, info_.points_count, round(upsert_s, 1), round(optimize_s, 1),
                         percentile(times, 50), percentile(times, 95), recall(found, truth), searches])  # fmt: skip
            c.note(f"{design}: p50 {rows[-1][6]} ms, recall {rows[-1][8]}")
            shard.close()
            shutil.rmtree(Path(tmp) / design, ignore_errors=True)
    payload = c.report(
        "photo_layout",
        info,
        f"Several photos per product: MaxSim multivector per product vs one point per photo ({count} queries, top "
        f"{TOP_K}, {dim}-d, IndexTuning() defaults)",
        [
            "design",
            "products",
            "photos",
            "points",
            "upsert s",
            "optimise s",
            "p50 ms",
            "p95 ms",
            "recall@10",
            "searches asked again",
        ],
        rows,
    )
    c.write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
