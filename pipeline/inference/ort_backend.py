"""In-process inference: onnxruntime on the same ``model.onnx`` files Triton serves (the embedded default)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from .. import model_repo as mr
from ..errors import ModelMismatch, ModelNotFound
from .onnx_session import cpu_session


class OrtBackend:
    """One lazily created onnxruntime session per tower; ``InferenceSession.run`` is thread-safe, creation is locked
    per tower (so both can be created at once)."""

    max_batch_size: int | None = None
    description = "in-process onnxruntime"

    def __init__(self, repo: Path, threads: int = 0) -> None:
        self.repo = Path(repo)
        self.threads = threads
        self._sessions: dict[str, object] = {}
        self._locks = {mr.TEXT_MODEL: threading.Lock(), mr.VISUAL_MODEL: threading.Lock()}  # one per tower

    def _session(self, model: str):
        session = self._sessions.get(model)
        if session is None:
            with self._locks[model]:
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
        """The files are the card's, and both graphs give its embedding size. The checksums and the two sessions are
        made in parallel (onnxruntime and hashlib release the GIL): start-up waits for the slowest, not the sum."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=3, thread_name_prefix="model-load") as pool:
            jobs = [pool.submit(mr.verify_files, self.repo, card)]
            jobs += [pool.submit(self._session, model) for model in (mr.TEXT_MODEL, mr.VISUAL_MODEL)]
            for job in jobs:
                job.result()
        for model in (mr.TEXT_MODEL, mr.VISUAL_MODEL):
            dim = self._session(model).get_outputs()[0].shape[-1]
            if isinstance(dim, int) and dim != card.embedding_dim:
                raise ModelMismatch(f"{model} gives {dim}-d embeddings but the model card says {card.embedding_dim}.")

    def close(self) -> None:
        self._sessions.clear()
