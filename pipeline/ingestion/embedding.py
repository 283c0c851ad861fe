"""The one way catalogue rows become tower inputs and embeddings: batches of products, their photos decoded and
preprocessed in worker threads a couple of batches ahead while the caller runs the towers on the batch before.

Ingestion (and so ``evaluate``), ``compare-models`` and the static-INT8 calibration all read a catalogue through it;
calibration takes the preprocessed batches (``photo_batches``), the others the embeddings (``embed_batches``).
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..batches import chunks
from ..errors import PipelineError
from ..inputs import load_image, read_image_bytes
from ..progress import counter
from ..query.encoder import Encoder
from ..query.preprocess import Preprocessor
from .catalog_reader import PhotoSource, Product

Progress = Callable[[int, int, str], None]  # (products done, products to do, what is happening)


@dataclass
class Photo:
    """One photo of a product that decoded: where it came from, its bytes and the picture (``download``: how a URL's
    bytes were got, with its validators, for the record of what each URL held)."""

    source: PhotoSource
    data: bytes
    image: Image.Image
    download: object | None = None


KeepPhoto = Callable[[Product, Photo], None]  # runs in a decode thread, beside the decoding, for each good photo
# Starts fetching a URL (a Future of an object with ``data``, ``error``, ``downloaded``): ``photo_downloads``.
Fetch = Callable[[str], Future]

# Two threads, two batches ahead: PIL releases the GIL while it decodes, so this keeps the towers fed without taking
# the cores they run on. Photos named by URL are fetched further ahead (they wait on the network, not on the cores).
DECODE_THREADS = 2
AHEAD = 2
FETCH_AHEAD = 4


@dataclass(frozen=True)
class PhotoLimits:
    """What a catalogue photo may be (``Settings.max_image_mb`` and ``max_image_pixels``; ``load_image``'s defaults)."""

    max_bytes: int = 20 * 2**20
    max_pixels: int = 40_000_000

    @classmethod
    def of(cls, settings) -> PhotoLimits:
        return cls(int(settings.max_image_mb * 2**20), settings.max_image_pixels)


@dataclass
class PhotoBatch:
    """One batch of products: those that go in (in catalogue order, with their decoded photos preprocessed, every
    photo of each, none for a product without one), those whose local photo did not decode, with why (each caller
    words that its own way), and the URLs left out (the product goes in without them)."""

    products: list[Product]
    pixels: np.ndarray | None  # (photos, 3, h, w), the products' photos in order; None without a preprocessor/photos
    failed: list[tuple[Product, PipelineError]] = field(default_factory=list)
    photo_counts: list[int] = field(default_factory=list)  # aligned with ``products``: rows of ``pixels`` each
    dropped: list[tuple[Product, str, str]] = field(default_factory=list)  # (product, URL, why)

    @property
    def rows(self) -> int:
        return len(self.products) + len(self.failed)

    @property
    def texts(self) -> list[str]:
        return [p.text for p in self.products]

    def offsets(self) -> list[int]:
        """Where each product's photos start among the photo rows."""
        return list(np.cumsum([0, *self.photo_counts[:-1]])) if self.photo_counts else []


@dataclass
class EmbeddedBatch(PhotoBatch):
    image_vectors: np.ndarray | None = None  # one row per photo, products' photos in order (``photo_counts`` each)
    text_vectors: np.ndarray | None = None  # aligned with ``products``

    def photos_of(self, i: int) -> np.ndarray | None:
        """Product ``i``'s photo vectors (photos, d), or None when it has no photo."""
        count = self.photo_counts[i]
        if not count or self.image_vectors is None:
            return None
        start = self.offsets()[i]
        return self.image_vectors[start : start + count]


class Tracker:
    """Products done of a total, shown as a terminal bar (``terminal``) and told to ``on_progress`` (the Catalogue
    tab's bar)."""

    def __init__(
        self, total: int, stage: str, desc: str, terminal: bool = False, on_progress: Progress | None = None
    ) -> None:
        self.total, self.stage, self.done = total, stage, 0
        self.tell = on_progress or (lambda done, total, stage: None)
        self.detail: Callable[[], str] | None = None  # said after the stage (the photo downloads' progress)
        self.bar = counter(total, desc, "product", enabled=terminal)
        self.tell(0, total, stage)

    def advance(self, rows: int) -> None:
        self.bar.update(rows)
        self.done += rows
        extra = self.detail() if self.detail is not None else ""
        if extra:
            self.bar.set_postfix_str(extra, refresh=False)
        self.tell(self.done, self.total, f"{self.stage}; {extra}" if extra else self.stage)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def decode_batch(
    products: Sequence[Product],
    preprocessor: Preprocessor | None,
    limits: PhotoLimits,
    keep: KeepPhoto | None,
    fetched: dict[str, Future] | None = None,
) -> PhotoBatch:
    """Decode (and preprocess) one batch of photos. A local photo that cannot be used fails its product; a URL that
    could not be fetched or is not a usable photo is left out (``fetched``: the URLs' downloads, started ahead)."""
    good, images, failed, counts, dropped = [], [], [], [], []
    for product in products:
        photos: list[Photo] = []
        try:
            for source in product.photos:
                if isinstance(source, str):
                    photo, why = _fetched_photo(source, fetched, limits)
                    if photo is None:
                        dropped.append((product, source, why))
                        continue
                else:
                    data = read_image_bytes(source, limits.max_bytes)
                    photo = Photo(source, data, load_image(data, limits.max_bytes, limits.max_pixels))
                photos.append(photo)
        except PipelineError as err:
            failed.append((product, err))
            continue
        for photo in photos:
            if keep is not None:
                keep(product, photo)
            images.append(photo.image)
        good.append(product)
        counts.append(len(photos))
    pixels = preprocessor.pixels(images) if preprocessor is not None and images else None
    return PhotoBatch(good, pixels, failed, counts, dropped)


def _fetched_photo(url: str, fetched: dict[str, Future] | None, limits: PhotoLimits) -> tuple[Photo | None, str]:
    """A URL's photo, or None and why it is left out."""
    if fetched is None or url not in fetched:
        return None, "photo URLs are not fetched here"
    download = fetched[url].result()
    if download.error or download.data is None:
        return None, download.error or "nothing was downloaded"
    try:
        return Photo(url, download.data, load_image(download.data, limits.max_bytes, limits.max_pixels), download), ""
    except PipelineError as err:
        return None, str(err)


def photo_batches(
    products: Sequence[Product],
    preprocessor: Preprocessor | None,
    batch_size: int,
    limits: PhotoLimits = PhotoLimits(),
    keep: KeepPhoto | None = None,
    fetch: Fetch | None = None,
) -> Iterator[PhotoBatch]:
    """``products`` in batches of ``batch_size``, each decoded (and preprocessed, given a ``preprocessor``) in a worker
    thread while the caller works on the batch before. ``keep(product, photo)`` sees every good photo; ``fetch``
    starts a URL's download, up to ``FETCH_AHEAD`` batches ahead of the decoding (without it, URLs are left out)."""
    batches = list(chunks(products, max(1, batch_size)))
    fetched: dict[str, Future] = {}
    uses: Counter[str] = Counter()  # batches started and not yet done that name each URL (one fetch for all)
    lock = threading.Lock()
    ready = [threading.Event() for _ in batches]  # a batch's downloads have been started
    # The downloads are started by a thread of their own, at most AHEAD + FETCH_AHEAD batches ahead of the batch the
    # caller is on: a full download queue then holds up that thread, never the caller's towers.
    slots = threading.Semaphore(AHEAD + FETCH_AHEAD)
    stop = threading.Event()

    def urls(i: int) -> set[str]:
        return {s for p in batches[i] for s in p.photos if isinstance(s, str)}

    def feed() -> None:
        for i in range(len(batches)):
            while not slots.acquire(timeout=0.1):
                if stop.is_set():
                    return
            if stop.is_set():
                return
            for url in urls(i):
                with lock:
                    known = url in fetched
                    uses[url] += 1
                if not known:
                    future = fetch(url)
                    with lock:
                        fetched.setdefault(url, future)
            ready[i].set()

    def decode_when_ready(i: int) -> PhotoBatch:
        ready[i].wait()
        with lock:
            mine = {url: fetched[url] for url in urls(i) if url in fetched}
        return decode_batch(batches[i], preprocessor, limits, keep, mine)

    feeder = None
    if fetch is not None and any(urls(i) for i in range(len(batches))):
        feeder = threading.Thread(target=feed, name="fetch-feeder", daemon=True)
        feeder.start()
    else:
        for event in ready:
            event.set()
    with ThreadPoolExecutor(max_workers=DECODE_THREADS, thread_name_prefix="decode") as pool:
        pending: deque[Future] = deque(pool.submit(decode_when_ready, i) for i in range(min(AHEAD, len(batches))))
        following = len(pending)
        try:
            for done in range(len(batches)):
                batch = pending.popleft().result()
                if following < len(batches):
                    pending.append(pool.submit(decode_when_ready, following))
                    following += 1
                if feeder is not None:
                    with lock:  # the downloads' bytes are not held once no batch to come needs them
                        for url in urls(done):
                            uses[url] -= 1
                            if not uses[url]:
                                fetched.pop(url, None)
                    slots.release()
                yield batch
        finally:  # a caller that stops early does not wait for batches nobody will read
            stop.set()
            for event in ready:
                event.set()
            for future in pending:
                future.cancel()
            with lock:
                for future in fetched.values():
                    future.cancel()
            if feeder is not None:
                feeder.join(timeout=5)


def embed_batches(
    encoder: Encoder,
    products: Sequence[Product],
    batch_size: int,
    limits: PhotoLimits = PhotoLimits(),
    keep: KeepPhoto | None = None,
    tracker: Tracker | None = None,
    fetch: Fetch | None = None,
) -> Iterator[EmbeddedBatch]:
    """``photo_batches`` through both towers: every photo's embedding and the product text's, batch by batch.
    ``tracker`` advances once the caller is done with a batch."""
    for batch in photo_batches(products, encoder.preprocessor, batch_size, limits, keep, fetch):
        embedded = EmbeddedBatch(batch.products, batch.pixels, batch.failed, batch.photo_counts, batch.dropped)
        if batch.products:
            if batch.pixels is not None:
                embedded.image_vectors = encoder.encode_pixels(batch.pixels)
            embedded.text_vectors = encoder.encode_texts(batch.texts)
        yield embedded
        if tracker is not None:
            tracker.advance(batch.rows)
