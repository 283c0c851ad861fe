"""Triton killed for real (``kill -9``) under a running pipeline: during a query and during an ingest. The pipeline
stays up and says what is wrong in one sentence; Triton restarted on the same port, the next query and the same
ingest work without a new pipeline; Triton restarted on another model's repository is refused with the model-mismatch
sentence before a single vector of the other space is used."""

from __future__ import annotations

import json
import shutil
import signal
import threading

import pytest

from pipeline.errors import BackendUnavailable, ModelMismatch
from pipeline.ingestion.ingest import ingest
from pipeline.model_build.build_model import build_model
from pipeline.processes.triton import TritonServer
from pipeline.service import Pipeline
from tests.support.random_clip import save_random_clip
from tests.support.triton_fixtures import require_triton

from ..conftest import shared
from ..processes.test_mongo_server import wait_until


def _kill9(server: TritonServer) -> None:
    """SIGKILL the server process (as the kernel's OOM killer would), then let the fixture clear what is left."""
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(timeout=10)
    server.stop()


def _restart(server: TritonServer, repo) -> TritonServer:
    return TritonServer(
        repo, http_port=server.http_port, grpc_port=server.grpc_port, metrics_port=server.metrics_port
    ).start()


def test_triton_killed_during_queries_and_an_ingest_then_restarted(settings, model_repo, tmp_path):
    require_triton()
    other_repo = tmp_path / "other-model"
    build_model(source=str(save_random_clip(tmp_path / "other-clip", size="tiny", seed=7)), out=other_repo)
    server = TritonServer(model_repo).start()
    try:
        with Pipeline(settings.with_(triton_url=server.url, triton_timeout_s=5)) as pipe:
            ingest(pipe, shared("seed_sample", "catalog.jsonl"), progress=False)
            assert pipe.matcher.match_text("beige noise cancelling headphones").matches

            _kill9(server)
            with pytest.raises(BackendUnavailable, match="does not answer"):
                pipe.matcher.match_text("navy track jacket with gold stripes")  # not cached: needs Triton

            server = _restart(server, model_repo)
            assert pipe.matcher.match_text("navy track jacket with gold stripes").matches, "back without a restart"

            # Killed halfway through an ingest of the fashion catalogue: a clear error, then the same ingest again.
            failed: list[BaseException] = []

            def run() -> None:
                try:
                    ingest(pipe, shared("fashion", "catalog.jsonl"), progress=False)
                except BaseException as err:  # the test looks at it
                    failed.append(err)

            worker = threading.Thread(target=run)
            worker.start()
            wait_until(lambda: pipe.index.count() >= 100, 300, "the ingest is under way", every_s=0.05)
            _kill9(server)
            worker.join(timeout=300)
            assert failed and isinstance(failed[0], BackendUnavailable) and "does not answer" in str(failed[0])
            assert pipe.index.count() < 1010
            server = _restart(server, model_repo)
            report = ingest(pipe, shared("fashion", "catalog.jsonl"), progress=False)
            assert not report.bad and pipe.index.count() == pipe.store.count() == 1010

            # Restarted on another model: refused, never a silent mix of vector spaces.
            _kill9(server)
            server = _restart(server, other_repo)
            with pytest.raises(ModelMismatch, match="other weights"):
                pipe.matcher.match_text("a red cap")
            changed = tmp_path / "changed"  # products to embed (an unchanged catalogue needs no model at all)
            shutil.copytree(shared("seed_sample", "images"), changed / "images")
            rows = [json.loads(x) for x in shared("seed_sample", "catalog.jsonl").read_text().splitlines() if x]
            new = "".join(json.dumps({**r, "id": "new-" + r["id"]}) + "\n" for r in rows)
            (changed / "catalog.jsonl").write_text(new)
            with pytest.raises(ModelMismatch, match="other weights"):
                ingest(pipe, changed / "catalog.jsonl", progress=False)
            assert pipe.index.count() == pipe.store.count() == 1010, "nothing of the refused ingest is stored"
    finally:
        server.stop()
