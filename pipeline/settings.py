"""All configuration, read from environment variables in this one place.

Defaults need nothing installed by hand: in-process inference, Qdrant Edge and a local MongoDB-protocol server, all
under ``DATA_DIR``. Tests build a ``Settings`` directly (or with ``from_env(env)``) instead of patching globals. A value
that cannot be used is a ``SettingsError`` naming the variable, never a traceback.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import PipelineError

# Chosen from README's model table: trained on product data, best published product retrieval per CPU millisecond of
# the models measured (Marqo-Ecommerce-L finds a little more at 5-15x the cost); loaded with open_clip.
DEFAULT_MODEL_SOURCE = "hf-hub:Marqo/marqo-ecommerce-embeddings-B"
VECTOR_STORAGES = ("ram", "disk", "int8", "turbo8")
QUANTIZED_STORAGES = ("int8", "turbo8")
COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class SettingsError(PipelineError):
    """An environment variable holds a value the pipeline cannot use; the message names it."""


# The parsers every setting goes through (the app's own settings in app/config.py too): each failure is one sentence
# that names the variable.
def env_int(env: Mapping[str, str], name: str, default: int, low: int = 0, high: int | None = None) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number.") from None
    if value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"{low} or more"
        raise SettingsError(f"{name}={value} is out of range: use a number {bounds}.")
    return value


def env_float(env: Mapping[str, str], name: str, default: float | None, low: float | None = None) -> float | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number.") from None
    if not math.isfinite(value):
        raise SettingsError(f"{name}={raw!r} is not a finite number.")
    if low is not None and value < low:
        raise SettingsError(f"{name}={raw!r} is out of range: use a number of at least {low:g}.")
    return value


def env_choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip().lower() or default
    if raw not in choices:
        words = ", ".join(c or "(unset)" for c in choices)
        raise SettingsError(f"{name}={raw!r} is not understood: use one of {words}.")
    return raw


TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"", "0", "false", "no", "off"}


def env_flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in TRUE_WORDS:
        return True
    if raw in FALSE_WORDS:
        return False
    raise SettingsError(f"{name}={env[name]!r} is not understood: use 1 or 0.")


def env_text(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    return raw or None


def apply_process_defaults() -> None:
    """Defaults for the libraries under us, set by the entry points before numpy loads; the environment still wins.

    One BLAS thread: the search's matrix-vector products gain nothing from two, and OpenBLAS's idle threads then spin
    and slow the next inference. transformers' advice ("PyTorch was not found", torchvision
    fallbacks) is noise for a runtime that needs neither.
    """
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@dataclass(frozen=True)
class IndexTuning:
    """How the collection is indexed and searched; chosen by ``bench/vector_scale.py`` (see bench/README.md); the
    vector stores take it from ``Settings.index_tuning``."""

    # "turbo8": TurboQuant 8-bit copies in RAM searched first, float32 originals on disk for rescoring (better recall
    # and less memory than int8; docs/vector-store.md); "int8": int8 scalar copies the same way; "ram": float32 in RAM;
    # "disk": float32 memory-mapped only.
    storage: str = "turbo8"
    hnsw_m: int = 32  # 16 lost recall for the same query time (docs/vector-store.md)
    hnsw_ef_construct: int = 100  # 200 added little recall for twice the build time
    # None: by size: 128 keeps recall up to 100k products, 1M needs 256 (docs/vector-store.md).
    hnsw_ef: int | None = None
    large_from: int = 500_000  # products from which HNSW is searched with ef 256
    exact_below: int = 15_000  # products per segment under which no HNSW is built: brute force is as fast, and exact
    # candidates rescored with the float32 vectors, as a multiple of k; None: by storage (turbo8 2, int8 4: int8's
    # coarser ranking loses recall at 2)
    oversampling: float | None = None
    # Whether quantized search rescores its candidates with the float32 originals (None: it does; bench --rescore).
    rescore: bool | None = None
    # Where Edge keeps the compact copies: "cold" (memory-mapped; read at full speed by a child right after the open)
    # or "pinned" (read into the engine's heap while the shard opens). "cold" opens large shards far faster for the
    # same query times after the first, with much less of the process's own memory (docs/vector-store.md). A shard
    # keeps what it was built with.
    compact_memory: str = "cold"
    # After opening, read the float32 originals that rescoring reads into the page cache, steadily, where they fit in
    # half the free memory (pipeline/storage/vectors/page_cache.py). Faster filtered queries on a slow disk, little on
    # a fast one, and the cached pages the queries map count as RSS (docs/vector-store.md). Off by default
    # (VECTOR_WARM=1 turns it on).
    warm_after_open: bool = False
    # New collections store a third vector, w·text + (1−w)·image, so a text query is one search instead of the
    # threshold algorithm's two and more (vectors/store.py), at the cost of a third more vectors on disk and in the
    # HNSW build (docs/vector-store.md). A collection keeps what it was made with (VECTOR_FUSED=0: without).
    fused_vector: bool = True

    @property
    def quantized(self) -> bool:
        """Searched over compact copies in RAM and rescored with the float32 originals on disk."""
        return self.storage in QUANTIZED_STORAGES

    def rescore_oversampling(self) -> float:
        if self.oversampling:
            return self.oversampling
        return 2.0 if self.storage == "turbo8" else 4.0

    def rescores(self, points: int) -> bool:
        """Whether a quantized search of ``points`` products rescores with the originals (``rescore`` fixes it)."""
        return True if self.rescore is None else self.rescore

    def ef_for(self, points: int) -> int:
        """HNSW search breadth for a collection of ``points`` products (``QDRANT_HNSW_EF`` fixes it)."""
        if self.hnsw_ef:
            return self.hnsw_ef
        return 256 if points >= self.large_from else 128


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    model_repository: Path = Path("model_repository")
    model_source: str | None = None  # None: the hub CLIP, or the offline model when the hub cannot be reached
    triton_url: str | None = None
    triton_fallback: str | None = None  # "local": fall back to in-process inference when Triton is lost
    triton_timeout_s: float = 30.0
    triton_venv: Path | None = None  # the venv with tritonserver; None: .venv-triton beside the code
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    qdrant_collection: str = "products"
    vector_storage: str = IndexTuning.storage
    hnsw_ef: int | None = None  # None: chosen by the collection's size (IndexTuning.ef_for)
    vector_warm: bool = IndexTuning.warm_after_open
    vector_fused: bool = IndexTuning.fused_vector  # new collections store w·text + (1−w)·image
    mongodb_uri: str | None = None
    mongo_timeout_ms: int = 3000
    cache_size_mb: int = 256
    max_text_chars: int = 1000
    max_image_mb: float = 20.0
    max_image_pixels: int = 40_000_000
    max_upload_mb: float = 512.0  # a catalogue upload (file or zip), accepted by the page only with ADMIN_TOKEN set
    ingest_batch_size: int = 32
    # Queries that arrive together share one run of a tower (pipeline/inference/batcher.py) in the serving app: the
    # wait for company once a run is in progress, and the rows of one run; 0 ms / 1 row: every query alone.
    batch_window_ms: float = 2.0
    batch_max: int = 16
    # Catalogue photos given as http(s) URLs (pipeline/url_fetch.py): private addresses refused unless allowed, each
    # socket operation bounded by the timeout (the whole fetch by three times it), this many downloads at once.
    allow_private_photo_urls: bool = False
    photo_url_timeout_s: float = 10.0
    photo_downloads: int = 16
    data_persistent: bool | None = None  # the container says whether DATA_DIR survives a restart (None: not known)
    admin_token: str | None = field(default=None, repr=False)  # changes to the catalogue need it (None: read-only)
    shop_url: str | None = None  # the shop's address: a Shopify export's product links are SHOP_URL/products/<Handle>
    hybrid_search: bool = True  # text queries: BM25 fused with the dense ranking (README "Search features")
    # Chosen by bench.search_features on ../shared/data (README "Search features"): RRF k 20 ranks fashion attribute
    # queries a little better than the usual 60 (hit@5 0.992 vs 0.989, names equal); photo + words peaks at 0.5.
    rrf_k: int = 20  # reciprocal rank fusion's constant for hybrid text search
    refine_weight: float = 0.5  # photo + words: how far the photo's embedding moves towards the words'
    match_threshold: float | None = None  # overrides the model card's "match" threshold
    similar_threshold: float | None = None  # overrides the model card's "similar" threshold

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            data_dir=Path(env.get("DATA_DIR", "").strip() or "data"),
            model_repository=Path(env.get("MODEL_REPOSITORY", "").strip() or "model_repository"),
            model_source=env_text(env, "MODEL_SOURCE"),
            triton_url=env_text(env, "TRITON_URL"),
            triton_fallback=env_choice(env, "TRITON_FALLBACK", "", ("", "local")) or None,
            triton_venv=Path(env["TRITON_VENV"].strip()).expanduser() if env_text(env, "TRITON_VENV") else None,
            triton_timeout_s=env_float(env, "TRITON_TIMEOUT_S", 30.0, low=0.1),
            qdrant_url=env_text(env, "QDRANT_URL"),
            qdrant_api_key=env_text(env, "QDRANT_API_KEY"),
            qdrant_collection=_collection(env),
            vector_storage=env_choice(env, "VECTOR_STORAGE", IndexTuning.storage, VECTOR_STORAGES),
            hnsw_ef=env_int(env, "QDRANT_HNSW_EF", 0, low=0) or None,
            vector_warm=env_flag(env, "VECTOR_WARM") if env_text(env, "VECTOR_WARM") else IndexTuning.warm_after_open,
            vector_fused=env_flag(env, "VECTOR_FUSED") if env_text(env, "VECTOR_FUSED") else IndexTuning.fused_vector,
            mongodb_uri=env_text(env, "MONGODB_URI"),
            mongo_timeout_ms=env_int(env, "MONGO_TIMEOUT_MS", 3000, low=1),
            cache_size_mb=env_int(env, "CACHE_SIZE_MB", 256, low=1),
            max_text_chars=env_int(env, "MAX_TEXT_CHARS", 1000, low=1),
            max_image_mb=env_float(env, "MAX_IMAGE_MB", 20.0, low=0.01),
            max_image_pixels=env_int(env, "MAX_IMAGE_PIXELS", 40_000_000, low=1),
            max_upload_mb=env_float(env, "MAX_UPLOAD_MB", 512.0, low=0.01),
            ingest_batch_size=env_int(env, "INGEST_BATCH_SIZE", 32, low=1, high=4096),
            batch_window_ms=env_float(env, "BATCH_WINDOW_MS", 2.0, low=0.0),
            batch_max=env_int(env, "BATCH_MAX", 16, low=1, high=1024),
            allow_private_photo_urls=env_flag(env, "ALLOW_PRIVATE_PHOTO_URLS"),
            photo_url_timeout_s=env_float(env, "PHOTO_URL_TIMEOUT_S", 10.0, low=0.1),
            photo_downloads=env_int(env, "PHOTO_DOWNLOADS", 16, low=1, high=64),
            data_persistent=env_flag(env, "DATA_PERSISTENT") if env_text(env, "DATA_PERSISTENT") else None,
            admin_token=env_text(env, "ADMIN_TOKEN"),
            shop_url=env_text(env, "SHOP_URL"),
            hybrid_search=env_flag(env, "HYBRID_SEARCH") if env_text(env, "HYBRID_SEARCH") else True,
            rrf_k=env_int(env, "HYBRID_RRF_K", 20, low=1, high=10_000),
            refine_weight=_unit(env, "REFINE_WEIGHT", 0.5),
            match_threshold=env_float(env, "MATCH_THRESHOLD", None),
            similar_threshold=env_float(env, "SIMILAR_THRESHOLD", None),
        )

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)

    @property
    def vectors_path(self) -> Path:
        """One Qdrant Edge shard per collection below this folder."""
        return self.data_dir / "vectors"

    @property
    def photos_path(self) -> Path:
        """The catalogue's photos as the app serves them: the only folder the page may serve files from."""
        return self.data_dir / "photos"

    @property
    def uploads_path(self) -> Path:
        """Where catalogue uploads are unpacked for the length of an ingest (removed after it)."""
        return self.data_dir / "uploads"

    @property
    def index_tuning(self) -> IndexTuning:
        return replace(
            IndexTuning(),
            storage=self.vector_storage,
            hnsw_ef=self.hnsw_ef,
            warm_after_open=self.vector_warm,
            fused_vector=self.vector_fused,
        )

    @property
    def mongo_path(self) -> Path:
        return self.data_dir / "mongo"

    @property
    def cache_path(self) -> Path:
        return self.data_dir / "cache"


def _collection(env: Mapping[str, str]) -> str:
    name = env.get("QDRANT_COLLECTION", "").strip() or "products"
    if not COLLECTION_NAME.match(name):
        raise SettingsError(
            f"QDRANT_COLLECTION={name!r} is not a usable name: use up to 64 letters, digits, '-' or '_'."
        )
    return name


def _unit(env: Mapping[str, str], name: str, default: float) -> float:
    value = env_float(env, name, default, low=0.0)
    if value > 1.0:
        raise SettingsError(f"{name}={value:g} is out of range: use a number from 0 to 1.")
    return value
