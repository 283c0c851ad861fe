"""Shared fixtures: a small CLIP exported once per session, a real MongoDB-protocol server, fresh data folders.

Everything is real: the model is built by ``build-model`` from a folder saved with ``save_pretrained``, MongoDB is the
SecantusDB wire-protocol server in its own process, Qdrant runs in local mode and the cache is diskcache, all on
loopback and in temporary folders.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.model_build.build_model import build_model
from pipeline.processes.mongo_server import LocalMongoServer
from pipeline.service import Pipeline
from pipeline.settings import Settings
from pipeline.storage.catalog_store import PRODUCT_DB, connect
from pipeline.storage.event_log import LOG_DB
from tests.support.random_clip import save_random_clip
from tests.support.triton_fixtures import tiny_repo, triton_server  # noqa: F401 - session fixtures shared by the test modules

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if not SHARED_DATA.is_dir():  # CI lays shared/ beside the clone
    SHARED_DATA = Path(os.environ.get("SHARED_DATA", "../shared/data")).resolve()
REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_CATALOG = REPO_ROOT / "assets" / "demo_catalog" / "catalog.jsonl"

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def shared(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"test data {path} is not there (../shared/data)")
    return path


@pytest.fixture(scope="session")
def clip_folder(tmp_path_factory) -> Path:
    return save_random_clip(tmp_path_factory.mktemp("clip") / "tiny-clip", size="tiny")


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory, clip_folder) -> Path:
    out = tmp_path_factory.mktemp("models") / "model_repository"
    build_model(source=str(clip_folder), out=out)
    return out


@pytest.fixture(scope="session")
def offline_repo(tmp_path_factory) -> Path:
    """The offline model (packaged MiniLM + EfficientNet-Lite0) as ``build-model --source offline`` writes it, once per
    session (~15 s); skipped where its packages are not installed."""
    from pipeline.errors import ModelNotFound

    try:
        from pipeline.model_build.offline_model import sources

        sources()  # ModelNotFound names the package that is missing
    except (ImportError, ModelNotFound) as err:
        pytest.skip(f"the offline model cannot be built here: {err}")
    out = tmp_path_factory.mktemp("offline-models") / "model_repository"
    build_model(source="offline", out=out)
    return out


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory):
    server = LocalMongoServer(tmp_path_factory.mktemp("mongo"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def mongo_uri(mongo_server) -> str:
    """The session's server, emptied for this test."""
    client = connect(mongo_server.uri, 3000)
    for db in (PRODUCT_DB, LOG_DB):
        client.drop_database(db)
    client.close()
    return mongo_server.uri


@pytest.fixture
def settings(tmp_path, model_repo, mongo_uri) -> Settings:
    return Settings(data_dir=tmp_path / "data", model_repository=model_repo, mongodb_uri=mongo_uri)


@pytest.fixture
def pipeline(settings):
    pipe = Pipeline(settings)
    yield pipe
    pipe.close()
