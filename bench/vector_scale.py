"""Vector store at catalogue scale: Qdrant Edge (the app's ``EdgeVectorStore``) vs qdrant-client local mode vs numpy.

Why this exists: the app embeds Qdrant Edge with ``IndexTuning()``'s defaults (storage, HNSW m / ef_construct / ef,
the size under which no graph is built). Those were chosen from this benchmark; ``--storage``, ``--hnsw-ef``, ``--m``,
``--ef-construct`` and ``--exact-below`` rerun it with another choice so that the choice can be checked or redone.

Data whose neighbours mean something (i.i.d. noise makes every ANN look bad, because every point is about equally far
from every other): 1,000 centres ~ N(0, 1) per component, 10 sub-centres around each at sigma 0.35, products at sigma
0.15 around a sub-centre, L2-normalised; the text vector is the product's sub-centre + independent sigma 0.15 noise,
normalised, so it is correlated with the image vector the way a product's text is with its photo. Every sigma is per
component, on the scale of the centres (before normalisation). Category = centre % 50 (a category filter keeps ~2 %),
brand one of 200, price a float. Products are generated in batches of 1,000, each from its own seed, so product ``i``
is the same at every size and no engine but numpy ever holds all vectors at once. Queries: the image vectors of
``--queries`` products + N(0, 0.1) noise (same scale), re-normalised.

Each (engine, size, dim) runs in a child process of its own (``--one``, hidden), so its RSS is that engine's alone:

- ``qdrant-edge``: ``EdgeVectorStore``: ``ensure`` + ``upsert`` in batches of 1,000 inside ``changing()``,
  ``optimize()``, ``close()``, then reopened (timed). Recall@10 of ``search`` against ``search(..., exact=True)`` on
  the same store, unfiltered, with a random category filter, and with the query's own category; ``search_text``
  (w=0.5) against its exact form. Exact top 10s are also compared with numpy's (``exact_agrees_numpy``).
- ``qdrant-local``: ``QdrantClient(path=...)``, named vectors ``image``/``text``, ``Distance.DOT``, upserts in batches
  of 1,000, up to ``--local-mode-max`` products (it keeps everything in Python objects; larger sizes are skipped and
  the reason printed). Always brute force, so its recall is measured against numpy's top 10. Queries go in as float32
  arrays (a Python list would make local mode compute in float64 over a float64 copy of the matrix: bench/README.md).
- ``numpy``: the exact baseline: the float32 image matrix written to a ``.npy``, "reopen" = ``np.load`` (memory map
  off), then ``matrix @ q`` + ``argpartition`` (filtered: the rows of the category, gathered per query).

The serving passes of a row (search, filtered, text) run first and its RSS is read after them; the exact references run
after, since they read every float32 original. Within each group the passes are interleaved query by query in a rotating
order, so that no pass is always the one on a warm cache. RSS (VmRSS) is read after the reopen and after the serving
queries (``rss_mib``; ``rss_anon_mib`` / ``rss_file_mib`` split it into the process's own memory and the mapped file
pages of the shard, which the kernel can take back); the peak during the queries is VmHWM after resetting it
(``/proc/self/clear_refs``) at the start of the queries. Freed build memory is handed back to the system
(``malloc_trim``) before the reopen, so the reopened store is not charged for the build, and the build's writes are
synced to the disk first (``os.sync``, untimed): a serving app opens a shard at rest, while the kernel writing back the
gigabytes an optimisation just wrote would slow every read of the reopen and the queries (at 1,000,000 products the
queries read the float32 originals from disk when rescoring). That reopen is an app restart: it finds in the page cache
what the build left (little: Qdrant drops a shard's files from the page cache when closing it). The store then reads
ahead, in the background, what the queries would read from disk (the float32 originals, where they fit in free memory);
the queries start at once, as an app's would, and ``warmed_s`` says when that reading ended, counted from the end of the
reopen (``--no-warm``: not read ahead, as with ``VECTOR_WARM=0``). ``--cold-reopen`` (root only) also times an open from
an empty page cache, as after a reboot, at the very end of the row. Disk = allocated blocks (Edge pre-allocates sparse
files: their apparent size is reported separately).

Run: ``.venv/bin/python -m bench.vector_scale --sizes 10000,100000,1000000 [--dims 512,1664] [--json OUT]
[--smoke] [--cold-reopen]``. 1M products take long (the HNSW build of 1M x 2 vectors on 2 cores: 10-40 min at 512-d);
progress goes to stderr; ``--max-seconds-per-row`` stops a child (its finished phases are still reported) and larger
sizes of that engine are then skipped. JSON ``rows``: one object per (engine, size, dim) with the keys in ``headers``.
``--smoke`` (2,000 and 5,000 products, 64-d, 30 queries, local mode at 2,000 only; ``exact_below`` 1,000 so that
graphs are built and searched; data under /dev/shm) proves it runs in ~10 s and measures nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as c
from pipeline.settings import VECTOR_STORAGES

N_CENTRES = 1000
SUBS_PER_CENTRE = 10
SUB_SIGMA = 0.35
PRODUCT_SIGMA = 0.15
TEXT_SIGMA = 0.15
QUERY_SIGMA = 0.1
# --photos N: each product's photos around its own point (sigma per component, as the others): front, back, a
# detail; the query is made from one of them.
PHOTO_SIGMA = 0.1
N_CATEGORIES = 50
N_BRANDS = 200
BATCH = 1000  # products per generated batch, per upsert, and per seed
TOP_K = 10
TEXT_WEIGHT = 0.5
WARMUP = 3  # queries run before each timed pass, not recorded
HEARTBEAT_S = 60.0
# --smoke: build HNSW graphs even on its 2,000 and 5,000 products (the default builds none under 20,000), so the proof
# run goes through optimise and the graph search too.
SMOKE_EXACT_BELOW = 1000
ENGINES = ("numpy", "qdrant-edge", "qdrant-local")  # numpy first: its top 10s are the others' reference

# Every JSON row has exactly these keys (None where an engine has no such thing), in this order.
ROW_KEYS = [
    "engine",
    "products",
    "dim",
    "status",
    "storage",
    "hnsw_m",
    "hnsw_ef_construct",
    "hnsw_ef",
    "exact_below",
    "rescore",
    "compact_memory",
    "upsert_per_s",
    "upsert_s",
    "optimize_s",
    "reopen_s",
    "cold_reopen_s",
    "warmed_s",
    "first_query_ms",
    "rss_start_mib",
    "rss_after_reopen_mib",
    "rss_peak_queries_mib",
    "rss_mib",
    "rss_anon_mib",
    "rss_file_mib",
    "mapped_resident_mib",
    "rss_after_exact_mib",
    "disk_mib",
    "disk_apparent_mib",
    "hnsw",
    "indexed_vectors",
    "segments",
    "queries",
    "query_ms_p50",
    "query_ms_p95",
    "exact_query_ms_p50",
    "filtered_query_ms_p50",
    "filtered_query_ms_p95",
    "own_category_query_ms_p50",
    "text_query_ms_p50",
    "text_query_ms_p95",
    "recall_at_10",
    "filtered_recall_at_10",
    "own_category_recall_at_10",
    "text_recall_at_10",
    "exact_agrees_numpy",
    "child_s",
]
TABLE = [  # (header, key) of the printed table
    ("engine", "engine"),
    ("products", "products"),
    ("dim", "dim"),
    ("storage", "storage"),
    ("upsert/s", "upsert_per_s"),
    ("optimise s", "optimize_s"),
    ("reopen s", "reopen_s"),
    ("cold reopen s", "cold_reopen_s"),
    ("warmed s", "warmed_s"),
    ("RSS start MiB", "rss_start_mib"),
    ("RSS reopen MiB", "rss_after_reopen_mib"),
    ("RSS peak q MiB", "rss_peak_queries_mib"),
    ("RSS MiB", "rss_mib"),
    ("of it anon MiB", "rss_anon_mib"),
    ("disk MiB", "disk_mib"),
    ("p50 ms", "query_ms_p50"),
    ("p95 ms", "query_ms_p95"),
    ("filt p50", "filtered_query_ms_p50"),
    ("filt p95", "filtered_query_ms_p95"),
    ("recall@10", "recall_at_10"),
    ("filt recall", "filtered_recall_at_10"),
    ("own-cat recall", "own_category_recall_at_10"),
    ("text p50", "text_query_ms_p50"),
    ("text recall", "text_recall_at_10"),
    ("status", "status"),
]


# ---------------------------------------------------------------------------------------------------------------- data
class Catalogue:
    """The synthetic catalogue of one dimension: fixed centres and sub-centres, products made batch by batch."""

    def __init__(self, dim: int, seed: int = 0, photos: int = 1) -> None:
        import numpy as np

        self.dim, self.seed, self.photos = dim, seed, photos
        rng = np.random.default_rng([seed, dim, 0])
        centres = rng.standard_normal((N_CENTRES, dim), dtype=np.float32)
        offsets = rng.standard_normal((N_CENTRES, SUBS_PER_CENTRE, dim), dtype=np.float32) * SUB_SIGMA
        self.subs = (centres[:, None, :] + offsets).reshape(N_CENTRES * SUBS_PER_CENTRE, dim)

    def batch(self, b: int) -> dict:
        """Products ``b*BATCH`` .. ``(b+1)*BATCH-1``: raw and normalised image vectors, text vectors, payload
        columns. The raw image vectors are kept because queries are made from them."""
        import numpy as np

        rng = np.random.default_rng([self.seed, self.dim, 1, b])
        sub = rng.integers(0, len(self.subs), BATCH)
        raw = self.subs[sub] + PRODUCT_SIGMA * rng.standard_normal((BATCH, self.dim), dtype=np.float32)
        text = self.subs[sub] + TEXT_SIGMA * rng.standard_normal((BATCH, self.dim), dtype=np.float32)
        if self.photos > 1:  # (BATCH, photos, dim): the app's store holds them as rows, scored by the best one
            shots = np.random.default_rng([self.seed, self.dim, 3, b]).standard_normal(
                (BATCH, self.photos, self.dim), dtype=np.float32
            )
            raw = raw[:, None, :] + PHOTO_SIGMA * shots
        return {
            "raw": raw,
            "image": _normalised(raw),
            "text": _normalised(text),
            "category": (sub // SUBS_PER_CENTRE) % N_CATEGORIES,
            "brand": rng.integers(0, N_BRANDS, BATCH),
            "price": np.round(rng.lognormal(3.0, 0.8, BATCH), 2),
        }

    def batches(self, n: int) -> Iterator[tuple[int, dict]]:
        """(first product index, batch) covering products 0 .. n-1; the last batch is cut to size."""
        for b in range((n + BATCH - 1) // BATCH):
            start, size = b * BATCH, min(BATCH, n - b * BATCH)
            data = self.batch(b)
            yield start, {k: v[:size] for k, v in data.items()}

    def queries(self, n: int, count: int) -> dict:
        """``count`` query vectors made from distinct products among the first ``n``, with their own categories and
        a random category each for the filtered queries (seeded: every engine gets the same queries)."""
        import numpy as np

        rng = np.random.default_rng([self.seed, self.dim, 2, n])
        picks = np.sort(rng.choice(n, size=min(count, n), replace=False))
        raw, own = [], []
        for b in np.unique(picks // BATCH):
            data = self.batch(int(b))
            rows = picks[picks // BATCH == b] % BATCH
            chosen = data["raw"][rows]
            if self.photos > 1:  # one of the product's photos, not always the first
                chosen = chosen[np.arange(len(rows)), rows % self.photos]
            raw.append(chosen)
            own.append(data["category"][rows])
        raw_all = np.concatenate(raw)
        vectors = _normalised(raw_all + QUERY_SIGMA * rng.standard_normal(raw_all.shape, dtype=np.float32))
        return {
            "vectors": vectors,
            "own_category": np.concatenate(own),
            "random_category": rng.integers(0, N_CATEGORIES, len(picks)),
        }


def _normalised(v):  # along the last axis: one vector or a product's photos
    import numpy as np

    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def product_id(i: int) -> str:
    return f"p{i:07d}"


def category_name(cat: int) -> str:
    return f"cat{int(cat):02d}"


# ------------------------------------------------------------------------------------------------ measuring (children)
def vm_mib(key: str) -> float | None:
    """A VmRSS / VmHWM line of /proc/self/status in MiB (psutil is not a dependency)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux: "5" to clear_refs), so the next VmHWM is the peak from here on."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def trim_heap() -> None:
    """Give freed heap back to the system: what the build allocated must not count as the reopened store's RSS."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def drop_page_cache() -> bool:
    """Write back and drop the kernel's page cache (needs root), so that the next open reads every file from disk,
    as after a reboot; False where this process may not."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
        return True
    except OSError:
        return False


def disk_mib(path: Path) -> tuple[float, float]:
    """(allocated, apparent) MiB of everything under ``path``; Edge's files are sparse, so the two differ a lot."""
    allocated = apparent = 0
    files = [path] if path.is_file() else (p for p in path.rglob("*") if p.is_file())
    for f in files:
        with contextlib.suppress(OSError):
            st = f.stat()
            allocated += st.st_blocks * 512
            apparent += st.st_size
    return round(allocated / 2**20, 1), round(apparent / 2**20, 1)


def percentile(values: list[float], q: float) -> float | None:
    import numpy as np

    return round(float(np.percentile(values, q)), 3) if values else None


def recall(found: list[list[int]], truth: list[list[int]] | None) -> float | None:
    """Mean share of each exact top 10 that the search found (queries whose exact answer is empty are left out)."""
    if truth is None:
        return None
    shares = [len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True) if t]
    return round(sum(shares) / len(shares), 4) if shares else None


class Child:
    """One (engine, size, dim) measurement: writes what it has measured so far to ``cfg['result']`` after every
    phase, so a parent that has to stop it for running too long still reports the phases it finished."""

    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg
        self.label = f"{cfg['engine']} {cfg['products']:,} x {cfg['dim']}"
        self.row: dict = {"engine": cfg["engine"], "products": cfg["products"], "dim": cfg["dim"], "phase": "start"}
        self.result = Path(cfg["result"])
        self.catalogue: Catalogue | None = None
        self.q: dict = {}
        self.peak_reset = False

    def save(self, phase: str, **values: object) -> None:
        self.row.update(values, phase=phase)
        tmp = self.result.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.row, default=str))
        os.replace(tmp, self.result)

    def note(self, message: str) -> None:
        c.note(f"{self.label}: {message}")

    def fill(self, upsert: Callable[[int, dict], None]) -> None:
        """Generate the catalogue batch by batch and hand each batch to ``upsert``; only ``upsert`` is timed."""
        n = self.cfg["products"]
        spent, last_note = 0.0, time.monotonic()
        for start, data in self.catalogue.batches(n):
            began = time.perf_counter()
            upsert(start, data)
            spent += time.perf_counter() - began
            done = start + len(data["image"])
            if time.monotonic() - last_note > 15 or done == n:
                self.note(f"upserted {done:,}/{n:,} ({done / spent:,.0f}/s)")
                last_note = time.monotonic()
        self.save("upserted", upsert_s=round(spent, 3), upsert_per_s=round(n / spent, 1))

    def timed_passes(self, passes: dict[str, Callable[[int], list[int]]]) -> dict[str, tuple[list[float], list]]:
        """Run every pass on every query, interleaved: query by query, the passes in an order that rotates (the bench
        convention, see bench/_common.py), so neither a pass nor its exact reference always runs on a warmer cache
        or in a quieter moment. A short warm-up of each pass first. Returns (milliseconds, top-10 ids) per pass."""
        count, names = len(self.q["vectors"]), list(passes)
        for name in names:
            for i in range(min(WARMUP, count)):
                passes[name](i)
        out: dict[str, tuple[list[float], list]] = {name: ([], []) for name in names}
        for i in range(count):
            shift = i % len(names)
            for name in names[shift:] + names[:shift]:
                began = time.perf_counter()
                found = passes[name](i)
                out[name][0].append((time.perf_counter() - began) * 1000)
                out[name][1].append(found)
        self.note(", ".join(f"{name} p50 {percentile(out[name][0], 50)} ms" for name in names) + f" ({count} queries)")
        return out

    def run(self) -> None:
        started = time.perf_counter()
        engine = self.cfg["engine"]
        if engine == "qdrant-edge":  # the engine's modules loaded before the baseline RSS is read
            import pipeline.storage.vectors.edge  # noqa: F401
        elif engine == "qdrant-local":
            import qdrant_client  # noqa: F401
        self.save("imported", rss_start_mib=vm_mib("VmRSS"))
        self.catalogue = Catalogue(self.cfg["dim"], self.cfg["seed"], self.cfg.get("photos", 1))
        self.q = self.catalogue.queries(self.cfg["products"], self.cfg["queries"])
        getattr(self, "run_" + engine.replace("qdrant-", ""))()
        self.save("done", child_s=round(time.perf_counter() - started, 1))

    def reopened(self, open_: Callable[[], object], where: Path) -> object:
        """Close has happened: free what the build left, reopen (timed), read RSS, reset the peak for the queries."""
        self.catalogue = None  # the sub-centres: build-time data only
        trim_heap()
        os.sync()
        allocated, apparent = disk_mib(where)
        began = time.perf_counter()
        handle = open_()
        reopen_s = time.perf_counter() - began
        self.save(
            "reopened",
            reopen_s=round(reopen_s, 3),
            rss_after_reopen_mib=vm_mib("VmRSS"),
            disk_mib=allocated,
            disk_apparent_mib=apparent,
            queries=len(self.q["vectors"]),
        )
        self.note(f"reopened in {reopen_s:.2f} s, RSS {self.row['rss_after_reopen_mib']} MiB")
        return handle

    def cold_reopen(self, open_: Callable[[], object]) -> None:
        """Opening from an empty page cache (as after a reboot), timed; measured last, so it changes no other figure.
        The timed reopen above is an app restart: it finds in the page cache what the build (or the last run) left."""
        if not drop_page_cache():
            self.note("cold reopen not measured: dropping the page cache needs root")
            return
        began = time.perf_counter()
        handle = open_()
        self.save("cold reopened", cold_reopen_s=round(time.perf_counter() - began, 3))
        self.note(f"cold reopen {self.row['cold_reopen_s']:.2f} s")
        handle.close()

    def time_warming(self, store) -> None:
        """The store reads what queries would read from disk ahead in the background after opening (where it fits
        in free memory); the queries start at once, as an app's would. When that finished, from the end of the
        reopen, is recorded when it does (``warmed_s``; absent: nothing was warmed)."""
        if store.warmed(0):
            return
        began = time.perf_counter()

        def wait() -> None:
            store.warmed()
            self.row["warmed_s"] = round(time.perf_counter() - began, 3)
            self.note(f"read ahead in the background for {self.row['warmed_s']:.2f} s after the reopen")

        threading.Thread(target=wait, daemon=True).start()

    def queried(self, results: dict, peak: float | None = None, rss: float | None = None) -> None:
        """Record the query measurements and the RSS after them (or the figures the caller read at the right time)."""
        if peak is None:
            peak = vm_mib("VmHWM") if self.peak_reset else None
        self.save("queried", **results, rss_peak_queries_mib=peak, rss_mib=rss if rss is not None else vm_mib("VmRSS"))

    def start_queries(self) -> None:
        self.peak_reset = reset_peak_rss()

    def truth(self) -> dict | None:
        path = self.cfg.get("truth")
        if path and Path(path).is_file():
            return json.loads(Path(path).read_text())
        return None

    # -- qdrant-edge --------------------------------------------------------------------------------------------------
    def run_edge(self) -> None:
        from pipeline.model_repo import ModelCard
        from pipeline.storage.vectors.edge import EdgeVectorStore
        from pipeline.storage.vectors.store import IndexTuning
        from pipeline.storage.vectors.types import IndexedProduct

        cfg = self.cfg
        tuning = dataclasses.replace(IndexTuning(), **cfg["tuning"])
        self.save(
            "tuning",
            storage=tuning.storage,
            hnsw_m=tuning.hnsw_m,
            hnsw_ef_construct=tuning.hnsw_ef_construct,
            hnsw_ef=tuning.ef_for(cfg["products"]),
            exact_below=tuning.exact_below,
            rescore=tuning.rescores(cfg["products"]) if tuning.quantized else None,
            compact_memory=tuning.compact_memory if tuning.quantized else None,
        )
        card = ModelCard(
            "bench-synthetic", "clip", "synthetic", "-", "fp32", cfg["dim"], 77, 224, {"synthetic": "0"},
            text_weight=TEXT_WEIGHT,
        )  # fmt: skip
        root = Path(cfg["data"])
        if cfg.get("reuse") and (root / "shard").is_dir():
            self.note(f"serving the kept build in {root} (--reuse): nothing is upserted or optimised")
            self.serve_edge(self.reopened(lambda: EdgeVectorStore(root, tuning), root), root, tuning)
            return
        store = EdgeVectorStore(root, tuning)
        store.ensure(card, reset=True)

        def upsert(start: int, d: dict) -> None:
            store.upsert(
                [
                    IndexedProduct(
                        product_id(start + i),
                        d["image"][i],
                        d["text"][i],
                        {
                            "category": category_name(d["category"][i]),
                            "brand": f"brand{int(d['brand'][i]):03d}",
                            "price": float(d["price"][i]),
                        },
                    )
                    for i in range(len(d["image"]))
                ]
            )

        with store.changing():
            self.fill(upsert)
        self.note("optimising (one blocking call: no progress until it returns) ...")
        began = time.perf_counter()
        store.optimize()
        self.save("optimised", optimize_s=round(time.perf_counter() - began, 3))
        self.note(f"optimised in {self.row['optimize_s']:.1f} s")
        store.close()
        store = None  # freed before the reopen (the upsert closure holds this cell)
        self.serve_edge(self.reopened(lambda: EdgeVectorStore(root, tuning), root), root, tuning)

    def serve_edge(self, store, root: Path, tuning) -> None:
        """The reopened store's figures: first query, the serving passes, RSS, recall against its exact search."""
        from pipeline.storage.vectors.edge import EdgeVectorStore
        from pipeline.storage.vectors.types import Filters

        self.time_warming(store)
        vectors, k = self.q["vectors"], TOP_K

        def ids(hits) -> list[int]:
            return [int(h.product_id[1:]) for h in hits]

        began = time.perf_counter()
        ids(store.search(vectors[0], "image", k))
        first_ms = (time.perf_counter() - began) * 1000
        stats = store.stats()
        self.save(
            "first query",
            first_query_ms=round(first_ms, 3),
            hnsw=stats["hnsw"],
            indexed_vectors=stats["indexed_vectors"],
            segments=stats["segments"],
        )
        rand = [Filters(categories=(category_name(x),)) for x in self.q["random_category"]]
        own = [Filters(categories=(category_name(x),)) for x in self.q["own_category"]]
        self.start_queries()

        def image(filters: list | None = None, exact: bool = False) -> Callable[[int], list[int]]:
            return lambda i: ids(store.search(vectors[i], "image", k, filters[i] if filters else None, exact))

        def text_(exact: bool = False) -> Callable[[int], list[int]]:
            return lambda i: ids(store.search_text(vectors[i], TEXT_WEIGHT, k, exact=exact))

        # What serving does first (its RSS is what a serving app holds); the exact references after it, because an
        # exact search reads every float32 original and would charge that to the serving figures.
        got = self.timed_passes(
            {
                "search": image(),
                "filtered": image(rand),
                "own category": image(own),
                "search_text": text_(),
            }
        )
        serving_peak = vm_mib("VmHWM") if self.peak_reset else None
        serving_rss = vm_mib("VmRSS")
        self.row.update(rss_anon_mib=vm_mib("RssAnon"), rss_file_mib=vm_mib("RssFile"))  # what VmRSS is made of
        refs = self.timed_passes(
            {
                "exact": image(exact=True),
                "filtered exact": image(rand, exact=True),
                "own category exact": image(own, exact=True),
                "search_text exact": text_(exact=True),
            }
        )
        (t_ann, ann), (t_f, f_ann), (t_own, o_ann), (t_text, text) = (got[n] for n in got)
        (t_exact, exact), (_, f_exact), (_, o_exact), (_, text_exact) = (refs[n] for n in refs)
        truth = self.truth()
        self.queried(
            {
                "query_ms_p50": percentile(t_ann, 50),
                "query_ms_p95": percentile(t_ann, 95),
                "exact_query_ms_p50": percentile(t_exact, 50),
                "filtered_query_ms_p50": percentile(t_f, 50),
                "filtered_query_ms_p95": percentile(t_f, 95),
                "own_category_query_ms_p50": percentile(t_own, 50),
                "text_query_ms_p50": percentile(t_text, 50),
                "text_query_ms_p95": percentile(t_text, 95),
                "recall_at_10": recall(ann, exact),
                "filtered_recall_at_10": recall(f_ann, f_exact),
                "own_category_recall_at_10": recall(o_ann, o_exact),
                "text_recall_at_10": recall(text, text_exact),
                "exact_agrees_numpy": recall(exact, truth["image"]) if truth else None,
                "mapped_resident_mib": round(store.stats()["mapped_resident_bytes"] / 2**20, 1),
                "rss_after_exact_mib": vm_mib("VmRSS"),
            },
            peak=serving_peak,
            rss=serving_rss,
        )
        store.close()
        if self.cfg.get("cold_reopen"):
            self.cold_reopen(lambda: EdgeVectorStore(root, tuning))

    # -- qdrant-client local mode -------------------------------------------------------------------------------------
    def run_local(self) -> None:
        from qdrant_client import QdrantClient, models

        warnings.simplefilter("ignore")  # local mode warns about its own size limits on every large collection
        cfg, name = self.cfg, "products"
        path = Path(cfg["data"])
        self.save("config", storage="local mode (SQLite + Python objects)")
        client = QdrantClient(path=str(path))
        params = models.VectorParams(size=cfg["dim"], distance=models.Distance.DOT)
        client.create_collection(name, vectors_config={"image": params, "text": params})

        def upsert(start: int, d: dict) -> None:
            points = [
                models.PointStruct(
                    id=start + i,
                    vector={"image": d["image"][i].tolist(), "text": d["text"][i].tolist()},
                    payload={
                        "product_id": product_id(start + i),
                        "category": category_name(d["category"][i]),
                        "brand": f"brand{int(d['brand'][i]):03d}",
                        "price": float(d["price"][i]),
                    },
                )
                for i in range(len(d["image"]))
            ]
            client.upsert(name, points)

        self.fill(upsert)
        client.close()
        del client

        def reopen() -> object:
            opened = QdrantClient(path=str(path))
            opened.count(name)
            return opened

        client = self.reopened(reopen, path)
        vectors, k = self.q["vectors"], TOP_K

        def category(cat: int):
            return models.Filter(
                must=[models.FieldCondition(key="category", match=models.MatchValue(value=category_name(cat)))]
            )

        def top(i: int, flt=None) -> list[int]:
            hits = client.query_points(name, query=vectors[i], using="image", limit=k, query_filter=flt).points
            return [int(h.id) for h in hits]

        rand = [category(x) for x in self.q["random_category"]]
        own = [category(x) for x in self.q["own_category"]]
        began = time.perf_counter()
        top(0)
        self.save("first query", first_query_ms=round((time.perf_counter() - began) * 1000, 3))
        self.start_queries()
        got = self.timed_passes(
            {"query_points": top, "filtered": lambda i: top(i, rand[i]), "own category": lambda i: top(i, own[i])}
        )
        (t_ann, ann), (t_f, f_ann), (t_own, o_ann) = got.values()
        truth = self.truth() or {}
        self.queried(
            {
                "query_ms_p50": percentile(t_ann, 50),
                "query_ms_p95": percentile(t_ann, 95),
                "exact_query_ms_p50": percentile(t_ann, 50),  # local mode only has brute force
                "filtered_query_ms_p50": percentile(t_f, 50),
                "filtered_query_ms_p95": percentile(t_f, 95),
                "own_category_query_ms_p50": percentile(t_own, 50),
                "recall_at_10": recall(ann, truth.get("image")),
                "filtered_recall_at_10": recall(f_ann, truth.get("filtered")),
                "own_category_recall_at_10": recall(o_ann, truth.get("own")),
                "exact_agrees_numpy": recall(ann, truth.get("image")),
            }
        )
        client.close()

    # -- numpy brute force --------------------------------------------------------------------------------------------
    def run_numpy(self) -> None:
        import numpy as np

        cfg, k = self.cfg, TOP_K
        folder = Path(cfg["data"])
        folder.mkdir(parents=True, exist_ok=True)
        matrix_file, category_file = folder / "image.npy", folder / "category.npy"
        self.save("config", storage="float32 matrix in RAM (.npy on disk)")
        n, dim, shots = cfg["products"], cfg["dim"], cfg.get("photos", 1)
        shape = (n, shots, dim) if shots > 1 else (n, dim)
        writing = {
            "matrix": np.lib.format.open_memmap(matrix_file, mode="w+", dtype=np.float32, shape=shape),
            "category": np.empty(n, dtype=np.int16),
        }

        def upsert(start: int, d: dict) -> None:
            end = start + len(d["image"])
            writing["matrix"][start:end] = d["image"]
            writing["category"][start:end] = d["category"]
            if end == n:  # the last batch: the write is done when it is on disk
                writing["matrix"].flush()
                np.save(category_file, writing["category"])

        self.fill(upsert)
        writing.clear()  # closes the memory map

        def reopen() -> tuple:
            loaded = np.load(matrix_file, mmap_mode=None)
            cats = np.load(category_file)
            rows = {int(x): np.flatnonzero(cats == x) for x in range(N_CATEGORIES)}  # a "payload index"
            return loaded, rows

        matrix, by_category = self.reopened(reopen, folder)
        vectors = self.q["vectors"]

        def brute(i: int, cat: int | None = None) -> list[int]:
            if cat is None:
                scores, rows = matrix @ vectors[i], None
            else:
                rows = by_category[int(cat)]
                scores = matrix[rows] @ vectors[i]
            if scores.ndim == 2:  # several photos: each product by its best
                scores = scores.max(axis=1)
            part = np.argpartition(-scores, k)[:k] if len(scores) > k else np.arange(len(scores))
            best = part[np.argsort(-scores[part], kind="stable")]
            return (best if rows is None else rows[best]).tolist()

        began = time.perf_counter()
        brute(0)
        self.save("first query", first_query_ms=round((time.perf_counter() - began) * 1000, 3))
        self.start_queries()
        rand, own = self.q["random_category"], self.q["own_category"]
        got = self.timed_passes(
            {"matrix @ q": brute, "filtered": lambda i: brute(i, rand[i]), "own category": lambda i: brute(i, own[i])}
        )
        (t_ann, ann), (t_f, f_ann), (t_own, o_ann) = got.values()
        if cfg.get("truth"):
            Path(cfg["truth"]).write_text(json.dumps({"image": ann, "filtered": f_ann, "own": o_ann}))
        self.queried(
            {
                "query_ms_p50": percentile(t_ann, 50),
                "query_ms_p95": percentile(t_ann, 95),
                "exact_query_ms_p50": percentile(t_ann, 50),
                "filtered_query_ms_p50": percentile(t_f, 50),
                "filtered_query_ms_p95": percentile(t_f, 95),
                "own_category_query_ms_p50": percentile(t_own, 50),
                "recall_at_10": 1.0,  # the exact answer, by construction
                "filtered_recall_at_10": 1.0,
                "own_category_recall_at_10": 1.0,
                "exact_agrees_numpy": 1.0,
            }
        )


def child_main(spec: str) -> int:
    cfg = json.loads(spec)
    child = Child(cfg)
    try:
        child.run()
    except BaseException as err:  # recorded for the parent, then the usual traceback and exit status
        child.save("failed", error=f"{type(err).__name__}: {err}"[:500])
        raise
    return 0


# -------------------------------------------------------------------------------------------------------------- parent
def memory_needed_mib(engine: str, n: int, dim: int, storage: str) -> float:
    """A floor on what the engine must hold in RAM (its vectors), to refuse rows that would swap or be
    killed for memory on a shared machine; the real figure is higher (graph, payload, Python objects)."""
    vectors = {"numpy": 1, "qdrant-local": 2, "qdrant-edge": 2}[engine]
    per_value = 4.0
    if engine == "qdrant-local":  # measured: 1.25 GiB for 20,000 x 512 x 2 values (Python objects, not float32)
        per_value = 60.0
    elif engine == "qdrant-edge":
        per_value = {"ram": 4.0, "int8": 1.0, "turbo8": 1.0, "disk": 0.0}.get(storage, 4.0)
    return n * dim * vectors * per_value / 2**20


def available_mib() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return None


def run_row(cfg: dict, limit_s: float) -> dict:
    """Run one child; stop it after ``limit_s``. Its stderr (progress) goes straight to ours."""
    result = Path(cfg["result"])
    label = f"{cfg['engine']} {cfg['products']:,} x {cfg['dim']}"
    cmd = [sys.executable, "-m", "bench.vector_scale", "--one", json.dumps(cfg)]
    began = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=c.REPO_ROOT, stdout=subprocess.DEVNULL)
    status = None
    while True:
        try:
            proc.wait(timeout=min(HEARTBEAT_S, max(0.1, limit_s - (time.monotonic() - began))))
            break
        except subprocess.TimeoutExpired:
            elapsed = time.monotonic() - began
            if elapsed >= limit_s:
                proc.kill()
                proc.wait()
                status = f"stopped after {limit_s:g} s (--max-seconds-per-row)"
                break
            phase = _read(result).get("phase", "starting")
            c.note(f"{label}: still running, {elapsed / 60:.1f} min, last finished phase: {phase}")
    row = _read(result)
    if status is None:
        if proc.returncode == 0 and row.get("phase") == "done":
            status = "ok"
        elif row.get("error"):
            status = f"failed in phase {row.get('phase')}: {row['error']}"
        elif proc.returncode < 0:
            status = f"killed by signal {-proc.returncode} (out of memory?) after phase {row.get('phase', 'start')}"
        else:
            status = f"exit {proc.returncode} after phase {row.get('phase', 'start')}"
    row.update(engine=cfg["engine"], products=cfg["products"], dim=cfg["dim"], status=status)
    row.setdefault("child_s", round(time.monotonic() - began, 1))
    return {key: row.get(key) for key in ROW_KEYS}


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _ints(text: str) -> list[int]:
    return [int(x.replace("_", "")) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    p = c.parser(__doc__)
    p.add_argument("--sizes", type=_ints, default=None, help="products per row (default 10000,100000,1000000)")
    p.add_argument("--dims", type=_ints, default=None, help="vector dimensions (default 512,1664)")
    p.add_argument("--engines", default=",".join(ENGINES), help=f"subset of {','.join(ENGINES)}")
    p.add_argument("--queries", type=int, default=None, help="queries per pass (default 200; 30 with --smoke)")
    p.add_argument("--local-mode-max", type=int, default=None, help="largest size for local mode (default 50000)")
    p.add_argument(
        "--max-seconds-per-row",
        type=float,
        default=None,
        help="stop a row's child after this long (default 14400: a 1M-product HNSW build alone may take 40 min)",
    )
    p.add_argument("--storage", choices=VECTOR_STORAGES, help="Edge: override IndexTuning.storage")
    p.add_argument("--oversampling", type=float, help="Edge: override IndexTuning.oversampling")
    p.add_argument("--rescore", choices=["on", "off"], help="Edge: override IndexTuning.rescore")
    p.add_argument("--compact-memory", choices=["pinned", "cold"], help="Edge: override IndexTuning.compact_memory")
    p.add_argument("--no-warm", action="store_true", help="Edge: IndexTuning.warm_after_open off (VECTOR_WARM=0)")
    p.add_argument("--no-fused-vector", action="store_true", help="Edge: IndexTuning.fused_vector off (VECTOR_FUSED=0)")
    p.add_argument("--hnsw-ef", type=int, help="Edge: override IndexTuning.hnsw_ef")
    p.add_argument("--m", type=int, help="Edge: override IndexTuning.hnsw_m")
    p.add_argument("--ef-construct", type=int, help="Edge: override IndexTuning.hnsw_ef_construct")
    p.add_argument("--exact-below", type=int, help="Edge: override IndexTuning.exact_below")
    p.add_argument(
        "--photos",
        type=int,
        default=1,
        help="photos per product (default 1): Edge holds them as rows scored by the best (MaxSim), numpy takes each "
        "product's best; local mode is skipped",
    )
    p.add_argument("--seed", type=int, default=0, help="data seed (default 0)")
    p.add_argument("--work", type=Path, default=None, help="where the data folders go (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the data folders")
    p.add_argument(
        "--reuse",
        type=Path,
        default=None,
        help="Edge: a folder kept by --keep (bench-vector-scale-*): rows built there are reopened and queried, not "
        "rebuilt (for search-time options: --rescore, --oversampling, --hnsw-ef, --no-warm); kept afterwards",
    )
    p.add_argument(
        "--cold-reopen",
        action="store_true",
        help="Edge: also time an open from an empty page cache, after the queries (needs root; empties the whole "
        "machine's page cache)",
    )
    p.add_argument(
        "--no-memory-check", action="store_true", help="run rows whose vectors alone exceed the available memory"
    )
    p.add_argument("--one", default=None, help=_hidden())
    args = p.parse_args(argv)
    if args.one:
        return child_main(args.one)

    sizes = args.sizes or ([2000, 5000] if args.smoke else [10_000, 100_000, 1_000_000])
    dims = args.dims or ([64] if args.smoke else [512, 1664])
    queries = args.queries or (30 if args.smoke else 200)
    local_max = args.local_mode_max if args.local_mode_max is not None else (2000 if args.smoke else 50_000)
    limit_s = args.max_seconds_per_row or (120.0 if args.smoke else 14_400.0)
    engines = [e for e in ENGINES if e in args.engines.split(",")]
    if args.smoke and args.exact_below is None:
        args.exact_below = SMOKE_EXACT_BELOW
    tuning = {
        key: value
        for key, value in {
            "storage": args.storage,
            "hnsw_ef": args.hnsw_ef,
            "hnsw_m": args.m,
            "hnsw_ef_construct": args.ef_construct,
            "exact_below": args.exact_below,
            "oversampling": args.oversampling,
            "compact_memory": args.compact_memory,
            "rescore": None if args.rescore is None else args.rescore == "on",
            "warm_after_open": False if args.no_warm else None,
            "fused_vector": False if args.no_fused_vector else None,
        }.items()
        if value is not None
    }
    from pipeline.storage.vectors.edge import edge_version
    from pipeline.storage.vectors.store import IndexTuning

    edge_tuning = dataclasses.replace(IndexTuning(), **tuning)
    info = c.machine()
    info["qdrant-edge-py"] = edge_version()

    if args.reuse:
        args.keep = True
    work = args.reuse or Path(tempfile.mkdtemp(prefix="bench-vector-scale-", dir=work_parent(args)))
    rows: list[dict] = []
    skipped: list[str] = []
    failed_at: dict[str, tuple[int, int]] = {}
    try:
        for dim in dims:
            for n in sorted(sizes):
                truth = work / f"truth-{n}-{dim}.json"
                for engine in engines:
                    why = skip_reason(engine, n, dim, local_max, failed_at, edge_tuning.storage, args.no_memory_check)
                    if engine == "qdrant-local" and args.photos > 1:
                        why = "one photo per product only (--photos 1)"
                    if why:
                        skipped.append(f"{engine} {n:,} x {dim}: {why}")
                        c.note(f"skipping {skipped[-1]}")
                        continue
                    data = work / f"{engine}-{n}-{dim}"
                    cfg = {
                        "engine": engine,
                        "products": n,
                        "dim": dim,
                        "queries": queries,
                        "seed": args.seed,
                        "photos": args.photos,
                        "data": str(data),
                        "result": str(work / f"{engine}-{n}-{dim}.result.json"),
                        "truth": str(truth),
                        "tuning": tuning,
                        "cold_reopen": args.cold_reopen,
                        "reuse": bool(args.reuse) and engine == "qdrant-edge",
                    }
                    c.note(f"{engine} {n:,} x {dim}: starting")
                    row = run_row(cfg, limit_s)
                    rows.append(row)
                    c.note(f"{engine} {n:,} x {dim}: {row['status']} ({row['child_s']} s)")
                    if row["status"] != "ok":
                        failed_at[engine] = (n, dim)
                    if not args.keep:
                        shutil.rmtree(data, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            c.note(f"data kept in {work}")

    table_rows = [[_shown(row[key]) for _, key in TABLE] for row in rows]
    payload = c.report(
        "vector_scale",
        info,
        f"Vector store at scale: {queries} queries per pass, top {TOP_K}; recall against each engine's exact search "
        "(local mode and numpy: against numpy)",
        [h for h, _ in TABLE],
        table_rows,
        engines=f"qdrant-edge-py {info['qdrant-edge-py']}, qdrant-client {info['qdrant-client']}, "
        f"numpy {info['numpy']}; Edge tuning: {edge_tuning}",
        data=f"{N_CENTRES} centres, {SUBS_PER_CENTRE} sub-centres each (sigma {SUB_SIGMA}), products sigma "
        f"{PRODUCT_SIGMA}, {args.photos} photo(s) per product (sigma {PHOTO_SIGMA}), text sigma {TEXT_SIGMA} around "
        f"the sub-centre, queries sigma {QUERY_SIGMA}; "
        f"{N_CATEGORIES} categories (filtered = a random category per query, own = the query product's); "
        f"seed {args.seed}",
        skipped="; ".join(skipped) if skipped else "none",
    )
    payload["table"] = {"headers": payload["headers"], "rows": payload["rows"]}
    payload["headers"] = ROW_KEYS
    payload["rows"] = rows
    payload["skipped_rows"] = skipped
    c.write_json(args.json, payload)
    return 0


def work_parent(args) -> Path | None:
    """``--work``; else, for ``--smoke``, /dev/shm when it has room: local mode commits (and fsyncs) every point, and a
    busy disk must not make a proof run slow; else the system's temp dir."""
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
        return args.work
    shm = Path("/dev/shm")
    if args.smoke and shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 512 * 2**20:
        return shm
    return None


def skip_reason(
    engine: str,
    n: int,
    dim: int,
    local_max: int,
    failed_at: dict[str, tuple[int, int]],
    storage: str,
    no_memory_check: bool,
) -> str | None:
    """Why a row is not run, or None: local mode above its limit, a size above one the engine did not survive, or
    vectors that alone would not fit in the memory available now."""
    if engine == "qdrant-local" and n > local_max:
        return (
            f"above --local-mode-max {local_max:,} (local mode keeps every point as Python objects and scans them "
            "in Python: ~6 GiB at 50,000 products)"
        )
    if engine in failed_at:
        fn, fd = failed_at[engine]
        if n >= fn and dim >= fd:
            return f"it did not survive {fn:,} x {fd}"
    need, free = memory_needed_mib(engine, n, dim, storage if engine == "qdrant-edge" else "ram"), available_mib()
    if not no_memory_check and free is not None and need > 0.9 * free:
        return f"its vectors alone need {need:,.0f} MiB, {free:,.0f} MiB available (--no-memory-check to try)"
    return None


def _shown(value: object) -> object:
    if value is None:
        return "-"
    if isinstance(value, float) and value >= 1000:
        return f"{value:,.0f}"
    return value


def _hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    raise SystemExit(main())
