"""``duplicates``: pairs of products whose photos are near-identical (the same photo under two ids, a re-encoded or
slightly cropped copy), so a shop can merge or fix them. Also a section of every ingest report, for the products it
added or changed.

Each product's stored photo vector is searched against the others (the index does the work: no re-embedding, and a
catalogue of any size is read one product at a time); a pair is reported when the cosine reaches the threshold. The
threshold depends on the model: ``build-model`` cards carry none, so ``DEFAULT_THRESHOLD`` (measured on the
byte-identical pairs of ../shared/data/fashion against every other nearest pair, README "Search features") applies
unless ``--threshold`` or the model card's ``thresholds["duplicate"]`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable

from ..errors import InvalidInput
from ..progress import counter

DEFAULT_THRESHOLD = 0.995
NEIGHBOURS = 5


def threshold_for(card) -> float:
    value = (card.thresholds or {}).get("duplicate") if card is not None else None
    return float(value) if isinstance(value, (int, float)) else DEFAULT_THRESHOLD


def near_duplicates(index, product_ids: Iterable[str] | None, threshold: float, progress: bool = False) -> list[dict]:
    """Pairs ``{"a", "b", "cosine"}`` (a < b, best first) among ``product_ids`` (None: the whole catalogue) and
    everything else in the index."""
    if not 0.0 < threshold <= 1.0:
        raise InvalidInput("The duplicate threshold must be a cosine between 0 and 1.")
    ids = list(product_ids) if product_ids is not None else index.product_ids()
    pairs: dict[tuple[str, str], float] = {}
    bar = counter(len(ids), "duplicates", "product", enabled=progress)
    for start in range(0, len(ids), 256):
        chunk = ids[start : start + 256]
        vectors = index.vectors(chunk, "image")
        for pid in chunk:
            vector = vectors.get(pid)
            if vector is None:
                continue
            for hit in index.search(vector, "image", NEIGHBOURS + 1):
                if hit.product_id != pid and hit.score + 1e-6 >= threshold:
                    key = tuple(sorted((pid, hit.product_id)))
                    pairs[key] = max(pairs.get(key, -1.0), round(float(hit.score), 6))
        bar.update(len(chunk))
    bar.close()
    return [{"a": a, "b": b, "cosine": c} for (a, b), c in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threshold", type=float, help=f"cosine from which two photos count as one (default {DEFAULT_THRESHOLD})"
    )
    p.add_argument("--json", action="store_true", help="the pairs as JSON")


def run_from_args(args: argparse.Namespace, settings) -> int:
    from ..service import Pipeline

    with Pipeline(settings) as pipe:
        threshold = args.threshold if args.threshold is not None else threshold_for(pipe.card)
        pipe.index.check_model(pipe.card)
        pairs = near_duplicates(pipe.index, None, threshold, progress=not args.json)
        names = pipe.store.get_many(sorted({p["a"] for p in pairs} | {p["b"] for p in pairs}))
    if args.json:
        print(json.dumps({"threshold": threshold, "pairs": pairs}, indent=2))
        return 0
    if not pairs:
        print(f"No two products have near-identical photos (cosine >= {threshold:g}).")
        return 0
    plural = "s" if len(pairs) != 1 else ""
    print(f"{len(pairs)} pair{plural} of products with near-identical photos (cosine >= {threshold:g}):")
    for p in pairs:
        left, right = names.get(p["a"], {}).get("name", ""), names.get(p["b"], {}).get("name", "")
        print(f"  {p['cosine']:.4f}  {p['a']} ({left})  ~  {p['b']} ({right})")
    return 0
