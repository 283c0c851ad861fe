"""`make run`, as README.md shows it: build the model if missing, ingest the demo catalogue, serve; query; stop."""

from __future__ import annotations

import os

from pipeline.processes.ports import free_port
from tests.support.app_fixtures import launch

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
    app = launch(["make", "run"], env, tmp_path / "run.log", f"http://127.0.0.1:{port}/", timeout_s=300)
    try:
        client = Client(app.url, verbose=False)
        _, result = client.predict("a wrist watch with a leather strap", api_name="/match_text")
        assert result["matches"][0]["category"] == "Watches"
        photo = handle_file(str(REPO_ROOT / "assets/demo_catalog/images/demo-013.jpg"))
        _, result = client.predict(photo, api_name="/match_image")
        assert result["matches"][0]["id"] == "demo-013" and result["matches"][0]["level"] == "match"
        text = app.log()
        assert text.count("building the packaged offline model instead") == 1
        assert "built offline MiniLM-L6" in text and "32 added" in text
    finally:
        app.stop(timeout_s=60, group=True)
