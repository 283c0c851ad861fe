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

from . import model_repo as mr
from .errors import InvalidInput

ImageSource = str | Path | bytes | Image.Image


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
        """Pad to the fixed length the graph was exported with (Triton batches equal shapes); truncate longer text."""
        self._load()
        encoded = self._tokenizer(
            texts, padding="max_length", truncation=True, max_length=self.card.text_max_length, return_tensors="np"
        )
        return {name: np.ascontiguousarray(encoded[name], dtype=np.int64) for name in mr.TEXT_INPUTS}

    def pixels(self, images: list[Image.Image]) -> np.ndarray:
        self._load()
        out = self._processor(images=images, return_tensors="np")["pixel_values"]
        return np.ascontiguousarray(out, dtype=np.float32)
