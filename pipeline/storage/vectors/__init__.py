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
    ``DATA_DIR``. ``serving``: the
    process answers queries, so long optimisations run on a copy in a child process."""
    tuning = settings.index_tuning
    if settings.qdrant_url:
        from .server import ServerVectorStore

        return ServerVectorStore(
            settings.qdrant_collection, tuning, url=settings.qdrant_url, api_key=settings.qdrant_api_key
        )
    from .edge import EdgeVectorStore

    return EdgeVectorStore(settings.vectors_path / settings.qdrant_collection, tuning, optimize_in_child=serving)
