"""A Qdrant Edge shard's folder and its lifecycle: the lock, the info file, the schema a new shard is built with, and
optimising a copy in a child process that is then swapped in.

Edge has no collection metadata, so the collection's identity, model and catalogue version live in
``collection.json`` beside the shard, written atomically. Edge takes no lock of its own without a write-ahead log, and
two processes writing one shard would corrupt it, so the folder is locked for the life of the store.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import IO

from ...errors import BackendUnavailable, PipelineError
from ...processes.locks import try_lock
from ...settings import IndexTuning
from . import conditions
from .types import FLOAT_FIELDS, KEYWORD_FIELDS, LEXICAL, MULTI, CollectionInfo

INFO_FILE = "collection.json"
SHARD = "shard"
LOCK_FILE = "lock"
# One sentence for every command: searching and changing the catalogue both go through the process that holds it.
IN_USE = (
    "The vector index in {path} is open in another process (the app, or an ingest): search and change the catalogue "
    "through that app (its Search and Catalogue tabs, or its API), stop that process first, or run a Qdrant server "
    "(QDRANT_URL) and a MongoDB server (MONGODB_URI), which several processes can share."
)


def edge() -> object:
    """The engine, imported on first use (the app's other parts start without it)."""
    import qdrant_edge

    return qdrant_edge


def edge_version() -> str:
    try:
        return metadata.version("qdrant-edge-py")
    except metadata.PackageNotFoundError:
        return "unknown"


@functools.cache
def dialect(compact_memory: str = "cold") -> conditions.Dialect:
    """Qdrant Edge's constructors; ``compact_memory``: where a new shard keeps its compact copies (cold: mapped)."""
    q = edge()
    compact = q.Memory.Cold if compact_memory == "cold" else q.Memory.Pinned
    return conditions.Dialect(
        any_of=lambda key, values: q.FieldCondition(key=key, match=q.MatchAny(values)),
        between=lambda key, low, high: q.FieldCondition(key=key, range=q.RangeFloat(gte=low, lte=high)),
        all_of=lambda must: q.Filter(must=must),
        quantization_search=q.QuantizationSearchParams,
        search=q.SearchParams,
        int8=lambda: q.ScalarQuantizationConfig(type=q.ScalarType.Int8, quantile=0.99, memory=compact),
        turbo8=lambda: q.TurboQuantQuantizationConfig(bits=q.TurboQuantBitSize.Bits8, memory=compact),
    )


class ShardFolder:
    """``<root>/shard`` (the engine's), ``<root>/collection.json`` (ours) and ``<root>/lock``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.shard_dir = self.root / SHARD
        self.info_file = self.root / INFO_FILE

    def take(self) -> IO[str]:
        """The folder's lock, held until the returned file is closed; the kernel drops it if the holder dies."""
        handle = try_lock(self.root / LOCK_FILE)
        if handle is None:
            raise BackendUnavailable(IN_USE.format(path=self.root))
        return handle

    # -- the info file ------------------------------------------------------------------------------------------------
    def read_info(self) -> dict | None:
        if not self.info_file.is_file():
            return None
        try:
            return json.loads(self.info_file.read_text())
        except (OSError, ValueError) as err:
            raise BackendUnavailable(f"{self.info_file} cannot be read ({err}); re-ingest with --reset.") from err

    def write_info(self, info: CollectionInfo) -> None:
        """Atomically and durably: a crash leaves the old file or the new one."""
        data = {**info.to_dict(), "engine": f"qdrant-edge-py {edge_version()}"}
        tmp = self.info_file.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            fh.write(json.dumps(data, indent=2) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.info_file)

    def remove(self) -> None:
        shutil.rmtree(self.shard_dir, ignore_errors=True)
        self.info_file.unlink(missing_ok=True)

    # -- what the shard was built with --------------------------------------------------------------------------------
    @staticmethod
    def built_config(shard_dir: Path) -> dict:
        """The shard's own ``edge_config.json``, or {} where it cannot be read."""
        try:
            return json.loads((shard_dir / "edge_config.json").read_text())
        except (OSError, ValueError):
            return {}

    @staticmethod
    def built_storage(config: dict) -> str | None:
        """The storage every dense vector was built with (None: unknown or mixed). A shard keeps it whatever
        VECTOR_STORAGE says now, and is searched as built: an int8 shard rescored at turbo8's oversampling would lose
        recall."""
        kinds = set()
        for v in (config.get("vectors") or {}).values():
            quantizer = next(iter(v.get("quantization_config") or {}), None)
            kinds.add({"scalar": "int8", "turbo": "turbo8", None: "disk" if v.get("memory") == "cold" else "ram"}
                      .get(quantizer))  # fmt: skip
        return kinds.pop() if len(kinds) == 1 and None not in kinds else None

    # -- optimise a copy, swap it in ----------------------------------------------------------------------------------
    @property
    def _next(self) -> Path:
        return self.root / "shard.next"

    @property
    def _old(self) -> Path:
        return self.root / "shard.old"

    def recover_swap(self) -> None:
        """Finish or undo a swap that a crash interrupted."""
        if not self.shard_dir.exists() and self._old.is_dir():
            os.replace(self._old, self.shard_dir)
        for leftover in (self._old, self._next):
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)

    def copy(self) -> None:
        """A copy of the (flushed) shard to optimise, taken while nothing writes it."""
        shutil.rmtree(self._next, ignore_errors=True)
        shutil.copytree(self.shard_dir, self._next)

    def optimise_copy(self) -> bool:
        """Optimise the copy in a niced child process; whether it changed anything."""
        worker = [sys.executable, "-m", "pipeline.storage.vectors.optimize_worker", str(self._next)]
        done = subprocess.run(worker, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            shutil.rmtree(self._next, ignore_errors=True)
            raise PipelineError(f"Optimising the vector index failed: {done.stderr.strip()[-300:]}")
        return json.loads(done.stdout or "{}").get("optimized", True)

    def swap_in(self) -> None:
        """The optimised copy becomes the shard (the closed one is kept until ``drop_old``, for ``swap_back``)."""
        os.replace(self.shard_dir, self._old)
        os.replace(self._next, self.shard_dir)

    def swap_back(self) -> None:
        os.replace(self.shard_dir, self._next)
        os.replace(self._old, self.shard_dir)

    def drop_old(self) -> None:
        shutil.rmtree(self._old, ignore_errors=True)


def schema(tuning: IndexTuning, dim: int, dense: tuple[str, ...]):
    """The ``EdgeConfig`` a new shard is built with (docs/vector-store.md says why each choice)."""
    q = edge()
    memory = q.Memory.Cached if tuning.storage == "ram" else q.Memory.Cold  # quantized: the originals on disk
    quantization = conditions.quantization(dialect(tuning.compact_memory), tuning)
    max_sim = q.MultiVectorConfig(q.MultiVectorComparator.MaxSim)
    return q.EdgeConfig(
        vectors={
            name: q.EdgeVectorParams(
                size=dim,
                distance=q.Distance.Dot,
                memory=memory,
                quantization_config=quantization,
                multivector_config=max_sim if name in MULTI else None,
            )
            for name in dense
        },
        hnsw_config=q.HnswIndexConfig(
            m=tuning.hnsw_m, ef_construct=tuning.hnsw_ef_construct, full_scan_threshold=conditions.full_scan_kb(dim)
        ),
        optimizers=q.EdgeOptimizersConfig(indexing_threshold=conditions.indexing_threshold_kb(tuning, dim)),
        sparse_vectors={LEXICAL: q.EdgeSparseVectorParams(modifier=q.Modifier.Idf)},
        # No write-ahead log: it held every vector a second time until the next optimisation, slowed the open and the
        # upserts; changes are flushed instead (see EdgeVectorStore._begin_change), and a crash keeps the last flush.
        wal_enabled=False,
    )


def index_payload(shard) -> None:
    """Payload indexes memory-mapped and read into the page cache on opening (on the heap they were rebuilt on every
    open)."""
    q = edge()
    cached = q.Memory.Cached
    for name in KEYWORD_FIELDS:
        shard.update(q.UpdateOperation.create_field_index(name, q.KeywordIndexParams(memory=cached)))
    for name in FLOAT_FIELDS:
        shard.update(q.UpdateOperation.create_field_index(name, q.FloatIndexParams(memory=cached)))
