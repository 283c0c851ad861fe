"""Secrets never reach the logs, the events or the status: a MongoDB URI with a password (to a server that is down,
so every error path runs), a Qdrant API key, the admin token. The output of a real ``status`` command and of a
pipeline answering through the failure is searched for them."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from pipeline.ingestion.ingest import ingest
from pipeline.processes.ports import free_port
from pipeline.service import Pipeline
from pipeline.settings import Settings

from .conftest import REPO_ROOT, shared

PASSWORD = "s3cret-Passw0rd"
API_KEY = "qdrant-api-key-never-printed"
TOKEN = "admin-token-never-printed"


def test_no_password_key_or_token_in_logs_events_or_status(tmp_path, model_repo, caplog):
    dead = f"mongodb://shop-user:{PASSWORD}@127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=300"
    # The catalogue first (local server), then the same folder with a MongoDB that is down.
    with Pipeline(Settings(data_dir=tmp_path / "data", model_repository=model_repo)) as pipe:
        ingest(pipe, shared("seed_sample", "catalog.jsonl"), progress=False)
    caplog.set_level(logging.DEBUG)
    settings = Settings(data_dir=tmp_path / "data", model_repository=model_repo, mongodb_uri=dead, mongo_timeout_ms=300)
    with Pipeline(settings) as pipe:
        result = pipe.matcher.match_text("beige noise cancelling headphones")
        assert result.matches and result.warnings, "answered from the index, with a warning"
        pipe.events.write("probe", note="an event while MongoDB is down")
        pipe.events.flush()
    logged = "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records)
    assert "does not answer" in logged or "unavailable" in logged.lower()
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "MODEL_REPOSITORY": str(model_repo),
           "MONGODB_URI": dead, "QDRANT_API_KEY": API_KEY, "ADMIN_TOKEN": TOKEN, "MONGO_TIMEOUT_MS": "300"}  # fmt: skip
    status = subprocess.run(
        [sys.executable, "-m", "pipeline", "-v", "status"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert status.returncode == 2 and "MongoDB" in status.stdout
    for text in (logged, status.stdout, status.stderr, "\n".join(result.warnings)):
        for secret in (PASSWORD, API_KEY, TOKEN):
            assert secret not in text, f"{secret!r} was printed: {text[:2000]}"


def test_status_shows_a_uri_without_its_credentials():
    from pipeline.ops.status import _redact

    assert _redact(f"mongodb://shop-user:{PASSWORD}@db.example:27017/x") == "mongodb://***@db.example:27017/x"
