"""Concurrent queries batched into the model (``pipeline.inference.batcher``): what it buys, and which window.

``python -m bench.batching [--smoke] [--clients 16] [--windows 0,1,2,5] [--model-repo REPO] [--json OUT]``

One process, the app's encoder on the model repository (default: a random-weight CLIP of the real ViT-B/32 shape),
interleaved rounds. Each round, for texts and for photos:

- ``--clients`` threads send fresh queries one after another (the encoder has no cache), each its own: through the
  encoder without the batcher (every query its own run, as before), and through the batcher at each window;
- the bare tower at batch ``--clients`` on the same texts (tokenised) / the same photos (decoded, preprocessed, then
  the tower: what a query costs apart from the search);
- a lone query (one client) with and without the batcher: the cost of the batcher to a visitor alone.

Queries/s and the ratio to the bare batched tower; the window with the best ratio is the one to choose.
"""

from __future__ import annotations

import io
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from bench import _common as c

REPO_ROOT = Path(__file__).resolve().parents[1]
FASHION = REPO_ROOT.parent / "shared" / "data" / "fashion"


def _texts(n: int) -> list[str]:
    import json

    names = [json.loads(line)["name"] for line in (FASHION / "catalog.jsonl").read_text().splitlines()]
    return [f"{names[i % len(names)]} {i}" for i in range(n)]


def _clients(n: int, queries: list, ask) -> float:
    """Seconds for ``n`` threads to send ``queries`` (each thread its share, one after another)."""
    import time

    shares = [queries[i::n] for i in range(n)]
    barrier = threading.Barrier(n + 1)

    def client(share):
        barrier.wait()
        for q in share:
            ask(q)

    with ThreadPoolExecutor(n) as pool:
        jobs = [pool.submit(client, s) for s in shares]
        barrier.wait()
        start = time.perf_counter()
        for job in jobs:
            job.result()
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = c.parser(__doc__)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--windows", default="0,1,2,5", help="batch windows to try, ms")
    args = p.parse_args(argv)
    rounds = c.repeats(args, 5)
    repo = c.model_repo(args)
    info = c.machine()
    from pipeline import model_repo as mr
    from pipeline.inference.batcher import BatchingBackend
    from pipeline.inference.ort_backend import OrtBackend
    from pipeline.inputs import load_image
    from pipeline.query.encoder import Encoder
    from pipeline.query.preprocess import Preprocessor

    card = mr.ModelCard.load(repo)
    pre = Preprocessor(repo, card)
    inner = OrtBackend(repo)
    inner.check(card)
    plain = Encoder(card, pre, inner)
    windows = [float(w) for w in args.windows.split(",") if w.strip()]
    batched = {w: Encoder(card, pre, BatchingBackend(inner, w / 1000, args.clients)) for w in windows}
    n = args.clients * (2 if args.smoke else 4)
    texts = _texts(n * (rounds + 1) * 4)
    photos = [p.read_bytes() for p in c.query_photos(n)]
    counter = iter(range(10**9))

    def fresh(k: int) -> list[str]:  # never the same text twice
        start = next(counter) * k % (len(texts) - k)
        return texts[start : start + k]

    def photo_query(encoder):
        return lambda data: encoder.encode_images([load_image(data)])

    steps = {
        "text, each query alone": lambda r: _clients(args.clients, fresh(n), lambda t: plain.encode_texts([t])),
        "photo, each query alone": lambda r: _clients(args.clients, photos, photo_query(plain)),
        "bare text tower, batch": lambda r: _bare_text(plain, fresh(n), args.clients),
        "bare photo: decode + preprocess + tower, batch": lambda r: _bare_photos(plain, photos, args.clients),
        "lone text query, alone": lambda r: _clients(1, fresh(8), lambda t: plain.encode_texts([t])),
        "lone text query, batcher": lambda r: _clients(1, fresh(8), lambda t: batched[windows[-1]].encode_texts([t])),
    }
    for w, enc in batched.items():
        steps[f"text, batched {w:g} ms"] = lambda r, enc=enc: _clients(
            args.clients, fresh(n), lambda t: enc.encode_texts([t])
        )
        steps[f"photo, batched {w:g} ms"] = lambda r, enc=enc: _clients(args.clients, photos, photo_query(enc))
    c.note(f"{len(steps)} steps, {rounds} interleaved rounds, {args.clients} clients, {n} queries a step")
    samples = c.interleave(steps, rounds)
    rate = lambda name, count: count / (samples.median_ms(name) / 1000)  # noqa: E731
    rows = []
    for kind, base in (("text", "bare text tower, batch"), ("photo", "bare photo: decode + preprocess + tower, batch")):
        rows.append([f"{kind}: bare, batch {args.clients}", f"{rate(base, n):.1f}", "1", "-"])
        for name in [f"{kind}, each query alone", *(f"{kind}, batched {w:g} ms" for w in windows)]:
            ratio = samples.ratio(base, name)  # time of the bare run over the subject's: a throughput ratio
            rows.append([name, f"{rate(name, n):.1f}", f"{ratio.median:.3f}", ratio.spread()])
    lone = samples.ratio("lone text query, batcher", "lone text query, alone")
    rows.append(["lone text query: batcher / alone (time)", "-", f"{lone.median:.3f}", lone.spread()])
    payload = c.report(
        "batching",
        info,
        f"Concurrent queries batched into the model: {args.clients} clients, fresh queries, model {card.label}",
        ["measure", "queries/s", "ratio to the bare batched tower", "p25-p75"],
        rows,
    )
    c.write_json(args.json, payload)
    return 0


def _bare_text(encoder, texts: list[str], batch: int) -> float:
    """Seconds of the text tower alone, ``batch`` texts a run, tokenised beforehand."""
    import time

    groups = [encoder.preprocessor.tokenize(texts[i : i + batch]) for i in range(0, len(texts), batch)]
    start = time.perf_counter()
    for inputs in groups:
        encoder.backend.run("clip_text", inputs)
    return time.perf_counter() - start


def _bare_photos(encoder, photos: list[bytes], batch: int) -> float:
    import time

    start = time.perf_counter()
    for i in range(0, len(photos), batch):
        images = [Image.open(io.BytesIO(data)).convert("RGB") for data in photos[i : i + batch]]
        encoder.encode_pixels(encoder.preprocessor.pixels(images))
    return time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())
