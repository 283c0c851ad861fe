"""Search features, each measured before and after on ../shared/data through the real pipeline (README "Search
features"): hybrid text search, photo + words, diversity, and the near-duplicate threshold.

With the offline model (``build-model --source offline``; ``--model-repo`` to use one already built), every catalogue
is ingested once into a temporary data folder and every query goes through ``pipe.matcher`` as the app runs it:

- hybrid: ``evaluate``'s metrics with ``HYBRID_SEARCH`` off (dense only) and on, for RRF k 20 and 60: fashion name
  queries R@1, fashion attribute queries hit@5, grocery description queries R@1;
- photo + words: for fashion products, the product's photo plus the name of another colour that its article type
  comes in ("red"); the share of the top 5 with the same article type *and* that colour, for the photo alone, the
  word alone (a text query) and the photo moved towards the word by each weight;
- diversity: near-copies in the top 10 (a result whose photo has cosine >= 0.95 to a result above it) for fashion
  attribute queries and product photos, with and without MMR, and what it costs in hit@5;
- near-duplicates: the cosine of the byte-identical photo pairs of the fashion data against every other product's
  nearest neighbour, from which the default threshold of ``python -m pipeline duplicates`` is chosen.

Run: ``.venv/bin/python -m bench.search_features [--model-repo REPO] [--json OUT] [--smoke]`` (about 10 minutes on 2
cores; ``--smoke``: the tiny CLIP and a few queries, proves it runs).
"""

from __future__ import annotations

import hashlib
import json
import random
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as c
from pipeline.ingestion.ingest import ingest
from pipeline.ops import evaluate as ev
from pipeline.service import Pipeline
from pipeline.settings import Settings

NEAR_COPY = 0.95
BETAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def offline_repo(args) -> Path:
    if args.model_repo:
        return Path(args.model_repo)
    out = c.DEFAULT_CACHE / "offline" / "model_repository"
    if not (out / "model_card.json").is_file():
        from pipeline.model_build.build_model import build_model

        build_model(source="offline", out=out)
    return out


def hybrid_rows(settings: Settings, data: Path, limit: int | None) -> list[list]:
    """R@1 / hit@5 per query set and mode, through evaluate's own metrics (live index)."""
    sets = [
        ("fashion names", data / "fashion", "queries_names.jsonl", "recall@1"),
        ("fashion attributes", data / "fashion", "queries_attributes.jsonl", "recall@5"),
    ]
    grocery = data / "grocery_store"
    descriptions = Path(tempfile.mkdtemp(prefix="bench-desc-")) / "queries_descriptions.jsonl"
    lines = [json.dumps({"text": r.get("description") or r["name"], "product_id": r["id"]})
             for r in _rows(grocery / "catalog.jsonl")]  # fmt: skip
    descriptions.write_text("\n".join(lines))
    sets.append(("grocery descriptions", grocery, str(descriptions), "recall@1"))
    modes = [("dense only", {"hybrid_search": False}), ("hybrid RRF k=20", {"rrf_k": 20}), ("hybrid RRF k=60", {})]
    rows = []
    for label, folder, queries, metric in sets:
        query_file = Path(queries) if Path(queries).is_absolute() else folder / queries
        if limit:
            trimmed = Path(tempfile.mkdtemp(prefix="bench-q-")) / query_file.name
            trimmed.write_text("\n".join(query_file.read_text().splitlines()[:limit]))
            query_file = trimmed
        scores = []
        for _, change in modes:
            live = settings.with_(data_dir=settings.data_dir / folder.name, **change)
            report = ev.run(live, None, query_file, live=True, check=True, progress=False)
            scores.append(report["overall"][metric])
        rows.append([label, metric, report["overall"]["queries"], *scores])
    return rows, [m for m, _ in modes]


def photo_words(pipe: Pipeline, folder: Path, n: int, seed: int = 0) -> list[list]:
    rows = _rows(folder / "catalog.jsonl")
    by_type: dict[str, set[str]] = {}
    for r in rows:
        if r.get("articleType") and r.get("color"):
            by_type.setdefault(r["articleType"], set()).add(r["color"])
    rng = random.Random(seed)
    cases = []
    for r in rng.sample(rows, len(rows)):
        others = sorted(by_type.get(r.get("articleType"), set()) - {r.get("color")})
        if others and len(cases) < n:
            cases.append((r, rng.choice(others)))
    docs = {r["id"]: r for r in rows}

    def share(matches, row, colour) -> float:
        top = [docs.get(m.id, {}) for m in matches[:5]]
        return sum(d.get("articleType") == row["articleType"] and d.get("color") == colour for d in top) / 5

    results: dict[str, list[float]] = {}
    for row, colour in cases:
        photo = folder / row["image_path"]
        word = colour.lower()
        results.setdefault("words alone (text query)", []).append(
            share(pipe.matcher.match_text(word, top_k=5).matches, row, colour)
        )
        for beta in BETAS:
            label = "photo alone" if beta == 0 else f"photo + words, weight {beta:g}"
            found = pipe.matcher.match_image(photo, top_k=5, refine=word if beta else None, refine_weight=beta)
            results.setdefault(label, []).append(share(found.matches, row, colour))
    return [[label, len(values), round(statistics.mean(values), 4)] for label, values in results.items()]


def near_copies(pipe: Pipeline, matches) -> int:
    ids = [m.id for m in matches[:10]]
    vectors = pipe.index.vectors(ids, "image")
    seen, copies = [], 0
    for pid in ids:
        v = vectors.get(pid)
        if v is None:
            continue
        if any(float(v @ s) >= NEAR_COPY for s in seen):
            copies += 1
        seen.append(v)
    return copies


def diversity(pipe: Pipeline, folder: Path, n: int) -> list[list]:
    queries, _ = ev.read_queries(folder / "queries_attributes.jsonl")
    queries = queries[:n]
    photos = [folder / r["image_path"] for r in _rows(folder / "catalog.jsonl")[:n]]
    out = []
    for diverse in (False, True):
        text_copies, hits, photo_copies = [], [], []
        for q in queries:
            found = pipe.matcher.match_text(q.value, top_k=10, diverse=diverse).matches
            text_copies.append(near_copies(pipe, found))
            hits.append(any(m.id in q.relevant for m in found[:5]))
        for photo in photos:
            photo_copies.append(near_copies(pipe, pipe.matcher.match_image(photo, top_k=10, diverse=diverse).matches))
        out.append(
            [
                "MMR" if diverse else "plain",
                round(statistics.mean(text_copies), 3),
                round(sum(hits) / len(hits), 4),
                round(statistics.mean(photo_copies), 3),
            ]
        )
    return out


def duplicate_threshold(pipe: Pipeline, folder: Path) -> dict:
    rows = _rows(folder / "catalog.jsonl")
    by_hash: dict[str, list[str]] = {}
    for r in rows:
        by_hash.setdefault(hashlib.sha256((folder / r["image_path"]).read_bytes()).hexdigest(), []).append(r["id"])
    identical = [tuple(sorted(v)) for v in by_hash.values() if len(v) > 1]
    twins = {p for pair in identical for p in pair}
    ids, matrix = pipe.index.all_vectors("image")
    sims = matrix @ matrix.T
    np.fill_diagonal(sims, -1)
    position = {pid: i for i, pid in enumerate(ids)}
    pair_cos = [float(sims[position[a], position[b]]) for a, b in identical]
    others = [float(sims[i].max()) for i, pid in enumerate(ids) if pid not in twins]
    return {
        "byte_identical_pairs": [list(p) for p in identical],
        "byte_identical_cosines": [round(x, 6) for x in pair_cos],
        "other_nearest_neighbour_cosine": {
            "max": round(max(others), 6),
            "p99.9": round(float(np.percentile(others, 99.9)), 6),
            "p99": round(float(np.percentile(others, 99)), 6),
            "median": round(float(np.median(others)), 6),
        },
        "products_above_0.995": sum(x >= 0.995 for x in others),
    }


def main(argv: list[str] | None = None) -> int:
    p = c.parser(__doc__)
    args = p.parse_args(argv)
    data = c.SHARED_DATA
    repo = c.model_repo(args) if args.smoke else offline_repo(args)
    limit = 20 if args.smoke else None
    info = c.machine()
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        base = Settings(data_dir=Path(tmp), model_repository=repo)
        for name in ("fashion", "grocery_store"):
            with Pipeline(base.with_(data_dir=Path(tmp) / name)) as pipe:
                c.note(f"ingesting {name} ...")
                ingest(pipe, data / name / "catalog.jsonl", progress=False)
        c.note("hybrid search ...")
        hybrid, modes = hybrid_rows(base, data, limit)
        with Pipeline(base.with_(data_dir=Path(tmp) / "fashion")) as pipe:
            c.note("photo + words ...")
            refine = photo_words(pipe, data / "fashion", 10 if args.smoke else 200)
            c.note("diversity ...")
            diverse = diversity(pipe, data / "fashion", 10 if args.smoke else 200)
            c.note("near-duplicate threshold ...")
            duplicates = duplicate_threshold(pipe, data / "fashion")
    print("Hybrid text search (offline model; dense only vs BM25 + dense)")
    print(c.machine_line(info))
    print(c.table(["queries", "metric", "n", *modes], hybrid))
    print("\nPhoto + words on fashion: share of the top 5 with the product's article type and the asked colour")
    print(c.table(["query", "cases", "share"], refine))
    print(f"\nDiversity on fashion: near-copies in the top 10 (photo cosine >= {NEAR_COPY} to a result above)")
    print(c.table(["ranking", "text: near-copies", "text: hit@5", "photo: near-copies"], diverse))
    print("\nNear-duplicate threshold (fashion photos):", json.dumps(duplicates))
    rows = [["hybrid", r] for r in hybrid] + [["photo_words", r] for r in refine] + [["diversity", r] for r in diverse]
    payload = {
        "benchmark": "search_features",
        "machine": info,
        "headers": ["section", "row"],
        "rows": rows,
        "duplicates": duplicates,
        "modes": modes,
    }
    c.write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
