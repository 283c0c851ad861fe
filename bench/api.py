"""The REST API's speed against what bounds it, measured on one running app (issue 31, item 5).

``python -m app`` is started on loopback over a temporary data folder: the offline model and the fashion catalogue
(``--smoke``: the tiny CLIP and the demo catalogue), ``GRADIO_CONCURRENCY=16`` so that 16 clients may run at once on
either path. Then, interleaved round by round (the order rotates each round; ratios are taken per round):

1. a cached search through ``POST /api/v1/search``, one client, against a trivial ``GET /api/v1/health`` of the same
   server (median latency of a block of calls each): target at most 2x;
2. the same cached query at 16 clients (each its own connection): answers/s through the REST API against
   ``gradio_client`` (16 ``Client(download_files=False)``, one per thread) on ``/match_text``: target at least 10x;
3. fresh text searches (cache misses) at 16 clients against the bare text tower (``backend.run`` at batch 16 on the
   same texts, tokenized beforehand), in this process, with the app idle: target at least 0.7x its throughput;
4. fresh photo searches (multipart uploads) at 16 clients against decode + preprocess + bare image tower at batch 16
   on the same photos: target at least 0.7x.

The clients run in this process (threads), on the same cores as the server: their cost is in the REST and Gradio
figures, as it would be for a caller on the same machine. Run: ``.venv/bin/python -m bench.api [--json OUT]
[--smoke] [--repeats N] [--model-repo REPO]`` (a few minutes on 2 cores; the offline model is built once into
``bench/.cache/offline``).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import _common as c

DEMO = c.REPO_ROOT / "assets" / "demo_catalog" / "catalog.jsonl"
FASHION = c.SHARED_DATA / "fashion" / "catalog.jsonl"
CLIENTS = 16
BATCH = 16
TARGETS = {"cached_1": 2.0, "cached_16": 10.0, "text_miss_16": 0.7, "photo_miss_16": 0.7}
CACHED_QUERY = "Red cotton crew-neck T-shirt by Northwind"


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def offline_repo(args) -> Path:
    if args.model_repo:
        return Path(args.model_repo).resolve()
    out = c.DEFAULT_CACHE / "offline" / "model_repository"
    if not (out / "model_card.json").is_file():
        from pipeline.model_build.build_model import build_model

        c.note(f"building the offline model into {out} (once)")
        build_model(source="offline", out=out)
    return out


def start_app(repo: Path, catalogue: Path, work: Path):
    from pipeline.processes.ports import free_port
    from tests.support.app_fixtures import APP_ENV, launch

    data = work / "data"
    env = {**os.environ, "DATA_DIR": str(data), "MODEL_REPOSITORY": str(repo)}
    c.note(f"ingesting {catalogue} ...")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline", "ingest", str(catalogue)], cwd=c.REPO_ROOT, env=env,
                   check=True, capture_output=True)  # fmt: skip
    c.note(f"... {time.perf_counter() - started:.0f} s")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in APP_ENV}
    env.update(
        DATA_DIR=str(data), MODEL_REPOSITORY=str(repo), GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port),
        GRADIO_ANALYTICS_ENABLED="False", GRADIO_TEMP_DIR=str(work / "gradio-tmp"), PYTHONUNBUFFERED="1",
        GRADIO_CONCURRENCY=str(CLIENTS), GRADIO_QUEUE_SIZE="256",
    )  # fmt: skip
    return launch([sys.executable, "-m", "app"], env, work / "app.log", f"http://127.0.0.1:{port}/")


class Clients:
    """``n`` threads, each with its own client made once by ``make``; ``run`` spreads calls over them and returns
    seconds per call (the wall time of all of them over their number)."""

    def __init__(self, n: int, make) -> None:
        self.pool = ThreadPoolExecutor(n, thread_name_prefix="bench-client")
        self.local = threading.local()
        self.make = make
        self.made: list = []
        self.errors: list[str] = []
        list(self.pool.map(lambda _: self._client(), range(n * 4)))  # make them before timing

    def _client(self):
        if not hasattr(self.local, "client"):
            self.local.client = self.make()
            self.made.append(self.local.client)
        return self.local.client

    def run(self, call, items: list) -> float:
        def one(item) -> None:
            try:
                call(self._client(), item)
            except Exception as err:  # counted, never raised: the run goes on
                self.errors.append(f"{type(err).__name__}: {str(err)[:200]}")

        started = time.perf_counter()
        list(self.pool.map(one, items))
        return (time.perf_counter() - started) / max(1, len(items))

    def close(self) -> None:
        self.pool.shutdown()
        for client in self.made:
            close = getattr(client, "close", None)
            if close:
                close()


def _ok(response) -> dict:
    if response.status_code != 200:
        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
    return response.json()


def measure(args, repo: Path, catalogue: Path, texts: list[str], photos: list[Path], rounds: int) -> dict:
    import httpx
    from gradio_client import Client

    from pipeline import model_repo as mr
    from pipeline.inputs import load_image
    from pipeline.query.encoder import load_encoder
    from pipeline.settings import Settings

    block = 5 if args.smoke else 30  # calls per 1-client block
    cached_n = CLIENTS * (2 if args.smoke else 20)
    gradio_n = CLIENTS * (1 if args.smoke else 3)
    per_round_text = len(texts) // (rounds + 1)
    per_round_photo = len(photos) // (rounds + 1)
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        app = start_app(repo, catalogue, Path(tmp))
        encoder = load_encoder(Settings(data_dir=Path(tmp) / "bare", model_repository=repo))
        backend, pre = encoder.backend, encoder.preprocessor
        base = app.url.rstrip("/")
        one = httpx.Client(base_url=base, timeout=60)
        rest = Clients(CLIENTS, lambda: httpx.Client(base_url=base, timeout=120))
        page = Clients(CLIENTS, lambda: Client(app.url, verbose=False, download_files=False))
        try:
            health = _ok(one.get("/api/v1/health"))
            _ok(one.post("/api/v1/search", json={"text": CACHED_QUERY}))  # cached from now on
            page.run(lambda cl, _: cl.predict(CACHED_QUERY, api_name="/match_text"), [0] * CLIENTS)
            blobs = {p: p.read_bytes() for p in photos}

            def blocked(call) -> float:
                times = []
                for _ in range(block):
                    started = time.perf_counter()
                    call()
                    times.append(time.perf_counter() - started)
                return statistics.median(times)

            def health_1(r: int) -> float:
                return blocked(lambda: _ok(one.get("/api/v1/health")))

            def cached_1(r: int) -> float:
                return blocked(lambda: _ok(one.post("/api/v1/search", json={"text": CACHED_QUERY})))

            def cached_rest_16(r: int) -> float:
                return rest.run(lambda cl, _: _ok(cl.post("/api/v1/search", json={"text": CACHED_QUERY})),
                                [0] * cached_n)  # fmt: skip

            def cached_gradio_16(r: int) -> float:
                return page.run(lambda cl, _: cl.predict(CACHED_QUERY, api_name="/match_text"), [0] * gradio_n)

            def text_slice(r: int) -> list[str]:
                at = (r + 1) * per_round_text  # round -1 (warm-up) takes the first slice
                return texts[at : at + per_round_text]

            def photo_slice(r: int) -> list[Path]:
                at = (r + 1) * per_round_photo
                return photos[at : at + per_round_photo]

            def text_miss_16(r: int) -> float:
                def ask(cl, text: str) -> None:
                    answer = _ok(cl.post("/api/v1/search", json={"text": text}))
                    if answer["cache_hit"]:
                        raise RuntimeError(f"a cache hit for a fresh text: {text[:40]!r}")

                return rest.run(ask, text_slice(r))

            def text_tower_16(r: int) -> float:
                chosen = text_slice(r)
                batches = [pre.tokenize_groups(chosen[i : i + BATCH]) for i in range(0, len(chosen), BATCH)]
                started = time.perf_counter()
                for groups in batches:
                    for _, tokens in groups:
                        backend.run(mr.TEXT_MODEL, tokens)
                return (time.perf_counter() - started) / len(chosen)

            def photo_miss_16(r: int) -> float:
                def ask(cl, path: Path) -> None:
                    answer = _ok(cl.post("/api/v1/search", files={"image": (path.name, blobs[path])}))
                    if answer["cache_hit"]:
                        raise RuntimeError(f"a cache hit for a fresh photo: {path.name}")

                return rest.run(ask, photo_slice(r))

            def photo_tower_16(r: int) -> float:
                chosen = photo_slice(r)
                started = time.perf_counter()
                for i in range(0, len(chosen), BATCH):
                    images = [load_image(blobs[p]) for p in chosen[i : i + BATCH]]
                    backend.run(mr.VISUAL_MODEL, {mr.VISUAL_INPUT: pre.pixels(images)})
                return (time.perf_counter() - started) / len(chosen)

            c.note(f"measuring {rounds} interleaved rounds ...")
            samples = c.Samples()
            c.interleave({"health_1": health_1, "cached_1": cached_1}, rounds, samples=samples)
            c.interleave({"cached_rest_16": cached_rest_16, "cached_gradio_16": cached_gradio_16}, rounds,
                         samples=samples)  # fmt: skip
            c.interleave({"text_miss_16": text_miss_16, "text_tower_16": text_tower_16}, rounds, samples=samples)
            c.interleave({"photo_miss_16": photo_miss_16, "photo_tower_16": photo_tower_16}, rounds,
                         samples=samples)  # fmt: skip
        finally:
            for clients in (rest, page):
                clients.close()
            one.close()
            encoder.close()
            code = app.stop()
        errors = rest.errors + page.errors + ([] if code == 0 else [f"the app exited with {code} on SIGTERM"])
    return {"samples": samples, "errors": errors, "health": health}


def summarise(samples) -> tuple[list[list], dict]:
    ms = {name: samples.median_ms(name) for name in samples.times}
    per_s = {name: 1000.0 / value for name, value in ms.items()}
    ratios = {
        "cached_1": samples.ratio("cached_1", "health_1"),  # latency: at most
        "cached_16": samples.ratio("cached_gradio_16", "cached_rest_16"),  # answers/s REST over Gradio: at least
        "text_miss_16": samples.ratio("text_tower_16", "text_miss_16"),  # answers/s over the tower's: at least
        "photo_miss_16": samples.ratio("photo_tower_16", "photo_miss_16"),
    }
    rows = [
        ["cached search, 1 client: latency / GET /api/v1/health", f"{ms['cached_1']:.2f} ms / {ms['health_1']:.2f} ms",
         ratios["cached_1"].median, ratios["cached_1"].spread(), c.verdict(ratios["cached_1"].median,
                                                                            TARGETS["cached_1"], True)],
        ["cached search, 16 clients: answers/s REST / gradio_client",
         f"{per_s['cached_rest_16']:.0f} / {per_s['cached_gradio_16']:.1f}", ratios["cached_16"].median,
         ratios["cached_16"].spread(), c.verdict(ratios["cached_16"].median, TARGETS["cached_16"], False)],
        ["fresh text searches, 16 clients: answers/s / bare text tower at batch 16",
         f"{per_s['text_miss_16']:.1f} / {per_s['text_tower_16']:.1f}", ratios["text_miss_16"].median,
         ratios["text_miss_16"].spread(), c.verdict(ratios["text_miss_16"].median, TARGETS["text_miss_16"], False)],
        ["fresh photo searches, 16 clients: answers/s / decode + preprocess + image tower at batch 16",
         f"{per_s['photo_miss_16']:.1f} / {per_s['photo_tower_16']:.1f}", ratios["photo_miss_16"].median,
         ratios["photo_miss_16"].spread(), c.verdict(ratios["photo_miss_16"].median, TARGETS["photo_miss_16"],
                                                     False)],
    ]  # fmt: skip
    return rows, {k: v.to_json() for k, v in ratios.items()} | {"ms": ms}


def main(argv: list[str] | None = None) -> int:
    p = c.parser(__doc__)
    args = p.parse_args(argv)
    rounds = c.repeats(args, 5)
    if args.smoke:
        repo, catalogue = c.model_repo(args), DEMO
        rows = _rows(DEMO)
        texts = [f"{r['text']} (variant {i})" for i in range(rounds + 1) for r in rows[:8]]
        photos = sorted({DEMO.parent / r["image_path"] for r in rows})
    else:
        if not FASHION.is_file():
            raise SystemExit(f"no fashion catalogue at {FASHION} (set SHARED_DATA to the shared data folder)")
        repo, catalogue = offline_repo(args), FASHION
        rows = _rows(FASHION)
        texts = list(dict.fromkeys(r["name"] for r in rows if r.get("name")))[: (rounds + 1) * 64]
        photos = c.query_photos((rounds + 1) * 32)
    info = c.machine()
    result = measure(args, repo, catalogue, texts, photos, rounds)
    table_rows, ratios = summarise(result["samples"])
    health = result["health"]
    payload = c.report(
        "api",
        info,
        f"REST API (/api/v1) on one app: {health['model']['label']}, {health['catalogue']['products']} products, "
        f"inference {health['inference']}, {CLIENTS} clients, {rounds} interleaved rounds",
        ["measure", "REST / baseline", "ratio (median)", "ratio p25-p75", "verdict"],
        table_rows,
        model=str(repo),
        ratios=ratios,
        errors=result["errors"][:10],
        first_error="; ".join(result["errors"][:3]) or "none",
    )
    c.write_json(args.json, payload)
    return 0 if not result["errors"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
