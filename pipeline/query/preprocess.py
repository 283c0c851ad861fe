"""Client-side preprocessing: read a photo safely, tokenize text, make pixel tensors.

Settings come from the files ``build-model`` saved beside the ONNX graphs (tokenizer and image-processor configs), never
from constants here, so the same code serves CLIP and the offline model.
"""

from __future__ import annotations

import contextlib
import io
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .. import model_repo as mr
from ..errors import InvalidInput

ImageSource = str | Path | bytes | Image.Image

# Text batches are padded to a multiple of this many tokens (graphs with a dynamic sequence axis), so that queries share
# a few shapes (Triton batches only equal shapes). "men's black puffer jacket" is 8 tokens; fashion product texts have a
# median of 16 and a 90th percentile of 20: buckets of 8 pad them to 19.3 tokens on average, buckets of 16 to 22.4.
TEXT_LENGTH_BUCKET = 8


def load_image(source: ImageSource, max_bytes: int = 20 * 2**20, max_pixels: int = 40_000_000) -> Image.Image:
    """Decode a photo as RGB with its EXIF orientation applied; a clear ``InvalidInput`` for anything unusable."""
    if isinstance(source, Image.Image):
        image = source
    else:
        if isinstance(source, (str, Path)):
            path = Path(source)
            if not path.is_file():
                raise InvalidInput(f"The image {path.name} does not exist.")
            if path.stat().st_size > max_bytes:
                raise InvalidInput(f"The image is larger than {max_bytes // 2**20} MB; please use a smaller photo.")
            data = path.read_bytes()
        else:
            data = source
        if len(data) > max_bytes:
            raise InvalidInput(f"The image is larger than {max_bytes // 2**20} MB; please use a smaller photo.")
        if not data:
            raise InvalidInput("The image file is empty.")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data))
                if image.width * image.height > max_pixels:
                    raise InvalidInput(
                        f"The image is {image.width}x{image.height} pixels, more than we accept; "
                        "please use a smaller photo."
                    )
                image.load()
        except InvalidInput:
            raise
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as err:
            raise InvalidInput("This file is not an image we can read (try a JPEG, PNG or WebP photo).") from err
    # A broken EXIF block must not lose an otherwise good photo.
    with contextlib.suppress(Exception):
        image = ImageOps.exif_transpose(image)
    return image.convert("RGB")


def clean_text(text: str | None, max_chars: int = 1000) -> str:
    """Normalise a description; empty or huge text is a person's mistake and gets a sentence, not a crash."""
    cleaned = " ".join((text or "").split())
    if not cleaned:
        raise InvalidInput("Please type a description of the product you are looking for.")
    if len(cleaned) > max_chars:
        raise InvalidInput(f"The description is {len(cleaned)} characters long; please keep it under {max_chars}.")
    return cleaned


class Preprocessor:
    """Tokenizer and image processor from the model repository, loaded once on first use."""

    def __init__(self, repo: Path, card: mr.ModelCard) -> None:
        self.repo = Path(repo)
        self.card = card
        self._tokenizer = None
        self._processor = None
        self._lock = threading.Lock()

    def _load(self) -> None:
        with self._lock:
            if self._tokenizer is not None:
                return
            from transformers import AutoImageProcessor, AutoTokenizer
            from transformers.utils import logging as hf_logging

            # Without torchvision, transformers 5 falls back to the PIL image processor and says so on every load.
            verbosity = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()
            try:
                processor = AutoImageProcessor.from_pretrained(str(mr.processor_dir(self.repo)))
                tokenizer = AutoTokenizer.from_pretrained(str(mr.tokenizer_dir(self.repo)))
            finally:
                hf_logging.set_verbosity(verbosity)
            self._processor = processor
            self._tokenizer = tokenizer

    def tokenize(self, texts: list[str]) -> dict[str, np.ndarray]:
        """One padded batch: to the bucket of the longest text, or to ``text_max_length`` for a fixed-length graph."""
        rows = self._token_rows(texts)
        return self._pad(rows, self._width(max((len(ids) for ids, _ in rows), default=0)))

    def tokenize_groups(self, texts: list[str]) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """Texts grouped by padded width, as (indices into ``texts``, batch) pairs.

        Why: a batch costs its longest text times its size, and product texts run from 5 to 77 tokens; grouping them
        by bucket keeps a few long ones from making every short one pay for their padding.
        """
        rows = self._token_rows(texts)
        widths = np.array([self._width(len(ids)) for ids, _ in rows])
        groups = []
        for width in np.unique(widths):
            index = np.flatnonzero(widths == width)
            groups.append((index, self._pad([rows[i] for i in index], int(width))))
        return groups

    def _token_rows(self, texts: list[str]) -> list[tuple[list[int], list[int]]]:
        if not texts:
            return []
        self._load()
        encoded = self._tokenizer(list(texts), truncation=True, max_length=self.card.text_max_length)
        return list(zip(encoded["input_ids"], encoded["attention_mask"], strict=True))

    def _width(self, length: int) -> int:
        """Padded width for a text of ``length`` tokens: a multiple of TEXT_LENGTH_BUCKET, so queries share shapes
        (Triton batches only equal shapes), never past what the graph takes."""
        limit = self.card.text_max_length
        if not self.card.text_dynamic_length:
            return limit
        return min(limit, max(1, -(-length // TEXT_LENGTH_BUCKET)) * TEXT_LENGTH_BUCKET)

    def _pad(self, rows: list[tuple[list[int], list[int]]], width: int) -> dict[str, np.ndarray]:
        pad_id = self._tokenizer.pad_token_id or 0
        ids = np.full((len(rows), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        left = self._tokenizer.padding_side == "left"
        for i, (row_ids, row_mask) in enumerate(rows):
            n = len(row_ids)
            cols = slice(width - n, width) if left else slice(0, n)
            ids[i, cols] = row_ids
            mask[i, cols] = row_mask
        return {"input_ids": ids, "attention_mask": mask}

    def pixels(self, images: list[Image.Image]) -> np.ndarray:
        self._load()
        out = self._processor(images=images, return_tensors="np")["pixel_values"]
        return np.ascontiguousarray(out, dtype=np.float32)
