"""The whole pipeline with ``TRITON_URL`` set: the build-model repository served by a real tritonserver."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.ingestion.ingest import ingest
from pipeline.ops.status import collect
from pipeline.processes.triton import TritonServer
from pipeline.service import Pipeline
from tests.support.triton_fixtures import require_triton

from ..conftest import shared


@pytest.fixture(scope="module")
def clip_triton(model_repo):
    """tritonserver on the CLIP repository that build-model wrote (the Python backend configs it generated)."""
    require_triton()
    server = TritonServer(model_repo).start()
    yield server
    server.stop()


def test_ingest_and_match_through_triton(settings, clip_triton):
    triton_settings = settings.with_(triton_url=clip_triton.url)
    with Pipeline(triton_settings) as pipe:
        assert pipe.encoder.backend.description.startswith("Triton at http://127.0.0.1:")
        report = ingest(pipe, shared("seed_sample", "catalog.jsonl"), progress=False)
        assert report.added == 10
        rows = [json.loads(line) for line in shared("seed_sample", "catalog.jsonl").read_text().splitlines()]
        by_text = pipe.matcher.match_text(rows[3]["text"], top_k=3)
        by_photo = pipe.matcher.match_image(shared("seed_sample", rows[6]["image_path"]), top_k=3)
        assert by_text.matches[0].id == rows[3]["id"] and by_photo.matches[0].id == rows[6]["id"]
        triton_vectors = dict(zip(*pipe.index.all_vectors("image"), strict=True))
        assert collect(pipe)["inference"]["ok"]
    # The same catalogue embedded in-process gives the same vectors.
    with Pipeline(settings.with_(data_dir=settings.data_dir / "local")) as local:
        ingest(local, shared("seed_sample", "catalog.jsonl"), progress=False)
        local_vectors = dict(zip(*local.index.all_vectors("image"), strict=True))
    assert max(float(np.max(np.abs(triton_vectors[k] - local_vectors[k]))) for k in local_vectors) <= 1e-5


def test_fallback_to_in_process_when_triton_is_down(settings, model_repo):
    require_triton()
    server = TritonServer(model_repo).start()
    fallback = settings.with_(triton_url=server.url, triton_fallback="local", triton_timeout_s=5)
    with Pipeline(fallback) as pipe:
        ingest(pipe, shared("seed_sample", "catalog.jsonl"), progress=False)
        server.stop()
        result = pipe.matcher.match_text("beige noise cancelling headphones")
        assert result.matches
        assert "fallback" in pipe.encoder.backend.description
