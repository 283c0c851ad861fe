"""``compare-models``: model repositories compared on a catalogue: agreement, recall, speed, size.

The first repository is the reference. Every variant embeds the same catalogue rows (``ingestion.embedding``, through
its own preprocessing and onnxruntime session) and is judged on its cosine to the reference per tower; retrieval
agreement, each product's photo and text a query against the *other* products, scored as the app scores them; recall@k
on labelled queries (dense only: BM25 is no property of the model); the bare towers' speed, variants timed round-robin
so that a shared machine's load moves them alike (bench/README.md); and the ONNX files' size.

Variants are usually precisions of one model. A repository of another model (another family, other weights, another
embedding size: ``same_model``) is compared too, but only on what means the same across models: recall@k on the
labelled queries, speed and size. Its vectors live in another space, so their cosine to the reference's and the
agreement of their rankings would measure nothing; the report says "different models: agreement not compared".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import model_repo as mr
from ..errors import CatalogError, PipelineError
from ..inference.ort_backend import OrtBackend
from ..ingestion.catalog_reader import Product, read_catalog
from ..ingestion.embedding import embed_batches, photo_batches
from ..inputs import clean_text, load_image
from ..progress import step
from ..query.encoder import Encoder
from ..query.preprocess import Preprocessor

DEFAULT_LIMIT = 300
AGREEMENT_K = 10
RECALL_KS = (1, 5, 10)
BATCH_SIZES = (1, 32)
SINGLE_CALLS = 8  # batch-1 calls per round: one call of a small tower is too short to time alone
DEFAULT_ROUNDS = 3
EMBED_BATCH = 32
NOT_COMPARED = "different models: agreement not compared"


@dataclass
class Variant:
    repo: Path
    card: mr.ModelCard
    encoder: Encoder

    @property
    def name(self) -> str:
        return f"{self.card.precision} ({self.repo.name})"


@dataclass
class Rows:
    """The catalogue rows every variant embeds: products whose photo decodes, product texts as ingestion builds them."""

    products: list[Product]
    skipped: list[str]
    total: int

    @property
    def ids(self) -> list[str]:
        return [p.id for p in self.products]

    @property
    def texts(self) -> list[str]:
        return [p.text for p in self.products]


# ------------------------------------------------------------------------------------------------------------ inputs
def open_variant(repo: Path) -> Variant:
    """A model repository ready to embed; one sentence when it is not one."""
    repo = Path(repo)
    if not repo.is_dir():
        raise PipelineError(f"The model repository {repo} does not exist.")
    card = mr.ModelCard.load(repo)
    mr.verify_files(repo, card)
    return Variant(repo, card, Encoder(card, Preprocessor(repo, card), OrtBackend(repo)))


def open_variants(repos: list[Path]) -> list[Variant]:
    return [open_variant(repo) for repo in repos]


def same_model(a: mr.ModelCard, b: mr.ModelCard) -> bool:
    """Whether two repositories hold one model (builds of the same weights, in any precision): then their vectors share
    a space and agreement means something.

    Same family, embedding size and revision; a local checkpoint's revision is a digest of its weight files, so it
    names the weights wherever the folder was; a hub revision (a commit, or an open_clip tag such as ``webli``) names
    them only together with the source."""
    if (a.family, a.embedding_dim, a.revision) != (b.family, b.embedding_dim, b.revision):
        return False
    return a.revision.startswith("local-") or a.source == b.source


def read_rows(catalog: Path, limit: int) -> Rows:
    """The first ``limit`` products of ``catalog`` whose photo decodes (the others are counted, not fatal; products
    without a local photo are passed over)."""
    if limit < 2:
        raise PipelineError(f"--limit must be at least 2 (a product is compared with the others), not {limit}.")
    parsed = read_catalog(Path(catalog))
    rows = Rows([], [str(bad) for bad in parsed.bad], parsed.total)
    for batch in photo_batches(parsed.products, None, EMBED_BATCH):
        pictured = [p for p, n in zip(batch.products, batch.photo_counts, strict=True) if n]  # compared by photo
        taken = pictured[: limit - len(rows.products)]
        rows.products += taken
        last = taken[-1].line if len(rows.products) >= limit else None  # rows after the limit are not read
        rows.skipped += [
            f"line {p.line} (id {p.id}): {err}" for p, err in batch.failed if last is None or p.line < last
        ]
        if last is not None:
            break
    if len(rows.products) < 2:
        raise CatalogError(f"{catalog} has fewer than 2 products with a readable photo; nothing to compare.")
    return rows


# -------------------------------------------------------------------------------------------------------- embeddings
def embed_rows(variant: Variant, rows: Rows) -> tuple[np.ndarray, np.ndarray]:
    """(image vectors, text vectors) of the rows, float64 for the brute-force rankings."""
    batches = [b for b in embed_batches(variant.encoder, rows.products, EMBED_BATCH) if b.products]
    if sum(len(b.products) for b in batches) != len(rows.products):
        raise PipelineError(f"A photo of {variant.name}'s rows could not be read a second time; nothing compared.")
    images = np.stack([b.photos_of(i)[0] for b in batches for i in range(len(b.products))])  # the main photo
    texts = np.concatenate([b.text_vectors for b in batches])
    return images.astype(np.float64), texts.astype(np.float64)


def cosine_stats(got: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    cos = np.sum(got * reference, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1))
    return {"mean": round(float(cos.mean()), 6), "min": round(float(cos.min()), 6)}


def text_scores(queries: np.ndarray, texts: np.ndarray, images: np.ndarray, weight: float) -> np.ndarray:
    """Scores of text queries against products, fused as the app fuses them (model card ``text_weight``)."""
    return weight * (queries @ texts.T) + (1 - weight) * (queries @ images.T)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best columns of each row, best first (ties by column order, as a stable sort gives)."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def self_rankings(images: np.ndarray, texts: np.ndarray, weight: float, k: int) -> dict[str, np.ndarray]:
    """Top-k of every product's photo and text among the other products."""
    photo = images @ images.T
    text = text_scores(texts, texts, images, weight)
    for scores in (photo, text):
        np.fill_diagonal(scores, -np.inf)
    return {"photo_queries": top_k(photo, k), "text_queries": top_k(text, k)}


def agreement(reference: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """Top-1 equality and mean top-k overlap of two rankings of the same queries."""
    overlap = [len(set(a) & set(b)) / len(a) for a, b in zip(reference.tolist(), got.tolist(), strict=True)]
    return {"top1": round(float(np.mean(reference[:, 0] == got[:, 0])), 4), "top10": round(float(np.mean(overlap)), 4)}


# ------------------------------------------------------------------------------------------------------------ recall
def read_labelled(path: Path, rows: Rows) -> tuple[list, dict]:
    """Labelled queries whose relevant products are among the rows (others cannot be found and are counted)."""
    from .evaluate import read_queries

    queries, bad = read_queries(Path(path))
    present = set(rows.ids)
    usable = [q for q in queries if q.relevant & present]
    info = {"file": str(path), "queries": len(usable), "outside_rows": len(queries) - len(usable), "bad_rows": bad}
    if not usable:
        raise PipelineError(
            f"None of the queries in {path} has a relevant product among the {len(rows.ids)} products compared; "
            "raise --limit."
        )
    return usable, info


def recall(variant: Variant, queries: list, rows: Rows, vectors: tuple[np.ndarray, np.ndarray], max_chars: int) -> dict:
    """recall@k (hit rate) and MRR of ``variant`` on labelled queries, overall and per query kind."""
    from .evaluate import Ranked, metrics

    images, texts = vectors
    w = variant.card.text_weight
    k = min(max(RECALL_KS), len(rows.ids))
    ranked = []
    for kind in ("text", "image"):
        chosen = [q for q in queries if q.kind == kind]
        if not chosen:
            continue
        if kind == "text":
            vecs = variant.encoder.encode_texts([clean_text(q.value, max_chars) for q in chosen]).astype(np.float64)
            scores = text_scores(vecs, texts, images, w)
        else:
            vecs = np.concatenate([variant.encoder.encode_images([load_image(q.value)]) for q in chosen]).astype(
                np.float64
            )
            scores = vecs @ images.T
        for q, row, order in zip(chosen, scores, top_k(scores, k), strict=True):
            ranked.append(Ranked(q, [rows.ids[i] for i in order], [float(row[i]) for i in order]))
    by_kind = {kind: metrics([r for r in ranked if r.query.kind == kind], RECALL_KS) for kind in ("text", "image")}
    return {"overall": metrics(ranked, RECALL_KS), "by_kind": {k: m for k, m in by_kind.items() if m["queries"]}}


# ------------------------------------------------------------------------------------------------------------- speed
def _tiled(items: list, n: int) -> list:
    """``n`` items, repeating the list if it is shorter: speed does not depend on which photos they are."""
    return (items * (-(-n // len(items))))[:n]


def speed_inputs(variant: Variant, rows: Rows) -> dict[str, list[tuple[str, dict[str, np.ndarray]]]]:
    """Preprocessed inputs per measure: a block of single calls for batch 1, one call for batch 32."""
    pre = variant.encoder.preprocessor
    products = _tiled(rows.products, max(BATCH_SIZES))
    pixels = np.concatenate([b.pixels for b in photo_batches(products, pre, max(BATCH_SIZES)) if b.pixels is not None])
    texts = [p.text for p in products]
    out = {}
    for size in BATCH_SIZES:
        calls = SINGLE_CALLS if size == 1 else 1
        out[f"images_per_s@{size}"] = [
            (mr.VISUAL_MODEL, {mr.VISUAL_INPUT: pixels[i * size : (i + 1) * size]}) for i in range(calls)
        ]
        out[f"texts_per_s@{size}"] = [
            (mr.TEXT_MODEL, pre.tokenize(texts[i * size : (i + 1) * size])) for i in range(calls)
        ]
    return out


def _timed(backend: OrtBackend, calls: list[tuple[str, dict[str, np.ndarray]]]) -> float:
    """Items per second over one block of calls."""
    start = time.perf_counter()
    for model, inputs in calls:
        backend.run(model, inputs)
    elapsed = time.perf_counter() - start
    return sum(len(next(iter(inputs.values()))) for _, inputs in calls) / elapsed


def measure_speed(variants: list[Variant], rows: Rows, rounds: int) -> list[dict[str, float]]:
    """Median items/s per variant and measure, variants interleaved round by round in a rotating order."""
    inputs = [speed_inputs(v, rows) for v in variants]
    for v, measures in zip(variants, inputs, strict=True):  # warm-up: sessions created, first-run allocations done
        for calls in measures.values():
            _timed(v.encoder.backend, calls[:1])
    samples: list[dict[str, list[float]]] = [{name: [] for name in m} for m in inputs]
    for r in range(max(1, rounds)):
        order = list(range(len(variants)))
        order = order[r % len(order) :] + order[: r % len(order)]
        for i in order:
            for name, calls in inputs[i].items():
                samples[i][name].append(_timed(variants[i].encoder.backend, calls))
    return [{name: round(float(np.median(values)), 2) for name, values in s.items()} for s in samples]


# -------------------------------------------------------------------------------------------------------- comparison
def size_mib(repo: Path) -> dict[str, float]:
    sizes = {m: mr.onnx_path(repo, m).stat().st_size / 2**20 for m in (mr.TEXT_MODEL, mr.VISUAL_MODEL)}
    return {"text": round(sizes[mr.TEXT_MODEL], 2), "image": round(sizes[mr.VISUAL_MODEL], 2),
            "total": round(sum(sizes.values()), 2)}  # fmt: skip


def machine() -> dict:
    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:  # pragma: no cover - the runtime always has it
        ort_version = None
    cpu = next(
        (line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), platform.processor()
    )
    return {"cpu": cpu, "cores": os.cpu_count(), "onnxruntime": ort_version, "python": platform.python_version()}


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def _describe(variant: Variant) -> dict:
    extra = variant.card.extra or {}
    return {
        "repo": str(variant.repo),
        "model": variant.card.label,
        "family": variant.card.family,
        "embedding_dim": variant.card.embedding_dim,
        "precision": variant.card.precision,
        "identity": variant.card.identity,
        "calibration": extra.get("calibration"),
        "size_mib": size_mib(variant.repo),
    }


def compare(
    repos: list[Path],
    catalog: Path,
    queries: Path | None = None,
    limit: int = DEFAULT_LIMIT,
    rounds: int = DEFAULT_ROUNDS,
    max_text_chars: int = 1000,
) -> dict:
    """The whole comparison as a JSON-ready dict (``render`` prints it as a table)."""
    variants = open_variants([Path(r) for r in repos])
    comparable = [same_model(variants[0].card, v.card) for v in variants]
    rows = read_rows(Path(catalog), limit)
    labelled, queries_info = read_labelled(queries, rows) if queries else (None, None)
    load_before = os.getloadavg()
    k = min(AGREEMENT_K, len(rows.ids) - 1)
    report = {
        "catalog": str(catalog),
        "rows": len(rows.ids),
        "limit": limit,
        "catalog_rows": rows.total,
        "skipped_rows": rows.skipped,
        "agreement_k": k,
        "reference": str(variants[0].repo),
        "models_differ": not all(comparable),
        "queries": queries_info,
        "rounds": rounds,
        "machine": machine(),
        "variants": [],
    }
    reference_vectors = reference_ranks = None
    for v, same in zip(variants, comparable, strict=True):
        step(f"embedding {len(rows.ids)} photos and texts with {v.name}")
        vectors = embed_rows(v, rows)
        entry = _describe(v)
        entry["same_model_as_reference"] = same
        if same:
            ranks = self_rankings(*vectors, v.card.text_weight, k)
            if reference_vectors is None:  # the reference is the first variant, and the same model as itself
                reference_vectors, reference_ranks = vectors, ranks
            entry["cosine_to_reference"] = {
                "image": cosine_stats(vectors[0], reference_vectors[0]),
                "text": cosine_stats(vectors[1], reference_vectors[1]),
            }
            entry["agreement"] = {kind: agreement(reference_ranks[kind], ranks[kind]) for kind in ranks}
        else:  # vectors of another space: neither their cosine to the reference's nor ranking agreement means anything
            entry["cosine_to_reference"] = entry["agreement"] = None
            entry["not_compared"] = NOT_COMPARED
        if labelled is not None:
            entry["recall"] = recall(v, labelled, rows, vectors, max_text_chars)
        report["variants"].append(entry)
    step(f"timing the towers at batch {' and '.join(map(str, BATCH_SIZES))}, {rounds} interleaved rounds")
    speeds = measure_speed(variants, rows, rounds)
    base = speeds[0]
    for entry, measured in zip(report["variants"], speeds, strict=True):
        entry["speed"] = measured
        entry["speedup_vs_reference"] = {name: round(value / base[name], 3) for name, value in measured.items()}
    report["load_average"] = {
        "before": [round(x, 2) for x in load_before],
        "after": [round(x, 2) for x in os.getloadavg()],
    }
    return report


# -------------------------------------------------------------------------------------------------------------- output
COLUMNS = (
    ("variant", 24),
    ("MiB", 7),
    ("img/s@1", 8),
    ("img/s@32", 9),
    ("x fp32", 7),
    ("txt/s@1", 8),
    ("txt/s@32", 9),
    ("cos img", 13),
    ("cos txt", 13),
    ("photo t1/t10", 13),
    ("text t1/t10", 13),
)


def _repo_labels(report: dict) -> dict[str, str]:
    """How each repository is named in the table: its folder name, or its last two path parts where folder names
    repeat (models built side by side are often all called ``model_repository``)."""
    repos = [Path(e["repo"]) for e in report["variants"]]
    unique = len({r.name for r in repos}) == len(repos)
    return {str(r): r.name if unique else f"{r.parent.name}/{r.name}" for r in repos}


def _name(entry: dict, mixed: bool, repo: str | None = None) -> str:
    """A variant's first cell: its precision among precisions of one model; its family, model, precision and
    embedding size where the repositories hold different models."""
    repo = repo or Path(entry["repo"]).name
    if not mixed:
        return f"{entry['precision']} ({repo})"
    family = f"{entry['family']} " if entry["family"] else ""  # cards older than the family field have none
    return f"{family}{entry['model']}, {entry['embedding_dim']}-d ({repo})"


def _row(entry: dict, mixed: bool = False, repo: str | None = None) -> list[str]:
    speed, up = entry["speed"], entry["speedup_vs_reference"]
    cos, agree = entry["cosine_to_reference"], entry["agreement"]
    compared = cos is not None and agree is not None
    cells = [
        _name(entry, mixed, repo),
        f"{entry['size_mib']['total']:.1f}",
        f"{speed['images_per_s@1']:.1f}",
        f"{speed['images_per_s@32']:.1f}",
        f"{up['images_per_s@32']:.2f}",
        f"{speed['texts_per_s@1']:.1f}",
        f"{speed['texts_per_s@32']:.1f}",
    ]
    if compared:
        cells += [
            f"{cos['image']['mean']:.4f}/{cos['image']['min']:.3f}",
            f"{cos['text']['mean']:.4f}/{cos['text']['min']:.3f}",
            f"{agree['photo_queries']['top1']:.3f}/{agree['photo_queries']['top10']:.3f}",
            f"{agree['text_queries']['top1']:.3f}/{agree['text_queries']['top10']:.3f}",
        ]
    else:
        cells += ["n/a"] * 4
    if "recall" in entry:
        overall = entry["recall"]["overall"]
        cells += [f"{overall.get(f'recall@{k}', 0):.3f}" for k in RECALL_KS]
    return cells


def render(report: dict) -> str:
    """The comparison as a fixed-width table, reference first."""
    mixed = bool(report.get("models_differ"))
    labels = _repo_labels(report) if mixed else {}
    rows = [_row(entry, mixed, labels.get(entry["repo"])) for entry in report["variants"]]
    widths = [max(w, *(len(r[0]) for r in rows)) if i == 0 else w for i, (_, w) in enumerate(COLUMNS)]
    names = [n for n, _ in COLUMNS]
    if mixed:  # the speed ratio is to the reference, which is not "fp32" of the others
        names = ["model" if n == "variant" else "x ref" if n == "x fp32" else n for n in names]
    if report["queries"]:
        names += [f"R@{k}" for k in RECALL_KS]
        widths += [6] * len(RECALL_KS)
    lines = [
        f"compare-models on {report['catalog']}: {report['rows']} products (each photo and text a query against the "
        f"others, top {report['agreement_k']}), reference {report['reference']}",
        "  ".join(f"{n:<{w}}" if i == 0 else f"{n:>{w}}" for i, (n, w) in enumerate(zip(names, widths, strict=True))),
    ]
    for cells in rows:
        lines.append(
            "  ".join(
                f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
        )
    m = report["machine"]
    lines.append(
        f"speed: bare towers, median of {report['rounds']} interleaved rounds; {m['cpu']}, {m['cores']} cores, "
        f"onnxruntime {m['onnxruntime']}; load average {report['load_average']['before'][0]} before, "
        f"{report['load_average']['after'][0]} after"
    )
    if report["queries"]:
        q = report["queries"]
        lines.append(
            f"recall: {q['queries']} queries from {q['file']} ({q['outside_rows']} left out: their products are not "
            "among the rows compared)"
        )
    if mixed:
        others = [_name(e, mixed, labels[e["repo"]]) for e in report["variants"] if not e["same_model_as_reference"]]
        lines.append(
            f"{NOT_COMPARED} for {', '.join(others)}: another model than the reference (family, weights or embedding "
            "size), whose vectors are in another space; recall, speed and size are side by side"
            + ("." if report["queries"] else "; pass --queries for recall@k, the quality measure across models.")
        )
    if report["skipped_rows"]:
        lines.append(f"{len(report['skipped_rows'])} catalogue rows skipped, first: {report['skipped_rows'][0]}")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("repos", nargs="+", metavar="REPO", help="model repositories; the first is the reference")
    p.add_argument("--catalog", required=True, help="catalogue whose photos and product texts are the queries")
    p.add_argument("--queries", help="labelled queries (JSONL) for recall@k of each variant")
    p.add_argument("--json", help="also write the comparison as JSON to this file")
    p.add_argument(
        "--limit", type=int, default=DEFAULT_LIMIT, help=f"compare on the first N products (default {DEFAULT_LIMIT})"
    )
    p.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="interleaved timing rounds (median kept)")


def run_from_args(args: argparse.Namespace, settings) -> int:
    report = compare(
        [Path(r) for r in args.repos],
        Path(args.catalog),
        Path(args.queries) if args.queries else None,
        limit=args.limit,
        rounds=args.rounds,
        max_text_chars=settings.max_text_chars,
    )
    print(render(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"written to {args.json}", file=sys.stderr)
    return 0
