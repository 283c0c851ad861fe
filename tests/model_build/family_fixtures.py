"""Helpers of the model-family tests (their fixtures are in conftest.py beside this file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import model_repo as mr
from pipeline.inference.ort_backend import OrtBackend
from pipeline.query.encoder import Encoder
from pipeline.query.preprocess import Preprocessor

#: the small checkpoints the tests build: transformers SigLIP, open_clip SigLIP-style, open_clip CLIP-style
FAMILIES = ("siglip", "open_clip_siglip", "open_clip_clip")


def encoder(repo: Path) -> Encoder:
    card = mr.ModelCard.load(repo)
    return Encoder(card, Preprocessor(repo, card), OrtBackend(repo))


def cosines(a, b) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
