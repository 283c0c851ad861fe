"""`make run`, as README.md shows it: build the model if missing, ingest the demo catalogue, serve; query once; stop."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from pipeline.mongo_server import free_port

from .conftest import REPO_ROOT


def test_make_run_serves_the_demo_catalogue(tmp_path):
    """No hub here and no MODEL_SOURCE: make run builds the packaged offline model, says so once, and serves."""
    from gradio_client import Client, handle_file

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URI", "QDRANT_URL", "TRITON_URL", "MODEL_SOURCE")}
    env.update(
        MODEL_REPOSITORY=str(tmp_path / "model_repository"),
        DATA_DIR=str(tmp_path / "data"),
        GRADIO_SERVER_PORT=str(port),
        GRADIO_SERVER_NAME="127.0.0.1",
    )
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            ["make", "run"], cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 300
        while "Serving the product matcher at" not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"make run did not serve:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        _, result = client.predict("a wrist watch with a leather strap", api_name="/match_text")
        assert result["matches"][0]["category"] == "Watches"
        _, result = client.predict(
            handle_file(str(REPO_ROOT / "assets/demo_catalog/images/demo-013.jpg")), api_name="/match_image"
        )
        assert result["matches"][0]["id"] == "demo-013" and result["matches"][0]["level"] == "match"
        text = log.read_text()
        assert text.count("building the packaged offline model instead") == 1
        assert "built offline MiniLM-L6" in text and "32 added" in text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
