"""build-model's other families: transformers SigLIP and open_clip (SigLIP-style and CLIP-style configs).

Each small checkpoint has random weights of a real architecture, built from the config that ships inside its library
(transformers' ``SiglipConfig``, open_clip's ``ViT-B-16-SigLIP`` and ``ViT-B-32`` configs), made small. Checked here
against each library: the ONNX towers against the library's forward pass (cosine >= 0.9999), the client's tokenizer
against the library's tokenizer (identical ids), the client's Pillow/numpy preprocessing against the family's own
transforms on real photos (max abs pixel difference bounded; for open_clip a reproduction of its torchvision
transforms, see tests/support/family_reference.py), and the model repository contract (card, Triton configs).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline import model_repo as mr
from pipeline.errors import ExportMismatch, ModelNotFound
from pipeline.inputs import load_image
from pipeline.model_build.build_model import build_model, check_tokenizer
from pipeline.model_build.families.open_clip import import_open_clip
from pipeline.query.preprocess import Preprocessor
from tests.support.family_reference import open_clip_preprocess

from ..conftest import DEMO_CATALOG, shared
from .family_fixtures import FAMILIES, cosines, encoder

#: the largest difference allowed between the client's pixels and the family's own, in normalised units (one 8-bit
#: level is 1/255/std: 0.0078 for std 0.5, ~0.015 for CLIP's std); what is seen is float rounding (printed below)
PIXEL_ATOL = 1e-5
TEXTS = [
    "men's black puffer jacket",
    "A red coffee MUG, 350 ml!",
    "Wireless noise-cancelling headphones (over-ear) — 30h battery",
    "café crème: 100% arabica; 1 kg",
    'T-shirt "Classic" size XL/XXL',
    "  extra   spaces\tand\ttabs  ",
    "UPPER lower MiXeD 12345",
    "a very long product description " * 30,
    "",
]


def _texts() -> list[str]:
    rows = [json.loads(line) for line in DEMO_CATALOG.read_text().splitlines() if line.strip()]
    fashion = [json.loads(line)["name"] for line in shared("fashion", "catalog.jsonl").read_text().splitlines()[:200]]
    return TEXTS + [r["text"] for r in rows] + fashion


def _photos() -> list[Image.Image]:
    paths = sorted(shared("fashion", "images").iterdir())[:4]
    paths += sorted(shared("grocery_store", "queries").iterdir())[:3]
    paths += sorted(shared("seed_sample", "images").iterdir())[:4]
    return [load_image(p) for p in paths]


def _odd_sizes(photos: list[Image.Image]) -> list[Image.Image]:
    """Crops whose resized long side makes the centre-crop offset a half (where round and floor differ) or odd."""
    return [p.crop((0, 0, min(p.width, w), min(p.height, h))) for p in photos[:2] for w, h in ((200, 271), (171, 300))]


class Library:
    """The family's own tokenizer, preprocessing and forward pass."""

    def __init__(self, name: str, folder: Path) -> None:
        self.name = name
        if name == "siglip":
            from transformers import AutoImageProcessor, AutoTokenizer, SiglipModel

            self.model = SiglipModel.from_pretrained(str(folder)).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
            self.processor = AutoImageProcessor.from_pretrained(str(folder))
        else:
            open_clip = import_open_clip()
            self.model = open_clip.create_model(f"local-dir:{folder}").eval()
            self.tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")

    def tokens(self, texts: list[str]) -> np.ndarray:
        if self.name == "siglip":
            length = self.model.config.text_config.max_position_embeddings
            return self.tokenizer(texts, padding="max_length", truncation=True, max_length=length)["input_ids"]
        return self.tokenizer(texts).numpy()

    def pixels(self, images: list[Image.Image]) -> np.ndarray:
        if self.name == "siglip":
            return self.processor(images=images, return_tensors="np")["pixel_values"]
        cfg = self.model.visual.preprocess_cfg
        return torch.stack([open_clip_preprocess(cfg, im) for im in images]).numpy()

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> np.ndarray:
        ids = torch.as_tensor(np.asarray(self.tokens(texts)), dtype=torch.int64)
        if self.name == "siglip":
            out = self.model.get_text_features(input_ids=ids)
            out = getattr(out, "pooler_output", out)
        else:
            out = self.model.encode_text(ids)
        return torch.nn.functional.normalize(out, dim=-1).numpy()

    @torch.no_grad()
    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))
        if self.name == "siglip":
            out = self.model.get_image_features(pixel_values=x)
            out = getattr(out, "pooler_output", out)
        else:
            out = self.model.encode_image(x)
        return torch.nn.functional.normalize(out, dim=-1).numpy()


@pytest.fixture(scope="module")
def libraries(family_folders) -> dict[str, Library]:
    return {name: Library(name, folder) for name, folder in family_folders.items()}


EXPECTED = {  # family on the card, text length, resize
    "siglip": ("siglip", 64, "squash"),
    "open_clip_siglip": ("open_clip", 64, "squash"),
    "open_clip_clip": ("open_clip", 77, "shortest-side+center-crop"),
}


@pytest.mark.parametrize("name", FAMILIES)
def test_card_and_repository_contract(name, family_repos, family_folders):
    import onnx

    repo = family_repos[name]
    card = mr.ModelCard.load(repo)
    family, length, resize = EXPECTED[name]
    assert (card.family, card.kind, card.text_max_length, card.text_dynamic_length) == (family, "clip", length, False)
    assert card.source == str(family_folders[name]) and card.revision.startswith("local-")
    assert card.embedding_dim == 64 and card.preprocessing["resize"] == resize
    assert card.preprocessing["mean"] == ([0.5] * 3 if family != "open_clip" or "siglip" in name else
                                          pytest.approx([0.48145466, 0.4578275, 0.40821073]))  # fmt: skip
    assert (mr.tokenizer_dir(repo) / "tokenizer.json").is_file()
    for model, inputs in ((mr.TEXT_MODEL, list(mr.TEXT_INPUTS)), (mr.VISUAL_MODEL, [mr.VISUAL_INPUT])):
        graph = onnx.load(str(mr.onnx_path(repo, model)), load_external_data=False).graph
        assert [i.name for i in graph.input] == inputs and [o.name for o in graph.output] == [mr.OUTPUT]
        assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
        config = (repo / model / "config.pbtxt").read_text()
        assert 'backend: "python"' in config and f'string_value: "{card.identity}"' in config
    text_config = (repo / mr.TEXT_MODEL / "config.pbtxt").read_text()
    assert "dims: [ -1 ]" not in text_config and text_config.count(f"dims: [ {length} ]") >= 2, "fixed length"


@pytest.mark.parametrize("name", FAMILIES)
def test_onnx_towers_match_the_library(name, family_repos, libraries):
    """Same token ids and pixels into the ONNX graphs and into the library's own model: cosine >= 0.9999."""
    lib, repo = libraries[name], family_repos[name]
    backend = encoder(repo).backend
    texts = _texts()[:40]
    ids = np.asarray(lib.tokens(texts), dtype=np.int64)
    got = backend.run(mr.TEXT_MODEL, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
    text_cos = cosines(got, lib.encode_texts(texts)).min()
    pixels = np.random.default_rng(0).standard_normal((4, 3, *lib_size(repo))).astype(np.float32)
    image_cos = cosines(backend.run(mr.VISUAL_MODEL, {mr.VISUAL_INPUT: pixels}), lib.encode_pixels(pixels)).min()
    print(f"{name}: ONNX vs library, worst cosine text {text_cos:.7f}, image {image_cos:.7f}")
    assert text_cos >= 0.9999 and image_cos >= 0.9999
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)


def lib_size(repo: Path) -> tuple[int, int]:
    size = mr.ModelCard.load(repo).image_size
    return size, size


@pytest.mark.parametrize("name", FAMILIES)
def test_client_tokenizer_matches_the_library(name, family_repos, libraries):
    """tokenizer.json through ``tokenizers`` alone gives the library tokenizer's ids (padding included for SigLIP;
    open_clip's CLIP tokenizer pads with 0 where ours pads with end-of-text, which its causal tower ignores)."""
    repo, lib = family_repos[name], libraries[name]
    card = mr.ModelCard.load(repo)
    texts = _texts()
    ours = Preprocessor(repo, card).tokenize(texts)["input_ids"]
    theirs = np.asarray(lib.tokens(texts))
    if name == "open_clip_clip":
        eot = 49407
        theirs = np.where(np.cumsum(theirs == eot, axis=1) - (theirs == eot) > 0, eot, theirs)  # 0 after EOT -> EOT
    mismatched = [t for t, a, b in zip(texts, ours, theirs, strict=True) if list(a) != list(b)]
    assert not mismatched, mismatched[:3]
    assert ours.shape == (len(texts), card.text_max_length)


@pytest.mark.parametrize("name", FAMILIES)
def test_client_preprocessing_matches_the_family(name, family_repos, libraries):
    """Real photos (fashion 225x300, grocery 348x348, seed sample up to 762x1100) and odd crops of them."""
    repo, lib = family_repos[name], libraries[name]
    photos = _photos() + _odd_sizes(_photos())
    ours = Preprocessor(repo, mr.ModelCard.load(repo)).pixels(photos)
    theirs = lib.pixels(photos)
    diff = float(np.abs(ours - theirs).max())
    print(f"{name}: client vs family preprocessing, {len(photos)} photos, max abs difference {diff:.2e}")
    assert ours.shape == theirs.shape and diff <= PIXEL_ATOL


def test_rounded_centre_crop_differs_from_floor_where_torchvision_says():
    """open_clip (torchvision) rounds the crop offset; transformers floors it: one pixel row apart on a 64x87 image."""
    from pipeline.query.preprocess import center_crop

    pixels = np.arange(87 * 64 * 3).reshape(87, 64, 3)
    assert center_crop(pixels, 64, 64, rounded=True)[0, 0, 0] == pixels[12, 0, 0]  # round(11.5) = 12
    assert center_crop(pixels, 64, 64)[0, 0, 0] == pixels[11, 0, 0]
    small = center_crop(np.ones((10, 9, 3)), 12, 12, rounded=True)
    assert small.shape == (12, 12, 3) and small[:1].sum() == 0 and small[1:11, 1:10].all()


def test_open_clip_imports_with_the_torchvision_stand_in_and_leaves_none_behind():
    import subprocess

    probe = "import open_clip"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    if proc.returncode == 0:
        pytest.skip("torchvision imports here: the stand-in is not used")
    assert "torchvision" in proc.stderr.splitlines()[-1], proc.stderr[-500:]
    open_clip = import_open_clip()
    assert hasattr(open_clip, "create_model") and "torchvision" not in sys.modules
    from transformers.utils import is_torchvision_available

    assert not is_torchvision_available()
    from pipeline.model_build.families.torchvision_standin import torchvision_standin

    with torchvision_standin():
        from torchvision.transforms import Resize

        with pytest.raises(RuntimeError, match="not available"):
            Resize(224)


def test_a_tokenizer_that_disagrees_with_the_library_is_refused(family_repos):
    repo = family_repos["siglip"]
    fields = {k: v for k, v in json.loads((repo / mr.CARD_FILE).read_text()).items() if k != "sha256"}

    def wrong(texts):
        return [[5] * fields["text_max_length"] for _ in texts]

    with pytest.raises(ExportMismatch, match="saved tokenizer differs"):
        check_tokenizer(repo, {**fields}, wrong, unpadded=False)


def test_sources_that_cannot_work_are_one_sentence(tmp_path, monkeypatch, family_folders):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound, match="--pretrained"):
        build_model("ViT-B-16-SigLIP", tmp_path / "a")
    with pytest.raises(ModelNotFound, match="hub"):
        build_model("ViT-B-16-SigLIP", tmp_path / "b", pretrained="webli")
    with pytest.raises(ModelNotFound, match="hub"):
        build_model("hf-hub:Marqo/marqo-ecommerce-embeddings-B", tmp_path / "c")
    naflex = tmp_path / "naflex"
    naflex.mkdir()
    (naflex / "config.json").write_text(json.dumps({"model_type": "siglip2"}))
    with pytest.raises(ModelNotFound, match="NaFlex"):
        build_model(str(naflex), tmp_path / "d")
    no_weights = tmp_path / "oc"
    no_weights.mkdir()
    config = family_folders["open_clip_clip"] / "open_clip_config.json"
    (no_weights / "open_clip_config.json").write_text(config.read_text())
    with pytest.raises(ModelNotFound, match="no weights"):
        build_model(str(no_weights), tmp_path / "e")
    assert not any((tmp_path / x).exists() for x in "abcde")


def test_an_open_clip_architecture_with_a_weights_file(tmp_path, family_folders, libraries):
    """``--source ARCH --pretrained FILE``: open_clip's factory with a local weights file (a tag would download)."""
    open_clip = import_open_clip()
    import tests.support.random_families as rf

    cfg = rf.open_clip_model_config("clip", "tiny")
    weights = family_folders["open_clip_clip"] / "open_clip_model.safetensors"
    name = "test-tiny-clip"
    (tmp_path / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / f"{name}.json")
    card = build_model(name, tmp_path / "repo", pretrained=str(weights))
    assert card.family == "open_clip" and card.revision.startswith("local-")
    texts = TEXTS[:4]
    ours, theirs = encoder(tmp_path / "repo").encode_texts(texts), libraries["open_clip_clip"].encode_texts(texts)
    assert cosines(ours, theirs).min() > 0.9999
