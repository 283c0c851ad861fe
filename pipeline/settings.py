"""All configuration, read from environment variables in this one place.

Defaults need nothing installed by hand: in-process inference, Qdrant local mode and a local MongoDB-protocol server,
all under ``DATA_DIR``. Tests build a ``Settings`` directly (or with ``from_env(env)``) instead of patching globals.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

DEFAULT_MODEL_SOURCE = "openai/clip-vit-base-patch32"


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    return int(raw) if raw else default


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    return float(raw) if raw else default


def _opt(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    return raw or None


def apply_process_defaults() -> None:
    """Defaults for the libraries under us, set by the entry points before numpy loads; the environment still wins.

    One BLAS thread: the search's matrix-vector products gain nothing from two, and OpenBLAS's idle threads then spin
    and slow the next inference 2x (bench/README.md). transformers' advice ("PyTorch was not found", torchvision
    fallbacks) is noise for a runtime that needs neither.
    """
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    model_repository: Path = Path("model_repository")
    model_source: str | None = None  # None: the hub CLIP, or the offline model when the hub cannot be reached
    triton_url: str | None = None
    triton_fallback: str | None = None  # "local": fall back to in-process inference when Triton is lost
    triton_timeout_s: float = 30.0
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    qdrant_collection: str = "products"
    mongodb_uri: str | None = None
    mongo_timeout_ms: int = 3000
    cache_size_mb: int = 256
    max_text_chars: int = 1000
    max_image_mb: float = 20.0
    max_image_pixels: int = 40_000_000
    ingest_batch_size: int = 32
    match_threshold: float | None = None  # overrides the model card's "match" threshold
    similar_threshold: float | None = None  # overrides the model card's "similar" threshold

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            data_dir=Path(env.get("DATA_DIR", "").strip() or "data"),
            model_repository=Path(env.get("MODEL_REPOSITORY", "").strip() or "model_repository"),
            model_source=_opt(env, "MODEL_SOURCE"),
            triton_url=_opt(env, "TRITON_URL"),
            triton_fallback=_opt(env, "TRITON_FALLBACK"),
            triton_timeout_s=_float(env, "TRITON_TIMEOUT_S", 30.0),
            qdrant_url=_opt(env, "QDRANT_URL"),
            qdrant_api_key=_opt(env, "QDRANT_API_KEY"),
            qdrant_collection=env.get("QDRANT_COLLECTION", "").strip() or "products",
            mongodb_uri=_opt(env, "MONGODB_URI"),
            mongo_timeout_ms=_int(env, "MONGO_TIMEOUT_MS", 3000),
            cache_size_mb=_int(env, "CACHE_SIZE_MB", 256),
            max_text_chars=_int(env, "MAX_TEXT_CHARS", 1000),
            max_image_mb=_float(env, "MAX_IMAGE_MB", 20.0),
            max_image_pixels=_int(env, "MAX_IMAGE_PIXELS", 40_000_000),
            ingest_batch_size=_int(env, "INGEST_BATCH_SIZE", 32),
            match_threshold=float(env["MATCH_THRESHOLD"]) if env.get("MATCH_THRESHOLD", "").strip() else None,
            similar_threshold=float(env["SIMILAR_THRESHOLD"]) if env.get("SIMILAR_THRESHOLD", "").strip() else None,
        )

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)

    @property
    def qdrant_path(self) -> Path:
        return self.data_dir / "qdrant"

    @property
    def mongo_path(self) -> Path:
        return self.data_dir / "mongo"

    @property
    def cache_path(self) -> Path:
        return self.data_dir / "cache"
