"""Every benchmark in bench/ runs end to end in its tiny mode and prints its table (no timing is asserted).

``--smoke`` uses the session's tiny CLIP repository (``--model-repo``), a few hundred vectors at most and two rounds;
each benchmark runs as a subprocess, the way a person runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, shared

BENCHMARKS = [
    "query_path",
    "vector_scale",
    "ingest_speed",
    "memory",
    "triton_vs_inprocess",
    "search_features",
    "load",
    "catalogue_page",
    "catalogue_delete",
]
NEEDS_PHOTOS = {"query_path", "ingest_speed", "memory", "triton_vs_inprocess", "search_features"}


def _triton_missing() -> str | None:
    from pipeline.ops.triton_server import TritonNotInstalled, find_install

    try:
        find_install()
    except TritonNotInstalled as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_runs_and_prints_its_table(name, model_repo, tmp_path):
    if name in NEEDS_PHOTOS:
        shared("fashion", "catalog.jsonl")
        shared("grocery_store", "queries")
    if name == "triton_vs_inprocess" and (why := _triton_missing()):
        pytest.skip(f"no tritonserver here: {why}")
    out = tmp_path / f"{name}.json"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", "--smoke", "--model-repo", str(model_repo), "--json", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert proc.returncode == 0, f"bench.{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert "machine: " in proc.stdout
    assert "onnxruntime" in proc.stdout
    table = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    assert len(table) >= 3, proc.stdout  # header, rule and at least one row
    result = json.loads(out.read_text())
    assert result["benchmark"] == name
    assert result["rows"] and all(len(row) == len(result["headers"]) for row in result["rows"])
    assert result["machine"]["cores"] >= 1


def test_benchmarks_run_with_the_apps_process_defaults():
    """``import bench`` sets them before numpy loads, so a benchmark's BLAS runs as the app's does (one thread)."""
    code = "import bench, numpy, os; print(os.environ['OPENBLAS_NUM_THREADS'])"
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, env=env)
    assert proc.stdout.strip() == "1", proc.stderr
