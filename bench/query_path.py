"""Query path: what the pipeline adds around the model for one text or photo query (issue 6, item 4).

On a random-weight ViT-B/32 CLIP (the real shape) and a catalogue of 10,000 products (synthetic unit vectors upserted
straight into the vector index, a product's text vector correlated with its photo's, with matching MongoDB
documents), measured in one process, interleaved round by round
(text queries first, then photo queries):

- text query, cache miss: ``pipe.matcher.match_text`` (a new text every round, so neither cache level hits)
  / the bare text tower (``encoder.backend.run`` on input tokenized beforehand) -- target <= 1.25;
- image query, cache miss: ``pipe.matcher.match_image(path)`` on a new photo every round
  / (read + decode + preprocess + bare image tower) -- target <= 1.15;
- cache hit / cache miss, for text and image queries -- target <= 0.05.

Also prints where the end-to-end time goes (the matcher's own per-stage timings). ``--profile`` runs extra cache
misses under pyinstrument (if installed) and prints the call tree.

``--without STAGES`` is a probe, not the product: the same measurement with stages of a miss left out (``metadata``:
no MongoDB lookup, the products come from the index's payload; ``cache-writes``: neither cache level is written;
``events``: no event is logged; ``hybrid``: text queries dense only, ``HYBRID_SEARCH=0``). It tells what a stage costs
inside the path, where each runs slower than it does alone in a loop (bench/README.md, 2026-12-06).

Run: ``.venv/bin/python -m bench.query_path [--repeats 40] [--products 10000] [--json OUT] [--profile]
[--no-fused-vector] [--without metadata,cache-writes,events,hybrid]``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as c
from pipeline import model_repo as mr
from pipeline.inputs import load_image
from pipeline.service import Pipeline
from pipeline.settings import Settings
from pipeline.storage.vectors import IndexedProduct
from pipeline.storage.vectors.lexical import lexical_text

TARGETS = {"text": 1.25, "image": 1.15, "hit": 0.05}
BLOCK = 3  # calls in a row per step and round; the round's sample is their median
REST_S = 0.15  # idle time before each "rested" call (OpenBLAS threads stop spinning well before)
COLORS = ["black", "white", "red", "navy", "olive", "beige", "grey", "pink", "teal", "brown"]
THINGS = ["cotton t-shirt", "running shoes", "leather wallet", "denim jacket", "wool scarf", "summer dress"]
WHO = ["men", "women", "kids", "girls", "boys"]
CATEGORIES = ["Apparel", "Footwear", "Accessories", "Personal Care"]
STAGES = ("metadata", "cache-writes", "events", "hybrid")  # what --without may leave out


def fill_catalogue(pipe: Pipeline, n: int, seed: int = 0, batch: int = 500) -> float:
    """``n`` products with synthetic unit vectors: Qdrant points and MongoDB documents. Returns the seconds it took."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    card = pipe.card
    pipe.index.ensure(card, reset=True)
    dim = card.embedding_dim
    with pipe.index.changing():
        _fill(pipe, rng, n, dim, batch)
    pipe.index.optimize()  # as after an ingest
    return time.perf_counter() - started


def _fill(pipe: Pipeline, rng, n: int, dim: int, batch: int) -> None:
    for start in range(0, n, batch):
        size = min(batch, n - start)
        images = c.unit_vectors(rng, size, dim)
        # A product's text vector agrees with its photo's (cosine ~0.6), as CLIP's do; with independent random vectors
        # the text-query fusion must read far deeper lists (its worst case: bench/README.md).
        texts = images + 0.75 * c.unit_vectors(rng, size, dim)
        texts /= np.linalg.norm(texts, axis=1, keepdims=True)
        docs, points = [], []
        for i in range(size):
            pid = f"p{start + i:06d}"
            fields = {
                "id": pid,
                "name": f"{COLORS[i % 10]} {THINGS[i % 6]} {pid}",
                "brand": f"brand{i % 37}",
                "category": CATEGORIES[i % 4],
                "color": COLORS[i % 10],
                "price": float(5 + (i * 7) % 200),
                "image_file": f"images/{pid}.jpg",
            }
            docs.append({**fields, "embedded_text": fields["name"]})
            payload = {k: fields[k] for k in ("name", "brand", "category", "color", "price", "image_file")}
            # The words BM25 indexes, as an ingest writes them: hybrid text search runs its lexical side for real.
            words = lexical_text(fields)
            points.append(IndexedProduct(pid, images[i], texts[i], {**payload, "content_hash": pid}, words))
        pipe.store.upsert_many(docs)
        pipe.index.upsert(points)


def query_texts(n: int) -> list[str]:
    """``n`` different, realistic-length descriptions (each one is a cache miss the first time)."""
    return [f"{COLORS[i % 10]} {THINGS[(i // 10) % 6]} for {WHO[(i // 60) % 5]}, size {i}" for i in range(n)]


def main(argv: list[str] | None = None) -> int:
    p = c.parser(__doc__)
    p.add_argument("--products", type=int, default=None, help="catalogue size (default 10,000; 100 with --smoke)")
    p.add_argument("--profile", action="store_true", help="profile extra cache misses with pyinstrument")
    p.add_argument(
        "--no-fused-vector",
        action="store_true",
        help="a collection without stored fused vectors (VECTOR_FUSED=0): text queries fused at query time",
    )
    p.add_argument(
        "--without",
        type=stages_left_out,
        default=(),
        metavar="STAGES",
        help=f"a probe: leave these stages out of every query (comma-separated: {', '.join(STAGES)})",
    )
    args = p.parse_args(argv)
    probe = args.without
    rounds = c.repeats(args, 40)
    rest_s = 0.01 if args.smoke else REST_S
    warmup = 1 if args.smoke else 3
    n_products = args.products or (100 if args.smoke else 10_000)
    repo = c.model_repo(args)
    info = c.machine()

    need = (rounds + warmup) * BLOCK * 2 + 1  # every miss (back to back and rested) needs a query of its own
    texts = query_texts(need)
    photos = c.query_photos(need)
    if len(photos) < need:
        raise SystemExit(f"only {len(photos)} query photos for {rounds} rounds; use --repeats {len(photos) // 6 - 3}")

    with tempfile.TemporaryDirectory(prefix="bench-query-") as tmp:
        settings = Settings(
            data_dir=Path(tmp) / "data",
            model_repository=repo,
            vector_fused=not args.no_fused_vector,
            hybrid_search="hybrid" not in probe,
        )
        with Pipeline(settings) as pipe:
            encoder, matcher = pipe.encoder, pipe.matcher
            backend, pre = encoder.backend, encoder.preprocessor
            c.note(f"filling the index with {n_products} products (synthetic vectors) ...")
            fill_s = fill_catalogue(pipe, n_products)
            c.note(f"... {fill_s:.1f} s")
            tokens = [pre.tokenize([t]) for t in texts[:50]]  # the baseline's input, prepared outside the timing
            hit_text, hit_photo = texts[-1], photos[-1]
            matcher.match_text(hit_text)
            matcher.match_image(hit_photo)
            stages: dict[str, list[dict]] = {"text": [], "image": []}
            fresh_texts, fresh_photos = iter(texts[:-1]), iter(photos[:-1])
            count = {"tokens": 0, "photo": 0}

            def rested(fn):
                """The same call after REST_S of idle time (not timed): nothing left running from the call before."""

                def run(r: int) -> float:
                    time.sleep(rest_s)
                    return c.timed(lambda: fn(r, record=False))

                return run

            def text_miss(r: int, record: bool = True) -> None:
                result = matcher.match_text(next(fresh_texts))
                assert not result.cache_hit
                if record:
                    stages["text"].append(result.timings_ms)

            def image_miss(r: int, record: bool = True) -> None:
                result = matcher.match_image(next(fresh_photos))
                assert not result.cache_hit
                if record:
                    stages["image"].append(result.timings_ms)

            def text_tower(r: int, record: bool = True) -> None:
                count["tokens"] += 1
                backend.run(mr.TEXT_MODEL, tokens[count["tokens"] % len(tokens)])

            def image_bare(r: int, record: bool = True) -> None:
                count["photo"] += 1
                pixels = pre.pixels([load_image(photos[count["photo"] % (len(photos) - 1)])])
                backend.run(mr.VISUAL_MODEL, {mr.VISUAL_INPUT: pixels})

            def text_hit(r: int) -> None:
                assert matcher.match_text(hit_text).cache_hit

            def image_hit(r: int) -> None:
                assert matcher.match_image(hit_photo).cache_hit

            # Text queries first, then photo queries: alternating the two towers call after call would also measure
            # onnxruntime's idle thread pool spinning against the other one (see README). Each step runs BLOCK times
            # in a row per round (median kept): back to back, as queries arrive on a busy server, where a call pays
            # for what the call before left running (see README: OpenBLAS threads spinning after the vector search).
            # The "rested" steps wait REST_S before each call: a lone user's query.
            c.note(f"measuring {rounds} interleaved rounds of text queries, then of photo queries ...")
            samples = c.Samples()
            with left_out(pipe, probe):
                for kind, miss, bare, hit in (
                    ("text", text_miss, text_tower, text_hit),
                    ("image", image_miss, image_bare, image_hit),
                ):
                    steps = {
                        f"{kind}_miss": miss,
                        f"{kind}_bare": bare,
                        f"{kind}_hit": hit,
                        f"{kind}_miss_rested": rested(miss),
                        f"{kind}_bare_rested": rested(bare),
                    }
                    if "cache-writes" in probe:  # nothing is cached, so nothing can hit
                        del steps[f"{kind}_hit"]
                    c.interleave(steps, rounds, warmup=warmup, samples=samples, block=BLOCK)
            for kind in stages:
                stages[kind] = stages[kind][warmup * BLOCK :]
            pieces = measure_pieces(pipe, texts, photos, rounds)
            threads = getattr(backend, "threads", 0) or "onnxruntime default"
            if args.profile:
                profile(pipe, rounds)

    ms = {name: samples.median_ms(name) for name in samples.times}

    def verdict(value: float, target: float) -> str:
        return "probe" if probe else c.verdict(value, target, True)

    rows = []
    for kind, label, target in (
        ("text", "text query, cache miss: end-to-end / bare text tower", TARGETS["text"]),
        ("image", "image query, cache miss: end-to-end / (decode + preprocess + bare image tower)", TARGETS["image"]),
    ):
        for suffix, when in (("", "back to back"), ("_rested", f"after {rest_s * 1000:.0f} ms idle")):
            ratio = samples.ratio(f"{kind}_miss{suffix}", f"{kind}_bare{suffix}")
            rows.append([
                f"{label} ({when})", ms[f"{kind}_miss{suffix}"], ms[f"{kind}_bare{suffix}"], ratio.median,
                ratio.spread(), verdict(ratio.median, target),
            ])  # fmt: skip
    for kind in ("text", "image"):
        if f"{kind}_hit" not in samples.times:
            continue
        ratio = samples.ratio(f"{kind}_hit", f"{kind}_miss")
        rows.append([
            f"{kind} query: cache hit / cache miss (back to back)", ms[f"{kind}_hit"], ms[f"{kind}_miss"],
            ratio.median, ratio.spread(), verdict(ratio.median, TARGETS["hit"]),
        ])  # fmt: skip
    breakdown = stage_table(stages, pieces)
    title = f"Query path, {n_products} products, {rounds} rounds (median ms; ratio = median of per-round ratios)"
    if probe:
        title += f"; PROBE, not the product: without {', '.join(probe)}"
    payload = c.report(
        "query_path",
        info,
        title,
        ["measure", "subject ms", "baseline ms", "ratio", "p25-p75", "target"],
        rows,
        model=str(repo),
        onnxruntime_threads=str(threads),
        index_fill=f"{n_products} products upserted in {fill_s:.1f} s (Qdrant Edge + MongoDB)",
        without=list(probe),
    )
    print("\nWhere a cache miss spends its time (median ms; the matcher's own timings, plus pieces timed alone)")
    print(c.table(["stage", "text query", "image query"], breakdown))
    payload["breakdown"] = breakdown
    c.write_json(args.json, payload)
    return 0


def stages_left_out(text: str) -> tuple[str, ...]:
    """``--without``'s value: stage names from ``STAGES``, comma-separated."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown stage {unknown[0]!r}; choose from {', '.join(STAGES)}")
    return names


@contextlib.contextmanager
def left_out(pipe: Pipeline, stages: tuple[str, ...]) -> Iterator[None]:
    """The probe: the pipeline's own parts answer with these stages skipped, until the block ends. ``hybrid`` is a
    setting (``HYBRID_SEARCH=0``) and made when the pipeline is."""
    skipped = {
        "metadata": (pipe.store, "get_many", lambda ids: {}),  # MongoDB holds none: the matcher uses the payload
        "cache-writes": (pipe.cache, "set", lambda key, value: None),
        "events": (pipe.events, "write", lambda *args, **fields: None),
    }
    replaced = [skipped[name] for name in stages if name in skipped]
    for part, method, stand_in in replaced:
        setattr(part, method, stand_in)
    try:
        yield
    finally:
        for part, method, _ in replaced:
            delattr(part, method)  # the class's own method again


def measure_pieces(pipe: Pipeline, texts: list[str], photos: list[Path], rounds: int) -> dict[str, float]:
    """The stages timed alone (median ms): tokenizer, decode, pixels, searches, MongoDB lookup, cache round trip."""
    pre, index, store, cache = pipe.encoder.preprocessor, pipe.index, pipe.store, pipe.cache
    rng = np.random.default_rng(1)
    dim = pipe.card.embedding_dim
    w, rrf_k = pipe.card.text_weight, pipe.settings.rrf_k
    q = c.unit_vectors(rng, rounds, dim)
    hits = index.search(q[0], "image", 10)
    ids = [h.product_id for h in hits]
    images = [load_image(p) for p in photos[:rounds]]
    samples = c.interleave(
        {
            "tokenize": lambda r: pre.tokenize([texts[r]]),
            "decode": lambda r: load_image(photos[r]),
            "pixels": lambda r: pre.pixels([images[r]]),
            "search_image": lambda r: index.search(q[r], "image", 10),
            "search_text": lambda r: index.search_text(q[r], w, 10),
            "search_hybrid": lambda r: index.search_hybrid(q[r], w, texts[r], 10, None, rrf_k),
            "mongo": lambda r: store.get_many(ids),
            "cache_get": lambda r: cache.get(f"bench-missing-{r}"),
            "cache_set": lambda r: cache.set(f"bench-{r}", q[r]),
        },
        rounds,
    )
    return {name: samples.median_ms(name) for name in samples.times}


def stage_table(stages: dict[str, list[dict]], pieces: dict[str, float]) -> list[list]:
    def med(kind: str, stage: str) -> float | str:
        values = [t[stage] for t in stages[kind] if stage in t]
        return statistics.median(values) if values else "-"

    rows = [
        ["validate (clean text / read + decode photo)", med("text", "validate"), med("image", "validate")],
        ["embed (query cache get + preprocess + tower + cache set)", med("text", "embed"), med("image", "embed")],
        ["cache (collection metadata, result cache get)", med("text", "cache"), med("image", "cache")],
        ["search (Qdrant Edge)", med("text", "search"), med("image", "search")],
        ["metadata (MongoDB find $in)", med("text", "metadata"), med("image", "metadata")],
        ["total (matcher's clock)", med("text", "total"), med("image", "total")],
        ["  alone: tokenize / decode", pieces["tokenize"], pieces["decode"]],
        ["  alone: - / preprocess (pixels)", "-", pieces["pixels"]],
        ["  alone: Qdrant search (text: fused text + photo / image)", pieces["search_text"], pieces["search_image"]],
        ["  alone: hybrid text search (fused ranking + BM25, as the matcher runs it)", pieces["search_hybrid"], "-"],
        ["  alone: MongoDB get_many(10 ids)", pieces["mongo"], pieces["mongo"]],
        ["  alone: diskcache get (miss) + set", pieces["cache_get"] + pieces["cache_set"], "same"],
    ]
    return rows


def profile(pipe: Pipeline, rounds: int) -> None:
    try:
        from pyinstrument import Profiler
    except ImportError:
        c.note("pyinstrument is not installed; --profile skipped")
        return
    pipe.cache.clear()  # every query below is a cache miss again
    texts = [f"profiled query {i} {t}" for i, t in enumerate(query_texts(rounds))]
    photos = c.query_photos(rounds)
    for kind, run in (
        ("text", lambda: [pipe.matcher.match_text(t) for t in texts]),
        ("image", lambda: [pipe.matcher.match_image(ph) for ph in photos]),
    ):
        profiler = Profiler(interval=0.0005)
        profiler.start()
        run()
        profiler.stop()
        print(f"\npyinstrument: {kind} cache misses")
        print(profiler.output_text(unicode=True, color=False, show_all=False))


if __name__ == "__main__":
    raise SystemExit(main())
