"""Product vectors: Qdrant Edge embedded (the default) or a Qdrant server (``QDRANT_URL``), behind ``VectorStore``."""

from __future__ import annotations

from ...settings import IndexTuning
from .store import VectorStore
from .types import FACET_FIELDS, PAYLOAD_FIELDS, CollectionInfo, Filters, Hit, IndexedProduct, point_id

__all__ = [
    "FACET_FIELDS",
    "PAYLOAD_FIELDS",
    "CollectionInfo",
    "Filters",
    "Hit",
    "IndexTuning",
    "IndexedProduct",
    "VectorStore",
    "open_vector_store",
    "point_id",
]


def open_vector_store(settings, serving: bool = False) -> VectorStore:
    """The store ``settings`` choose: a server with ``QDRANT_URL``, else the Edge shard of ``QDRANT_COLLECTION`` under
    ``DATA_DIR`` (a local-mode collection left by an older version is migrated into it first). ``serving``: the
    process answers queries, so long optimisations run on a copy in a child process."""
    tuning = settings.index_tuning
    if settings.qdrant_url:
        from .server import ServerVectorStore

        return ServerVectorStore(
            settings.qdrant_collection, tuning, url=settings.qdrant_url, api_key=settings.qdrant_api_key
        )
    from .edge import EdgeVectorStore
    from .migrate import legacy_collection, migrate_local_mode

    store = EdgeVectorStore(settings.vectors_path / settings.qdrant_collection, tuning, optimize_in_child=serving)
    if not store.info().exists and legacy_collection(settings.legacy_qdrant_path, settings.qdrant_collection):
        migrate_local_mode(settings.legacy_qdrant_path, settings.qdrant_collection, store)
    return store
