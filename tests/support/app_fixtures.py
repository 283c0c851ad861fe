"""The app as people run it: ``python -m app`` in its own process, on a free port, over the demo catalogue.

The demo catalogue is ingested once per session with the tiny test model (embedded defaults: Qdrant local mode and the
local MongoDB-protocol server under the data folder). Each started app gets its own copy of that data folder, because
Qdrant local mode allows one process per folder. Test modules load this file with ``pytest_plugins`` so that the
session-wide ``app_server`` is started once for all of them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from pipeline.ingestion.ingest import ingest
from pipeline.processes.ports import free_port
from pipeline.service import Pipeline
from pipeline.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_CATALOG = REPO_ROOT / "assets" / "demo_catalog" / "catalog.jsonl"
READY_LINE = "Serving the product matcher at"
START_TIMEOUT_S = 120.0
# Inherited variables that would change what the app under test talks to.
APP_ENV = (
    "GRADIO_SHARE",
    "GRADIO_AUTH",
    "GRADIO_SERVER_NAME",
    "GRADIO_SERVER_PORT",
    "GRADIO_CONCURRENCY",
    "TRITON_URL",
    "QDRANT_URL",
    "MONGODB_URI",
    "MATCH_THRESHOLD",
    "SIMILAR_THRESHOLD",
)


def demo_rows() -> list[dict]:
    return [json.loads(line) for line in DEMO_CATALOG.read_text().splitlines() if line.strip()]


@dataclass
class RunningApp:
    url: str
    process: subprocess.Popen
    log_path: Path
    started_in_s: float

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 30.0, group: bool = False) -> int:
        """SIGTERM (as a service manager would), then wait: the app closes Gradio, the pipeline and its MongoDB.

        ``group``: signal the whole process group (``make run`` does not pass signals on to the app it started).
        """
        if self.process.poll() is None:
            if group:
                os.killpg(self.process.pid, signal.SIGTERM)
            else:
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired as err:
                os.killpg(self.process.pid, signal.SIGKILL)  # the group this fixture started, nothing else
                self.process.wait(timeout=10)
                raise AssertionError(f"the app did not stop within {timeout_s:.0f} s:\n{self.log()[-3000:]}") from err
        return self.process.returncode


def start_app(data_template: Path, model_repo: Path, workdir: Path, **extra_env: str) -> RunningApp:
    """Copy the ingested data folder, start ``python -m app`` on it and wait until it serves."""
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "data"
    shutil.copytree(data_template, data, ignore=shutil.ignore_patterns("server.json"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in APP_ENV}
    env.update(
        DATA_DIR=str(data),
        MODEL_REPOSITORY=str(model_repo),
        GRADIO_SERVER_NAME="127.0.0.1",
        GRADIO_SERVER_PORT=str(port),
        GRADIO_ANALYTICS_ENABLED="False",
        GRADIO_TEMP_DIR=str(workdir / "gradio-tmp"),
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra_env)
    return launch([sys.executable, "-m", "app"], env, workdir / "app.log", f"http://127.0.0.1:{port}/")


def launch(command: list[str], env: dict, log_path: Path, url: str, timeout_s: float = START_TIMEOUT_S) -> RunningApp:
    """Start a command that ends up serving the app (``python -m app``, ``make run``, the container entry script) in
    its own process group, and wait for the app's ready line."""
    started = time.monotonic()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    app = RunningApp(url, process, log_path, 0.0)
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{' '.join(command)} exited with {process.returncode}:\n{app.log()[-3000:]}")
        if READY_LINE in app.log():
            # The line is logged right after launch(); the port answers by then.
            httpx.get(app.url, timeout=10)
            app.started_in_s = round(time.monotonic() - started, 1)
            return app
        time.sleep(0.2)
    app.stop(group=True)
    raise AssertionError(f"{' '.join(command)} did not serve within {timeout_s:.0f} s:\n{app.log()[-3000:]}")


@pytest.fixture(scope="session")
def app_data(tmp_path_factory, model_repo) -> Path:
    """A data folder with the demo catalogue ingested by the test model (stopped: ready to be copied)."""
    data = tmp_path_factory.mktemp("app-data") / "data"
    with Pipeline(Settings(data_dir=data, model_repository=model_repo)) as pipe:
        report = ingest(pipe, DEMO_CATALOG, progress=False)
        assert report.added == len(demo_rows()) and not report.bad, report.summary()
        pipe.events.flush()
    return data


@pytest.fixture(scope="session")
def app_server(app_data, model_repo, tmp_path_factory):
    """``python -m app`` with default settings (no login, no share link) but a 2 MB upload limit, shared by the API and
    browser tests."""
    app = start_app(app_data, model_repo, tmp_path_factory.mktemp("app"), MAX_IMAGE_MB="2")
    yield app
    code = app.stop()
    assert code == 0, f"python -m app exited with {code} on SIGTERM:\n{app.log()[-3000:]}"
