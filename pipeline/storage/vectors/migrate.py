"""Data folders made before Qdrant Edge: a collection of qdrant-client's local mode under ``DATA_DIR/qdrant`` is
copied into the Edge shard the first time the collection is opened — vectors, payloads, model identity and catalogue
version, no re-embedding. The old files are left where they were, marked as migrated, for the user to delete.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from ...errors import BackendUnavailable
from .store import VectorStore
from .types import CollectionInfo, IndexedProduct

log = logging.getLogger("pipeline.storage.vectors")
MARKER = "MIGRATED_TO_QDRANT_EDGE"


def legacy_collection(legacy_root: Path, collection: str) -> Path | None:
    """The local-mode collection folder still to migrate, if there is one."""
    folder = Path(legacy_root) / "collection" / collection
    if (folder / "storage.sqlite").is_file() and not (folder / MARKER).exists():
        return folder
    return None


def migrate_local_mode(legacy_root: Path, collection: str, target: VectorStore) -> int:
    """Copy one local-mode collection into ``target`` (an empty store); returns the number of products copied."""
    from qdrant_client import QdrantClient

    folder = legacy_collection(legacy_root, collection)
    if folder is None:
        return 0
    rebuild = "rebuild it with 'python -m pipeline ingest CATALOG --reset'"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client = QdrantClient(path=str(legacy_root))
    except Exception as err:
        raise BackendUnavailable(
            f"The old vector index in {legacy_root} (qdrant-client local mode) cannot be read ({err}); {rebuild}."
        ) from err
    try:
        meta = dict(client.get_collection(collection).config.metadata or {})
        products: list[IndexedProduct] = []
        offset = None
        while True:
            points, offset = client.scroll(
                collection, limit=1024, offset=offset, with_payload=True, with_vectors=["image", "text"]
            )
            for p in points:
                payload = dict(p.payload or {})
                pid = payload.pop("product_id")
                products.append(
                    IndexedProduct(pid, np.asarray(p.vector["image"]), np.asarray(p.vector["text"]), payload)
                )
            if offset is None:
                break
    except Exception as err:
        raise BackendUnavailable(f"The old vector index in {folder} cannot be migrated ({err}); {rebuild}.") from err
    finally:
        client.close()
    if not products:
        (folder / MARKER).write_text("empty; nothing migrated\n")
        return 0
    from ...model_repo import ModelCard

    dim = len(products[0].image)
    card = ModelCard(meta.get("model_name", "migrated"), "unknown", "", "", "", dim, 0, 0, {})
    info = CollectionInfo(
        collection_id=__import__("uuid").uuid4().hex,
        model_identity=str(meta.get("model_identity", "")),
        model_name=str(meta.get("model_name", "")),
        catalog_version=int(meta.get("catalog_version", 0)) + 1,
    )
    target._create(card, info)
    for start in range(0, len(products), 1000):
        target.upsert(products[start : start + 1000])
    if target.count() != len(products):
        raise BackendUnavailable(f"Migrating {folder} copied {target.count()} of {len(products)} products; {rebuild}.")
    target.optimize()
    (folder / MARKER).write_text(f"{len(products)} products copied into the Qdrant Edge shard\n")
    log.warning(
        "Migrated %d products from qdrant-client local mode (%s) to Qdrant Edge; the old folder can be deleted.",
        len(products),
        folder,
    )
    return len(products)
