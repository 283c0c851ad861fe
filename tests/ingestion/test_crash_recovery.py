"""``kill -9`` of a real ``python -m pipeline ingest`` halfway through the 1,000-product fashion catalogue, then the
same ingest again: exactly 1,000 products in MongoDB and in the index, the same ids in both, none twice, and no answer
cached on the half catalogue served afterwards."""

from __future__ import annotations

import os
import subprocess
import sys

from pipeline.processes.mongo_guard import read_state
from pipeline.service import Pipeline
from pipeline.settings import Settings
from pipeline.storage.catalog_store import PRODUCT_COLLECTION, PRODUCT_DB, connect

from ..conftest import REPO_ROOT, shared
from ..processes.test_mongo_server import kill9, wait_until

QUERY = "grey t-shirt for men"


def _ingest(env: dict) -> subprocess.Popen:
    catalog = shared("fashion", "catalog.jsonl")
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "ingest", str(catalog)],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def stored_products(uri: str) -> int:
    """Products in MongoDB right now, counted from outside the process that writes them."""
    client = connect(uri, 2000)
    try:
        return client[PRODUCT_DB][PRODUCT_COLLECTION].count_documents({})
    finally:
        client.close()


def test_kill_9_halfway_then_the_same_ingest_gives_exactly_the_catalogue(tmp_path, model_repo):
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URI", "QDRANT_URL", "TRITON_URL")}
    env.update(DATA_DIR=str(data), MODEL_REPOSITORY=str(model_repo), HF_HUB_OFFLINE="1", INGEST_BATCH_SIZE="50")
    settings = Settings(data_dir=data, model_repository=model_repo)

    first = _ingest(env)
    try:
        state = wait_until(lambda: read_state(data / "mongo"), 60, "the ingest starts its MongoDB server")
        wait_until(lambda: stored_products(state["uri"]) >= 300, 300, "300 products are in MongoDB", every_s=0.2)
    finally:
        kill9(first)
    half = stored_products(state["uri"])
    assert 300 <= half < 1000, f"killed at {half} products: not halfway"

    with Pipeline(settings) as pipe:  # the half catalogue answers, and that answer is cached
        partial = [m.id for m in pipe.matcher.match_text(QUERY).matches]
        assert partial and pipe.index.count() < 1000

    again = _ingest(env)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out

    with Pipeline(settings) as pipe:
        index_ids = pipe.index.all_vectors("image")[0]
        mongo_ids = [d["id"] for d in pipe.store.collection.find({}, {"id": 1})]
        assert len(index_ids) == len(set(index_ids)) == 1000 and pipe.index.count() == 1000
        assert len(mongo_ids) == len(set(mongo_ids)) == 1000 and set(mongo_ids) == set(index_ids)
        answer = [m.id for m in pipe.matcher.match_text(QUERY).matches]
        pipe.cache.clear()
        fresh = [m.id for m in pipe.matcher.match_text(QUERY).matches]
    assert answer == fresh, "an answer cached on the half catalogue was served"
