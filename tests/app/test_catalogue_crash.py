"""``kill -9`` of the app while a Catalogue-tab import runs (through ``/ingest``, as the page does it): on restart the
two stores hold the same products, and the same import again completes the catalogue."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import threading
import zipfile
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from pipeline.processes.mongo_guard import read_state
from pipeline.service import Pipeline
from pipeline.settings import Settings

from ..conftest import shared
from ..ingestion.test_crash_recovery import stored_products
from ..processes.test_mongo_server import wait_until

pytest.register_assert_rewrite("tests.support.app_fixtures")  # before the import below: it is also loaded as a plugin

from ..support.app_fixtures import APP_ENV, REPO_ROOT, demo_rows, launch, start_app  # noqa: E402

pytest_plugins = ("tests.support.app_fixtures",)
TOKEN = "kill -9 test admin token"
ROWS = 400


def _fashion_upload(folder: Path) -> tuple[Path, Path]:
    rows = [json.loads(x) for x in shared("fashion", "catalog.jsonl").read_text().splitlines()[:ROWS]]
    folder.mkdir(parents=True)
    catalogue = folder / "fashion.jsonl"
    catalogue.write_text("".join(json.dumps(r) + "\n" for r in rows))
    archive = folder / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for r in rows:
            zf.write(shared("fashion", r["image_path"]), r["image_path"])
    return catalogue, archive


def _import(client: Client, catalogue: Path, archive: Path) -> dict:
    files = handle_file(str(catalogue)), handle_file(str(archive))
    return client.predict(*files, "update", TOKEN, [], api_name="/ingest")


def _restart(data: Path, model_repo: Path, work: Path):
    from pipeline.processes.ports import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in APP_ENV}
    env.update(
        DATA_DIR=str(data),
        MODEL_REPOSITORY=str(model_repo),
        ADMIN_TOKEN=TOKEN,
        GRADIO_SERVER_NAME="127.0.0.1",
        GRADIO_SERVER_PORT=str(port),
        GRADIO_TEMP_DIR=str(work / "gradio-tmp"),
        PYTHONUNBUFFERED="1",
    )
    return launch([sys.executable, "-m", "app"], env, work / "app-again.log", f"http://127.0.0.1:{port}/")


def test_kill_9_of_the_app_during_an_import_then_the_same_import_completes(app_data, model_repo, tmp_path):
    catalogue, archive = _fashion_upload(tmp_path / "upload")
    work = tmp_path / "app"
    app = start_app(app_data, model_repo, work, ADMIN_TOKEN=TOKEN, INGEST_BATCH_SIZE="16")
    data = work / "data"
    demo = len(demo_rows())
    client = Client(app.url, verbose=False, download_files=False)

    def cut_short() -> None:
        with contextlib.suppress(Exception):  # its connection dies with the app
            _import(client, catalogue, archive)

    thread = threading.Thread(target=cut_short, daemon=True)
    try:
        uri = read_state(data / "mongo")["uri"]
        thread.start()
        wait_until(lambda: stored_products(uri) >= demo + 50, 300, "the import is under way", every_s=0.1)
        os.killpg(app.process.pid, signal.SIGKILL)  # the app and anything it started in its group
        app.process.wait(timeout=10)
    finally:
        if app.process.poll() is None:
            os.killpg(app.process.pid, signal.SIGKILL)
    assert demo + 50 <= stored_products(uri) < demo + ROWS, "killed halfway"

    again = _restart(data, model_repo, work)
    try:
        client = Client(again.url, verbose=False, download_files=False)
        report = _import(client, catalogue, archive)
        assert not report["bad"] and report["added"] + report["unchanged"] + report["updated"] == ROWS, report
        assert report["added"] > 0, "the import completes what the killed one had not stored"
        assert client.predict(api_name="/health")["products"] == demo + ROWS
    finally:
        assert again.stop() == 0, again.log()[-3000:]
    with Pipeline(Settings(data_dir=data, model_repository=model_repo)) as pipe:
        index_ids = pipe.index.all_vectors("image")[0]
        mongo_ids = [d["id"] for d in pipe.store.collection.find({}, {"id": 1})]
        assert len(index_ids) == len(set(index_ids)) == demo + ROWS
        assert len(mongo_ids) == len(set(mongo_ids)) == demo + ROWS and set(mongo_ids) == set(index_ids)
    shutil.rmtree(work / "gradio-tmp", ignore_errors=True)
    assert REPO_ROOT.is_dir()
