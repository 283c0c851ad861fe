"""Ingestion speed: the pipeline's ``ingest`` against the bare batched image tower (issue 6, item 4).

On a random-weight ViT-B/32 CLIP (the real shape) and the fashion catalogue (1,000 products with photos), in one
process, interleaved round by round:

- subject: ``pipeline.ingestion.ingest.ingest(pipe, catalog)`` into a fresh temporary store (new data folder: its own
  MongoDB-protocol server, Qdrant Edge on disk, cache), products/s;
- baseline: the bare image tower, ``encoder.encode_pixels`` on the same photos already preprocessed, in batches of the
  ingest batch size (``INGEST_BATCH_SIZE``, 32), images/s -- target: ingest / baseline >= 0.8.

Ingestion also runs the text tower on every product's text, so the table also shows the bare text tower (pre-tokenized
batches grouped by padded length like the pipeline does), decode + preprocess alone, and ingest / (image + text towers),
which is the part of the gap that is not the model. The pipeline's encoder is warmed before the clock starts; MongoDB
and Qdrant start before it too.

``--photos-from-urls`` adds a third subject: the same catalogue with every photo named by URL, served by a local HTTP
server (``http.server`` on 127.0.0.1, ``ALLOW_PRIVATE_PHOTO_URLS=1``) that waits ``URL_DELAY_S`` (50 ms) before each
answer, downloaded during the ingest into a fresh store each round -- target: from URLs / from local files >= 0.9.

Run: ``.venv/bin/python -m bench.ingest_speed [--products 1000] [--repeats 3] [--photos-from-urls] [--json OUT]``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as c
from pipeline import model_repo as mr
from pipeline.batches import chunks
from pipeline.ingestion.catalog_reader import read_catalog
from pipeline.ingestion.embedding import PhotoLimits, decode_batch
from pipeline.ingestion.ingest import ingest
from pipeline.service import Pipeline
from pipeline.settings import Settings

TARGET = 0.8
URL_TARGET = 0.9
URL_DELAY_S = 0.05


def photo_server(images: Path):
    """A local HTTP server for the catalogue's photos, 50 ms late on every answer (a shop's CDN is not instant)."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Slow(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(URL_DELAY_S)
            super().do_GET()

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Slow, directory=str(images)))
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def url_catalogue(catalog: Path, tmp: Path, port: int) -> Path:
    """The catalogue with each photo named by its URL on the local server."""
    path = tmp / "catalog-urls.jsonl"
    rows = [json.loads(line) for line in catalog.read_text().splitlines() if line.strip()]
    for row in rows:
        row["image_path"] = f"http://127.0.0.1:{port}/{Path(row['image_path']).name}"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def catalogue(limit: int | None, tmp: Path) -> tuple[Path, Path]:
    """The fashion catalogue, or its first ``limit`` rows in a temporary file (photos looked up in the original)."""
    source = c.SHARED_DATA / "fashion" / "catalog.jsonl"
    if not source.is_file():
        raise SystemExit(f"{source} is missing (set SHARED_DATA to the shared data folder)")
    images = source.parent / "images"
    lines = [line for line in source.read_text().splitlines() if line.strip()]
    if limit is None or limit >= len(lines):
        return source, images
    path = tmp / "catalog.jsonl"
    path.write_text("\n".join(lines[:limit]) + "\n")
    return path, images


def main(argv: list[str] | None = None) -> int:
    p = c.parser(__doc__)
    p.add_argument("--products", type=int, default=None, help="first N products of the catalogue (default all 1,000)")
    p.add_argument("--profile", action="store_true", help="one more ingest under pyinstrument (main thread)")
    p.add_argument(
        "--photos-from-urls", action="store_true", help="also ingest with every photo from a local HTTP server (+50 ms)"
    )
    args = p.parse_args(argv)
    rounds = c.repeats(args, 3)
    limit = args.products or (20 if args.smoke else None)
    repo = c.model_repo(args)
    info = c.machine()

    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp_name:
        tmp = Path(tmp_name)
        catalog, images_dir = catalogue(limit, tmp)
        rows = read_catalog(catalog, images_dir)
        products = rows.products
        n = len(products)
        batch = Settings().ingest_batch_size

        # The baseline's input, prepared once outside the clock: preprocessed photos and tokenized texts per batch.
        base = Pipeline(Settings(data_dir=tmp / "baseline", model_repository=repo))
        encoder = base.encoder
        pre = encoder.preprocessor
        c.note(f"preprocessing {n} photos for the baseline ...")
        started = time.perf_counter()
        pixel_batches = [decode_batch(chunk, pre, PhotoLimits(), None).pixels for chunk in chunks(products, batch)]
        decode_s = time.perf_counter() - started
        # grouped by padded length within each ingest batch, as Encoder.encode_texts does
        token_batches = [
            batch_tokens
            for chunk in chunks(products, batch)
            for _index, batch_tokens in pre.tokenize_groups([x.text for x in chunk])
        ]
        encoder.encode_pixels(pixel_batches[0][:2])
        encoder.backend.run(mr.TEXT_MODEL, {k: v[:2] for k, v in token_batches[0].items()})

        ingest_reports: list[dict] = []

        def image_tower(_r: int) -> None:
            for pixels in pixel_batches:
                encoder.encode_pixels(pixels)

        def text_tower(_r: int) -> None:
            for tokens in token_batches:
                encoder.backend.run(mr.TEXT_MODEL, tokens)

        server = photo_server(images_dir) if args.photos_from_urls else None
        from_urls = url_catalogue(catalog, tmp, server.server_address[1]) if server else None
        url_reports: list[dict] = []

        def run_ingest(r: int, urls: bool = False) -> None:
            # A fresh store each round; everything started and warmed before the clock (see the docstring).
            folder = tmp / f"round{r}{'-urls' if urls else ''}"
            pipe = Pipeline(Settings(data_dir=folder, model_repository=repo, allow_private_photo_urls=urls))
            try:
                pipe.store.count()
                pipe.events.write("bench-warmup")
                pipe.encoder.encode_pixels(pixel_batches[0][:2])
                pipe.encoder.encode_texts(["warm up"])
                started = time.perf_counter()
                report = ingest(pipe, from_urls if urls else catalog, images_dir=images_dir, progress=False)
                seconds = time.perf_counter() - started
                if report.added != n or report.bad or report.failed_photos or report.photos != n:
                    problems = [*report.bad, *report.failed_photos][:3]
                    raise SystemExit(f"ingest added {report.added} of {n} products, {report.photos} photos: {problems}")
                (url_reports if urls else ingest_reports).append({"round": r, "seconds": seconds, **report.to_json()})
            finally:
                pipe.close()

        # The ingest step is timed inside (pipeline start-up excluded); the wrapper's time is replaced below.
        c.note(f"measuring {rounds} interleaved rounds (ingest of {n} products, image tower, text tower) ...")
        subjects = {"ingest": run_ingest, "image_tower": image_tower, "text_tower": text_tower}
        if server:
            subjects["ingest_urls"] = lambda r: run_ingest(r, urls=True)
        samples = c.interleave(subjects, rounds, warmup=0)
        samples.times["ingest"] = [rep["seconds"] for rep in ingest_reports]
        if server:
            samples.times["ingest_urls"] = [rep["seconds"] for rep in url_reports]
            server.shutdown()
        if args.profile:
            profile(tmp, repo, catalog, images_dir)
        threads = getattr(encoder.backend, "threads", 0) or "onnxruntime default"
        base.close()

    per_round = {name: [n / s for s in values] for name, values in samples.times.items()}
    both = [1 / (1 / i + 1 / t) for i, t in zip(per_round["image_tower"], per_round["text_tower"], strict=True)]
    ratio = c.Ratio.of([a / b for a, b in zip(per_round["ingest"], per_round["image_tower"], strict=True)])
    ratio_both = c.Ratio.of([a / b for a, b in zip(per_round["ingest"], both, strict=True)])
    rate = {name: float(np.median(values)) for name, values in per_round.items()}
    rate["both"] = float(np.median(both))
    rows = [
        ["ingest (pipeline, fresh store)", rate["ingest"], "-", "-", ""],
        [f"bare image tower, batches of {batch}", rate["image_tower"], "-", "-", ""],
        [f"bare text tower, batches of {batch} (by padded length)", rate["text_tower"], "-", "-", ""],
        ["image + text towers (sequential)", rate["both"], "-", "-", ""],
        ["decode + preprocess alone (1 thread, not interleaved)", n / decode_s, "-", "-", ""],
        ["ingest / bare image tower", "", ratio.median, ratio.spread(), c.verdict(ratio.median, TARGET, False)],
        ["ingest / (image + text towers)", "", ratio_both.median, ratio_both.spread(), "(the non-model overhead)"],
    ]
    if "ingest_urls" in per_round:
        urls = c.Ratio.of([a / b for a, b in zip(per_round["ingest_urls"], per_round["ingest"], strict=True)])
        rows.insert(
            1, [f"ingest, photos from URLs (+{URL_DELAY_S * 1000:.0f} ms each)", rate["ingest_urls"], "-", "-", ""]
        )
        rows.append(
            ["from URLs / from local files", "", urls.median, urls.spread(), c.verdict(urls.median, URL_TARGET, False)]
        )
    payload = c.report(
        "ingest_speed",
        info,
        f"Ingestion, {n} products of {catalog.name}, {rounds} rounds (products/s, median; ratio = median per round)",
        ["measure", "per s", "ratio", "p25-p75", "target"],
        rows,
        model=str(repo),
        onnxruntime_threads=str(threads),
        batch_size=str(batch),
    )
    payload["ingest_reports"] = ingest_reports
    payload["url_ingest_reports"] = url_reports
    payload["rates_per_round"] = per_round
    c.write_json(args.json, payload)
    if args.smoke:
        print(json.dumps({"ingest_seconds": [round(r["seconds"], 3) for r in ingest_reports]}))
    return 0


def profile(tmp: Path, repo: Path, catalog: Path, images_dir: Path) -> None:
    try:
        from pyinstrument import Profiler
    except ImportError:
        c.note("pyinstrument is not installed; --profile skipped")
        return
    with Pipeline(Settings(data_dir=tmp / "profiled", model_repository=repo)) as pipe:
        pipe.store.count()
        pipe.encoder.encode_texts(["warm up"])
        profiler = Profiler(interval=0.001)
        profiler.start()
        ingest(pipe, catalog, images_dir=images_dir, progress=False)
        profiler.stop()
    print("\npyinstrument: one ingest (main thread; decoding runs in 2 worker threads beside it)")
    print(profiler.output_text(unicode=True, color=False))


if __name__ == "__main__":
    raise SystemExit(main())
