"""Layout of the model repository and the model card that is the model's identity.

The repository is what Triton serves (``clip_text/``, ``clip_visual/``, each with ``config.pbtxt`` and ``1/model.onnx``)
plus what the client needs beside it: tokenizer files, image-processor files and ``model_card.json``. Caches and the
vector index are tied to ``ModelCard.identity`` so that results are never mixed across models.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import ModelNotFound

TEXT_MODEL = "clip_text"
VISUAL_MODEL = "clip_visual"
CARD_FILE = "model_card.json"

# ONNX / Triton tensor names, shared by the exporter, both inference backends and the Triton configs.
TEXT_INPUTS = ("input_ids", "attention_mask")
VISUAL_INPUT = "pixel_values"
OUTPUT = "embedding"

# Score thresholds per query kind: image queries score image-to-photo cosine; text queries score the fused cosine
# (text_weight * text-to-text + (1 - text_weight) * text-to-photo). Defaults are rough; ``evaluate --calibrate``
# measures them for the model at hand.
DEFAULT_THRESHOLDS = {"image": {"match": 0.9, "similar": 0.75}, "text": {"match": 0.6, "similar": 0.45}}
DEFAULT_TEXT_WEIGHT = 0.5


# The Triton model config parameter that carries ``ModelCard.identity`` (the client checks it against its own card).
IDENTITY_PARAMETER = "model_identity"


def text_sequence_dim(card: ModelCard) -> int:
    """Triton's sequence dimension for ``clip_text``: -1 (any length) or the length the graph was exported with."""
    return -1 if card.text_dynamic_length else card.text_max_length


def onnx_path(repo: Path, model: str) -> Path:
    return Path(repo) / model / "1" / "model.onnx"


def tokenizer_dir(repo: Path) -> Path:
    return Path(repo) / TEXT_MODEL / "tokenizer"


def processor_dir(repo: Path) -> Path:
    return Path(repo) / VISUAL_MODEL / "processor"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class ModelCard:
    """What the model is; written by ``build-model``, read by everything that embeds or searches."""

    name: str
    kind: str  # "clip" (any CLIP-style pair of towers: see ``family``) or "offline"
    source: str
    revision: str
    precision: str  # "fp32", "fp16", "int8" (dynamic), "int8-static"
    embedding_dim: int
    text_max_length: int  # longest token sequence the text tower takes (longer text is truncated)
    image_size: int
    sha256: dict[str, str]
    thresholds: dict = field(default_factory=lambda: json.loads(json.dumps(DEFAULT_THRESHOLDS)))
    text_weight: float = DEFAULT_TEXT_WEIGHT
    sources: list[dict[str, str]] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    # True: the text tower takes any sequence length up to text_max_length (padding does not change the embedding), so
    # short queries are padded to a small bucket, not to text_max_length. Repositories built before this existed: False.
    text_dynamic_length: bool = False
    # Which library's model the towers were exported from: "clip" (transformers CLIPModel), "siglip" (transformers
    # SiglipModel: SigLIP, fixed-resolution SigLIP 2), "open_clip", or "offline". Cards older than this: "".
    family: str = ""
    # The image steps the client applies (resize mode, interpolation, crop, mean, std), as read from the processor
    # file beside the graphs: the family's own, recorded for a reader; the client reads the file itself.
    preprocessing: dict = field(default_factory=dict)
    # Where the thresholds were measured for this model ("evaluate --calibrate on CATALOG, N labelled queries, DATE");
    # empty: they are DEFAULT_THRESHOLDS, set for no model in particular (a SigLIP's cosines sit far below a CLIP's),
    # and the page says so. Cards older than this: empty.
    thresholds_calibration: str = ""

    @property
    def identity(self) -> str:
        """Short stable id of the exact weights: changes when either ONNX file changes, not when thresholds do."""
        joined = "|".join(f"{k}={self.sha256[k]}" for k in sorted(self.sha256))
        return hashlib.sha256(f"{joined}|{self.embedding_dim}".encode()).hexdigest()[:16]

    def threshold(self, kind: str) -> tuple[float, float]:
        """(match, similar) score thresholds for ``kind`` ("text" or "image"); a flat {match, similar} serves both."""
        table = self.thresholds.get(kind, self.thresholds)
        if not isinstance(table, dict) or "match" not in table:
            table = DEFAULT_THRESHOLDS[kind]
        return float(table["match"]), float(table["similar"])

    @property
    def thresholds_calibrated(self) -> bool:
        return bool(self.thresholds_calibration)

    @property
    def label(self) -> str:
        return f"{self.name} ({self.precision})"

    def save(self, repo: Path) -> Path:
        path = Path(repo) / CARD_FILE
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, repo: Path) -> ModelCard:
        path = Path(repo) / CARD_FILE
        if not path.is_file():
            raise ModelNotFound(
                f"No model in {repo}: build one first with "
                "'python -m pipeline build-model --source <CLIP folder, hub id or offline>'."
            )
        data = json.loads(path.read_text())
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


VERIFIED_FILE = ".verified.json"


def _file_key(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def verify_files(repo: Path, card: ModelCard) -> None:
    """Fail clearly if an ONNX file is missing or is not the one the card describes.

    Hashing the towers costs every start a noticeable moment (docs/operations.md), so a file whose size,
    modification time and inode are those it had when its checksum last matched is not hashed again
    (``.verified.json`` beside the card, written when the repository is writable); any change to the file changes
    them.
    """
    record_file = Path(repo) / VERIFIED_FILE
    try:
        record = json.loads(record_file.read_text())
    except (OSError, ValueError):
        record = {}
    verified = {}
    for model, expected in card.sha256.items():
        path = onnx_path(repo, model)
        if not path.is_file():
            raise ModelNotFound(
                f"The model repository {repo} lacks {path.relative_to(repo)}; rebuild it with build-model."
            )
        key = f"{expected}@{_file_key(path)}"
        if record.get(model) != key and sha256_file(path) != expected:
            raise ModelNotFound(
                f"{path} does not match the model card (checksum differs); rebuild the model repository "
                "with build-model."
            )
        verified[model] = key
    if verified != record:
        with contextlib.suppress(OSError):  # a read-only repository is simply hashed at every start
            record_file.write_text(json.dumps(verified) + "\n")
