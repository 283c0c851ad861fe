"""The command line as README shows it, run as a person would: separate processes, real servers, exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from pipeline.storage.catalog_store import PRODUCT_DB, connect

from .conftest import DEMO_CATALOG, REPO_ROOT, shared


def run(*args: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def cli_env(tmp_path, model_repo):
    env = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URI", "QDRANT_URL", "TRITON_URL", "MODEL_SOURCE")}
    env.update(DATA_DIR=str(tmp_path / "data"), MODEL_REPOSITORY=str(model_repo), HF_HUB_OFFLINE="1")
    return env


def test_build_ingest_match_status(tmp_path, clip_folder, cli_env):
    """Embedded defaults: no MONGODB_URI, so each command starts (and stops) the local MongoDB-protocol server."""
    out = tmp_path / "repo"
    built = run("build-model", "--source", str(clip_folder), "--out", str(out), env=cli_env)
    assert "built tiny-clip (fp32)" in built.stdout and "exporting" in built.stderr
    again = run("build-model", "--source", str(clip_folder), "--out", str(out), "--if-missing", env=cli_env)
    assert "nothing to build" in again.stdout
    cli_env["MODEL_REPOSITORY"] = str(out)

    ingested = run("ingest", str(shared("seed_sample", "catalog.jsonl")), "--json", env=cli_env)
    report = json.loads(ingested.stdout)
    assert (report["added"], report["bad"], report["catalog_version"]) == (10, [], 1)
    skipped = run("ingest", str(DEMO_CATALOG), "--if-empty", env=cli_env)
    assert "already holds 10 products" in skipped.stdout

    row = json.loads(shared("seed_sample", "catalog.jsonl").read_text().splitlines()[4])
    matched = run("match", "--text", row["text"], "--top-k", "3", "--json", env=cli_env)
    result = json.loads(matched.stdout)
    assert result["matches"][0]["id"] == row["id"] and len(result["matches"]) == 3
    assert set(result["matches"][0]) >= {"id", "name", "brand", "category", "price", "score", "level", "image"}
    by_photo = run("match", "--image", str(shared("seed_sample", row["image_path"])), "--max-price", "100", env=cli_env)
    assert by_photo.stdout.splitlines()[0].split()[3] == row["id"]
    assert "Match" in by_photo.stdout.splitlines()[0]

    status = run("status", env=cli_env)
    assert "Qdrant Edge 0.9.0 at" in status.stdout and "searched exactly" in status.stdout
    assert "MiB on disk" in status.stdout and "MiB mapped in memory" in status.stdout
    assert "text queries one search of the stored w·text + (1−w)·photo vectors" in status.stdout
    assert "10 products, catalogue version 1" in status.stdout and "in-process onnxruntime: ok" in status.stdout
    data = json.loads(run("status", "--json", env=cli_env).stdout)
    assert data["model"]["name"] == "tiny-clip" and data["mongo"]["products"] == 10
    assert 0 < data["qdrant"]["fused_weight"] < 1
    assert not list((tmp_path / "data" / "mongo").glob("server.json")), "the local server was stopped on exit"


def test_delete_and_sync_commands(cli_env, tmp_path):
    rows = [json.loads(line) for line in shared("seed_sample", "catalog.jsonl").read_text().splitlines()]
    shutil.copytree(shared("seed_sample", "images"), tmp_path / "images")
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("\n".join(json.dumps(r) for r in rows))
    run("ingest", str(catalog), env=cli_env)
    deleted = run("delete", "1", "2", "nope", env=cli_env)
    assert "deleted 2 products: 1, 2" in deleted.stdout and "not in the catalogue: nope" in deleted.stderr
    assert run("delete", "nope", env=cli_env, check=False).returncode == 2
    catalog.write_text("\n".join(json.dumps(r) for r in rows[:6]))
    synced = json.loads(run("ingest", str(catalog), "--sync", "--json", env=cli_env).stdout)
    assert (synced["added"], synced["deleted"], synced["unchanged"]) == (2, 4, 4)
    status = json.loads(run("status", "--json", env=cli_env).stdout)
    assert status["qdrant"]["products"] == 6 and status["mongo"]["products"] == 6


def test_ingest_original_metadata_with_images_dir(cli_env, mongo_uri):
    cli_env["MONGODB_URI"] = mongo_uri
    original = shared("seed_sample", "metadata.json")
    refused = run("ingest", str(original), env=cli_env, check=False)
    assert refused.returncode == 2 and "pass --images DIR" in refused.stdout
    done = run("ingest", str(original), "--images", str(original.parent / "images"), env=cli_env)
    assert "10 added" in done.stdout
    client = connect(mongo_uri, 3000)
    assert client[PRODUCT_DB]["product_metadata"].count_documents({}) == 10
    client.close()


def test_errors_are_one_line_without_traceback(cli_env, tmp_path):
    cases = [
        (("match", "--text", "   "), "type a description"),
        (("match", "--image", str(tmp_path / "missing.jpg")), "does not exist"),
        (("ingest", str(tmp_path / "nope.jsonl")), "does not exist"),
        (("build-model", "--source", "openai/clip-vit-base-patch32", "--out", str(tmp_path / "m")), "--source offline"),
    ]
    for args, expected in cases:
        proc = run(*args, env=cli_env, check=False)
        assert proc.returncode == 2, (args, proc.stderr)
        assert expected in proc.stderr and "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    missing_model = dict(cli_env, MODEL_REPOSITORY=str(tmp_path / "empty"))
    proc = run("match", "--text", "jacket", env=missing_model, check=False)
    assert proc.returncode == 2 and "build-model" in proc.stderr
    status = run("status", env=missing_model, check=False)
    assert status.returncode == 2 and "MISSING" in status.stdout


def test_evaluate_command(cli_env, tmp_path):
    rows = [json.loads(line) for line in shared("seed_sample", "catalog.jsonl").read_text().splitlines()]
    queries = tmp_path / "queries.jsonl"
    queries.write_text("\n".join(json.dumps({"text": r["name"], "product_id": r["id"]}) for r in rows) + "\n")
    report_file = tmp_path / "report.json"
    args = ("evaluate", "--catalog", str(shared("seed_sample", "catalog.jsonl")), "--queries", str(queries))
    proc = run(*args, "--check", "--json", str(report_file), env=cli_env)
    assert "R@1" in proc.stdout and "check: the pipeline equals the numpy brute-force reference" in proc.stdout
    report = json.loads(report_file.read_text())
    assert report["overall"]["queries"] == 10 and report["check"]["ok"]
