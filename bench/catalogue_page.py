"""Catalogue page: one page of the Catalogue tab (and of ``/catalogue``) through the catalogue's listing
(``pipeline.storage.catalog_listing``) against the MongoDB query the tab asked before it, on the same catalogue.

For each size (synthetic products as ``bench.query_path`` makes them: Qdrant Edge points and MongoDB documents in the
local MongoDB-protocol server the pipeline starts), interleaved round by round, median of the rounds:

- the first page after a change: the listing read from the index (its one read per catalogue version) and the page;
- a later page (page 3, no search), a search by part of a name ("shirt 7") and by an exact id, on the listing read;
- the same pages the old way: ``count_documents`` and ``find(...).sort("_id").skip().limit()`` with the
  ``{"$or": [{"_id": q}, {"name": {"$regex": q, "$options": "i"}}]}`` search, as ``CatalogStore.page`` asked; a call
  that does not come back within pymongo's socket timeout is shown as such;
- the listing's own memory (its packed ids, names and offsets).

Run: ``.venv/bin/python -m bench.catalogue_page [--products 10000,100000] [--repeats 3] [--json OUT]``.
"""

from __future__ import annotations

import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as c
from bench.query_path import fill_catalogue
from pipeline.errors import PipelineError
from pipeline.service import Pipeline
from pipeline.settings import Settings
from pipeline.storage.catalog_listing import CatalogListing
from pipeline.storage.catalog_store import unavailable

PAGE = 20
QUERIES = {"page 3": "", "part of a name": "shirt 7", "exact id": "p000042"}


def mongodb_page(store, query: str, offset: int, limit: int) -> tuple[int, list[dict]]:
    """What the Catalogue tab asked MongoDB before the listing (``CatalogStore.page``)."""
    from pymongo.errors import PyMongoError

    text = query.strip()
    where = {"$or": [{"_id": text}, {"name": {"$regex": re.escape(text), "$options": "i"}}]} if text else {}
    try:
        total = store.collection.count_documents(where)
        docs = list(store.collection.find(where).sort("_id", 1).skip(offset).limit(limit))
    except PyMongoError as err:
        raise unavailable(err, "listing products") from err
    return total, docs


def listing_bytes(listing) -> int:
    ids, names = listing.ids, listing.names
    return sum(sys.getsizeof(p.text) + p.starts.nbytes for p in (ids, names))


def measure(pipe: Pipeline, n: int, rounds: int) -> list[list]:
    store, index = pipe.store, pipe.index
    offsets = {"page 3": 2 * PAGE}
    steps = {"first page after a change": lambda r: CatalogListing(index, store).page("", 0, PAGE)}
    warm = CatalogListing(index, store)
    warm.page()
    for label, query in QUERIES.items():
        steps[f"{label}: listing"] = lambda r, q=query, o=offsets.get(label, 0): warm.page(q, o, PAGE)
        steps[f"{label}: MongoDB"] = lambda r, q=query, o=offsets.get(label, 0): mongodb_page(store, q, o, PAGE)
    steps["first page: MongoDB"] = lambda r: mongodb_page(store, "", 0, PAGE)
    failed: dict[str, str] = {}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(-1, rounds):  # one warm-up round
        for name, step in steps.items():
            if name in failed:
                continue
            started = time.perf_counter()
            try:
                step(r)
            except PipelineError as err:
                failed[name] = str(err)[:80]
                continue
            if r >= 0:
                times[name].append(time.perf_counter() - started)

    def ms(name: str) -> float | str:
        if name in failed:
            return f"no answer ({failed[name]})"
        return statistics.median(times[name]) * 1000

    def ratio(a: str, b: str) -> float | str:
        x, y = ms(a), ms(b)
        return x / y if isinstance(x, float) and isinstance(y, float) and y > 0 else "-"

    rows = [[n, "first page after a change (listing read + page)", ms("first page: MongoDB"),
             ms("first page after a change"), ratio("first page after a change", "first page: MongoDB")]]  # fmt: skip
    for label in QUERIES:
        rows.append([n, label, ms(f"{label}: MongoDB"), ms(f"{label}: listing"),
                     ratio(f"{label}: listing", f"{label}: MongoDB")])  # fmt: skip
    rows.append([n, "listing's memory (MiB)", "-", round(listing_bytes(warm.current()) / 2**20, 2), "-"])
    return rows


def main(argv: list[str] | None = None) -> int:
    p = c.parser(__doc__)
    p.add_argument("--products", default=None, help="comma-separated catalogue sizes (default 10000,100000)")
    args = p.parse_args(argv)
    rounds = c.repeats(args, 3)
    sizes = [int(s) for s in (args.products or ("200" if args.smoke else "10000,100000")).split(",")]
    repo = c.model_repo(args)
    info = c.machine()
    rows: list[list] = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-catalogue-") as tmp:
            settings = Settings(data_dir=Path(tmp) / "data", model_repository=repo)
            with Pipeline(settings) as pipe:
                c.note(f"filling the catalogue with {n} products (synthetic) ...")
                c.note(f"... {fill_catalogue(pipe, n):.1f} s")
                rows.extend(measure(pipe, n, rounds))
    payload = c.report(
        "catalogue_page",
        info,
        f"Catalogue page, {rounds} rounds (median ms; ratio = listing / MongoDB query)",
        ["products", "page", "MongoDB query ms", "listing ms", "ratio"],
        rows,
        mongodb="the local MongoDB-protocol server (secantusdb) the pipeline starts",
    )
    c.write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
