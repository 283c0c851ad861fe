"""Embeddings for texts and photos: preprocessing here, the network behind an ``InferenceBackend``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from .. import model_repo as mr
from ..inference.base import InferenceBackend
from ..settings import Settings
from .preprocess import Preprocessor


class Encoder:
    def __init__(self, card: mr.ModelCard, preprocessor: Preprocessor, backend: InferenceBackend) -> None:
        self.card = card
        self.preprocessor = preprocessor
        self.backend = backend

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        groups = self.preprocessor.tokenize_groups(texts)
        if len(groups) == 1:
            return self._run(mr.TEXT_MODEL, groups[0][1])
        out = np.empty((len(texts), self.card.embedding_dim), dtype=np.float32)
        for index, batch in groups:
            out[index] = self._run(mr.TEXT_MODEL, batch)
        return out

    def encode_images(self, images: list[Image.Image]) -> np.ndarray:
        return self.encode_pixels(self.preprocessor.pixels(images))

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        return self._run(mr.VISUAL_MODEL, {mr.VISUAL_INPUT: pixels})

    def _run(self, model: str, inputs: dict[str, np.ndarray]) -> np.ndarray:
        out = np.asarray(self.backend.run(model, inputs), dtype=np.float32)
        if out.ndim != 2 or out.shape[1] != self.card.embedding_dim:
            raise RuntimeError(f"{model} returned shape {out.shape}, expected (n, {self.card.embedding_dim})")
        return out

    def close(self) -> None:
        self.backend.close()


def make_backend(settings: Settings, repo: Path) -> InferenceBackend:
    """In-process onnxruntime unless ``TRITON_URL`` is set (then Triton, with ``TRITON_FALLBACK=local`` as a net)."""
    if settings.triton_url:
        from ..inference.triton_backend import from_settings

        return from_settings(settings, repo)
    from ..inference.ort_backend import OrtBackend

    return OrtBackend(repo)


def load_encoder(
    settings: Settings, batching: bool = False, on_batch: Callable[[str, int], None] | None = None
) -> Encoder:
    """``batching``: concurrent queries share tower runs (the serving app; ``BATCH_WINDOW_MS``, ``BATCH_MAX``), with
    the in-process backend only: Triton batches its own. ``on_batch(tower, rows)``: told of every run (metrics)."""
    repo = Path(settings.model_repository)
    card = mr.ModelCard.load(repo)
    backend = make_backend(settings, repo)
    backend.check(card)
    if batching and not settings.triton_url and settings.batch_max > 1:
        from ..inference.batcher import BatchingBackend

        backend = BatchingBackend(backend, settings.batch_window_ms / 1000, settings.batch_max, on_batch)
    return Encoder(card, Preprocessor(repo, card), backend)
