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
    "photo_layout",
    "shop_formats",
    "photoless",
    "api",
    "batching",
    "gradio_path",
    "model_table",
]
NEEDS_PHOTOS = {"query_path", "ingest_speed", "memory", "triton_vs_inprocess", "search_features", "shop_formats",
                "photoless", "batching"}  # fmt: skip


def _triton_missing() -> str | None:
    from pipeline.processes.triton import TritonNotInstalled, find_install

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


def test_query_path_probe_leaves_stages_out_and_says_so(model_repo, tmp_path):
    """``--without`` measures the path with stages skipped: its table is marked as a probe, never met or missed, and
    with nothing cached no hit is timed."""
    shared("grocery_store", "queries")
    out = tmp_path / "probe.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.query_path", "--smoke", "--model-repo", str(model_repo), "--json", str(out),
         "--without", "metadata,cache-writes,events,hybrid"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=240,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert "PROBE, not the product: without metadata, cache-writes, events, hybrid" in proc.stdout
    result = json.loads(out.read_text())
    assert result["without"] == ["metadata", "cache-writes", "events", "hybrid"]
    assert [row[-1] for row in result["rows"]] == ["probe"] * 4  # two text and two photo misses, no hit rows
    bad = subprocess.run(
        [sys.executable, "-m", "bench.query_path", "--smoke", "--without", "mongo"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2 and "unknown stage 'mongo'; choose from metadata" in bad.stderr
