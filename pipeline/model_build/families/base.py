"""What every model family hands the exporter: the library's own forward pass as two towers, and the client files.

A family (``clip.py``, ``siglip.py``, ``open_clip.py``) loads a checkpoint with its own library and returns a
``Loaded``. The exporter (``build_model.py``) knows nothing of the library: it traces the towers to ONNX, checks the
graphs against the same towers run in torch, checks the saved tokenizer against ``reference_tokens``, and writes the
model card. The towers call the library's own encode functions, so "the same as torch" means "the same as the
library".
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ... import model_repo as mr

#: Texts the build checks the saved tokenizer and the text tower on: case, punctuation, digits, accents, a long one.
CHECK_TEXTS = (
    "men's black puffer jacket",
    "A red coffee MUG, 350 ml!",
    "Wireless noise-cancelling headphones (over-ear) — 30h battery",
    "café crème: 100% arabica; 1 kg",
    'T-shirt "Classic" size XL/XXL',
    "a very long product description " * 12,
)


@dataclass
class Loaded:
    """A checkpoint as the exporter needs it."""

    family: str  # "clip", "siglip", "open_clip"
    name: str
    revision: str
    text_tower: object  # torch module: (input_ids, attention_mask) -> L2-normalised embeddings
    visual_tower: object  # torch module: (pixel_values) -> L2-normalised embeddings
    embedding_dim: int
    text_length: int  # tokens the text tower takes (longer text is truncated)
    text_dynamic_length: bool  # True: any length up to text_length gives the same vector (padding is inert)
    image_size: int
    save_tokenizer: Callable[[Path], None]  # writes tokenizer.json and tokenizer_config.json into the folder
    processor_config: dict  # written as preprocessor_config.json (a format pipeline.query.preprocess reads)
    # The library's own tokenizer on a list of texts: token id rows padded to text_length as the library feeds its
    # text tower, or without padding (see reference_unpadded).
    reference_tokens: Callable[[list[str]], list[list[int]]]
    # True: reference_tokens gives rows without padding (the library pads with another id, which the tower ignores)
    reference_unpadded: bool = False
    extra: dict = field(default_factory=dict)


def local_revision(folder: Path, suffixes: tuple[str, ...] = (".safetensors", ".bin")) -> str:
    """``local-`` and a digest of the weight files of a local checkpoint folder."""
    digest = hashlib.sha256()
    for weights in sorted(p for p in Path(folder).iterdir() if p.suffix in suffixes):
        digest.update(mr.sha256_file(weights).encode())
    return "local-" + digest.hexdigest()[:12]


def normalised(features):
    """L2-normalise a library's embedding output (a tensor, or an output object with ``pooler_output``)."""
    features = getattr(features, "pooler_output", features)
    return features / features.norm(dim=-1, keepdim=True)


def inert_mask(input_ids, attention_mask):
    """``input_ids`` made to depend on ``attention_mask`` without changing a value: a tower that does not use the mask
    (SigLIP, open_clip) still keeps it as an ONNX input, so every family's graph has the contract's two inputs (the
    exporter drops inputs that nothing reads)."""
    return input_ids + attention_mask * 0
