"""``Preprocessor`` (tokenizers + Pillow + numpy) against transformers reading the very same saved files.

The references are what serving used before and what ``build-model`` still checks the exported graphs with:
``AutoTokenizer`` / the tokenizer class the files name (``CLIPTokenizer`` for CLIP, ``BertTokenizer`` for the offline
model's MiniLM), and ``AutoImageProcessor`` / ``CLIPImageProcessor`` (here: its PIL backend, torchvision being absent).
Both model repositories are covered: the tests' small CLIP (``model_repo``) and the offline model (``offline_repo``).
Token ids and masks must be identical; pixel values within 1e-5 (they come out bit-identical).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import model_repo as mr
from pipeline.errors import InvalidInput, ModelNotFound
from pipeline.inputs import load_image
from pipeline.query import preprocess as pp
from pipeline.query.preprocess import ImageSteps, Preprocessor
from tests.conftest import REPO_ROOT, shared

PIXEL_ATOL = 1e-5

TEXTS = [
    "",
    "a",
    "men's black puffer jacket",
    "Wireless noise-cancelling headphones, over-ear (30 h battery) -- 20% off!!! #deal @shop",
    "Crème brûlée, café au lait, naïve Ångström, Øre, Straße, e\u0301 (combining accent)",
    "emoji 🍌 banana 🍎🍏 apples 👟👠 shoes 🇫🇷 flag 👩‍👩‍👧 family",
    "日本語のテキスト 中文 한국어 العربية",
    "ＦＵＬＬＷＩＤＴＨ ﬁligature \u200bzero\u200bwidth tab\tnew\nline   spaces",
    "control\x00chars\x07 here",
    "<|endoftext|> [SEP] [CLS] [PAD] literal special tokens",
    "a long description " * 60,  # ~180 tokens: past 77 (CLIP) and 128 (MiniLM)
    "x" * 1000,  # one huge word
    "1,234.56 $ € £ ¥ 3/4 1½ 10x20cm",
]


@pytest.fixture(params=["model_repo", "offline_repo"])
def repo(request) -> Path:
    return request.getfixturevalue(request.param)


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # "falling back to CLIPImageProcessorPil" on every load


@functools.cache
def reference_tokenizer(folder: str, loader: str):
    """transformers' tokenizer from the saved folder: AutoTokenizer, or the class tokenizer_config.json names."""
    import transformers

    _quiet_transformers()
    if loader == "auto":
        return transformers.AutoTokenizer.from_pretrained(folder)
    name = json.loads((Path(folder) / "tokenizer_config.json").read_text())["tokenizer_class"]
    return getattr(transformers, name).from_pretrained(folder)


@functools.cache
def reference_processor(folder: str, loader: str):
    import transformers

    _quiet_transformers()
    cls = transformers.AutoImageProcessor if loader == "auto" else transformers.CLIPImageProcessor
    return cls.from_pretrained(folder)


def reference_pixels(processor, images: list[Image.Image]) -> np.ndarray:
    return np.asarray(processor(images=images, return_tensors="np")["pixel_values"], dtype=np.float32)


def preprocessor(repo: Path, **card_changes) -> Preprocessor:
    return Preprocessor(repo, dataclasses.replace(mr.ModelCard.load(repo), **card_changes))


# -------------------------------------------------------------------------------------------------------------- text
@pytest.mark.parametrize("loader", ["auto", "class"])
def test_token_ids_and_masks_equal_transformers(repo, loader):
    card = mr.ModelCard.load(repo)
    ref = reference_tokenizer(str(mr.tokenizer_dir(repo)), loader)
    expected = ref(TEXTS, truncation=True, max_length=card.text_max_length)
    rows = Preprocessor(repo, card)._token_rows(TEXTS)
    for text, (ids, mask), want_ids, want_mask in zip(
        TEXTS, rows, expected["input_ids"], expected["attention_mask"], strict=True
    ):
        assert (list(ids), list(mask)) == (list(want_ids), list(want_mask)), text
    assert max(len(ids) for ids, _ in rows) == card.text_max_length  # truncation was exercised
    assert len(rows[0][0]) == 2  # the empty string is just the special tokens


def test_padded_batches_equal_transformers(repo):
    """Batches of texts of different lengths, padded as the graphs get them: to a bucket, or to the full length."""
    card = mr.ModelCard.load(repo)
    ref = reference_tokenizer(str(mr.tokenizer_dir(repo)), "auto")

    def expected(texts: list[str], width: int) -> dict[str, np.ndarray]:
        enc = ref(texts, padding="max_length", truncation=True, max_length=width, return_tensors="np")
        return {k: enc[k].astype(np.int64) for k in mr.TEXT_INPUTS}

    def same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
        for key in mr.TEXT_INPUTS:
            assert got[key].dtype == np.int64
            np.testing.assert_array_equal(got[key], want[key])

    pre = Preprocessor(repo, card)
    short = TEXTS[:4]
    batch = pre.tokenize(short)
    assert batch["input_ids"].shape[1] % pp.TEXT_LENGTH_BUCKET == 0
    same(batch, expected(short, batch["input_ids"].shape[1]))
    groups = pre.tokenize_groups(TEXTS)
    assert len(groups) > 1 and sorted(np.concatenate([index for index, _ in groups])) == list(range(len(TEXTS)))
    for index, group in groups:
        same(group, expected([TEXTS[i] for i in index], group["input_ids"].shape[1]))
    fixed = preprocessor(repo, text_dynamic_length=False).tokenize(TEXTS)
    same(fixed, expected(TEXTS, card.text_max_length))


def _copy_client_files(repo: Path, out: Path) -> Path:
    """A model repository with only what ``Preprocessor`` reads (card, tokenizer and processor folders)."""
    for folder in (mr.tokenizer_dir(repo), mr.processor_dir(repo)):
        shutil.copytree(folder, out / folder.relative_to(repo))
    shutil.copy(repo / mr.CARD_FILE, out / mr.CARD_FILE)
    return out


def _edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_padding_and_truncation_sides_come_from_tokenizer_config(model_repo, tmp_path):
    repo = _copy_client_files(model_repo, tmp_path / "repo")
    _edit_json(mr.tokenizer_dir(repo) / "tokenizer_config.json", padding_side="left", truncation_side="left")
    from transformers import AutoTokenizer

    ref = AutoTokenizer.from_pretrained(str(mr.tokenizer_dir(repo)))
    assert (ref.padding_side, ref.truncation_side) == ("left", "left")
    card = mr.ModelCard.load(repo)
    for dynamic in (True, False):
        got = preprocessor(repo, text_dynamic_length=dynamic).tokenize(TEXTS)
        width = got["input_ids"].shape[1]
        want = ref(TEXTS, padding="max_length", truncation=True, max_length=width, return_tensors="np")
        np.testing.assert_array_equal(got["input_ids"], want["input_ids"])
        np.testing.assert_array_equal(got["attention_mask"], want["attention_mask"])
    assert width == card.text_max_length and got["attention_mask"][0, -1] == 1  # padded on the left


# ------------------------------------------------------------------------------------------------------------ images
def real_photos() -> list[Path]:
    """Grocery shelf photos (348x348), fashion photos (225x300) and the seed sample's large product photos."""
    grocery = sorted(shared("grocery_store", "queries").glob("*.jpg"))[:3]
    fashion = sorted(shared("fashion", "images").glob("*.jpg"))[:3]
    seed = [
        shared("seed_sample", "images", name)
        for name in ("Mango-3.jpg", "Sony headphone- 1.jpg", "Adidas-2.jpg", "Test_image.jpg")
    ]
    return grocery + fashion + seed


def _photo_like(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus noise: what resampling filters treat like a photo, without any test data."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * 255 / max(1, width - 1)), (y * 255 / max(1, height - 1)), ((x + y) * 3) % 256], -1)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def generated_images() -> dict[str, Image.Image]:
    rgb = Image.fromarray(_photo_like(61, 47))
    grey = rgb.convert("L")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, 61).astype(np.uint8), (47, 1))))
    keyed = rgb.quantize(16)
    keyed.info["transparency"] = 3  # a transparent palette entry, no alpha band
    deep = np.asarray(grey).astype(np.uint16) * 257
    deep[:, :20] //= 300  # dark corner: Pillow's 16-bit to RGB conversion clips, it does not scale
    return {
        "RGB 61x47": rgb,
        "L grey": grey,
        "LA grey + alpha": rgba.convert("LA"),
        "RGBA graded alpha": rgba,
        "P palette": rgb.quantize(64),
        "P with a transparent colour": keyed,
        "I;16 16-bit grey": Image.fromarray(deep),
        "CMYK": rgb.convert("CMYK"),
        "1 bit": grey.convert("1"),
        "tiny 1x1": Image.new("RGB", (1, 1), (200, 30, 90)),
        "very wide 1500x4": Image.fromarray(_photo_like(1500, 4, 1)),
        "very tall 3x700": Image.fromarray(_photo_like(3, 700, 2)),
        "just past the crop 65x63": Image.fromarray(_photo_like(65, 63, 3)),
    }


def _as_file(image: Image.Image) -> bytes:
    """The image as an uploaded file would carry it (CMYK as JPEG, everything else as PNG)."""
    buf = io.BytesIO()
    image.save(buf, "JPEG" if image.mode == "CMYK" else "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("loader", ["auto", "class"])
def test_pixels_equal_transformers_on_real_photos(repo, loader):
    photos = [load_image(p) for p in real_photos()]
    sizes = {im.size for im in photos}
    assert {(348, 348), (225, 300), (1600, 2304)} <= sizes
    ref = reference_processor(str(mr.processor_dir(repo)), loader)
    if loader == "class":
        assert type(ref).__name__ == "CLIPImageProcessorPil", "torchvision is installed: the reference changed"
    got = Preprocessor(repo, mr.ModelCard.load(repo)).pixels(photos)
    want = reference_pixels(ref, photos)
    assert got.dtype == np.float32 and got.flags.c_contiguous and got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=PIXEL_ATOL, rtol=0)


@pytest.mark.parametrize("name", list(generated_images()))
def test_pixels_equal_transformers_on_every_mode_and_shape(repo, name):
    """As given (the processor converts to RGB, compositing transparency onto white) and as ``load_image`` decodes the
    same image from a file (the app's path)."""
    image = generated_images()[name]
    pre = Preprocessor(repo, mr.ModelCard.load(repo))
    ref = reference_processor(str(mr.processor_dir(repo)), "auto")
    for what, im in (("as given", image), ("through load_image", load_image(_as_file(image)))):
        got, want = pre.pixels([im]), reference_pixels(ref, [im])
        assert got.shape == want.shape == (1, 3, *pre._image.size), what
        np.testing.assert_allclose(got, want, atol=PIXEL_ATOL, rtol=0, err_msg=f"{name}, {what}")


def test_a_batch_of_mixed_photos_equals_one_reference_batch(repo):
    images = list(generated_images().values())
    pre = Preprocessor(repo, mr.ModelCard.load(repo))
    ref = reference_processor(str(mr.processor_dir(repo)), "auto")
    np.testing.assert_allclose(pre.pixels(images), reference_pixels(ref, images), atol=PIXEL_ATOL, rtol=0)
    assert pre.pixels([]).shape == (0, 3, *pre._image.size)


CLIP_CONFIG = {
    "image_processor_type": "CLIPImageProcessor",
    "do_convert_rgb": True,
    "do_resize": True,
    "size": {"shortest_edge": 40},
    "resample": 3,
    "do_center_crop": True,
    "crop_size": {"height": 32, "width": 32},
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
}
DROP = "drop this key"
VARIANTS = {
    "shortest edge + crop": {},
    "legacy hub file (ints, feature extractor type, no processor type)": {
        "image_processor_type": DROP,
        "feature_extractor_type": "CLIPFeatureExtractor",
        "size": 40,
        "crop_size": 32,
    },
    "int size, default_to_square": {"size": 36, "default_to_square": True},
    "height/width resize, no crop": {"size": {"height": 30, "width": 50}, "do_center_crop": False},
    "[height, width] lists": {"size": [30, 50], "crop_size": [24, 40]},
    "crop larger than the resize (zero padding)": {"size": {"shortest_edge": 20}, "crop_size": 33},
    "no resize": {"do_resize": False, "crop_size": {"height": 41, "width": 29}},
    "no crop, no resize": {"do_resize": False, "do_center_crop": False},
    "no rescale": {"do_rescale": False},
    "no normalize": {"do_normalize": False},
    "neither": {"do_rescale": False, "do_normalize": False},
    "scalar mean and std, other rescale": {"image_mean": 0.5, "image_std": 0.25, "rescale_factor": 0.003},
    "nulls switch a step off, as in transformers": {"do_rescale": None, "do_center_crop": None},
    "keys missing mean CLIP's defaults": {key: DROP for key in ("resample", "do_normalize", "image_mean", "image_std")},
    "unknown keys are ignored": {"processor_class": "CLIPProcessor", "crop_pct": 0.9, "something_new": [1, 2]},
    **{f"resample {r}": {"resample": r} for r in (0, 1, 2, 4, 5)},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_config_forms_and_flags_equal_transformers(variant, tmp_path):
    """The forms CLIPImageProcessor accepts in preprocessor_config.json, each compared with transformers on the file."""
    config = {k: v for k, v in {**CLIP_CONFIG, **VARIANTS[variant]}.items() if v != DROP}
    (tmp_path / pp.PROCESSOR_FILE).write_text(json.dumps(config))
    from transformers import AutoImageProcessor

    _quiet_transformers()
    ref = AutoImageProcessor.from_pretrained(str(tmp_path))
    steps = ImageSteps.from_config(json.loads((tmp_path / pp.PROCESSOR_FILE).read_text()))
    images = [*generated_images().values(), Image.fromarray(_photo_like(90, 70, 4))]
    for image in images:
        got = steps(image)
        want = reference_pixels(ref, [image])[0]
        assert got.shape == want.shape, (variant, image.mode, image.size)
        np.testing.assert_allclose(got.astype(np.float32), want, atol=PIXEL_ATOL, rtol=0, err_msg=variant)


# ------------------------------------------------------------------------------------------------------------ errors
def _break(file: Path, how) -> None:
    if how is None:
        file.unlink()
    elif isinstance(how, str):
        file.write_text(how)
    else:
        _edit_json(file, **how)


PROCESSOR = ("clip_visual", "processor", "preprocessor_config.json")
TOKENIZER = ("clip_text", "tokenizer", "tokenizer.json")
TOKENIZER_CONFIG = ("clip_text", "tokenizer", "tokenizer_config.json")
BROKEN = {
    "no processor file": (PROCESSOR, None, "preprocessor_config.json is missing"),
    "processor file not JSON": (PROCESSOR, "{not json", "cannot be read"),
    "another processor type": (PROCESSOR, {"image_processor_type": "ViltImageProcessor"}, "CLIPImageProcessor"),
    "padding": (PROCESSOR, {"do_pad": True}, "do_pad"),
    "longest_edge only": (PROCESSOR, {"size": {"longest_edge": 64}}, "size"),
    "max height and width": (PROCESSOR, {"size": {"max_height": 64, "max_width": 64}}, "size"),
    "crop by shortest edge": (PROCESSOR, {"crop_size": {"shortest_edge": 64}}, "crop_size"),
    "zero size": (PROCESSOR, {"size": {"shortest_edge": 0}}, "positive"),
    "unknown filter": (PROCESSOR, {"resample": 9}, "Pillow filter"),
    "two means": (PROCESSOR, {"image_mean": [0.5, 0.5]}, "image_mean"),
    "resize without a filter": (PROCESSOR, {"resample": None}, "resample is null"),
    "normalize without a mean": (PROCESSOR, {"image_mean": None}, "image_mean is null"),
    "rescale by nothing": (PROCESSOR, {"rescale_factor": 0}, "rescale_factor"),
    "zero std": (PROCESSOR, {"image_std": 0}, "image_std"),
    "output not what the tower takes": (PROCESSOR, {"crop_size": {"height": 32, "width": 32}}, "takes 64x64"),
    "output depends on the photo": (PROCESSOR, {"do_center_crop": False}, "different sizes"),
    "no tokenizer.json": (TOKENIZER, None, "tokenizer file"),
    "tokenizer.json not a tokenizer": (TOKENIZER, '{"version": "1.0"}', "not a tokenizer file"),
    "no tokenizer_config.json": (TOKENIZER_CONFIG, None, "tokenizer_config.json is missing"),
    "unknown pad token": (TOKENIZER_CONFIG, {"pad_token": "<|nope|>"}, "pad token"),
    "odd padding side": (TOKENIZER_CONFIG, {"padding_side": "middle"}, "padding_side"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_unusable_files_are_one_sentence_on_first_use(case, model_repo, tmp_path):
    parts, how, words = BROKEN[case]
    repo = _copy_client_files(model_repo, tmp_path / "repo")
    _break(repo.joinpath(*parts), how)
    pre = Preprocessor(repo, mr.ModelCard.load(repo))  # lazy: nothing is read yet
    for first_use in (lambda: pre.tokenize(["red mug"]), lambda: pre.pixels([Image.new("RGB", (8, 8))])):
        with pytest.raises(ModelNotFound, match=words) as err:
            first_use()
        assert "\n" not in str(err.value) and str(err.value).endswith("."), str(err.value)


def test_a_processor_without_rgb_conversion_refuses_other_modes(tmp_path):
    config = {**CLIP_CONFIG, "do_convert_rgb": False}
    (tmp_path / pp.PROCESSOR_FILE).write_text(json.dumps(config))
    from transformers import AutoImageProcessor

    _quiet_transformers()
    ref = AutoImageProcessor.from_pretrained(str(tmp_path))
    steps = ImageSteps.from_config(config)
    photo = Image.fromarray(_photo_like(50, 40))
    np.testing.assert_allclose(steps(photo), reference_pixels(ref, [photo])[0], atol=PIXEL_ATOL, rtol=0)
    with pytest.raises(InvalidInput, match="RGB"):
        steps(Image.new("L", (50, 50)))


# ------------------------------------------------------------------------------------------------ loading, imports
def test_loaded_once_by_concurrent_first_queries(model_repo, monkeypatch):
    loads = []
    real = pp.TextSteps.load.__func__

    def counting(cls, *args):
        loads.append(threading.get_ident())
        return real(cls, *args)

    monkeypatch.setattr(pp.TextSteps, "load", classmethod(counting))
    pre = Preprocessor(model_repo, mr.ModelCard.load(model_repo))
    photo = Image.fromarray(_photo_like(90, 70))
    results: list = [None] * 8
    start = threading.Barrier(len(results))

    def query(i: int) -> None:
        start.wait()
        results[i] = (pre.tokenize([TEXTS[2], TEXTS[3]])["input_ids"], pre.pixels([photo]))

    threads = [threading.Thread(target=query, args=(i,)) for i in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1
    for ids, pixels in results[1:]:
        np.testing.assert_array_equal(ids, results[0][0])
        np.testing.assert_array_equal(pixels, results[0][1])


def test_preprocessing_imports_neither_transformers_nor_torch(repo):
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from PIL import Image\n"
        "from pipeline import model_repo as mr\n"
        "from pipeline.query.preprocess import Preprocessor\n"
        f"repo = Path({str(repo)!r})\n"
        "pre = Preprocessor(repo, mr.ModelCard.load(repo))\n"
        "pre.tokenize(['a red mug']); pre.pixels([Image.new('RGB', (300, 200))])\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'torchvision', 'transformers'}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert proc.stdout.strip() == "[]", proc.stderr
