"""The other families served as CLIP is: through build-model, ingest and match on the command line, in every
precision, in the Triton Python-backend model and behind a real tritonserver.

The issue's bar: a local open_clip folder (random weights, SigLIP-style config: squash, 0.5 mean/std, 64 tokens) and
a transformers SigLIP made from a config go through ``build-model``, ``ingest`` and ``match``, and the photo
embedding from the model repository agrees with the library's own ``encode_image(preprocess(photo))``
(cosine >= 0.999). open_clip's ``preprocess`` is torchvision code: here it is the reproduction from its
``preprocess_cfg`` (tests/support/family_reference.py), which equals the client bit for bit on real photos.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from pipeline import model_repo as mr
from pipeline.errors import PipelineError
from pipeline.inputs import load_image
from pipeline.model_build.build_model import build_model
from pipeline.model_build.quantize import MIN_COSINE
from tests.ops.test_triton import _load_python_model
from tests.support.family_reference import open_clip_preprocess
from tests.support.triton_fixtures import require_triton

from ..conftest import DEMO_CATALOG, REPO_ROOT, shared
from .family_fixtures import FAMILIES, cosines, encoder

TEXTS = ["men's black puffer jacket", "A red coffee MUG, 350 ml!", "wireless over-ear headphones", "green apple"]


def _catalogue(folder) -> tuple[list[dict], object]:
    """Six fashion products of ../shared, their photos copied beside the file the test writes."""
    source = shared("fashion", "catalog.jsonl")
    rows = [json.loads(line) for line in source.read_text().splitlines()[:60:10]]
    (folder / "images").mkdir(parents=True)
    for row in rows:
        shutil.copy(source.parent / row["image_path"], folder / row["image_path"])
    path = folder / "catalog.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return rows, path


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@torch.no_grad()
def _library_photo_embedding(name: str, folder, photo) -> np.ndarray:
    if name == "siglip":
        from transformers import AutoImageProcessor, SiglipModel

        model = SiglipModel.from_pretrained(str(folder)).eval()
        pixels = torch.from_numpy(AutoImageProcessor.from_pretrained(str(folder))(images=[photo], return_tensors="np")
                                  ["pixel_values"])  # fmt: skip
        out = model.get_image_features(pixel_values=pixels)
        out = getattr(out, "pooler_output", out)
        return torch.nn.functional.normalize(out, dim=-1).numpy()
    from pipeline.model_build.families.open_clip import import_open_clip

    model = import_open_clip().create_model(f"local-dir:{folder}").eval()
    pixels = open_clip_preprocess(model.visual.preprocess_cfg, photo).unsqueeze(0)
    return model.encode_image(pixels, normalize=True).numpy()


@pytest.mark.parametrize("name", ["open_clip_siglip", "siglip"])
def test_build_ingest_match_and_the_library_agrees(name, family_folders, tmp_path):
    rows, catalogue = _catalogue(tmp_path / "catalogue")
    repo, data = tmp_path / "model_repository", tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URI", "QDRANT_URL", "TRITON_URL", "MODEL_SOURCE")}
    env.update(DATA_DIR=str(data), MODEL_REPOSITORY=str(repo), HF_HUB_OFFLINE="1")
    built = _cli("build-model", "--source", str(family_folders[name]), "--out", str(repo), env=env)
    assert "built " in built.stdout
    _cli("ingest", str(catalogue), env=env)
    row = rows[2]
    photo_path = catalogue.parent / row["image_path"]
    found = json.loads(_cli("match", "--image", str(photo_path), "--top-k", "3", "--json", env=env).stdout)
    assert found["matches"][0]["id"] == row["id"]
    by_text = json.loads(_cli("match", "--text", row["name"], "--top-k", "6", "--json", env=env).stdout)
    assert {m["id"] for m in by_text["matches"]} <= {r["id"] for r in rows} and by_text["matches"]

    card = mr.ModelCard.load(repo)
    assert card.family == ("siglip" if name == "siglip" else "open_clip") and card.preprocessing["resize"] == "squash"
    photo = load_image(photo_path)
    ours = encoder(repo).encode_images([photo])
    theirs = _library_photo_embedding(name, family_folders[name], photo)
    cosine = float(cosines(ours, theirs)[0])
    print(f"{name}: photo embedding from the model repository vs the library's, cosine {cosine:.7f}")
    assert cosine >= 0.999


#: what onnxruntime 1.32 cannot open: the FP16 text tower of either open_clip model (nn.MultiheadAttention-based)
#: crashes the process while its session is created (the NCHWc layout pass at the default optimisation level); the
#: build refuses it in one sentence (quantize.check_loads). Not yet solved: see the report of issue 32.
REFUSED = {("open_clip_siglip", "fp16"), ("open_clip_clip", "fp16")}


@pytest.fixture(scope="module")
def precision_repos(tmp_path_factory, family_folders, family_repos) -> dict:
    out = {}
    for name in FAMILIES:
        out[name, "fp32"] = family_repos[name]
        for precision in ("fp16", "int8", "int8-static"):
            repo = tmp_path_factory.mktemp(f"{name}-{precision}") / "model_repository"
            calibration = DEMO_CATALOG if precision == "int8-static" else None
            try:
                build_model(str(family_folders[name]), repo, precision, calibration=calibration, calibration_rows=16)
            except PipelineError as err:
                out[name, precision] = err
                continue
            out[name, precision] = repo
    return out


def _photos(n: int = 4) -> list:
    return [load_image(p) for p in sorted((DEMO_CATALOG.parent / "images").iterdir())[:n]]


@pytest.mark.parametrize("precision", ["fp16", "int8", "int8-static"])
@pytest.mark.parametrize("name", FAMILIES)
def test_every_precision_serves_close_to_fp32(name, precision, precision_repos):
    if (name, precision) in REFUSED:
        err = precision_repos[name, precision]
        assert isinstance(err, PipelineError) and "cannot be opened by onnxruntime (signal 11)" in str(err), err
        return
    card = mr.ModelCard.load(precision_repos[name, precision])
    assert card.precision == precision and card.family == mr.ModelCard.load(precision_repos[name, "fp32"]).family
    ref, enc = encoder(precision_repos[name, "fp32"]), encoder(precision_repos[name, precision])
    text_cos = cosines(enc.encode_texts(TEXTS), ref.encode_texts(TEXTS)).min()
    image_cos = cosines(enc.encode_images(_photos()), ref.encode_images(_photos())).min()
    print(f"{name} {precision}: worst cosine to fp32, text {text_cos:.4f}, image {image_cos:.4f}")
    assert min(text_cos, image_cos) >= MIN_COSINE[precision]
    assert card.extra["min_cosine_to_fp32"][mr.VISUAL_MODEL] >= MIN_COSINE[precision]


@pytest.mark.parametrize("precision", ["fp32", "int8-static"])
@pytest.mark.parametrize("name", FAMILIES)
def test_the_triton_python_model_serves_each_family(name, precision, precision_repos, monkeypatch):
    repo = precision_repos[name, precision]
    enc = encoder(repo)
    feeds = {mr.VISUAL_MODEL: {mr.VISUAL_INPUT: enc.preprocessor.pixels(_photos(2))},
             mr.TEXT_MODEL: enc.preprocessor.tokenize(TEXTS)}  # fmt: skip
    for model, feed in feeds.items():
        [response] = _load_python_model(repo, model, monkeypatch).execute([feed])
        got = response.outputs[mr.OUTPUT]
        np.testing.assert_allclose(got, enc.backend.run(model, feed), atol=1e-5)


@pytest.mark.parametrize("name", ["siglip", "open_clip_siglip"])
def test_a_real_tritonserver_serves_a_fixed_length_family(name, family_repos):
    require_triton()
    from pipeline.inference.triton_backend import TritonBackend
    from pipeline.processes.triton import TritonServer
    from pipeline.query.encoder import Encoder

    local = encoder(family_repos[name])
    server = TritonServer(family_repos[name]).start()
    try:
        backend = TritonBackend(server.url, timeout_s=30)
        backend.check(local.card)
        served = Encoder(local.card, local.preprocessor, backend)
        np.testing.assert_allclose(served.encode_texts(TEXTS), local.encode_texts(TEXTS), atol=1e-5)
        np.testing.assert_allclose(served.encode_images(_photos(2)), local.encode_images(_photos(2)), atol=1e-5)
        backend.close()
    finally:
        server.stop()
