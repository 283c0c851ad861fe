"""The one way catalogue rows become tower inputs and embeddings: batches of products, their photos decoded and
preprocessed in worker threads a couple of batches ahead while the caller runs the towers on the batch before.

Ingestion (and so ``evaluate``), ``compare-models`` and the static-INT8 calibration all read a catalogue through it;
calibration takes the preprocessed batches (``photo_batches``), the others the embeddings (``embed_batches``).
"""

from __future__ import annotations

from collections import deque
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
from .catalog_reader import Product

Progress = Callable[[int, int, str], None]  # (products done, products to do, what is happening)
KeepPhoto = Callable[[Product, bytes, Image.Image], None]  # runs in a decode thread, beside the decoding

# Two threads, two batches ahead: PIL releases the GIL while it decodes, so this keeps the towers fed without taking
# the cores they run on.
DECODE_THREADS = 2
AHEAD = 2


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
    """One batch of products: those whose photo decoded (in catalogue order, with their preprocessed photos) and
    those whose photo did not, with why (each caller words that its own way)."""

    products: list[Product]
    pixels: np.ndarray | None  # (len(products), 3, h, w); None without a preprocessor or without products
    failed: list[tuple[Product, PipelineError]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.products) + len(self.failed)

    @property
    def texts(self) -> list[str]:
        return [p.text for p in self.products]


@dataclass
class EmbeddedBatch(PhotoBatch):
    image_vectors: np.ndarray | None = None  # aligned with ``products``
    text_vectors: np.ndarray | None = None


class Tracker:
    """Products done of a total, shown as a terminal bar (``terminal``) and told to ``on_progress`` (the Catalogue
    tab's bar)."""

    def __init__(
        self, total: int, stage: str, desc: str, terminal: bool = False, on_progress: Progress | None = None
    ) -> None:
        self.total, self.stage, self.done = total, stage, 0
        self.tell = on_progress or (lambda done, total, stage: None)
        self.bar = counter(total, desc, "product", enabled=terminal)
        self.tell(0, total, stage)

    def advance(self, rows: int) -> None:
        self.bar.update(rows)
        self.done += rows
        self.tell(self.done, self.total, self.stage)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def decode_batch(
    products: Sequence[Product], preprocessor: Preprocessor | None, limits: PhotoLimits, keep: KeepPhoto | None
) -> PhotoBatch:
    """Decode (and preprocess) one batch of photos; a photo that cannot be used fails its product only."""
    good, images, failed = [], [], []
    for product in products:
        try:
            data = read_image_bytes(product.image_file, limits.max_bytes)
            image = load_image(data, limits.max_bytes, limits.max_pixels)
            if keep is not None:
                keep(product, data, image)
        except PipelineError as err:
            failed.append((product, err))
            continue
        images.append(image)
        good.append(product)
    pixels = preprocessor.pixels(images) if preprocessor is not None and images else None
    return PhotoBatch(good, pixels, failed)


def photo_batches(
    products: Sequence[Product],
    preprocessor: Preprocessor | None,
    batch_size: int,
    limits: PhotoLimits = PhotoLimits(),
    keep: KeepPhoto | None = None,
) -> Iterator[PhotoBatch]:
    """``products`` in batches of ``batch_size``, each decoded (and preprocessed, given a ``preprocessor``) in a worker
    thread while the caller works on the batch before. ``keep(product, bytes, image)`` sees every good photo."""
    batches = list(chunks(products, max(1, batch_size)))
    with ThreadPoolExecutor(max_workers=DECODE_THREADS, thread_name_prefix="decode") as pool:
        pending: deque[Future] = deque(
            pool.submit(decode_batch, b, preprocessor, limits, keep) for b in batches[:AHEAD]
        )
        following = AHEAD
        try:
            while pending:
                batch = pending.popleft().result()
                if following < len(batches):
                    pending.append(pool.submit(decode_batch, batches[following], preprocessor, limits, keep))
                    following += 1
                yield batch
        finally:  # a caller that stops early does not wait for batches nobody will read
            for future in pending:
                future.cancel()


def embed_batches(
    encoder: Encoder,
    products: Sequence[Product],
    batch_size: int,
    limits: PhotoLimits = PhotoLimits(),
    keep: KeepPhoto | None = None,
    tracker: Tracker | None = None,
) -> Iterator[EmbeddedBatch]:
    """``photo_batches`` through both towers: the photo's embedding and the product text's, batch by batch.
    ``tracker`` advances once the caller is done with a batch."""
    for batch in photo_batches(products, encoder.preprocessor, batch_size, limits, keep):
        embedded = EmbeddedBatch(batch.products, batch.pixels, batch.failed)
        if batch.products:
            embedded.image_vectors = encoder.encode_pixels(batch.pixels)
            embedded.text_vectors = encoder.encode_texts(batch.texts)
        yield embedded
        if tracker is not None:
            tracker.advance(batch.rows)
