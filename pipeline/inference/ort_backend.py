"""In-process inference: onnxruntime on the same ``model.onnx`` files Triton serves (the embedded default)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from .. import model_repo as mr
from ..errors import ModelMismatch, ModelNotFound
from .onnx_session import cpu_session


class OrtBackend:
    """One lazily created onnxruntime session per tower; ``InferenceSession.run`` is thread-safe, creation is locked."""

    max_batch_size: int | None = None
    description = "in-process onnxruntime"

    def __init__(self, repo: Path, threads: int = 0) -> None:
        self.repo = Path(repo)
        self.threads = threads
        self._sessions: dict[str, object] = {}
        self._lock = threading.Lock()

    def _session(self, model: str):
        session = self._sessions.get(model)
        if session is None:
            with self._lock:
                session = self._sessions.get(model)
                if session is None:
                    path = mr.onnx_path(self.repo, model)
                    if not path.is_file():
                        raise ModelNotFound(
                            f"{path} is missing; build the model with 'python -m pipeline build-model'."
                        )
                    session = cpu_session(path, self.threads)
                    self._sessions[model] = session
        return session

    def run(self, model: str, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self._session(model).run([mr.OUTPUT], inputs)[0]

    def check(self, card: mr.ModelCard) -> None:
        mr.verify_files(self.repo, card)
        for model in (mr.TEXT_MODEL, mr.VISUAL_MODEL):
            dim = self._session(model).get_outputs()[0].shape[-1]
            if isinstance(dim, int) and dim != card.embedding_dim:
                raise ModelMismatch(f"{model} gives {dim}-d embeddings but the model card says {card.embedding_dim}.")

    def close(self) -> None:
        with self._lock:
            self._sessions.clear()
