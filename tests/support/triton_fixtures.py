"""Fixtures for the Triton tests: a tiny model repository that follows the real contract, and a real tritonserver on it.

Imported by tests/test_triton.py (and later by tests/conftest.py). The repository is built with onnx.helper so that it
takes milliseconds and needs no torch: text = masked mean of an embedding lookup -> linear -> L2 norm, visual =
flatten -> linear -> L2 norm; tensor names, dtypes and shapes are exactly those of ``pipeline.model_repo`` and the
lead's exporter.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline import model_repo as mr
from pipeline.model_build.triton_repo import write_clip_models
from pipeline.processes.triton import TritonNotInstalled, TritonServer, find_install

TINY = {"embedding_dim": 16, "text_max_length": 8, "image_size": 32, "vocab": 50, "hidden": 12}


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="pipeline-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def _text_graph(rng: np.random.Generator, length: int, dim: int) -> onnx.GraphProto:
    vocab, hidden = TINY["vocab"], TINY["hidden"]
    inits = [
        numpy_helper.from_array(rng.standard_normal((vocab, hidden)).astype(np.float32), "tok_emb"),
        numpy_helper.from_array(rng.standard_normal((hidden, dim)).astype(np.float32), "proj"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
    ]
    nodes = [
        helper.make_node("Gather", ["tok_emb", "input_ids"], ["tok"]),  # [B, L, H]
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),  # [B, L]
        helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),  # [B, L, 1]
        helper.make_node("Mul", ["tok", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),  # [B, H]
        helper.make_node("ReduceSum", ["mask3", "axis1"], ["count"], keepdims=0),  # [B, 1]
        helper.make_node("Div", ["summed", "count"], ["mean"]),
        helper.make_node("MatMul", ["mean", "proj"], ["projected"]),
        helper.make_node("LpNormalization", ["projected"], [mr.OUTPUT], axis=-1, p=2),
    ]
    inputs = [helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", length]) for name in mr.TEXT_INPUTS]
    output = helper.make_tensor_value_info(mr.OUTPUT, TensorProto.FLOAT, ["batch", dim])
    return helper.make_graph(nodes, "tiny_clip_text", inputs, [output], inits)


def _visual_graph(rng: np.random.Generator, size: int, dim: int) -> onnx.GraphProto:
    inits = [numpy_helper.from_array(rng.standard_normal((3 * size * size, dim)).astype(np.float32) / size, "proj")]
    nodes = [
        helper.make_node("Flatten", [mr.VISUAL_INPUT], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "proj"], ["projected"]),
        helper.make_node("LpNormalization", ["projected"], [mr.OUTPUT], axis=-1, p=2),
    ]
    pixels = helper.make_tensor_value_info(mr.VISUAL_INPUT, TensorProto.FLOAT, ["batch", 3, size, size])
    output = helper.make_tensor_value_info(mr.OUTPUT, TensorProto.FLOAT, ["batch", dim])
    return helper.make_graph(nodes, "tiny_clip_visual", [pixels], [output], inits)


def build_tiny_repo(repo: Path, seed: int = 0, max_batch_size: int = 16, backend: str = "python") -> mr.ModelCard:
    """A complete model repository (ONNX files, configs, model.py, model card) for a tiny random CLIP-like model."""
    repo = Path(repo)
    rng = np.random.default_rng(seed)
    dim, length, size = TINY["embedding_dim"], TINY["text_max_length"], TINY["image_size"]
    _save(_text_graph(rng, length, dim), mr.onnx_path(repo, mr.TEXT_MODEL))
    _save(_visual_graph(rng, size, dim), mr.onnx_path(repo, mr.VISUAL_MODEL))
    card = mr.ModelCard(
        name="tiny-test-clip",
        kind="clip",
        source="tests/triton_fixtures.py",
        revision=str(seed),
        precision="fp32",
        embedding_dim=dim,
        text_max_length=length,
        image_size=size,
        sha256={m: mr.sha256_file(mr.onnx_path(repo, m)) for m in (mr.TEXT_MODEL, mr.VISUAL_MODEL)},
    )
    card.save(repo)
    write_clip_models(repo, card, backend=backend, max_batch_size=max_batch_size)
    return card


def text_batch(n: int, seed: int = 1) -> dict[str, np.ndarray]:
    """Token ids padded to L with a mask, like the tokenizer produces (at least one real token per row)."""
    rng = np.random.default_rng(seed)
    length = TINY["text_max_length"]
    ids = rng.integers(1, TINY["vocab"], size=(n, length), dtype=np.int64)
    lengths = rng.integers(1, length + 1, size=n)
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)
    return {"input_ids": ids * mask, "attention_mask": mask}


def image_batch(n: int, seed: int = 2) -> dict[str, np.ndarray]:
    size = TINY["image_size"]
    rng = np.random.default_rng(seed)
    return {mr.VISUAL_INPUT: rng.standard_normal((n, 3, size, size)).astype(np.float32)}


def triton_available() -> tuple[bool, str]:
    """Whether the Triton venv exists; the reason is shown when the Triton tests skip."""
    try:
        find_install()
    except TritonNotInstalled as exc:
        return False, str(exc)
    return True, ""


def require_triton() -> None:
    """Skip when the Triton venv is absent, unless REQUIRE_TRITON=1 (CI, where the Makefile creates it): then fail."""
    ok, reason = triton_available()
    if not ok:
        if os.environ.get("REQUIRE_TRITON", "").strip() in {"1", "true", "yes"}:
            pytest.fail(f"REQUIRE_TRITON is set but the Triton venv is absent: {reason}")
        pytest.skip(f"Triton venv absent: {reason}")


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, mr.ModelCard]:
    repo = tmp_path_factory.mktemp("tiny_model_repository")
    return repo, build_tiny_repo(repo)


@pytest.fixture(scope="session")
def triton_server(
    tiny_repo: tuple[Path, mr.ModelCard], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    """A real tritonserver on free loopback ports, shared by the session's tests (start costs a few seconds)."""
    require_triton()
    repo, _card = tiny_repo
    log = tmp_path_factory.mktemp("triton_log") / "tritonserver.log"
    with TritonServer(repo, log_path=log, ready_timeout=90) as server:
        yield server
