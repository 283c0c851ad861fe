"""Changes to the stores: ``ingest`` (catalogue file -> validated rows -> ``embedding`` -> MongoDB, then Qdrant) and
``delete_products``. The catalogue service (``catalogue``) is what the CLI and the app call.

Products go to MongoDB before their vectors, and the vectors carry the content hash, so a crash between the two writes
is repaired by the next run; an unchanged row is skipped by that hash (the same file twice changes nothing). Every
change runs inside ``index.changing()`` (nothing computed meanwhile is cached, the version moves on even after a
failure), and the index is optimised once, at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CatalogError, StorageFull
from ..storage.vectors import PAYLOAD_FIELDS, IndexedProduct
from ..storage.vectors.lexical import lexical_text
from .catalog_reader import BadRow, CatalogRows, Product, read_catalog
from .duplicates import near_duplicates, threshold_for
from .embedding import EmbeddedBatch, Photo, PhotoLimits, Progress, Tracker, embed_batches


@dataclass
class IngestReport:
    catalog: str
    format: str = ""  # how the file was read: "Read products.csv as a Shopify product export (42 rows, 12 products)."
    rows: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    bad: list[BadRow] = field(default_factory=list)
    failed_photos: list[BadRow] = field(default_factory=list)  # photos left out of products that went in, with why
    without_photo: int = 0  # products added or updated that have no photo (found by their text)
    photos: int = 0  # photos embedded
    downloads: dict = field(default_factory=dict)  # photo URLs: fetched, not modified, failed, bytes, seconds
    skipped: list[str] = field(default_factory=list)  # upload entries that were not a catalogue or a photo
    duplicates: list[dict] = field(default_factory=list)  # near-identical photos among the changed products
    catalog_version: int = 0
    seconds: float = 0.0
    optimize_seconds: float = 0.0

    @property
    def changed(self) -> int:
        return self.added + self.updated + self.deleted

    def summary(self) -> str:
        done = self.added + self.updated
        rate = done / self.seconds if self.seconds and done else 0.0
        lines = [self.format] if self.format else []
        lines += [
            f"{self.catalog}: {self.rows} row{'' if self.rows == 1 else 's'}, {self.added} added, "
            f"{self.updated} updated, {self.unchanged} unchanged, {self.deleted} deleted, "
            f"{len(self.bad)} bad; catalogue version {self.catalog_version}; {self.seconds:.1f} s"
            + (f" ({rate:.1f} products/s)" if rate else "")
        ]
        if self.photos or self.without_photo:
            lines.append(f"  {self.photos} photos embedded; {self.without_photo} products without a photo")
        if self.downloads:
            d = self.downloads
            lines.append(
                f"  photo URLs: {d.get('fetched', 0)} downloaded, {d.get('not_modified', 0)} unchanged, "
                f"{d.get('failed', 0)} failed"
            )
        lines += [f"  bad row {bad}" for bad in self.bad]
        lines += [f"  photo left out, {bad}" for bad in self.failed_photos]
        lines += [f"  near-identical photos: {d['a']} ~ {d['b']} (cosine {d['cosine']:.4f})" for d in self.duplicates]
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "catalog": self.catalog,
            "format": self.format,
            "rows": self.rows,
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "bad": [{"line": b.line, "id": b.product_id, "reason": b.reason} for b in self.bad],
            "failed_photos": [{"line": b.line, "id": b.product_id, "reason": b.reason} for b in self.failed_photos],
            "without_photo": self.without_photo,
            "photos": self.photos,
            "downloads": dict(self.downloads),
            "skipped": list(self.skipped),
            "duplicates": list(self.duplicates),
            "catalog_version": self.catalog_version,
            "seconds": round(self.seconds, 3),
            "optimize_seconds": round(self.optimize_seconds, 3),
        }


def ingest(
    pipeline,
    catalog: Path,
    images_dir: Path | None = None,
    reset: bool = False,
    sync: bool = False,
    progress: bool = True,
    image_roots: list[Path] | None = None,
    on_progress: Progress | None = None,
    images_label: str | None = None,
    fmt: str = "auto",
    mapping: dict | None = None,
) -> IngestReport:
    """Add and update the catalogue's products; ``sync``: also delete the products the file no longer has;
    ``reset``: start from an empty catalogue (vectors and MongoDB products). ``on_progress(done, total, stage)`` is
    called as products are done (the Catalogue tab's progress bar); ``progress`` draws a bar on the terminal;
    ``images_label``: how bad rows name ``images_dir`` (``read_catalog``); ``fmt``, ``mapping``: how the file is read
    (``formats.read_rows``; a Shopify export's product links use the ``shop_url`` setting).

    A full disk stops the ingest with ``StorageFull``: the batches written before stay (in both stores), the one being
    written is not served half-done (the catalogue version moves on), and the same ingest again completes the rest."""
    try:
        return _ingest(
            pipeline, catalog, images_dir, reset, sync, progress, image_roots, on_progress, images_label, fmt, mapping
        )
    except Exception as err:
        if not _disk_full(err):
            raise
        raise StorageFull(
            f"The disk holding the data folder {pipeline.settings.data_dir} is full ({_reason(err)}): free some space "
            "(or set DATA_DIR to a larger disk), then run the same import again; it adds what this one did not."
        ) from err


def _disk_full(err: BaseException) -> bool:
    """Whether ``err`` (or what caused it) is the disk being full: OSError's errno, or the words of an engine that
    reports it as text (Qdrant Edge, the MongoDB server)."""
    for _ in range(10):  # the chain of causes, bounded
        if err is None:
            return False
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(words in str(err) for words in ("No space left on device", "Disk quota exceeded")):
            return True
        err = err.__cause__ or err.__context__
    return False


def _reason(err: BaseException) -> str:
    while err is not None and not isinstance(err, OSError):
        err = err.__cause__ or err.__context__
    return err.strerror if isinstance(err, OSError) and err.strerror else "no space left on device"


def _ingest(
    pipeline,
    catalog: Path,
    images_dir: Path | None,
    reset: bool,
    sync: bool,
    progress: bool,
    image_roots: list[Path] | None,
    on_progress: Progress | None,
    images_label: str | None,
    fmt: str = "auto",
    mapping: dict | None = None,
) -> IngestReport:
    started = time.perf_counter()
    tell = on_progress or (lambda done, total, stage: None)
    tell(0, 0, "reading the catalogue")
    shop_url = getattr(pipeline.settings, "shop_url", None)
    rows = read_catalog(Path(catalog), images_dir, image_roots, images_label, fmt, mapping, shop_url)
    report = IngestReport(str(catalog), format=rows.format_sentence, rows=rows.total, bad=list(rows.bad))
    if (sync or reset) and not rows.products:
        _refuse_to_empty(
            pipeline, Path(catalog).name, rows, "syncing to it" if sync else "replacing the catalogue with it"
        )
    encoder = pipeline.encoder
    index = pipeline.index
    index.ensure(encoder.card, reset=reset)
    if reset:
        pipeline.store.clear()
        pipeline.cache.clear()

    ids = [p.id for p in rows.products]
    known = index.content_hashes(ids)
    todo = [p for p in rows.products if known.get(p.id) != p.content_hash]
    report.unchanged = len(rows.products) - len(todo)
    # A row that is bad this time keeps its product (it may be a passing problem, a photo not yet uploaded): sync
    # deletes only what the file no longer names at all.
    named = set(ids) | {b.product_id for b in rows.bad if b.product_id}
    stale = sorted((set(index.product_ids()) | set(pipeline.store.ids())) - named) if sync else []
    if todo:
        _ensure_space(pipeline, min(len(todo), pipeline.settings.ingest_batch_size))
    # The photos the changed products had: those no product shows after the change are removed with it.
    before = pipeline.store.get_many([p.id for p in todo if p.id in known]) if todo else {}
    replaced = {key for doc in before.values() for key in _photo_keys(doc)}
    if todo or stale:
        with index.changing():
            with Tracker(len(todo), "embedding and storing products", "ingest", progress, tell) as tracker:
                _embed_and_write(pipeline, todo, known, report, tracker)
            if stale:
                tell(len(todo), len(todo), f"deleting {len(stale)} products the file no longer has")
                pipeline.store.delete_many(stale)
                report.deleted = index.delete(stale)
        if stale:
            forget_photos(pipeline)
        elif replaced:
            pipeline.photos.remove(replaced - pipeline.store.photos_in_use(replaced))
        tell(len(todo), len(todo), "optimising the index")
        report.optimize_seconds = index.optimize()["seconds"]
        changed = [p.id for p in todo if p.id not in {b.product_id for b in report.bad}]
        if changed:
            tell(len(todo), len(todo), "looking for near-identical photos")
            report.duplicates = near_duplicates(index, changed, threshold_for(encoder.card))
    report.bad.sort(key=lambda b: b.line)
    report.catalog_version = index.version()
    report.seconds = time.perf_counter() - started
    pipeline.events.write(
        "ingest",
        catalog=str(catalog),
        rows=report.rows,
        added=report.added,
        updated=report.updated,
        unchanged=report.unchanged,
        deleted=report.deleted,
        bad=len(report.bad),
        catalog_version=report.catalog_version,
        seconds=round(report.seconds, 3),
    )
    return report


def _refuse_to_empty(pipeline, name: str, rows: CatalogRows, doing: str) -> None:
    """A sync or a replace from a file that gives no product would leave the catalogue empty. An empty export, the
    wrong file or a photos folder left out are far likelier than that wish, so nothing is changed and the person is
    told why (as rsync skips its deletions after a read error)."""
    held = max(pipeline.index.count(), pipeline.store.count())
    if not held:
        return
    if rows.total:
        shown = "; ".join(str(bad) for bad in rows.bad[:3]) + ("; ..." if len(rows.bad) > 3 else "")
        read = f"{rows.total:,} rows, every one bad: {shown}"
    else:
        read = "it has no rows"
    raise CatalogError(
        f"No product could be read from {name} ({read}). Nothing was changed: {doing} would delete all {held:,} "
        "products of the catalogue. Fix the file (or add its photos) and import it again; to empty the catalogue on "
        "purpose, delete its products."
    )


def delete_products(pipeline, product_ids: list[str]) -> tuple[list[str], list[str]]:
    """Remove products from MongoDB and the index; returns (deleted ids, ids that were not in the catalogue)."""
    ids = sorted(set(product_ids))
    index = pipeline.index
    held = index.products(ids) if ids else {}  # one read of the index: which it holds, and their photos
    present = set(held)
    docs = pipeline.store.get_many(ids) if ids else {}
    gone = sorted(present | set(docs))
    if gone:
        photos = {key for d in [*docs.values(), *held.values()] for key in _photo_keys(d)}
        with index.changing():
            pipeline.store.delete_many(gone)
            index.delete(gone)
        # Only the deleted products' photos can have become unused (products with the same photo bytes share one):
        # one indexed lookup, not a read of every product's photo and a walk of the photo folder, both slow on a
        # large catalogue.
        pipeline.photos.remove(photos - pipeline.store.photos_in_use(photos))
        pipeline.events.write("delete", product_ids=gone, catalog_version=index.version())
    return gone, [p for p in ids if p not in present and p not in docs]


def _photo_keys(doc: dict) -> set[str]:
    return {k for k in [doc.get("image_file"), *(doc.get("image_files") or [])] if k}


def forget_photos(pipeline) -> int:
    """Remove the stored photos no product uses any more (after a sync: it reads every product anyway, and the walk
    also takes what an interrupted change left)."""
    return pipeline.photos.remove_unused(set(pipeline.store.distinct("image_files")))


def _embed_and_write(
    pipeline, todo: list[Product], known: dict[str, str], report: IngestReport, tracker: Tracker
) -> None:
    """Embed ``todo`` batch by batch while a writer thread stores the batch before: database round trips and fsyncs
    wait on I/O, not on the cores the towers need. Photos named by URL are downloaded ahead (``photo_downloads``)."""
    for product in todo:
        product.fields["image_files"] = []
        report.failed_photos.extend(BadRow(product.line, why, product.id) for why in product.photo_problems)
    with _downloads_for(pipeline, todo) as downloads:

        def keep(product: Product, photo: Photo) -> None:
            # The copy the app serves, under DATA_DIR: the catalogue's own folder (an upload) may be gone tomorrow.
            key = pipeline.photos.put(photo.data, photo.image)
            product.fields["image_files"].append(key)
            got = photo.download
            if downloads is not None and got is not None and got.downloaded:
                downloads.remember(got.url, key, got.etag, got.last_modified)

        if downloads is not None:
            tracker.detail = lambda: _download_progress(downloads.stats())
        batches = embed_batches(
            pipeline.encoder,
            todo,
            pipeline.settings.ingest_batch_size,
            PhotoLimits.of(pipeline.settings),
            keep,
            tracker,
            fetch=downloads.submit if downloads is not None else None,
        )
        with closing(batches), ThreadPoolExecutor(max_workers=1, thread_name_prefix="write") as writer:
            writing: Future | None = None  # one batch in flight, so a failed write stops the ingest at the next batch
            for batch in batches:
                report.bad.extend(BadRow(p.line, f"image {_named(p, err)}: {err}", p.id) for p, err in batch.failed)
                report.failed_photos.extend(
                    BadRow(p.line, f"photo {url[:160]}: {why}", p.id) for p, url, why in batch.dropped
                )
                if batch.products:
                    if writing is not None:
                        writing.result()
                    writing = writer.submit(_write, pipeline, batch)
                    report.photos += sum(batch.photo_counts)
                    report.without_photo += sum(1 for n in batch.photo_counts if not n)
                    for p in batch.products:
                        if p.id in known:
                            report.updated += 1
                        else:
                            report.added += 1
            if writing is not None:
                writing.result()
        if downloads is not None:
            report.downloads = dataclasses.asdict(downloads.stats())


def _named(product: Product, err: Exception) -> str:
    """The local photo a failure is about (the first the message names, else the product's first)."""
    local = [s for s in product.photos if isinstance(s, Path)]
    named = [s for s in local if s.name in str(err)]
    return (named or local or [Path("?")])[0].name


@contextlib.contextmanager
def _downloads_for(pipeline, products: list[Product]):
    """The photo downloader when some product names a photo by URL (None otherwise: nothing to fetch)."""
    if not any(isinstance(s, str) for p in products for s in p.photos):
        yield None
        return
    from .photo_downloads import PhotoDownloads, limits_of, record_path

    settings = pipeline.settings
    record = record_path(settings)
    record.parent.mkdir(parents=True, exist_ok=True)
    with PhotoDownloads(record, pipeline.photos.path, limits_of(settings), settings.photo_downloads) as downloads:
        yield downloads


def _download_progress(stats) -> str:
    """Beside the embedding's progress: how the downloads go (photos fetched, failed, rate)."""
    return stats.line()


# Free space an ingest keeps on the data folder's disk. Qdrant Edge writes through memory maps (Qdrant's write-ahead log
# comes in preallocated segments, 32 MB by default): a mapped page the disk has no room for kills the process with
# SIGBUS (seen on a full tmpfs, in the upsert), which no error handling can turn into a sentence. So writing stops,
# with one, while this much is still free.
MIN_FREE_MB = 64


def _ensure_space(pipeline, products: int) -> None:
    folder = Path(pipeline.settings.data_dir)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize
    need = MIN_FREE_MB * 2**20 + products * 64 * 2**10  # and about 64 KB a product (vectors, payload, photo)
    if free < need:
        raise OSError(errno.ENOSPC, f"{free / 2**20:.0f} MB free, {need / 2**20:.0f} MB needed to write on")


def _write(pipeline, batch: EmbeddedBatch) -> None:
    products = batch.products
    _ensure_space(pipeline, len(products))
    for p in products:  # the main photo, which the page shows unless a query is closer to another
        p.fields["image_file"] = (p.fields.get("image_files") or [None])[0]
    docs = [{**p.fields, "embedded_text": p.text} for p in products]
    pipeline.store.upsert_many(docs)
    pipeline.index.upsert(
        [
            IndexedProduct(
                p.id,
                batch.photos_of(i),
                batch.text_vectors[i],
                {**{k: p.fields.get(k) for k in PAYLOAD_FIELDS}, "content_hash": p.content_hash},
                lexical=lexical_text(p.fields),
            )
            for i, p in enumerate(products)
        ]
    )
