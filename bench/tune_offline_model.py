"""Choose a, b and T of the offline model, its text weight and its match thresholds by measurement.

The offline image vector is [a * penultimate, b * ConSE_T] with a^2 + b^2 = 1 (see
``pipeline/model_build/offline_model.py``). This
script exports the real ONNX towers (one image tower per T, with a = b), embeds one half of ../shared/data through them
with the client's own tokenizer and image processor, and re-weights the two unit-norm halves for each a: that is exactly
what the image tower exported with that a would output. Product texts are the pipeline's own
(``pipeline.ingestion.catalog_reader.product_text``), so what is tuned is what ingestion embeds. It then scores, by
brute-force numpy search (the pipeline's ``evaluate --check`` proves the pipeline ranks exactly so):

- grocery photo -> product recall@1/@5 (``grocery_store/queries.jsonl``; photo queries against image vectors);
- grocery class name -> product hit@5 against image vectors only (e.g. "apple": any apple): measures ConSE alone;
- fashion article-type hit@5 (``fashion/queries_attributes.jsonl``), fashion name recall@10 (``queries_names.jsonl``);
  text queries against both product vectors, fused as the pipeline does (w * text-to-text + (1 - w) * text-to-photo,
  w = the card's text_weight); max, sum and reciprocal-rank fusion are printed for comparison, and a table over w.

a^2 and T are chosen for the targets at the current w, then w at that (a^2, T), then (a^2, T) again at the new w, until
neither moves. The match / similar thresholds are then the pipeline's own ``evaluate --calibrate`` rule
(``pipeline.ops.evaluate.calibrate``: top-1 precision 0.9 / 0.5) on the labelled queries of the half: the grocery
photos for ``image``, the attribute queries and class words for ``text`` (see ``calibrated_thresholds``). The resize is
an option (``--resize``): one run a value (``--embeddings`` caches each), compared on the objective the last line
prints. The shipped constants came from ``--resize 256``, ``288``, ``320`` and ``352`` on the tuning half.

Data: ``--split tune`` (the default) is the tuning half of ``bench/holdout.py``'s split of ``--data``; ``heldout`` the
other half, ``all`` everything. Run: ``.venv/bin/python bench/tune_offline_model.py`` (a few minutes on 2 cores).
Targets from the issue: grocery photo R@1 >= 30 %, fashion article-type hit@5 >= 55 %.
"""

from __future__ import annotations

import argparse
import math
import pickle
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.holdout import DEFAULT_DATA, SPLITS, Dataset, relevant_of, split_data
from pipeline.ingestion.catalog_reader import product_text
from pipeline.model_build import offline_model as om
from pipeline.model_repo import OUTPUT, TEXT_INPUTS, VISUAL_INPUT

RRF_K = 60
TARGETS = {"grocery_photo_r1": 0.30, "fashion_type_hit5": 0.55}


# ------------------------------------------------------------------------------------------------ data
@dataclass
class Catalogue:
    ids: list[str]
    texts: list[str]
    images: list[Path]
    rows: list[dict]

    @classmethod
    def of(cls, ds: Dataset) -> Catalogue:
        """The catalogue of one split; image paths are absolute there, texts the pipeline's ``product_text``."""
        rows = ds.catalog
        return cls(
            [str(r["id"]) for r in rows], [product_text(r) for r in rows], [Path(r["image_path"]) for r in rows], rows
        )


# ------------------------------------------------------------------------------------------- embedding
class Client:
    """Embeds exactly as the app's client does: saved tokenizer / image processor, then the exported ONNX graphs."""

    def __init__(self, tokenizer_dir: Path, processor_dir: Path, text_onnx: Path, batch: int = 32) -> None:
        from transformers import AutoImageProcessor, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        self.processor = AutoImageProcessor.from_pretrained(str(processor_dir))
        self.text_session = om.onnx_session(text_onnx)
        self.batch = batch

    def texts(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), self.batch):
            enc = self.tokenizer(
                list(texts[start : start + self.batch]),
                padding="max_length",
                truncation=True,
                max_length=om.TEXT_MAX_LENGTH,
                return_tensors="np",
            )
            feeds = {name: enc[name].astype(np.int64) for name in TEXT_INPUTS}
            out.append(self.text_session.run([OUTPUT], feeds)[0])
        return np.concatenate(out)

    def pixel_batches(self, paths: Sequence[Path]) -> Iterable[np.ndarray]:
        from PIL import Image

        for start in range(0, len(paths), self.batch):
            images = [Image.open(p).convert("RGB") for p in paths[start : start + self.batch]]
            yield self.processor(images=images, return_tensors="np")["pixel_values"].astype(np.float32)


def image_halves(client: Client, sessions: dict[int, object], paths: Sequence[Path]) -> tuple[np.ndarray, dict]:
    """Unit penultimate features and unit ConSE vectors per T, read off image towers exported with a = b = 1/sqrt(2)."""
    pen, conse = [], {t: [] for t in sessions}
    for pixels in client.pixel_batches(paths):
        for t, session in sessions.items():
            out = session.run([OUTPUT], {VISUAL_INPUT: pixels})[0] * math.sqrt(2.0)
            conse[t].append(out[:, om.FEATURE_DIM :])
            if len(pen) < len(conse[t]):
                pen.append(out[:, : om.FEATURE_DIM])
    return np.concatenate(pen), {t: np.concatenate(v) for t, v in conse.items()}


def mix(pen: np.ndarray, conse: np.ndarray, a: float) -> np.ndarray:
    """The image vector for weight a: what the tower exported with that a outputs (to float rounding)."""
    return np.concatenate([a * pen, math.sqrt(1 - a * a) * conse], axis=1)


# --------------------------------------------------------------------------------------------- metrics
def ranks_of(scores: np.ndarray) -> np.ndarray:
    """Rank (0 = best) of every product for every query, for reciprocal-rank fusion."""
    order = np.argsort(-scores, axis=1)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(scores.shape[1])[None, :].repeat(len(scores), 0), axis=1)
    return ranks


def weighted(w: float) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The pipeline's fusion of a text query: w * (text-to-text) + (1 - w) * (text-to-photo), one query vector."""
    return lambda s_text, s_image: w * s_text + (1 - w) * s_image


FUSIONS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "max": np.maximum,
    "sum": np.add,
    "rrf": lambda s1, s2: 1.0 / (RRF_K + 1 + ranks_of(s1)) + 1.0 / (RRF_K + 1 + ranks_of(s2)),
    "text": lambda s_text, _s_image: s_text,
    "weighted": weighted(om.DEFAULT_TEXT_WEIGHT),  # at the card's w; fusion_of gives it at any w
}


def fusion_of(name: str, w: float) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``weighted`` at this w (the pipeline's), or one of the other fusions for comparison."""
    return weighted(w) if name == "weighted" else FUSIONS[name]


def hit_at(scores: np.ndarray, relevant: Sequence[set[int]], k: int) -> float:
    """Share of queries with at least one relevant product in the top k."""
    top = np.argsort(-scores, axis=1)[:, :k]
    return float(np.mean([bool(relevant[i] & set(top[i].tolist())) for i in range(len(top))]))


def relevant_sets(queries: Sequence[dict], ids: Sequence[str]) -> list[set[int]]:
    index = {pid: i for i, pid in enumerate(ids)}
    return [{index[p] for p in relevant_of(q) if p in index} for q in queries]


# ------------------------------------------------------------------------------------------------- run
@dataclass
class Embedded:
    """Everything embedded once; per-(a, T) image vectors are mixed from it."""

    g_pen: np.ndarray
    g_conse: dict
    gq_pen: np.ndarray
    gq_conse: dict
    g_truth: np.ndarray
    g_class_q: np.ndarray
    g_class_rel: list[set[int]]
    f_pen: np.ndarray
    f_conse: dict
    f_text: np.ndarray
    type_q: np.ndarray
    type_rel: list[set[int]]
    name_q: np.ndarray
    name_rel: list[set[int]]
    g_text: np.ndarray
    g_coarse: np.ndarray
    g_desc_q: np.ndarray
    g_desc_rel: list[set[int]]
    g_ids: list[str]
    f_ids: list[str]
    split: str


def embed_all(
    data: dict[str, Dataset], split: str, work: Path, tops: Sequence[int], resize: int, say: Callable[[str], None]
) -> Embedded:
    tokenizer, text_model = om.load_text_model()
    net = om.load_image_net()
    class_text = om.class_text_matrix(tokenizer, text_model, om.imagenet_class_names())
    text_onnx = work / "text.onnx"
    om.export_text_tower(text_onnx, text_model)
    om.save_client_files(tokenizer, work / "tokenizer", work / "processor", resize)
    sessions = {}
    for t in tops:
        path = work / f"visual_T{t}.onnx"
        om.export_image_tower(path, net, class_text, om.OfflineConfig(a=math.sqrt(0.5), top_t=t, resize=resize))
        sessions[t] = om.onnx_session(path)
    client = Client(work / "tokenizer", work / "processor", text_onnx)
    say(f"exported text tower and {len(tops)} image towers; embedding the {split!r} split")

    g_data, f_data = data["grocery_store"], data["fashion"]
    grocery, fashion = Catalogue.of(g_data), Catalogue.of(f_data)
    g_queries = g_data.queries["queries.jsonl"]
    g_pen, g_conse = image_halves(client, sessions, grocery.images)
    gq_pen, gq_conse = image_halves(client, sessions, [Path(q["image"]) for q in g_queries])
    say(f"grocery embedded ({len(grocery.ids)} products, {len(g_queries)} photos)")
    f_pen, f_conse = image_halves(client, sessions, fashion.images)
    say(f"fashion images embedded ({len(fashion.ids)} products)")
    class_queries = g_data.queries["queries_classes.jsonl"]
    desc_queries = g_data.queries["queries_descriptions.jsonl"]
    type_queries = f_data.queries["queries_attributes.jsonl"]
    name_queries = f_data.queries["queries_names.jsonl"]
    index = {pid: i for i, pid in enumerate(grocery.ids)}
    return Embedded(
        g_pen,
        g_conse,
        gq_pen,
        gq_conse,
        np.array([index[str(q["product_id"])] for q in g_queries]),
        client.texts([q["text"] for q in class_queries]),
        relevant_sets(class_queries, grocery.ids),
        f_pen,
        f_conse,
        client.texts(fashion.texts),
        client.texts([q["text"] for q in type_queries]),
        relevant_sets(type_queries, fashion.ids),
        client.texts([q["text"] for q in name_queries]),
        relevant_sets(name_queries, fashion.ids),
        client.texts(grocery.texts),
        np.array([r["coarse_class"] for r in grocery.rows]),
        client.texts([q["text"] for q in desc_queries]),
        relevant_sets(desc_queries, grocery.ids),
        grocery.ids,
        fashion.ids,
        split,
    )


def score(e: Embedded, a2: float, t: int, fusion: str, w: float) -> dict[str, float]:
    a = math.sqrt(a2)
    g_img, gq_img = mix(e.g_pen, e.g_conse[t], a), mix(e.gq_pen, e.gq_conse[t], a)
    f_img = mix(e.f_pen, e.f_conse[t], a)
    photo = gq_img @ g_img.T
    top5 = np.argsort(-photo, axis=1)[:, :5]
    fuse = fusion_of(fusion, w)
    return {
        "grocery_photo_r1": float(np.mean(top5[:, 0] == e.g_truth)),
        "grocery_photo_r5": float(np.mean((top5 == e.g_truth[:, None]).any(1))),
        "grocery_class_img_hit5": hit_at(e.g_class_q @ g_img.T, e.g_class_rel, 5),
        "fashion_type_hit5": hit_at(fuse(e.type_q @ e.f_text.T, e.type_q @ f_img.T), e.type_rel, 5),
        "fashion_type_img_hit5": hit_at(e.type_q @ f_img.T, e.type_rel, 5),
        "fashion_name_r10": hit_at(fuse(e.name_q @ e.f_text.T, e.name_q @ f_img.T), e.name_rel, 10),
    }


def objective(m: dict[str, float]) -> tuple:
    """Meet both targets first, then the best sum of the two target metrics, then the text-to-image metrics."""
    meets = all(m[k] >= v for k, v in TARGETS.items())
    targets = m["grocery_photo_r1"] + m["fashion_type_hit5"]
    return (meets, targets, m["grocery_class_img_hit5"] + m["fashion_type_img_hit5"])


def print_table(rows: list[tuple[float, int, dict]], fusion: str, w: float) -> None:
    keys = list(rows[0][2])
    print(
        f"\nfusion of text queries over the two product vectors: {fusion}"
        + (f", w={w}" if fusion == "weighted" else "")
    )
    print(f"{'a^2':>5} {'T':>4} " + " ".join(f"{k:>22}" for k in keys))
    for a2, t, m in rows:
        print(f"{a2:5.2f} {t:4d} " + " ".join(f"{100 * m[k]:21.1f}%" for k in keys))


def fusion_table(e: Embedded, a2: float, t: int, w: float) -> None:
    print(f"\ntext-query fusion at a^2={a2}, T={t} (text = product text vector only; weighted at w={w})")
    for name in FUSIONS:
        m = score(e, a2, t, name, w)
        print(
            f"  {name:>8}: fashion type hit@5 {100 * m['fashion_type_hit5']:5.1f}%   "
            f"fashion name R@10 {100 * m['fashion_name_r10']:5.1f}%"
        )


def text_metrics(e: Embedded, a2: float, t: int, fuse: Callable) -> dict[str, float]:
    """Text-query metrics under one fusion (the photo metrics do not depend on it)."""
    a = math.sqrt(a2)
    g_img, f_img = mix(e.g_pen, e.g_conse[t], a), mix(e.f_pen, e.f_conse[t], a)
    return {
        "fashion_type_hit5": hit_at(fuse(e.type_q @ e.f_text.T, e.type_q @ f_img.T), e.type_rel, 5),
        "fashion_name_r10": hit_at(fuse(e.name_q @ e.f_text.T, e.name_q @ f_img.T), e.name_rel, 10),
        "grocery_class_hit5": hit_at(fuse(e.g_class_q @ e.g_text.T, e.g_class_q @ g_img.T), e.g_class_rel, 5),
        "grocery_desc_r1": hit_at(fuse(e.g_desc_q @ e.g_text.T, e.g_desc_q @ g_img.T), e.g_desc_rel, 1),
        "grocery_desc_r5": hit_at(fuse(e.g_desc_q @ e.g_text.T, e.g_desc_q @ g_img.T), e.g_desc_rel, 5),
    }


def weight_table(e: Embedded, a2: float, t: int, weights: Sequence[float]) -> float:
    """Text-query metrics for the pipeline's weighted fusion; returns the w with the best sum of them."""
    print(f"\ntext queries, fused score w * text-to-text + (1 - w) * text-to-photo, at a^2={a2}, T={t}")
    rows = [(w, text_metrics(e, a2, t, weighted(w))) for w in weights]
    keys = list(rows[0][1])
    print(f"{'w':>5} " + " ".join(f"{k:>19}" for k in keys) + f" {'sum':>8}")
    for w, m in rows:
        print(f"{w:5.2f} " + " ".join(f"{100 * m[k]:18.1f}%" for k in keys) + f" {100 * sum(m.values()):8.1f}")
    return max(rows, key=lambda r: (round(sum(r[1].values()), 6), -r[0]))[0]


def choose(e: Embedded, args: argparse.Namespace) -> tuple[float, int, float, dict, list]:
    """(a^2, T) for the targets at w, then w at (a^2, T), repeated until neither moves (at most 5 rounds)."""
    w, seen = om.DEFAULT_TEXT_WEIGHT, set()
    for _ in range(5):
        rows = [(a2, t, score(e, a2, t, args.fusion, w)) for t in args.T for a2 in args.a2]
        a2, t, best = max(rows, key=lambda r: objective(r[2]))
        new_w = weight_table(e, a2, t, args.w) if args.fusion == "weighted" else w
        print(f"  round: at w={w} the best a^2={a2}, T={t}; at those the best w={new_w}")
        if (a2, t, new_w) in seen or new_w == w:
            return a2, t, new_w, best, rows
        seen.add((a2, t, w))
        w = new_w
    return a2, t, w, best, rows


# ------------------------------------------------------------------------------------------ thresholds
def ranked_queries(e: Embedded, a2: float, t: int, w: float, k: int = 10) -> dict[str, list]:
    """Every labelled query of the split as the pipeline's ``evaluate`` would rank it (top k, brute force), per file.

    Each query is also asked of the *other* catalogue (grocery photos and texts of the fashion one, fashion texts of the
    grocery one), where nothing is relevant ("... elsewhere"): those are the queries a threshold must turn away.
    """
    from pipeline.ops.evaluate import Query, Ranked

    a = math.sqrt(a2)
    g_img, gq_img = mix(e.g_pen, e.g_conse[t], a), mix(e.gq_pen, e.gq_conse[t], a)
    f_img = mix(e.f_pen, e.f_conse[t], a)
    fuse = weighted(w)
    grocery, fashion = (e.g_text, g_img, e.g_ids), (e.f_text, f_img, e.f_ids)
    asked = {  # label: (kind, query vectors, relevant, own catalogue, other catalogue)
        "grocery photos": ("image", gq_img, [{i} for i in e.g_truth.tolist()], grocery, fashion),
        "grocery descriptions": ("text", e.g_desc_q, e.g_desc_rel, grocery, fashion),
        "grocery class words": ("text", e.g_class_q, e.g_class_rel, grocery, fashion),
        "fashion names": ("text", e.name_q, e.name_rel, fashion, grocery),
        "fashion attributes": ("text", e.type_q, e.type_rel, fashion, grocery),
    }
    out: dict[str, list] = {}
    for label, (kind, q, relevant, own, other) in asked.items():
        for name, (texts, images, ids), rel in ((label, own, relevant), (f"{label} elsewhere", other, None)):
            scores = q @ images.T if kind == "image" else fuse(q @ texts.T, q @ images.T)
            top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            out[name] = [
                Ranked(
                    Query(i + 1, kind, name, {ids[j] for j in rel[i]} if rel else set()),
                    [ids[j] for j in top[i]],
                    [float(scores[i, j]) for j in top[i]],
                )
                for i in range(len(scores))
            ]
    return out


VERBATIM = ("grocery descriptions", "fashion names")  # a product's own text: right at any score, they bound nothing


def calibrated_thresholds(e: Embedded, a2: float, t: int, w: float) -> dict[str, dict[str, float]]:
    """The pipeline's ``evaluate --calibrate`` rule (``calibrate``) on the split's queries, each on its catalogue.

    Chosen: ``image`` from the grocery photos; ``text`` from the text queries that are not a product's own text
    (attribute queries, class words: the verbatim ones are right at any score and would pull every threshold down to
    the lowest score seen). Where the rule finds no bound (the threshold falls to the lowest top-1 score of its queries:
    they are right often enough at any score), the shipped value is kept. Also printed: the rule per file, over every
    query, and with every query also asked of the other catalogue (where nothing is relevant).
    """
    from pipeline.ops.evaluate import MATCH_PRECISION, SIMILAR_PRECISION, calibrate, metrics

    ranked = ranked_queries(e, a2, t, w)
    print(
        f"\ncalibrated thresholds at a^2={a2}, T={t}, w={w} (pipeline.ops.evaluate.calibrate: top-1 precision "
        f">= {MATCH_PRECISION} for match, >= {SIMILAR_PRECISION} for similar; R@k / MRR by brute force)"
    )
    print(f"  {'queries':>31} {'n':>5} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'MRR':>6}  calibrate() on this file alone")
    for label, results in ranked.items():
        m = metrics(results)
        cells = " ".join(f"{100 * m[f'recall@{k}']:5.1f}%" for k in (1, 5, 10))
        found = calibrate(results) if not label.endswith("elsewhere") else "-"
        print(f"  {label:>31} {m['queries']:5d} {cells} {m['mrr']:6.3f}  {found}")
    own = [label for label in ranked if not label.endswith("elsewhere")]
    print(f"  every query, own catalogue:        {calibrate([r for label in own for r in ranked[label]])}")
    print(f"  every query, own + other catalogue: {calibrate([r for rs in ranked.values() for r in rs])}")
    used = [r for label in own if label not in VERBATIM for r in ranked[label]]
    found = calibrate(used)
    chosen: dict[str, dict[str, float]] = {}
    for kind, levels in found.items():
        lowest = math.floor(min(r.scores[0] for r in used if r.query.kind == kind and r.ids) * 1e4) / 1e4
        chosen[kind] = {
            name: om.DEFAULT_THRESHOLDS[kind][name] if value <= lowest else value for name, value in levels.items()
        }
        chosen[kind]["similar"] = min(chosen[kind]["similar"], chosen[kind]["match"])
        kept = [name for name, value in levels.items() if value <= lowest]
        print(
            f"  {kind}: calibrate() on {sum(r.query.kind == kind for r in used)} non-verbatim queries {levels}"
            + (f"; no bound for {kept} (lowest top-1 score {lowest}): shipped value kept" if kept else "")
        )
    print(f"  chosen: {chosen}   (shipped now: {om.DEFAULT_THRESHOLDS})")
    return chosen


def threshold_report(e: Embedded, a2: float, t: int, w: float) -> None:
    """Score distributions that the match / similar thresholds are read from (photo queries and text queries)."""
    a = math.sqrt(a2)
    g_img, gq_img = mix(e.g_pen, e.g_conse[t], a), mix(e.gq_pen, e.gq_conse[t], a)
    photo = gq_img @ g_img.T
    right = photo[np.arange(len(photo)), e.g_truth]
    best_other = np.where(np.arange(photo.shape[1])[None, :] == e.g_truth[:, None], -1, photo).max(1)
    cross = gq_img @ mix(e.f_pen, e.f_conse[t], a).T  # grocery photos against the fashion catalogue: nothing close
    text_text = e.type_q @ e.f_text.T
    pct = (5, 25, 50, 75, 95)
    print(f"\nscore percentiles {pct} at a^2={a2}, T={t}")
    for label, values in (
        ("photo: its own product", right),
        ("photo: best other product", best_other),
        ("photo: best in an unrelated catalogue", cross.max(1)),
        ("text: best product text", text_text.max(1)),
        ("text: best product image", (e.type_q @ mix(e.f_pen, e.f_conse[t], a).T).max(1)),
    ):
        print(f"  {label:>38}: " + " ".join(f"{v:5.3f}" for v in np.percentile(values, pct)))
    threshold_table(photo, cross, e, ("photo", "grocery photo", "vs fashion catalogue"))
    f_img = mix(e.f_pen, e.f_conse[t], a)
    fuse = weighted(w)
    in_domain = fuse(e.type_q @ e.f_text.T, e.type_q @ f_img.T)
    unrelated = fuse(e.g_class_q @ e.f_text.T, e.g_class_q @ f_img.T)  # "apple" in a fashion catalogue
    print(f"\n  text queries (fused, w={w}): share whose best score >= threshold")
    print("  thr  fashion attribute queries  grocery class names vs fashion")
    for thr in np.arange(0.30, 0.86, 0.05):
        passing = (100 * np.mean(in_domain.max(1) >= thr), 100 * np.mean(unrelated.max(1) >= thr))
        print(f"  {thr:.2f} {passing[0]:25.1f}% {passing[1]:30.1f}%")


def threshold_table(scores: np.ndarray, unrelated: np.ndarray, e: Embedded, labels: tuple[str, str, str]) -> None:
    """For each threshold: how many photo queries pass, how often their top-1 is right or the same kind of product."""
    top1 = scores.argmax(1)
    best = scores.max(1)
    right = top1 == e.g_truth
    same_kind = e.g_coarse[top1] == e.g_coarse[e.g_truth]
    print(f"\n  {labels[0]} queries: share with top-1 score >= threshold, and what that top-1 is")
    print(f"  thr  {labels[1]:>14} passing  top-1 right  top-1 same kind  {labels[1]} {labels[2]} passing")
    for thr in np.arange(0.35, 0.76, 0.05):
        keep = best >= thr
        n = max(int(keep.sum()), 1)
        print(
            f"  {thr:.2f} {100 * keep.mean():21.1f}% {100 * right[keep].sum() / n:11.1f}% "
            f"{100 * same_kind[keep].sum() / n:15.1f}% {100 * np.mean(unrelated.max(1) >= thr):30.1f}%"
        )


def verify_choice(data: dict[str, Dataset], config: om.OfflineConfig, say: Callable[[str], None]) -> float:
    """Build the chosen model with ``export_offline`` itself and measure grocery photo R@1 on its files, end to end."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        om.export_offline(
            root / "text.onnx", root / "visual.onnx", root / "tokenizer", root / "processor", config=config
        )
        client = Client(root / "tokenizer", root / "processor", root / "text.onnx")
        session = om.onnx_session(root / "visual.onnx")
        grocery = Catalogue.of(data["grocery_store"])
        queries = data["grocery_store"].queries["queries.jsonl"]

        def embed(paths: Sequence[Path]) -> np.ndarray:
            return np.concatenate([session.run([OUTPUT], {VISUAL_INPUT: p})[0] for p in client.pixel_batches(paths)])

        catalogue, photos = embed(grocery.images), embed([Path(q["image"]) for q in queries])
    truth = np.array([grocery.ids.index(str(q["product_id"])) for q in queries])
    r1 = float(np.mean((photos @ catalogue.T).argmax(1) == truth))
    say(f"export_offline({config}) -> grocery photo R@1 {100 * r1:.1f}% on its own exported files")
    return r1


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data (default ../shared/data)")
    parser.add_argument(
        "--split",
        choices=SPLITS,
        default="tune",
        help="which half of bench/holdout.py's split to tune on (default tune)",
    )
    parser.add_argument("--a2", type=float, nargs="+", default=[0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0])
    parser.add_argument("--T", type=int, nargs="+", default=[1, 3, 5, 10, 20])
    parser.add_argument("--resize", type=int, default=om.DEFAULT_RESIZE, help="shortest edge before the 224 crop")
    parser.add_argument("--w", type=float, nargs="+", default=[0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    parser.add_argument("--embeddings", type=Path, help="cache of the embeddings (pickle): reuse if there, else write")
    parser.add_argument(
        "--fusion", choices=sorted(FUSIONS), default="weighted", help="weighted = the pipeline's, w = the default"
    )
    parser.add_argument("--work", type=Path, default=None, help="keep the exported files here (default: a temp folder)")
    parser.add_argument("--no-verify", action="store_true", help="skip rebuilding the chosen model with export_offline")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    start = time.time()

    def say(msg: str) -> None:
        print(f"[{time.time() - start:6.1f}s] {msg}", flush=True)

    data = split_data(args.data)[args.split]
    if args.embeddings and args.embeddings.is_file():
        e = pickle.loads(args.embeddings.read_bytes())
        if getattr(e, "split", None) != args.split:
            raise SystemExit(f"{args.embeddings} holds the {getattr(e, 'split', '?')!r} split, not {args.split!r}")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            work = args.work or Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            e = embed_all(data, args.split, work, args.T, args.resize, say)
        if args.embeddings:
            args.embeddings.write_bytes(pickle.dumps(e))
    print(
        f"split {args.split!r} of {args.data}: {len(e.g_ids)} grocery products, {len(e.g_truth)} photos; "
        f"{len(e.f_ids)} fashion products, {len(e.name_rel)} name and {len(e.type_rel)} attribute queries"
    )
    a2, t, w, best, rows = choose(e, args)
    print_table(rows, args.fusion, w)
    fusion_table(e, a2, t, w)
    threshold_report(e, a2, t, w)
    thresholds = calibrated_thresholds(e, a2, t, w)
    met = "meets" if objective(best)[0] else "does NOT meet"
    print(
        f"\nchosen on the {args.split!r} split: a^2={a2} (a={math.sqrt(a2):.4f}, b={math.sqrt(1 - a2):.4f}), T={t}, "
        f"resize={args.resize}; {met} the targets {TARGETS} (grocery photo R@1 {100 * best['grocery_photo_r1']:.1f} % "
        f"+ fashion type hit@5 {100 * best['fashion_type_hit5']:.1f} %: compare runs of other --resize on this); "
        f"text_weight w={w}; thresholds {thresholds}"
    )
    if not args.no_verify:
        verify_choice(data, om.OfflineConfig(a=math.sqrt(a2), top_t=t, resize=args.resize), say)
    say("done")


if __name__ == "__main__":
    main()
