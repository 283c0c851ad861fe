"""build-model: ONNX parity with torch, the repository layout, the model card, precisions and clear failures."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

from pipeline import model_repo as mr
from pipeline.errors import ModelNotFound
from pipeline.inference.ort_backend import OrtBackend
from pipeline.model_build.build_model import ExportMismatch, build_model, check_parity
from pipeline.query.encoder import Encoder
from pipeline.query.preprocess import Preprocessor


def _encoder(repo) -> Encoder:
    card = mr.ModelCard.load(repo)
    return Encoder(card, Preprocessor(repo, card), OrtBackend(repo))


def _normalised(features) -> np.ndarray:
    features = getattr(features, "pooler_output", features)
    return (features / features.norm(dim=-1, keepdim=True)).numpy()


def test_repository_layout_and_card(model_repo, clip_folder):
    card = mr.ModelCard.load(model_repo)
    assert card.kind == "clip" and card.precision == "fp32"
    assert card.source == str(clip_folder) and card.revision.startswith("local-")
    assert card.embedding_dim == 32 and card.text_max_length == 77 and card.image_size == 64
    for model in (mr.TEXT_MODEL, mr.VISUAL_MODEL):
        assert (model_repo / model / "config.pbtxt").is_file()
        assert (model_repo / model / "1" / "model.py").is_file()
        assert card.sha256[model] == mr.sha256_file(mr.onnx_path(model_repo, model))
    assert (mr.tokenizer_dir(model_repo) / "tokenizer.json").is_file()
    assert (mr.processor_dir(model_repo) / "preprocessor_config.json").is_file()
    config = (model_repo / mr.TEXT_MODEL / "config.pbtxt").read_text()
    assert 'backend: "python"' in config and "dynamic_batching" in config and "max_batch_size: 64" in config
    assert card.text_dynamic_length and config.count("dims: [ -1 ]") == 2, "token inputs take any sequence length"
    assert not list(model_repo.parent.glob(".*staging*")), "the staging folder must be removed"


def test_encoder_reproduces_torch(model_repo, clip_folder):
    """The whole client path (tokenizer, processor, ONNX in onnxruntime) equals transformers' CLIP features."""
    encoder = _encoder(model_repo)
    model = CLIPModel.from_pretrained(str(clip_folder)).eval()
    tok = AutoTokenizer.from_pretrained(str(clip_folder))
    proc = CLIPImageProcessor.from_pretrained(str(clip_folder))
    texts = ["men's black puffer jacket", "red mug", "a very long description " * 40]
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)) for _ in range(3)]
    with torch.no_grad():
        t = tok(texts, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
        ref_t = _normalised(model.get_text_features(**t))
        px = torch.from_numpy(proc(images=images, return_tensors="np")["pixel_values"])
        ref_i = _normalised(model.get_image_features(pixel_values=px))
    np.testing.assert_allclose(encoder.encode_texts(texts), ref_t, atol=1e-5)
    np.testing.assert_allclose(encoder.encode_images(images), ref_i, atol=1e-5)
    assert np.allclose(np.linalg.norm(encoder.encode_texts(texts), axis=1), 1, atol=1e-5)


def test_text_batches_are_padded_to_buckets(model_repo):
    """Short texts are padded to 8 tokens, not 77, and that changes no vector; a fixed-length graph still gets 77."""
    card = mr.ModelCard.load(model_repo)
    pre = Preprocessor(model_repo, card)
    texts = ["red mug", "a shirt " * 12, "a very long description " * 40]  # 4, ~26 and >77 tokens
    assert pre.tokenize(texts[:1])["input_ids"].shape == (1, 8)
    groups = pre.tokenize_groups(texts)
    assert [(list(index), batch["input_ids"].shape[1]) for index, batch in groups] == [([0], 8), ([1], 32), ([2], 77)]
    assert all(batch["attention_mask"].dtype == np.int64 for _, batch in groups)
    assert _encoder(model_repo).encode_texts([]).shape == (0, card.embedding_dim)

    session = OrtBackend(model_repo)
    full = Preprocessor(model_repo, dataclasses.replace(card, text_dynamic_length=False))
    padded = full.tokenize(texts)
    assert padded["input_ids"].shape == (3, 77)
    np.testing.assert_allclose(
        _encoder(model_repo).encode_texts(texts), session.run(mr.TEXT_MODEL, padded), atol=1e-6, rtol=0
    )


def test_parity_check_fails_loudly(model_repo):
    path = mr.onnx_path(model_repo, mr.VISUAL_MODEL)
    pixels = np.zeros((1, 3, 64, 64), np.float32)
    wrong = np.ones((1, 32), np.float32)
    with pytest.raises(ExportMismatch, match="differs from the torch network"):
        check_parity(path, {mr.VISUAL_INPUT: pixels}, wrong, "image")


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_precisions(tmp_path, clip_folder, model_repo, precision):
    card = build_model(source=str(clip_folder), out=tmp_path / "repo", precision=precision)
    assert card.precision == precision
    assert card.identity != mr.ModelCard.load(model_repo).identity
    size = mr.onnx_path(tmp_path / "repo", mr.VISUAL_MODEL).stat().st_size
    assert size < mr.onnx_path(model_repo, mr.VISUAL_MODEL).stat().st_size
    texts = ["black leather wallet", "green apple"]
    cos = np.sum(_encoder(tmp_path / "repo").encode_texts(texts) * _encoder(model_repo).encode_texts(texts), axis=1)
    assert cos.min() > 0.95


def test_missing_local_folder_is_one_sentence(tmp_path):
    with pytest.raises(ModelNotFound, match="does not exist"):
        build_model(source=str(tmp_path / "nope"), out=tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_unreachable_hub_names_the_alternatives(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound) as err:
        build_model(source="openai/clip-vit-base-patch32", out=tmp_path / "repo")
    message = str(err.value)
    assert "hub" in message and "--source offline" in message and "local CLIP folder" in message
    assert "\n" not in message


def test_the_default_model_is_an_open_clip_hub_model_whose_absence_falls_back(tmp_path, monkeypatch):
    """The default (README's model table) goes the open_clip hub way; with no hub, the ModelNotFound that
    build_default_model turns into the offline model, before anything is written."""
    from pipeline.model_build.families import family_of
    from pipeline.settings import DEFAULT_MODEL_SOURCE

    assert DEFAULT_MODEL_SOURCE == "hf-hub:Marqo/marqo-ecommerce-embeddings-B"
    assert family_of(DEFAULT_MODEL_SOURCE) == "open_clip"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound, match="Could not download 'hf-hub:Marqo/marqo-ecommerce-embeddings-B'"):
        build_model(source=DEFAULT_MODEL_SOURCE, out=tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_no_route_to_the_hub_is_said_at_once(tmp_path):
    """Without HF_HUB_OFFLINE, on a machine with no route to the hub (this one, or an endpoint nothing listens on):
    one sentence, and huggingface_hub's retry loop (30 s, each retry printed twice) never starts."""
    import subprocess
    import sys

    from pipeline.processes.ports import free_port

    from ..conftest import REPO_ROOT

    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{free_port()}"
    args = ["build-model", "--source", "openai/clip-vit-base-patch32", "--out", str(tmp_path / "m")]
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and "cannot be reached" in proc.stderr, proc.stderr
    assert proc.stderr.count("Could not download") == 1 and "Retrying" not in proc.stderr


def test_card_round_trip(model_repo, tmp_path):
    card = mr.ModelCard.load(model_repo)
    data = json.loads((model_repo / mr.CARD_FILE).read_text())
    assert data["sha256"] == card.sha256
    card.save(tmp_path)
    assert mr.ModelCard.load(tmp_path).identity == card.identity
    with pytest.raises(ModelNotFound, match="build-model"):
        mr.ModelCard.load(tmp_path / "empty")


def test_checksums_are_not_recomputed_for_unchanged_files_but_a_changed_file_is_caught(model_repo, tmp_path):
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(model_repo, repo)
    card = mr.ModelCard.load(repo)
    mr.verify_files(repo, card)
    assert json.loads((repo / mr.VERIFIED_FILE).read_text()).keys() == card.sha256.keys()
    onnx = mr.onnx_path(repo, mr.TEXT_MODEL)
    data = bytearray(onnx.read_bytes())
    data[-1] ^= 0xFF  # same size; a new mtime
    onnx.write_bytes(bytes(data))
    with pytest.raises(ModelNotFound, match="checksum differs"):
        mr.verify_files(repo, card)
