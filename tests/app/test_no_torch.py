"""The serving processes load neither torch, torchvision nor transformers (issue 11), while answering real queries.

torch is installed in this venv (``build-model`` needs it), and transformers imports it wherever it can, so the check
means something: before issue 11 the app process imported both (tokenizer and image processor came from transformers).

How a process is observed: it runs with ``PYTHONPROFILEIMPORTTIME=1`` (``python -X importtime``), so CPython itself
writes a line to stderr for every module the process imports, at the moment it imports it. Nothing in the process is
wrapped or changed, start-up imports and lazy imports on the query path (after the first request) are both seen, and the
app is started exactly as the other app tests start it (``start_app``: its stderr is its log). The lines are the
process's own: its child, the local MongoDB-protocol server, writes to a log of its own. Modules the serving path does
need (onnxruntime, tokenizers, PIL; gradio in the app) must appear in the same lines, which shows the observation works.
The app is still running after it answered, so its ``/proc/PID/maps`` is read too: a native torch or torchvision
library (libtorch*, libc10*, libtorchvision) shows there however it got loaded, with or without a Python import.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

pytest.register_assert_rewrite("tests.support.app_fixtures")  # before the import below: it is also loaded as a plugin

from ..support.app_fixtures import DEMO_CATALOG, REPO_ROOT, demo_rows, start_app  # noqa: E402

pytest_plugins = ("tests.support.app_fixtures",)

FORBIDDEN = ("torch", "torchvision", "transformers")
NATIVE = ("libtorch", "libc10", "libtorchvision", "torchvision")
NEEDED = {"onnxruntime", "tokenizers", "PIL"}
IMPORT_LINE = "import time:"


def imported_modules(log: str) -> set[str]:
    """Module names from ``-X importtime`` lines ("import time: self | cumulative | name", nested names indented)."""
    names = set()
    for line in log.splitlines():
        if line.startswith(IMPORT_LINE) and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":  # the header
                names.add(name)
    return names


def forbidden(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in FORBIDDEN)


def native_libraries(pid: int) -> set[str]:
    """File names of the shared libraries mapped into the process."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {Path(line.split()[-1]).name for line in maps.splitlines() if ".so" in line and "/" in line}


def test_the_app_answers_without_torch_or_transformers(app_data, model_repo, tmp_path):
    row = demo_rows()[0]
    app = start_app(app_data, model_repo, tmp_path / "app", PYTHONPROFILEIMPORTTIME="1")
    try:
        client = Client(app.url, verbose=False, download_files=str(tmp_path / "downloads"))
        _, by_text = client.predict(row["text"], top_k=3, api_name="/match_text")
        photo = DEMO_CATALOG.parent / row["image_path"]
        _, by_photo = client.predict(handle_file(str(photo)), top_k=3, api_name="/match_image")
        assert by_text["matches"][0]["id"] == row["id"] and not by_text["cache_hit"]
        assert by_photo["matches"][0]["id"] == row["id"]
        libraries = native_libraries(app.process.pid)
        modules = imported_modules(app.log())
    finally:
        code = app.stop()
    assert code == 0, app.log()[-3000:]
    assert NEEDED | {"gradio"} <= modules, "the import log does not show the app's own imports"
    assert any(name.startswith("onnxruntime") for name in libraries), sorted(libraries)
    assert forbidden(modules) == [], f"the app process imported {forbidden(modules)[:10]}"
    assert not [name for name in libraries if name.startswith(NATIVE)], sorted(libraries)


@pytest.mark.parametrize("query", ["text", "image"])
def test_the_match_command_answers_without_torch_or_transformers(query, app_data, model_repo, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(app_data, data, ignore=shutil.ignore_patterns("server.json"))
    env = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URI", "QDRANT_URL", "TRITON_URL", "MODEL_SOURCE")}
    env.update(DATA_DIR=str(data), MODEL_REPOSITORY=str(model_repo), HF_HUB_OFFLINE="1", PYTHONPROFILEIMPORTTIME="1")
    row = demo_rows()[1]
    value = row["text"] if query == "text" else str(DEMO_CATALOG.parent / row["image_path"])
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "match", f"--{query}", value, "--top-k", "3", "--json"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["matches"][0]["id"] == row["id"]
    modules = imported_modules(proc.stderr)
    assert modules >= NEEDED, "the import log does not show the command's own imports"
    assert forbidden(modules) == [], f"python -m pipeline match --{query} imported {forbidden(modules)[:10]}"
