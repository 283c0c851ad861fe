"""The one interface both inference backends implement; the encoder only talks to this."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..model_repo import ModelCard


class InferenceBackend(Protocol):
    #: words for the status line, e.g. "in-process onnxruntime" or "Triton at http://127.0.0.1:8000"
    description: str
    #: largest batch one ``run`` call may carry (None = no limit)
    max_batch_size: int | None

    def run(self, model: str, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Run ``model`` ("clip_text" or "clip_visual") on a batch; returns the ``embedding`` output, float32 [B, D].

        Raises ``BackendUnavailable`` (a clear sentence) when the backend cannot answer.
        """
        ...

    def check(self, card: ModelCard) -> None:
        """Raise ``ModelMismatch``/``BackendUnavailable`` if this backend cannot serve the model the card describes."""
        ...

    def close(self) -> None: ...
