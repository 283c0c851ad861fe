"""Split ../shared/data into a tuning half and a held-out half, by a stable hash of the product id.

``python -m bench.holdout OUT_DIR [--data ../shared/data]`` writes, for ``fashion`` and ``grocery_store``,

    OUT_DIR/{tune,heldout,all}/{fashion,grocery_store}/catalog.jsonl   and the query files of that half

(``all`` is the full data, with the same derived query files, for comparison). The rule:

- a product is held out when ``sha256(id)`` (the id as UTF-8), its first 8 bytes read as a big-endian integer, is
  odd; else it is in the tuning half. Nothing else (no salt, no order, no balancing) enters it, so the split never moves
  when files are appended to or reordered;
- a query goes where its **first** relevant product goes (``product_id``, or ``relevant[0]`` in file order), and its
  ``relevant`` list keeps only the products of that half (the others are not in that half's catalogue). A query whose
  relevant products fall in both halves is therefore kept, once, in one half; none is dropped. The printed table counts
  them ("mixed");
- query files: ``fashion/queries_names.jsonl``, ``fashion/queries_attributes.jsonl``, ``grocery_store/queries.jsonl``
  (photos), and two made from the grocery catalogue, as README's quality table describes them:
  ``grocery_store/queries_descriptions.jsonl`` (each product's description -> that product) and
  ``grocery_store/queries_classes.jsonl`` (each coarse class word, lower case -> the products of that class, in
  catalogue order; the query follows the first of them like any other).

Image paths are written absolute (nothing is copied): query photos resolve as they are, and catalogue photos resolve
with ``--images``, which looks them up by file name, e.g.

    python -m pipeline evaluate --catalog OUT_DIR/heldout/fashion/catalog.jsonl \\
        --queries OUT_DIR/heldout/fashion/queries_names.jsonl --images ../shared/data/fashion/images --check

``bench/tune_offline_model.py --split tune`` reads the same split in memory (``split_data``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
HALVES = ("tune", "heldout")
SPLITS = (*HALVES, "all")
# Query files as they are in ../shared/data; the grocery text queries are made from the catalogue (DERIVED).
QUERY_FILES = {
    "fashion": ("queries_names.jsonl", "queries_attributes.jsonl"),
    "grocery_store": ("queries.jsonl",),
}
DERIVED = {"grocery_store": ("queries_descriptions.jsonl", "queries_classes.jsonl")}


def half_of(product_id: str) -> str:
    """``tune`` or ``heldout``: the parity of the first 8 bytes of sha256(id)."""
    digest = hashlib.sha256(str(product_id).encode("utf-8")).digest()
    return HALVES[int.from_bytes(digest[:8], "big") % 2]


def load_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def relevant_of(query: dict) -> list[str]:
    """The query's relevant product ids, in file order (``product_id`` is a list of one)."""
    if "relevant" in query:
        return [str(p) for p in query["relevant"]]
    return [str(query["product_id"])]


def grocery_text_queries(catalog: list[dict]) -> dict[str, list[dict]]:
    """README's grocery text queries: a product's description -> that product; a coarse class word -> its products."""
    descriptions = [{"text": r.get("description") or r["name"], "product_id": str(r["id"])} for r in catalog]
    classes: dict[str, list[str]] = {}
    for r in catalog:
        classes.setdefault(str(r["coarse_class"]), []).append(str(r["id"]))
    words = [{"text": c.lower(), "relevant": ids, "coarse_class": c} for c, ids in sorted(classes.items())]
    return {"queries_descriptions.jsonl": descriptions, "queries_classes.jsonl": words}


@dataclass
class Dataset:
    """One catalogue of one split (image paths absolute) and its query files (query photos absolute)."""

    name: str
    source: Path
    catalog: list[dict]
    queries: dict[str, list[dict]]
    mixed: dict[str, int] = field(default_factory=dict)  # per query file: queries with relevant products in both halves


def _absolute(folder: Path, row: dict, key: str) -> dict:
    out = dict(row)
    if out.get(key):
        out[key] = str((folder / out[key]).resolve())
    return out


def split_data(data: Path = DEFAULT_DATA) -> dict[str, dict[str, Dataset]]:
    """``{"tune" | "heldout" | "all": {"fashion" | "grocery_store": Dataset}}``, by the rule in this module's doc."""
    data = Path(data)
    out: dict[str, dict[str, Dataset]] = {s: {} for s in SPLITS}
    for name, files in QUERY_FILES.items():
        folder = data / name
        catalog = [_absolute(folder, r, "image_path") for r in load_jsonl(folder / "catalog.jsonl")]
        ids = {str(r["id"]) for r in catalog}
        queries = {f: [_absolute(folder, q, "image") for q in load_jsonl(folder / f)] for f in files}
        if name in DERIVED:
            queries.update(grocery_text_queries(catalog))
        unknown = sorted({p for qs in queries.values() for q in qs for p in relevant_of(q)} - ids)
        if unknown:
            raise ValueError(f"{folder}: queries name products not in the catalogue: {unknown[:5]}")
        out["all"][name] = Dataset(name, folder, catalog, queries)
        for half in HALVES:
            rows = [r for r in catalog if half_of(r["id"]) == half]
            kept: dict[str, list[dict]] = {}
            mixed: dict[str, int] = {}
            for f, qs in queries.items():
                kept[f], mixed[f] = [], 0
                for q in qs:
                    relevant = relevant_of(q)
                    if half_of(relevant[0]) != half:
                        continue
                    mine = [p for p in relevant if half_of(p) == half]
                    mixed[f] += len(mine) < len(relevant)
                    kept[f].append({**q, "relevant": mine} if "relevant" in q else q)
            out[half][name] = Dataset(name, folder, rows, kept, mixed)
    return out


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def write_split(out_dir: Path, data: Path = DEFAULT_DATA) -> list[tuple[Path, int, int]]:
    """Write every split; returns (file, rows, mixed queries) for each file written."""
    written = []
    for split, datasets in split_data(data).items():
        for name, ds in datasets.items():
            folder = Path(out_dir) / split / name
            write_jsonl(folder / "catalog.jsonl", ds.catalog)
            written.append((folder / "catalog.jsonl", len(ds.catalog), 0))
            for f, qs in ds.queries.items():
                write_jsonl(folder / f, qs)
                written.append((folder / f, len(qs), ds.mixed.get(f, 0)))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="where to write {tune,heldout,all}/{fashion,grocery_store}/")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"the shared data (default {DEFAULT_DATA})")
    args = parser.parse_args(argv)
    if not (args.data / "fashion" / "catalog.jsonl").is_file():
        print(f"no fashion/catalog.jsonl under {args.data}", file=sys.stderr)
        return 2
    written = write_split(args.out_dir, args.data)
    print(f"split of {args.data.resolve()} by sha256(product id) parity (odd: heldout); image paths absolute")
    print(f"{'file':<58} {'rows':>6} {'mixed':>6}")
    for path, rows, mixed in written:
        print(f"{path.relative_to(args.out_dir)!s:<58} {rows:>6} {mixed or '':>6}")
    print("mixed: queries with relevant products in both halves, kept in the half of their first one")
    print(f"evaluate with --images {args.data / 'fashion' / 'images'} (or grocery_store/images) to resolve the photos")
    return 0


if __name__ == "__main__":
    sys.exit(main())
