"""Deleting products at scale: the ids MongoDB gets in bounded ``$in`` lists (``CatalogStore``, ``IN_CHUNK`` each)
against the one ``$in`` of every id it got before, on the same catalogue and the local MongoDB-protocol server the
pipeline starts (SecantusDB, which checks each document a ``$in`` finds against the whole list).

For each size, a catalogue of synthetic products (as ``bench.query_path`` makes them: Qdrant Edge points and MongoDB
documents), then three deletes of ``--delete`` different products each, timed once (a delete cannot be repeated):

- before: ``delete_many({"_id": {"$in": ids}})`` with every id in one list, MongoDB only;
- now: ``CatalogStore.delete_many(ids)``, MongoDB only;
- ``delete_products``: the whole of a sync's or the Catalogue tab's delete (the index's and MongoDB's reads of the
  products, both deletes, the photos still in use), after one small delete has made MongoDB's ``image_file`` index.

Run: ``.venv/bin/python -m bench.catalogue_delete [--products 100000] [--delete 4000] [--json OUT]``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as c
from bench.query_path import fill_catalogue
from pipeline.ingestion.ingest import delete_products
from pipeline.service import Pipeline
from pipeline.settings import Settings
from pipeline.storage.catalog_store import IN_CHUNK, WHOLE_CATALOGUE_TIMEOUT_S


def measure(pipe: Pipeline, n: int, m: int) -> list[list]:
    import pymongo

    ids = [f"p{i:06d}" for i in range(n)]
    before, now, whole = ids[0:m], ids[m : 2 * m], ids[2 * m : 3 * m]
    with pymongo.timeout(WHOLE_CATALOGUE_TIMEOUT_S):
        started = time.perf_counter()
        gone_before = pipe.store.collection.delete_many({"_id": {"$in": before}}).deleted_count
        before_s = time.perf_counter() - started
    started = time.perf_counter()
    gone_now = pipe.store.delete_many(now)
    now_s = time.perf_counter() - started
    delete_products(pipe, ids[-1:])  # makes MongoDB's index on image_file, as a catalogue's first delete does
    started = time.perf_counter()
    gone, unknown = delete_products(pipe, whole)
    whole_s = time.perf_counter() - started
    assert gone_before == gone_now == len(gone) == m and not unknown, (gone_before, gone_now, len(gone), unknown)
    return [
        [n, m, "MongoDB delete, one $in of every id (before)", before_s, "-"],
        [n, m, f"MongoDB delete, $in lists of {IN_CHUNK} (CatalogStore.delete_many)", now_s, now_s / before_s],
        [n, m, "delete_products: index + MongoDB + photos in use", whole_s, "-"],
    ]


def main(argv: list[str] | None = None) -> int:
    p = c.parser(__doc__)
    p.add_argument("--products", default=None, help="comma-separated catalogue sizes (default 100000)")
    p.add_argument("--delete", type=int, default=None, help="products each delete removes (default 4000)")
    args = p.parse_args(argv)
    sizes = [int(s) for s in (args.products or ("300" if args.smoke else "100000")).split(",")]
    m = args.delete or (60 if args.smoke else 4000)
    if any(3 * m + 1 > n for n in sizes):
        raise SystemExit(f"each catalogue needs more than {3 * m} products for three deletes of {m}")
    repo = c.model_repo(args)
    info = c.machine()
    rows: list[list] = []
    for n in sizes:
        with (
            tempfile.TemporaryDirectory(prefix="bench-delete-") as tmp,
            Pipeline(Settings(data_dir=Path(tmp) / "data", model_repository=repo)) as pipe,
        ):
            c.note(f"filling the catalogue with {n} products (synthetic) ...")
            c.note(f"... {fill_catalogue(pipe, n):.1f} s")
            rows.extend(measure(pipe, n, m))
    payload = c.report(
        "catalogue_delete",
        info,
        "Deleting products, one run each (seconds; ratio = bounded lists / one list)",
        ["products", "deleted", "delete", "seconds", "ratio"],
        rows,
        mongodb="the local MongoDB-protocol server (secantusdb) the pipeline starts",
    )
    c.write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
