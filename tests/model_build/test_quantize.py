"""Every precision (fp32, fp16, int8, int8-static) builds from the small CLIP, serves in onnxruntime and in the Triton
Python-backend model, and stays within the build's cosine floor of FP32; static INT8 records its calibration."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from pipeline import model_repo as mr
from pipeline.cli import main, parser
from pipeline.errors import CatalogError, PipelineError
from pipeline.inference.ort_backend import OrtBackend
from pipeline.inputs import load_image
from pipeline.model_build.build_model import build_model
from pipeline.model_build.quantize import MIN_COSINE, PRECISIONS, static_op_types
from pipeline.query.encoder import Encoder
from pipeline.query.preprocess import Preprocessor
from tests.ops.test_triton import _load_python_model
from tests.support.triton_fixtures import require_triton

from ..conftest import DEMO_CATALOG, REPO_ROOT

CALIBRATION_ROWS = 20
TEXTS = ["men's black puffer jacket", "a red ceramic coffee mug", "wireless over-ear headphones", "green apple"]


@pytest.fixture(scope="module")
def repos(tmp_path_factory, clip_folder, model_repo) -> dict:
    """One repository per precision (fp32 is the session's), built as ``build-model --precision`` builds them."""
    out = {"fp32": model_repo}
    for precision in PRECISIONS[1:]:
        repo = tmp_path_factory.mktemp(f"repo-{precision}") / "model_repository"
        calibration = DEMO_CATALOG if precision == "int8-static" else None
        build_model(str(clip_folder), repo, precision, calibration=calibration, calibration_rows=CALIBRATION_ROWS)
        out[precision] = repo
    return out


def _encoder(repo) -> Encoder:
    card = mr.ModelCard.load(repo)
    return Encoder(card, Preprocessor(repo, card), OrtBackend(repo))


def _photos(n: int = 6) -> list:
    return [load_image(path) for path in sorted((DEMO_CATALOG.parent / "images").iterdir())[:n]]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_the_cli_offers_every_precision_the_build_makes():
    build = next(a for a in parser()._subparsers._group_actions[0].choices["build-model"]._actions
                 if a.dest == "precision")  # fmt: skip
    assert tuple(build.choices) == PRECISIONS and set(MIN_COSINE) == set(PRECISIONS) - {"fp32"}


@pytest.mark.parametrize("precision", PRECISIONS)
def test_each_precision_serves_in_onnxruntime_close_to_fp32(repos, precision):
    card = mr.ModelCard.load(repos[precision])
    assert card.precision == precision
    identities = {mr.ModelCard.load(r).identity for r in repos.values()}
    assert len(identities) == len(PRECISIONS), "every precision is a model identity of its own"
    reference, enc = _encoder(repos["fp32"]), _encoder(repos[precision])
    photos = _photos()
    for got, want in ((enc.encode_texts(TEXTS), reference.encode_texts(TEXTS)),
                      (enc.encode_images(photos), reference.encode_images(photos))):  # fmt: skip
        assert got.dtype == np.float32 and got.shape == (len(want), card.embedding_dim)
        assert _cosines(got, want).min() >= MIN_COSINE.get(precision, 1 - 1e-6)
    if precision != "fp32":
        assert card.extra["min_cosine_to_fp32"][mr.VISUAL_MODEL] >= MIN_COSINE[precision]
        assert mr.onnx_path(repos[precision], mr.VISUAL_MODEL).stat().st_size < (
            mr.onnx_path(repos["fp32"], mr.VISUAL_MODEL).stat().st_size
        )


@pytest.mark.parametrize("precision", PRECISIONS)
def test_each_precision_runs_in_the_triton_python_model(repos, precision, monkeypatch):
    """The model.py Triton's Python backend runs, on the very files the build wrote, gives what onnxruntime gives."""
    repo = repos[precision]
    enc = _encoder(repo)
    pixels = enc.preprocessor.pixels(_photos(3))
    tokens = enc.preprocessor.tokenize(TEXTS)
    for model, feed in ((mr.VISUAL_MODEL, {mr.VISUAL_INPUT: pixels}), (mr.TEXT_MODEL, tokens)):
        served = _load_python_model(repo, model, monkeypatch)
        [response] = served.execute([feed])
        got = response.outputs[mr.OUTPUT]
        assert got.dtype == np.float32 and got.shape == (len(next(iter(feed.values()))), enc.card.embedding_dim)
        np.testing.assert_allclose(got, enc.backend.run(model, feed), atol=1e-5)


def test_static_int8_records_its_calibration_and_recipe(repos):
    card = mr.ModelCard.load(repos["int8-static"])
    source = card.extra["calibration"]
    assert source["file"] == DEMO_CATALOG.name and source["rows"] == CALIBRATION_ROWS
    assert source["images"] == source["texts"] == CALIBRATION_ROWS and source["sha256"] == mr.sha256_file(DEMO_CATALOG)
    assert card.extra["quantization"]["format"] == "QDQ" and card.extra["quantization"]["per_channel"] is True
    import onnx

    graph = onnx.load(str(mr.onnx_path(repos["int8-static"], mr.VISUAL_MODEL))).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in graph.node}
    # The CLIP towers are transformers: only their matrix products are quantised (an attention mask's range would
    # swamp an 8-bit scale).
    assert static_op_types(mr.onnx_path(repos["fp32"], mr.TEXT_MODEL)) == ["MatMul", "Gemm", "Conv"]


def test_static_int8_serves_through_a_real_tritonserver(repos):
    """The QDQ graph in the Triton venv's onnxruntime, behind a real tritonserver, equals in-process onnxruntime."""
    require_triton()
    from pipeline.inference.triton_backend import TritonBackend
    from pipeline.processes.triton import TritonServer

    repo = repos["int8-static"]
    local = _encoder(repo)
    server = TritonServer(repo).start()
    try:
        backend = TritonBackend(server.url, timeout_s=30)
        backend.check(local.card)
        served = Encoder(local.card, local.preprocessor, backend)
        np.testing.assert_allclose(served.encode_texts(TEXTS), local.encode_texts(TEXTS), atol=1e-5)
        photos = _photos(2)
        np.testing.assert_allclose(served.encode_images(photos), local.encode_images(photos), atol=1e-5)
        backend.close()
    finally:
        server.stop()


def test_static_int8_from_the_command_line(tmp_path, clip_folder, capsys):
    """The README's command: build-model --precision int8-static --calibration CATALOG."""
    out = tmp_path / "repo"
    args = ["build-model", "--source", str(clip_folder), "--out", str(out), "--precision", "int8-static"]
    assert main([*args, "--calibration", str(DEMO_CATALOG), "--calibration-rows", "8"]) == 0
    card = mr.ModelCard.load(out)
    assert card.precision == "int8-static" and card.extra["calibration"]["rows"] == 8
    assert f"built {card.label}" in capsys.readouterr().out


def test_static_int8_without_calibration_is_one_sentence_and_exit_2(tmp_path, clip_folder):
    args = ["build-model", "--source", str(clip_folder), "--out", str(tmp_path / "m"), "--precision", "int8-static"]
    proc = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: --precision int8-static needs calibration data: add --calibration CATALOG")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "m").exists()


def test_calibration_mistakes_are_refused_before_the_export(tmp_path, clip_folder):
    with pytest.raises(CatalogError, match="does not exist"):
        build_model(str(clip_folder), tmp_path / "m", "int8-static", calibration=tmp_path / "nope.jsonl")
    with pytest.raises(PipelineError, match="only used by --precision int8-static"):
        build_model(str(clip_folder), tmp_path / "m", "int8", calibration=DEMO_CATALOG)
    assert not (tmp_path / "m").exists()
