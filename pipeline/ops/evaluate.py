"""``evaluate``: retrieval quality of the real pipeline on labelled queries, checked against a brute-force reference.

The catalogue is imported by the catalogue service and every query runs through ``Matcher``, as in the app.
``--check`` recomputes every ranking by numpy brute force from the stored vectors (a difference means a wrong fusion,
filter, id mapping or cache); ``--calibrate`` writes measured ``match``/``similar`` thresholds into the model card.
"recall@k" is the hit rate (a relevant product in the top k); MRR the mean reciprocal rank of the first one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np

from ..errors import PipelineError
from ..ingestion.catalogue import Catalogue
from ..inputs import clean_text, load_image
from ..model_repo import ModelCard
from ..progress import counter, step
from ..query.matcher import level_thresholds
from ..service import Pipeline
from ..settings import Settings
from ..storage.vectors import point_id
from ..storage.vectors.lexical import fuse_rankings, pinned
from ..storage.vectors.store import HYBRID_DEPTH
from ..types import level_for

KS = (1, 5, 10)
MATCH_PRECISION = 0.9
SIMILAR_PRECISION = 0.5


class CheckFailed(PipelineError):
    """The pipeline's rankings differ from the brute-force reference."""


@dataclass
class Query:
    line: int
    kind: str  # "text" or "image"
    value: str | Path
    relevant: set[str]
    label: str | None = None


@dataclass
class Ranked:
    query: Query
    ids: list[str]
    scores: list[float]
    levels: list[str] = field(default_factory=list)


def read_queries(path: Path) -> tuple[list[Query], list[str]]:
    """Query rows (``{"image"|"text", "relevant"|"product_id"}``); bad rows become messages, never a crash."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"The queries file {path} does not exist.")
    queries, bad = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            bad.append(f"line {number}: not valid JSON ({err.msg})")
            continue
        if not isinstance(row, dict):
            bad.append(f"line {number}: not a JSON object")
            continue
        relevant = row.get("relevant", [row["product_id"]] if "product_id" in row else None)
        if not isinstance(relevant, list) or not relevant:
            bad.append(f"line {number}: needs 'relevant' (a list of product ids) or 'product_id'")
            continue
        label = row.get("category")
        if isinstance(row.get("text"), str) and row["text"].strip():
            queries.append(Query(number, "text", row["text"], {str(r) for r in relevant}, label))
        elif isinstance(row.get("image"), str):
            image = path.parent / row["image"]
            if not image.is_file():
                bad.append(f"line {number}: image {row['image']} not found beside the queries file")
                continue
            queries.append(Query(number, "image", image, {str(r) for r in relevant}, label))
        else:
            bad.append(f"line {number}: needs 'text' or 'image'")
    return queries, bad


def metrics(results: list[Ranked], ks: tuple[int, ...] = KS) -> dict:
    if not results:
        return {"queries": 0}
    ranks = [_first_rank(r) for r in results]
    out: dict = {"queries": len(results)}
    for k in ks:
        out[f"recall@{k}"] = round(sum(1 for rank in ranks if rank is not None and rank <= k) / len(ranks), 4)
    out["mrr"] = round(sum(1.0 / rank for rank in ranks if rank is not None) / len(ranks), 4)
    return out


def _first_rank(result: Ranked) -> int | None:
    for rank, pid in enumerate(result.ids, start=1):
        if pid in result.query.relevant:
            return rank
    return None


def level_confusion(results: list[Ranked]) -> dict:
    """How the first relevant product was labelled (or missed), and how wrong top-1 products were labelled."""
    relevant: Counter = Counter()
    wrong_top1: Counter = Counter()
    for r in results:
        rank = _first_rank(r)
        relevant[r.levels[rank - 1] if rank else "missed"] += 1
        if r.ids and r.ids[0] not in r.query.relevant:
            wrong_top1[r.levels[0]] += 1
    return {"first_relevant": dict(relevant), "wrong_top1": dict(wrong_top1)}


def _run_pipeline(pipe: Pipeline, queries: list[Query], top_k: int, progress: bool) -> tuple[list[Ranked], list[str]]:
    results, failed = [], []
    bar = counter(len(queries), "evaluate", "query", enabled=progress)
    for q in queries:
        try:
            if q.kind == "text":
                answer = pipe.matcher.match_text(q.value, top_k)
            else:
                answer = pipe.matcher.match_image(q.value, top_k)
        except PipelineError as err:
            failed.append(f"line {q.line}: {err}")
        else:
            results.append(
                Ranked(
                    q,
                    [m.id for m in answer.matches],
                    [m.score for m in answer.matches],
                    [m.level for m in answer.matches],
                )
            )
        bar.update(1)
    bar.close()
    return results, failed


@dataclass
class Reference:
    """Brute-force scores of one query against every stored product, and the ranking they give."""

    ids: list[str]
    scores: np.ndarray  # float64, aligned with ids
    ranked: Ranked
    fusion: Fusion | None = None  # set when the order is the hybrid one (dense + BM25)

    @property
    def hybrid(self) -> bool:
        return self.fusion is not None

    def score_of(self, product_id: str) -> float:
        return float(self.scores[self._position[product_id]])

    def __post_init__(self) -> None:
        self._position = {pid: i for i, pid in enumerate(self.ids)}

    def fused_bounds(self, tolerance: float) -> dict[str, tuple[float, float]]:
        """Each candidate's lowest and highest possible fused (RRF) score, given that dense scores within
        ``tolerance`` of each other may come in either order (float32 in the store, float64 here): a tie in the dense
        ranking moves a product's dense rank, and so its fused score, by a little."""
        assert self.fusion is not None
        k, depth = self.fusion.rrf_k, self.fusion.depth
        ascending = np.sort(self.scores)
        n = len(ascending)
        best_rank = 1 + n - np.searchsorted(ascending, self.scores + tolerance, side="right")
        worst_rank = n - np.searchsorted(ascending, self.scores - tolerance, side="left")
        high = np.where(best_rank <= depth, 1.0 / (k + best_rank), 0.0)
        low = np.where(worst_rank <= depth, 1.0 / (k + worst_rank), 0.0)
        lexical = {pid: 1.0 / (k + rank) for rank, pid in enumerate(self.fusion.lexical, start=1)}
        bounds = {}
        for i, pid in enumerate(self.ids):
            extra = lexical.get(pid, 0.0)
            if high[i] or extra:
                bounds[pid] = (float(low[i]) + extra, float(high[i]) + extra)
        return bounds


@dataclass(frozen=True)
class Fusion:
    """How a hybrid reference was fused: the BM25 ranking, the products pinned first (SKU or whole name), RRF's k and
    the depth of the dense ranking taken."""

    lexical: list[str]
    exact: frozenset[str]
    rrf_k: int
    depth: int


def brute_force(pipe: Pipeline, queries: list[Query], top_k: int) -> list[Reference]:
    """Rankings from the stored vectors and a numpy matrix product (in float64): the exact reference."""
    # Every product (all have a text vector); each scored by its best photo (MaxSim), as the stores score them
    ids, text_vectors = pipe.index.all_vectors("text")
    text_vectors = text_vectors.astype(np.float64)
    owners, photo_rows = pipe.index.all_photo_vectors()
    position = {pid: i for i, pid in enumerate(ids)}
    owner = np.array([position[pid] for pid in owners], dtype=np.int64)
    photo_rows = photo_rows.astype(np.float64)

    def best_photo(v: np.ndarray) -> np.ndarray:
        """Each product's best photo score; -inf for a product without a photo."""
        best = np.full(len(ids), -np.inf)
        if len(owner):
            np.maximum.at(best, owner, photo_rows @ v)
        return best

    encoder, w = pipe.encoder, pipe.card.text_weight
    hybrid = pipe.settings.hybrid_search
    keys = {point_id(pid): pid for pid in ids}
    names = {}
    if hybrid:
        docs = pipe.store.get_many(ids)
        names = {pid: (doc.get("SKU"), doc.get("name"), *(doc.get("skus") or ())) for pid, doc in docs.items()}
    out = []
    for q in queries:
        if q.kind == "text":
            text = clean_text(q.value, pipe.settings.max_text_chars)
            v = encoder.encode_texts([text])[0].astype(np.float64)
            by_text, by_photo = text_vectors @ v, best_photo(v)
            # a product without a photo is scored by its text alone (types.fused_vector)
            scores = w * by_text + (1 - w) * np.where(np.isfinite(by_photo), by_photo, by_text)
        else:
            v = encoder.encode_images([load_image(q.value)])[0].astype(np.float64)
            scores = best_photo(v)  # products without a photo are never an answer to a photo
        order = np.argsort(-scores, kind="stable")
        order = order[np.isfinite(scores[order])]
        top = [ids[i] for i in order[:top_k]]
        lexical = []
        depth = top_k
        if hybrid and q.kind == "text":
            depth = max(HYBRID_DEPTH, 3 * top_k)
            lexical = [keys[k] for k, _ in pipe.index.search_lexical(text, depth) if k in keys]
        fusion = None
        if lexical:  # the same fusion as the stores, over the brute-force dense ranking
            top = fuse_rankings([ids[i] for i in order[:depth]], lexical, names, text, top_k, pipe.settings.rrf_k)
            fusion = Fusion(lexical, frozenset(pinned(lexical, names, text)), pipe.settings.rrf_k, depth)
        ranked = Ranked(q, top, [float(scores[position[pid]]) for pid in top])
        out.append(Reference(ids, scores, ranked, fusion))
    return out


def calibrate(results: list[Ranked]) -> dict[str, dict[str, float]]:
    """Per query kind: the lowest top-1 score above which top-1 answers are right often enough.

    ``match``: precision of top-1 >= 0.9 among queries scoring at least the threshold; ``similar``: >= 0.5. Where no
    threshold reaches the precision, the threshold sits above every observed score (the level is never given).
    """
    thresholds = {}
    for kind in ("text", "image"):
        pairs = sorted(
            ((r.scores[0], r.ids[0] in r.query.relevant) for r in results if r.query.kind == kind and r.ids),
            reverse=True,
        )
        if not pairs:
            continue
        levels = {}
        for name, target in (("match", MATCH_PRECISION), ("similar", SIMILAR_PRECISION)):
            best, right = None, 0
            for i, (score, ok) in enumerate(pairs, start=1):
                right += ok
                if right / i >= target:
                    best = score
            # Rounded down, so the query that set a threshold still reaches it.
            levels[name] = math.floor(best * 1e4) / 1e4 if best is not None else round(pairs[0][0] + 1e-3, 4)
        levels["similar"] = min(levels["similar"], levels["match"])
        thresholds[kind] = levels
    return thresholds


def _relabel(results: list[Ranked], card: ModelCard, settings: Settings) -> None:
    """Levels as the matcher gives them (the card's thresholds unless MATCH_THRESHOLD / SIMILAR_THRESHOLD are set)."""
    for r in results:
        match_t, similar_t = level_thresholds(card, settings, r.query.kind)
        r.levels = [level_for(s, match_t, similar_t) for s in r.scores]


def _by_label(pipe: Pipeline, results: list[Ranked]) -> dict:
    """Metrics per category: the query's own ``category`` label, else the category of its first relevant product."""
    missing = {next(iter(r.query.relevant)) for r in results if r.query.label is None}
    categories = {}
    with contextlib.suppress(PipelineError):
        categories = {pid: doc.get("category") for pid, doc in pipe.store.get_many(sorted(missing)).items()}
    groups: dict[str, list[Ranked]] = defaultdict(list)
    for r in results:
        label = r.query.label or categories.get(sorted(r.query.relevant)[0]) or "unknown"
        groups[str(label)].append(r)
    return {label: metrics(rs) for label, rs in sorted(groups.items())}


@contextlib.contextmanager
def _pipeline(settings: Settings, live: bool) -> Iterator[Pipeline]:
    """The live store, or a throwaway one (own data folder, own MongoDB-protocol server, local Qdrant, own cache)."""
    if live:
        with Pipeline(settings) as pipe:
            yield pipe
        return
    with tempfile.TemporaryDirectory(prefix="evaluate-") as tmp:
        temp = settings.with_(data_dir=Path(tmp), mongodb_uri=None, qdrant_url=None)
        with Pipeline(temp) as pipe:
            yield pipe


def run(
    settings: Settings,
    catalog: Path | None,
    queries_path: Path,
    top_k: int = 10,
    live: bool = False,
    check: bool = False,
    do_calibrate: bool = False,
    images_dir: Path | None = None,
    progress: bool = True,
) -> dict:
    queries, bad_rows = read_queries(queries_path)
    if not queries:
        raise PipelineError(f"No usable query in {queries_path}.")
    with _pipeline(settings, live) as pipe:
        if not live:
            if catalog is None:
                raise PipelineError("Name the catalogue to evaluate on (--catalog), or use --live.")
            step(f"ingesting {catalog} into a temporary index")
            Catalogue(pipe).ingest(Path(catalog), images_dir, progress=progress)
        step(f"running {len(queries)} queries through the pipeline")
        results, failed = _run_pipeline(pipe, queries, max(top_k, max(KS)), progress)
        report = {
            "model": pipe.card.label,
            "model_identity": pipe.card.identity,
            "catalog": str(catalog) if catalog else "live",
            "queries_file": str(queries_path),
            "top_k": top_k,
            "overall": metrics(results),
            "by_kind": {k: metrics([r for r in results if r.query.kind == k]) for k in ("text", "image")},
            "levels": level_confusion(results),
            "by_category": _by_label(pipe, results),
            "bad_rows": bad_rows,
            "failed_queries": failed,
        }
        report["by_kind"] = {k: v for k, v in report["by_kind"].items() if v["queries"]}
        if check:
            step("checking every ranking against numpy brute force")
            reference = brute_force(pipe, [r.query for r in results], max(top_k, max(KS)))
            report["check"] = _compare(results, reference, pipe.index.searches_exactly())
        if do_calibrate:
            card = pipe.card
            found = calibrate(results)
            card.thresholds = {**card.thresholds, **found}
            if found:
                counts = {k: sum(r.query.kind == k for r in results) for k in found}
                kinds = ", ".join(f"{k} from {n} labelled queries" for k, n in counts.items())
                where = Path(catalog).name if catalog else "the live catalogue"
                card.thresholds_calibration = f"evaluate --calibrate on {where} ({kinds}), {date.today().isoformat()}"
            card.save(pipe.settings.model_repository)
            _relabel(results, card, pipe.settings)
            report["calibrated_thresholds"] = found
            report["levels_after_calibration"] = level_confusion(results)
    return report


# Float32 dot products of unit vectors (and the 6-decimal rounding of reported scores) differ from float64 by well under
# this; a wrong id, a wrong fusion or a wrong filter moves a score by far more.
SCORE_TOLERANCE = 2e-5


def ranking_errors(result: Ranked, reference: Reference, tolerance: float = SCORE_TOLERANCE) -> list[str]:
    """Why ``result`` is not an exact top-k of ``reference`` (empty when it is one, up to float-level ties).

    Each returned product must carry its true score, and the i-th must score as high as the i-th best product: so
    products whose true scores tie may come in any order, and nothing else may differ.
    """
    best = reference.ranked.scores
    errors = []
    if reference.hybrid:  # an order fused from two rankings: the reference's, up to ties, and every score true
        errors = _hybrid_order_errors(result, reference, tolerance)
        for rank, (pid, score) in enumerate(zip(result.ids, result.scores, strict=True), start=1):
            if abs(reference.score_of(pid) - score) > tolerance:
                errors.append(f"rank {rank}: {pid} reported {score:.6f}, its score is {reference.score_of(pid):.6f}")
        return errors
    if len(result.ids) != len(best):
        errors.append(f"{len(result.ids)} results instead of {len(best)}")
    if len(set(result.ids)) != len(result.ids):
        errors.append("a product is returned twice")
    for rank, (pid, score) in enumerate(zip(result.ids, result.scores, strict=True), start=1):
        true = reference.score_of(pid)
        if abs(true - score) > tolerance:
            errors.append(f"rank {rank}: {pid} reported {score:.6f}, its score is {true:.6f}")
        elif rank <= len(best) and true < best[rank - 1] - tolerance:
            errors.append(
                f"rank {rank}: {pid} scores {true:.6f}, the product ranked {rank} should score {best[rank - 1]:.6f}"
            )
    return errors


def _hybrid_order_errors(result: Ranked, reference: Reference, tolerance: float) -> list[str]:
    """Why ``result`` is not a hybrid top-k of ``reference``: the pinned products first, then an order that the fused
    scores allow (a product may precede another only if its highest possible fused score reaches the other's lowest),
    and nothing left out that must outrank something kept."""
    fusion, want = reference.fusion, reference.ranked.ids
    assert fusion is not None
    ids = result.ids
    if len(ids) != len(want) or len(set(ids)) != len(ids):
        return [f"hybrid order {ids[:5]} instead of {want[:5]} ({len(ids)} results, {len(want)} expected)"]
    pinned = [p for p in want if p in fusion.exact]
    if set(ids[: len(pinned)]) != set(pinned):
        return [f"hybrid order {ids[:5]}: the exact SKU or name matches {pinned[:5]} must come first"]
    bounds = reference.fused_bounds(tolerance)
    rest = ids[len(pinned) :]
    if any(p not in bounds for p in rest):
        return [f"hybrid order {ids[:5]}: {[p for p in rest if p not in bounds][:3]} are in neither ranking"]
    eps = 1e-12
    for i, above in enumerate(rest):
        later = [bounds[p][0] for p in rest[i + 1 :]]
        if later and bounds[above][1] < max(later) - eps:
            return [f"hybrid order {ids[:5]} instead of {want[:5]}: {above} cannot rank above what follows it"]
    kept = set(ids)
    left_out = max((low for p, (low, _) in bounds.items() if p not in kept and p not in fusion.exact), default=0.0)
    if rest and min(bounds[p][1] for p in rest) < left_out - eps:
        return [f"hybrid order {ids[:5]} instead of {want[:5]}: a product left out outranks one returned"]
    return []


def _compare(results: list[Ranked], reference: list[Reference], exact: bool) -> dict:
    """Exact search must equal the reference; HNSW search is reported as its recall against exact search (and every
    score it reports must still be the product's true score)."""
    want = metrics([r.ranked for r in reference])
    recall, wrong_scores, differing = [], [], []
    for r, ref in zip(results, reference, strict=True):
        errors = ranking_errors(r, ref)
        if errors:
            differing.append((r.query.line, errors[0]))
        if any("reported" in e for e in errors):
            wrong_scores.append(r.query.line)
        k = len(ref.ranked.ids)
        if k:
            recall.append(len(set(r.ids) & set(ref.ranked.ids)) / k)
    out = {
        "ok": True,
        "exact_search": exact,
        "reference": want,
        "k": len(reference[0].ranked.ids) if reference else 0,
        "recall_vs_exact": round(float(np.mean(recall)), 4) if recall else 1.0,
    }
    if wrong_scores or (exact and differing):
        lines = [line for line, _ in differing]
        first = "; ".join(f"line {line}: {why}" for line, why in differing[:3])
        raise CheckFailed(
            f"The pipeline disagrees with the brute-force reference on {len(differing)} of {len(results)} queries "
            f"(first query lines: {lines[:5]}; {first}): pipeline {metrics(results)}, reference {want}."
        )
    out["queries_differing"] = len(differing)
    return out


def render(report: dict) -> str:
    lines = [f"model {report['model']} on {report['catalog']} with {report['queries_file']}"]

    def row(name: str, m: dict) -> str:
        cells = " ".join(f"{m.get(f'recall@{k}', 0):>9.3f}" for k in KS)
        return f"  {name[:44]:<44} {m['queries']:>7} {cells} {m.get('mrr', 0):>7.3f}"

    header = " ".join(f"{'R@' + str(k):>9}" for k in KS)
    lines.append(f"  {'':<44} {'queries':>7} {header} {'MRR':>7}")
    lines.append(row("overall", report["overall"]))
    for kind, m in report["by_kind"].items():
        lines.append(row(f"{kind} queries", m))
    if len(report["by_category"]) > 1:
        lines.append("  by category:")
        for label, m in report["by_category"].items():
            lines.append(row("  " + label, m))
    levels = report.get("levels_after_calibration", report["levels"])
    lines.append(f"  level of the first relevant product: {levels['first_relevant']}")
    lines.append(f"  level of a wrong top-1 product:      {levels['wrong_top1']}")
    if "calibrated_thresholds" in report:
        lines.append(f"  calibrated thresholds written to the model card: {report['calibrated_thresholds']}")
    if "check" in report:
        check = report["check"]
        if check["exact_search"]:
            lines.append("  check: the pipeline equals the numpy brute-force reference (exact search)")
        else:
            lines.append(
                f"  check: HNSW search; recall of its top {check['k']} against exact search "
                f"{check['recall_vs_exact']:.3f} "
                f"({check['queries_differing']} queries differ from exact), every reported score exact"
            )
    for message in report["bad_rows"]:
        lines.append(f"  bad query row {message}")
    for message in report["failed_queries"]:
        lines.append(f"  failed query {message}")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--catalog", help="catalogue to ingest into a temporary index (not needed with --live)")
    p.add_argument("--queries", required=True, help="JSONL: {'text'|'image', 'relevant'|'product_id'} per line")
    p.add_argument("--images", help="folder to look up absolute or foreign image paths of the catalogue")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--live", action="store_true", help="use the live index and store instead of a temporary one")
    p.add_argument("--check", action="store_true", help="fail unless the pipeline equals a numpy brute-force ranking")
    p.add_argument("--calibrate", action="store_true", help="write measured match/similar thresholds to the model card")
    p.add_argument("--json", help="also write the full report as JSON to this file")


def run_from_args(args: argparse.Namespace, settings: Settings) -> int:
    report = run(
        settings,
        Path(args.catalog) if args.catalog else None,
        Path(args.queries),
        top_k=args.top_k,
        live=args.live,
        check=args.check,
        do_calibrate=args.calibrate,
        images_dir=Path(args.images) if args.images else None,
    )
    print(render(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"report written to {args.json}", file=sys.stderr)
    return 0
