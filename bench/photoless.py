"""Should a photo query return products that have no photo, by their text vector? Measured, not assumed.

``python -m bench.photoless [--smoke] [--model-repo REPO] [--json OUT]``

The held-out fashion half (``bench.holdout``), every tenth product treated as having no photo (its photo withheld from
the catalogue, kept as a query). Two policies for a photo query:

- **photos only** (what the app does): the candidates are the products' photos; a photoless product is never returned;
- **text for the photoless**: a photoless product also competes, scored by the cosine of the query photo with its text
  vector (image-to-text), on the photos' list.

Two query sets: (a) each photoless product's own withheld photo, the only queries that can gain; (b) a new photo of
each product that has one (its photo in grey, cut by 15 %: not the stored copy), the queries that can lose when a text
vector outranks the right photo. recall@1 and recall@10 of the product the query photo shows, for each policy, and the
share of (b)'s top-10 lists into which a photoless product pushes. Pure numpy over the model's embeddings: the
policies differ only in the candidate list, so no store is needed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from bench import _common as c
from bench.holdout import split_data

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGES = REPO_ROOT.parent / "shared" / "data" / "fashion" / "images"


def _recall(scores: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Share of rows whose right column is among their ``k`` best."""
    if not len(truth):
        return float("nan")
    right = scores[np.arange(len(truth)), truth][:, None]
    rank = (scores > right).sum(axis=1)
    return float((rank < k).mean())


def main(argv: list[str] | None = None) -> int:
    p = c.parser(__doc__)
    args = p.parse_args(argv)
    repo = c.model_repo(args)
    info = c.machine()
    from pipeline import model_repo as mr
    from pipeline.inference.ort_backend import OrtBackend
    from pipeline.ingestion.catalog_reader import product_text
    from pipeline.query.encoder import Encoder
    from pipeline.query.preprocess import Preprocessor

    rows = split_data()["heldout"]["fashion"].catalog
    rows = rows[:40] if args.smoke else rows
    card = mr.ModelCard.load(repo)
    encoder = Encoder(card, Preprocessor(repo, card), OrtBackend(repo))
    photos, new_photos = [], []
    for row in rows:
        with Image.open(IMAGES / Path(row["image_path"]).name) as picture:
            picture = picture.convert("RGB")
            w, h = picture.size
            photos.append(picture)
            grey = ImageOps.grayscale(picture).convert("RGB")
            new_photos.append(grey.crop((int(w * 0.15), int(h * 0.15), w, h)))
    texts = [product_text(row) for row in rows]
    batch = 32
    embed = lambda fn, items: np.vstack([fn(items[i : i + batch]) for i in range(0, len(items), batch)])  # noqa: E731
    P, Q = embed(encoder.encode_images, photos), embed(encoder.encode_images, new_photos)
    T = embed(encoder.encode_texts, texts)
    photoless = np.array([n % 10 == 3 for n in range(len(rows))])
    # Candidate matrix per policy: column j is product j, by its photo or (photoless, "text" policy) by its text.
    only_photos = P.copy()
    with_text = np.where(photoless[:, None], T, P)
    a_queries, a_truth = P[photoless], np.flatnonzero(photoless)  # the withheld photos
    b_queries, b_truth = Q[~photoless], np.flatnonzero(~photoless)  # new photos of products that have one
    results = []
    for policy, cand in (("photos only (the app)", only_photos), ("text for the photoless", with_text)):
        mask = np.where(photoless, -np.inf, 0.0) if policy.startswith("photos") else np.zeros(len(rows))
        a = a_queries @ cand.T + mask
        b = b_queries @ cand.T + mask
        top10 = np.argsort(-b, axis=1)[:, :10]
        intruded = float(photoless[top10].any(axis=1).mean())
        results.append([policy, _recall(a, a_truth, 1), _recall(a, a_truth, 10), _recall(b, b_truth, 1),
                        _recall(b, b_truth, 10), intruded])  # fmt: skip
    cross = float(np.mean(np.sum(a_queries * T[photoless], axis=1)))
    same = float(np.mean(np.sum(b_queries * P[~photoless], axis=1)))
    share = photoless.mean()
    overall = [share * r[1] + (1 - share) * r[3] for r in results]
    rows_out = [[*r[:5], f"{r[5]:.1%}", round(o, 3)] for r, o in zip(results, overall, strict=True)]
    better = results[int(np.argmax(overall))][0]
    payload = c.report(
        "photoless",
        info,
        f"Photo queries and photoless products ({len(rows)} held-out fashion products, {int(photoless.sum())} "
        f"photoless; model {card.label})",
        ["policy", "(a) photoless: recall@1", "(a) recall@10", "(b) with photo: recall@1", "(b) recall@10",
         "(b) top-10 lists with a photoless product", "recall@1 over all queries"],
        rows_out,
        cosines=f"query photo vs its own text {cross:.3f}, vs its own stored photo {same:.3f} (mean)",
        better=better,
    )  # fmt: skip
    c.write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
