"""Load: concurrent gradio_client clients against one running app, with a Catalogue-tab ingest at the same time.

``python -m app`` is started on a temporary data folder holding the demo catalogue (loopback only). First every
distinct query is answered alone, one at a time: the reference answers. Then ``--clients`` threads, each with its own
``gradio_client.Client(download_files=False)``, send ``--queries`` mixed photo and text queries each (filtered to the
demo catalogue's categories), while one more client imports a catalogue of new products (in a category of their own,
so that no answer may change) through ``/ingest``. Reported: errors, answers that differ from the reference,
p50/p95 latency, throughput, and the cost of a query over the app's trivial ``/health`` endpoint (same queue, same
client) measured in the same run: the target is at most 1.5x.

Bounded in time (``--max-seconds``) and count. Run: ``.venv/bin/python -m bench.load [--model-repo REPO] [--json
OUT] [--smoke]`` (about 2 minutes on 2 cores; ``--smoke``: the tiny CLIP, 4 clients x 5 queries).
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
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import _common as c

DEMO = c.REPO_ROOT / "assets" / "demo_catalog" / "catalog.jsonl"
TOKEN = "load-benchmark-admin-token"
NEW_CATEGORY = "Load test arrivals"


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _start_app(repo: Path, data: Path, work: Path):
    from pipeline.processes.ports import free_port
    from tests.support.app_fixtures import APP_ENV, launch

    subprocess.run(
        [sys.executable, "-m", "pipeline", "ingest", str(DEMO)],
        cwd=c.REPO_ROOT, env={**os.environ, "DATA_DIR": str(data), "MODEL_REPOSITORY": str(repo)},
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in APP_ENV}
    env.update(
        DATA_DIR=str(data), MODEL_REPOSITORY=str(repo), ADMIN_TOKEN=TOKEN, GRADIO_SERVER_NAME="127.0.0.1",
        GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False", GRADIO_TEMP_DIR=str(work / "gradio-tmp"),
        PYTHONUNBUFFERED="1",
    )  # fmt: skip
    return launch([sys.executable, "-m", "app"], env, work / "app.log", f"http://127.0.0.1:{port}/")


def _queries(rows: list[dict]) -> list[tuple[str, str]]:
    """(kind, value) pairs: every demo product's description and photo."""
    out = []
    for row in rows:
        out.append(("text", row["text"]))
        out.append(("image", str(DEMO.parent / row["image_path"])))
    return out


def _ask(client, kind: str, value: str, categories: list[str]) -> tuple[list, int, float]:
    """The answer (ids and scores), the catalogue version it was answered on, and the seconds it took."""
    from gradio_client import handle_file

    started = time.perf_counter()
    if kind == "text":
        _, result = client.predict(value, top_k=5, categories=categories, api_name="/match_text")
    else:
        _, result = client.predict(handle_file(value), top_k=5, categories=categories, api_name="/match_image")
    elapsed = time.perf_counter() - started
    return [(m["id"], round(m["score"], 5)) for m in result["matches"]], result["catalog_version"], elapsed


def _new_products(rows: list[dict], folder: Path, n: int) -> tuple[Path, Path]:
    """A catalogue of ``n`` new products (the demo photos under new ids) in a category no load query asks for, and
    the zip of its photos, as a shop uploads them."""
    folder.mkdir(parents=True, exist_ok=True)
    new = [
        {"id": f"load-{i:04d}", "SKU": f"LOAD-{i:04d}", "name": f"Arrival {i}", "category": NEW_CATEGORY,
         "brand": "Loadcraft", "price": 10 + i, "text": f"Arrival number {i}",
         "image_path": rows[i % len(rows)]["image_path"]}
        for i in range(n)
    ]  # fmt: skip
    path = folder / "arrivals.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in new))
    photos = folder / "arrivals-photos.zip"
    with zipfile.ZipFile(photos, "w") as zf:
        for image in sorted({r["image_path"] for r in new}):
            zf.write(DEMO.parent / image, image)
    return path, photos


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def measure(repo: Path, clients: int, per_client: int, arrivals: int, max_seconds: float) -> dict:
    from gradio_client import Client, handle_file

    rows = _rows(DEMO)
    categories = sorted({r["category"] for r in rows})
    queries = _queries(rows)
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        work = Path(tmp)
        app = _start_app(repo, work / "data", work)
        try:
            solo = Client(app.url, verbose=False, download_files=False)
            # Answered alone, one at a time (and now cached), per catalogue version: the ingest below makes a new one.
            reference: dict[int, dict] = {}
            for q in queries:
                answer, version, _ = _ask(solo, *q, categories)
                reference.setdefault(version, {})[q] = answer

            # The same client, the same queue: a trivial endpoint against a (cached) query.
            health, cached = [], []
            for q in queries * 2:
                started = time.perf_counter()
                solo.predict(api_name="/health")
                health.append(time.perf_counter() - started)
                cached.append(_ask(solo, *q, categories)[2])

            deadline = time.monotonic() + max_seconds
            errors: list[str] = []
            differing: list[str] = []
            latencies: list[float] = []
            answers: list[tuple[tuple[str, str], list, int]] = []
            lock = threading.Lock()

            def one_client(n: int) -> None:
                client = Client(app.url, verbose=False, download_files=False)
                for i in range(per_client):
                    if time.monotonic() > deadline:
                        return
                    q = queries[(n * 7 + i) % len(queries)]
                    try:
                        got, version, elapsed = _ask(client, *q, categories)
                    except Exception as err:  # every failure is counted, never raised: the run goes on
                        with lock:
                            errors.append(f"{q[0]} query: {type(err).__name__}: {err}")
                        continue
                    with lock:
                        latencies.append(elapsed)
                        answers.append((q, got, version))

            catalogue, photos = _new_products(rows, work / "arrivals", arrivals)
            ingest_report: dict = {}

            def ingest() -> None:
                client = Client(app.url, verbose=False, download_files=False)
                files = handle_file(str(catalogue)), handle_file(str(photos))
                try:
                    ingest_report.update(client.predict(*files, "update", TOKEN, [], api_name="/ingest"))
                except Exception as err:
                    errors.append(f"ingest: {type(err).__name__}: {err}")

            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=clients + 1) as pool:
                futures = [pool.submit(ingest)] + [pool.submit(one_client, n) for n in range(clients)]
                for future in futures:
                    future.result()
            wall = time.perf_counter() - started
            after = solo.predict(1, "Arrival", api_name="/catalogue")
            for q in queries:  # the catalogue after the ingest, alone again
                answer, version, _ = _ask(solo, *q, categories)
                reference.setdefault(version, {})[q] = answer
            for q, got, version in answers:
                want = reference.get(version, {}).get(q)
                if got != want:
                    differing.append(f"{q[0]} query {q[1][-40:]!r} on version {version}: {got[:2]} instead of "
                                     f"{(want or [])[:2]}")  # fmt: skip
        finally:
            code = app.stop()
        if code != 0:
            errors.append(f"the app exited with {code} on SIGTERM")
    return {
        "clients": clients,
        "queries_per_client": per_client,
        "answered": len(latencies),
        "errors": errors,
        "differing": differing,
        "latency_s": latencies,
        "wall_s": wall,
        "health_s": health,
        "cached_query_s": cached,
        "ingest": {k: ingest_report.get(k) for k in ("rows", "added", "seconds", "bad")},
        "arrivals_in_catalogue": after.get("total"),
        "arrivals": arrivals,
    }


def summarise(result: dict) -> tuple[list[list], dict]:
    ms = [x * 1000 for x in result["latency_s"]]
    health = statistics.median(result["health_s"]) * 1000
    cached = statistics.median(result["cached_query_s"]) * 1000
    ratio = cached / health if health else float("nan")
    throughput = result["answered"] / result["wall_s"] if result["wall_s"] else 0.0
    ingested = result["ingest"].get("added")
    rows = [
        ["queries answered under load", result["answered"], f"{result['clients']} clients x "
         f"{result['queries_per_client']}", "all", "met" if result["answered"] == result["clients"] *
         result["queries_per_client"] else "missed"],
        ["errors", len(result["errors"]), "", "0", "met" if not result["errors"] else "missed"],
        ["answers differing from the query run alone", len(result["differing"]), "", "0",
         "met" if not result["differing"] else "missed"],
        ["latency p50 (ms)", round(_percentile(ms, 0.5), 1), "", "", ""],
        ["latency p95 (ms)", round(_percentile(ms, 0.95), 1), "", "", ""],
        ["throughput (queries/s)", round(throughput, 1), f"wall {result['wall_s']:.1f} s", "", ""],
        ["/health alone (ms, median)", round(health, 1), "same client, same queue", "", ""],
        ["cached query alone (ms, median)", round(cached, 1), "", "", ""],
        ["query cost over /health", round(ratio, 2), "ratio", "<= 1.5", "met" if ratio <= 1.5 else "missed"],
        ["ingest during the load (products added)", ingested, f"catalogue then has {result['arrivals_in_catalogue']}"
         f" in '{NEW_CATEGORY}'", str(result["arrivals"]),
         "met" if ingested == result["arrivals"] == result["arrivals_in_catalogue"] else "missed"],
    ]  # fmt: skip
    return rows, {"query_over_health": ratio, "throughput_qps": throughput}


def main(argv: list[str] | None = None) -> int:
    p = c.parser(__doc__)
    p.add_argument("--clients", type=int, default=None, help="concurrent clients (default 16; 4 with --smoke)")
    p.add_argument("--queries", type=int, default=None, help="queries per client (default 50; 5 with --smoke)")
    p.add_argument("--max-seconds", type=float, default=600.0, help="stop sending queries after this long")
    args = p.parse_args(argv)
    clients = args.clients or (4 if args.smoke else 16)
    per_client = args.queries or (5 if args.smoke else 50)
    repo = c.model_repo(args)
    info = c.machine()
    result = measure(repo, clients, per_client, 12 if args.smoke else 60, args.max_seconds)
    rows, ratios = summarise(result)
    payload = c.report(
        "load",
        info,
        f"{clients} gradio_client clients x {per_client} mixed queries against one app, one /ingest meanwhile",
        ["measure", "value", "note", "target", "verdict"],
        rows,
        model=str(repo),
        ratios=ratios,
        errors=result["errors"][:10],
        differing=result["differing"][:10],
        first_error="; ".join(result["errors"][:3]) or "none",
    )
    c.write_json(args.json, payload)
    return 0 if not result["errors"] and not result["differing"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
