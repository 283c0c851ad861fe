"""Client-side preprocessing: tokenize text and make pixel tensors the way the model's own processor does.

Settings come from the files ``build-model`` saved beside the ONNX graphs (tokenizer and image-processor configs), never
from constants here, so the same code serves CLIP and the offline model. Serving needs only ``tokenizers``, Pillow and
numpy: the files are in Hugging Face's formats (a Hugging Face CLIP checkpoint's own files work), but transformers,
which imports torch wherever torch is installed, is not loaded to read them.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .. import model_repo as mr
from ..errors import InvalidInput, ModelNotFound
from ..inputs import to_rgb

if TYPE_CHECKING:
    from tokenizers import Tokenizer

# Text batches are padded to a multiple of this many tokens (graphs with a dynamic sequence axis), so that queries share
# a few shapes (Triton batches only equal shapes). "men's black puffer jacket" is 8 tokens; fashion product texts have a
# median of 16 and a 90th percentile of 20: buckets of 8 pad them to 19.3 tokens on average, buckets of 16 to 22.4.
TEXT_LENGTH_BUCKET = 8


# --------------------------------------------------------------------------------------------------------------- text
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
PROCESSOR_FILE = "preprocessor_config.json"


@dataclass(frozen=True)
class TextSteps:
    """The saved tokenizer as the text tower was exported with it: ``tokenizers`` alone, no transformers.

    ``tokenizer.json`` holds the whole pipeline (normaliser, pre-tokenizer, vocabulary, and the post-processor that
    adds the special tokens); ``tokenizer_config.json`` names the pad token and the padding and truncation sides. The
    padding and truncation that ``save_pretrained`` left in tokenizer.json are replaced by ours: no padding here
    (``Preprocessor`` pads to buckets), truncation to the card's ``text_max_length``, as transformers does for
    ``tokenizer(texts, truncation=True, max_length=n)``.
    """

    tokenizer: Tokenizer
    pad_id: int
    padding_left: bool

    @classmethod
    def load(cls, folder: Path, max_length: int) -> TextSteps:
        from tokenizers import Tokenizer

        config = _read_json(folder / TOKENIZER_CONFIG_FILE)
        path = folder / TOKENIZER_FILE
        if not path.is_file():
            raise ModelNotFound(f"The tokenizer file {path} is missing; rebuild the model repository with build-model.")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as err:  # tokenizers raises plain Exception for a file it cannot parse
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ModelNotFound(
                f"{path} is not a tokenizer file this app can read ({reason}); rebuild the model repository with "
                "build-model."
            ) from err
        sides = {}
        for key in ("padding_side", "truncation_side"):
            sides[key] = config.get(key) or "right"
            if sides[key] not in ("left", "right"):
                raise ModelNotFound(
                    f"{folder / TOKENIZER_CONFIG_FILE}: {key} is {sides[key]!r}, not 'left' or 'right'."
                )
        tokenizer.no_padding()
        tokenizer.enable_truncation(
            max_length=int(max_length), stride=0, strategy="longest_first", direction=sides["truncation_side"]
        )
        return cls(tokenizer, cls._pad_id(tokenizer, config.get("pad_token"), folder), sides["padding_side"] == "left")

    @staticmethod
    def _pad_id(tokenizer: Tokenizer, pad_token: object, folder: Path) -> int:
        if isinstance(pad_token, dict):  # an AddedToken as older transformers saved it
            pad_token = pad_token.get("content")
        if pad_token is None:
            return 0  # no pad token: padded positions are masked out, any id will do
        pad_id = tokenizer.token_to_id(str(pad_token))
        if pad_id is None:
            raise ModelNotFound(
                f"{folder / TOKENIZER_CONFIG_FILE} names the pad token {pad_token!r}, which the tokenizer does not "
                "have; rebuild the model repository with build-model."
            )
        return pad_id

    def rows(self, texts: list[str]) -> list[tuple[list[int], list[int]]]:
        """Token ids and attention mask of each text, special tokens added, truncated, not padded."""
        return [(e.ids, e.attention_mask) for e in self.tokenizer.encode_batch(texts, add_special_tokens=True)]


# ------------------------------------------------------------------------------------------------------------- images
# What CLIPImageProcessor assumes for a key that preprocessor_config.json leaves out (transformers 5.24,
# models/clip/image_processing_pil_clip.py and BaseImageProcessor; a key set to null is another matter: from_config).
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_DEFAULTS = {
    "do_convert_rgb": True,
    "do_resize": True,
    "size": {"shortest_edge": 224},
    "default_to_square": False,
    "resample": int(Image.Resampling.BICUBIC),
    "do_center_crop": True,
    "crop_size": {"height": 224, "width": 224},
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": OPENAI_CLIP_MEAN,
    "image_std": OPENAI_CLIP_STD,
    "do_pad": False,
}
# Config types whose steps are CLIPImageProcessor's (a file without either key is read as one too).
CLIP_PROCESSOR_TYPES = {"CLIPImageProcessor", "CLIPImageProcessorFast", "CLIPImageProcessorPil", "CLIPFeatureExtractor"}
# SiglipImageProcessor (SigLIP and fixed-resolution SigLIP 2 checkpoints): the same steps with other class defaults
# (transformers 5.24, models/siglip/image_processing_pil_siglip.py): squash to 224x224, no crop, mean and std 0.5.
SIGLIP_PROCESSOR_TYPES = {"SiglipImageProcessor", "SiglipImageProcessorFast", "SiglipImageProcessorPil"}
SIGLIP_DEFAULTS = {
    **CLIP_DEFAULTS,
    "size": {"height": 224, "width": 224},
    "default_to_square": True,
    "do_center_crop": False,
    "crop_size": None,
    "image_mean": (0.5, 0.5, 0.5),
    "image_std": (0.5, 0.5, 0.5),
}
# open_clip's eval transforms (open_clip 3.3, transform.py ``image_transform``), written by build-model as a file of
# its own: open_clip keeps them in its model config (``preprocess_cfg``), not in a processor file, and runs them with
# torchvision, whose arithmetic differs from transformers' in one place: the centre crop's offset is rounded
# (``int(round((h - crop) / 2))``), not floored. ToTensor divides by 255 in float32.
OPEN_CLIP_PROCESSOR_TYPE = "OpenClipImageProcessor"
OPEN_CLIP_RESIZE_MODES = ("squash", "shortest")
OPEN_CLIP_INTERPOLATIONS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}
PROCESSOR_TYPES = CLIP_PROCESSOR_TYPES | SIGLIP_PROCESSOR_TYPES | {OPEN_CLIP_PROCESSOR_TYPE}


@dataclass(frozen=True, eq=False)
class ImageSteps:
    """CLIPImageProcessor's steps, read from its ``preprocessor_config.json``, in Pillow and numpy.

    The arithmetic is that of transformers' PIL backend (``CLIPImageProcessorPil``, what ``AutoImageProcessor`` gives
    where torchvision is not installed, and what checked the exported graphs at build time): RGB conversion that
    composites transparency onto white; a Pillow resize of the 8-bit image, the long side ``int(size * long / short)``
    (truncated); a centre crop at ``(height - crop) // 2`` (zero padding when the image is smaller); rescale in float64
    then float32; normalisation in float32; channels first. Keys it does not use are ignored.
    """

    convert_rgb: bool
    shortest_edge: int | None  # resize so the shorter side is this long, keeping the aspect ratio
    resize_to: tuple[int, int] | None  # or resize to exactly (height, width)
    resample: Image.Resampling | None  # the resize filter
    crop: tuple[int, int] | None  # centre crop to (height, width)
    rescale: float | None
    mean: np.ndarray | None  # float32, one per channel; with std
    std: np.ndarray | None
    # "floor": transformers' centre crop offset ((h - crop) // 2); "round": torchvision's (open_clip)
    crop_offset: str = "floor"
    # "float64": transformers' rescale (float64 multiply, then float32); "float32": torchvision's ToTensor (x / 255)
    rescale_dtype: str = "float64"

    @classmethod
    def load(cls, path: Path, image_size: int) -> ImageSteps:
        steps = cls.from_config(_read_json(path), str(path))
        if steps.size != (image_size, image_size):
            made = "photos of different sizes" if steps.size is None else "{}x{} pixels".format(*steps.size)
            raise ModelNotFound(
                f"{path} makes {made}, but the image tower takes {image_size}x{image_size}; "
                "rebuild the model repository with build-model."
            )
        return steps

    @classmethod
    def from_config(cls, config: dict, where: str = PROCESSOR_FILE) -> ImageSteps:
        kind = config.get("image_processor_type") or config.get("feature_extractor_type")
        if kind is not None and kind not in PROCESSOR_TYPES:
            raise ModelNotFound(
                f"{where} describes a {kind}; this app reads CLIPImageProcessor, SiglipImageProcessor and open_clip "
                "settings only. Rebuild the model repository with build-model."
            )
        if kind == OPEN_CLIP_PROCESSOR_TYPE:
            return cls._from_open_clip(config, where)
        defaults = SIGLIP_DEFAULTS if kind in SIGLIP_PROCESSOR_TYPES else CLIP_DEFAULTS
        # As in transformers 5.24: a key the file leaves out takes the class default; a key set to null is None (a
        # step switched off), and a step that is on but lacks one of its values cannot run.
        cfg = {key: config.get(key, default) for key, default in defaults.items()}
        if cfg["do_pad"]:
            raise ModelNotFound(f"{where} asks for padding (do_pad), which this app does not do.")
        for flag, needs in (
            ("do_resize", ("size", "resample")),
            ("do_center_crop", ("crop_size",)),
            ("do_rescale", ("rescale_factor",)),
            ("do_normalize", ("image_mean", "image_std")),
        ):
            missing = [key for key in needs if cfg[flag] and cfg[key] is None]
            if missing:
                raise ModelNotFound(f"{where} sets {flag} but {' and '.join(missing)} is null.")
        shortest = resize_to = crop = resample = None
        if cfg["do_resize"]:
            shortest, resize_to = _resize_size(cfg["size"], bool(cfg["default_to_square"]), where)
            try:
                resample = Image.Resampling(cfg["resample"] if isinstance(cfg["resample"], int) else -1)
            except ValueError as err:
                raise ModelNotFound(f"{where}: resample {cfg['resample']!r} is not a Pillow filter number.") from err
        if cfg["do_center_crop"]:
            crop = _crop_size(cfg["crop_size"], where)
        rescale = None
        if cfg["do_rescale"]:
            rescale = cfg["rescale_factor"]
            if not isinstance(rescale, (int, float)) or isinstance(rescale, bool) or not rescale > 0:
                raise ModelNotFound(f"{where}: rescale_factor must be a positive number, not {rescale!r}.")
        mean = std = None
        if cfg["do_normalize"]:
            mean, std = (_per_channel(cfg[key], key, where) for key in ("image_mean", "image_std"))
        return cls(
            convert_rgb=bool(cfg["do_convert_rgb"]),
            shortest_edge=shortest,
            resize_to=resize_to,
            resample=resample,
            crop=crop,
            rescale=None if rescale is None else float(rescale),
            mean=mean,
            std=std,
        )

    @classmethod
    def _from_open_clip(cls, config: dict, where: str) -> ImageSteps:
        """open_clip's eval transform for ``resize_mode`` squash (resize to size x size) or shortest (shorter side
        to size, then a centre crop), then RGB, ToTensor and Normalize."""
        mode = config.get("resize_mode", "shortest")
        if mode not in OPEN_CLIP_RESIZE_MODES:
            raise ModelNotFound(
                f"{where}: open_clip resize_mode {mode!r} is not one this app applies "
                f"({', '.join(OPEN_CLIP_RESIZE_MODES)})."
            )
        interpolation = config.get("interpolation", "bicubic")
        if interpolation not in OPEN_CLIP_INTERPOLATIONS:
            raise ModelNotFound(
                f"{where}: open_clip interpolation {interpolation!r} is not one this app applies "
                f"({', '.join(OPEN_CLIP_INTERPOLATIONS)})."
            )
        size = config.get("size", 224)
        height, width = (size, size) if isinstance(size, int) else tuple(size) if len(size) == 2 else (0, 0)
        height, width = _positive(height, "size", where), _positive(width, "size", where)
        if mode == "shortest" and height != width:
            raise ModelNotFound(f"{where}: open_clip's shortest-side resize of a non-square size is not supported.")
        squash = mode == "squash"
        return cls(
            convert_rgb=True,
            shortest_edge=None if squash else height,
            resize_to=(height, width) if squash else None,
            resample=OPEN_CLIP_INTERPOLATIONS[interpolation],
            crop=None if squash else (height, width),
            rescale=1 / 255,
            mean=_per_channel(config.get("image_mean"), "image_mean", where),
            std=_per_channel(config.get("image_std"), "image_std", where),
            crop_offset="round",
            rescale_dtype="float32",
        )

    def describe(self) -> dict:
        """The steps in words and numbers, for the model card: what a reader needs to reproduce them."""
        resize = "none"
        if self.resize_to is not None:
            resize = "squash"
        elif self.shortest_edge is not None:
            resize = "shortest-side" + ("+center-crop" if self.crop else "")
        return {
            "resize": resize,
            "image_size": list(self.size) if self.size else None,
            "shortest_edge": self.shortest_edge,
            "interpolation": self.resample.name.lower() if self.resample is not None else None,
            "crop": list(self.crop) if self.crop else None,
            "crop_offset": self.crop_offset,
            "rescale": self.rescale,
            "mean": None if self.mean is None else [round(float(v), 8) for v in self.mean],
            "std": None if self.std is None else [round(float(v), 8) for v in self.std],
        }

    @property
    def size(self) -> tuple[int, int] | None:
        """(height, width) of every output, or None when it depends on the photo."""
        return self.crop or self.resize_to

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) after the resize step, as transformers' ``get_resize_output_image_size`` computes it."""
        if self.resize_to is not None:
            return self.resize_to
        if self.shortest_edge is None:
            return height, width
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(self.shortest_edge * long / short)
        return (new_long, self.shortest_edge) if width <= height else (self.shortest_edge, new_long)

    def __call__(self, image: Image.Image) -> np.ndarray:
        """One photo as a (3, height, width) array."""
        if self.convert_rgb:
            image = to_rgb(image)
        elif image.mode != "RGB":
            raise InvalidInput(f"This model's processor takes RGB photos only, not mode {image.mode}.")
        if self.shortest_edge is not None or self.resize_to is not None:
            height, width = self.resized_size(image.height, image.width)
            image = image.resize((width, height), resample=self.resample)
        pixels = np.asarray(image)  # (height, width, 3) uint8
        if self.crop is not None:
            pixels = center_crop(pixels, *self.crop, rounded=self.crop_offset == "round")
        if self.rescale is not None:
            if self.rescale_dtype == "float32":  # torchvision's ToTensor: float32 x / 255
                pixels = pixels.astype(np.float32) / np.float32(1 / self.rescale)
            else:
                pixels = (pixels.astype(np.float64) * self.rescale).astype(np.float32)
        if self.mean is not None:
            if not np.issubdtype(pixels.dtype, np.floating):
                pixels = pixels.astype(np.float32)
            pixels = (pixels - self.mean) / self.std
        return pixels.transpose(2, 0, 1)


def center_crop(pixels: np.ndarray, height: int, width: int, rounded: bool = False) -> np.ndarray:
    """The centre (height, width) of a (h, w, c) array, zero-padded where the image is smaller.

    ``rounded``: torchvision's offset, ``int(round((h - height) / 2))`` (Python rounds halves to even), after padding
    a smaller image as torchvision pads it; otherwise transformers' ``(h - height) // 2``.
    """
    h, w = pixels.shape[:2]
    if rounded:
        if height > h or width > w:  # torchvision pads (left/top: floor, right/bottom: ceil), then crops
            pad_h, pad_w = max(0, height - h), max(0, width - w)
            pixels = np.pad(
                pixels, ((pad_h // 2, (pad_h + 1) // 2), (pad_w // 2, (pad_w + 1) // 2), (0, 0)), constant_values=0
            )
            h, w = pixels.shape[:2]
        top, left = round((h - height) / 2.0), round((w - width) / 2.0)  # Python's round: half to even
        return pixels[top : top + height, left : left + width]
    top, left = (h - height) // 2, (w - width) // 2
    if top >= 0 and left >= 0 and top + height <= h and left + width <= w:
        return pixels[top : top + height, left : left + width]
    new_h, new_w = max(height, h), max(width, w)
    padded = np.zeros((new_h, new_w, *pixels.shape[2:]), dtype=pixels.dtype)
    pad_top, pad_left = math.ceil((new_h - h) / 2), math.ceil((new_w - w) / 2)
    padded[pad_top : pad_top + h, pad_left : pad_left + w] = pixels
    top, left = top + pad_top, left + pad_left
    return padded[max(0, top) : min(new_h, top + height), max(0, left) : min(new_w, left + width)]


def _resize_size(size: object, default_to_square: bool, where: str) -> tuple[int | None, tuple[int, int] | None]:
    """(shortest_edge, None) or (None, (height, width)) from the forms CLIPImageProcessor accepts."""
    if isinstance(size, dict):
        keys = set(size)
        if keys == {"shortest_edge"}:
            return _positive(size["shortest_edge"], "size", where), None
        if keys == {"height", "width"}:
            return None, (_positive(size["height"], "size", where), _positive(size["width"], "size", where))
    elif isinstance(size, int) and not isinstance(size, bool):
        side = _positive(size, "size", where)
        return (None, (side, side)) if default_to_square else (side, None)
    elif isinstance(size, (list, tuple)) and len(size) == 2:
        return None, (_positive(size[0], "size", where), _positive(size[1], "size", where))
    raise ModelNotFound(
        f"{where}: size {size!r} is not one this app can apply "
        "(use {'shortest_edge': N}, {'height': H, 'width': W} or an int)."
    )


def _crop_size(size: object, where: str) -> tuple[int, int]:
    if isinstance(size, dict) and set(size) == {"height", "width"}:
        return _positive(size["height"], "crop_size", where), _positive(size["width"], "crop_size", where)
    if isinstance(size, int) and not isinstance(size, bool):
        side = _positive(size, "crop_size", where)
        return side, side
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return _positive(size[0], "crop_size", where), _positive(size[1], "crop_size", where)
    raise ModelNotFound(f"{where}: crop_size {size!r} is not one this app can apply (use {{'height': H, 'width': W}}).")


def _positive(value: object, key: str, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise ModelNotFound(f"{where}: {key} must be a positive whole number of pixels, not {value!r}.")


def _per_channel(value: object, key: str, where: str) -> np.ndarray:
    values = [value] * 3 if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    try:
        array = np.array(values, dtype=np.float32)
    except (TypeError, ValueError):
        array = np.zeros(0, np.float32)
    if array.shape != (3,) or (key == "image_std" and not np.all(array != 0)):
        nonzero = ", none of them zero" if key == "image_std" else ""
        raise ModelNotFound(
            f"{where}: {key} must be one number or three (one per RGB channel){nonzero}, not {value!r}."
        )
    return array


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise ModelNotFound(f"{path} is missing; rebuild the model repository with build-model.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelNotFound(f"{path} cannot be read ({err}); rebuild the model repository with build-model.") from err
    if not isinstance(data, dict):
        raise ModelNotFound(f"{path} is not a JSON object; rebuild the model repository with build-model.")
    return data


# ------------------------------------------------------------------------------------------------------- preprocessor
class Preprocessor:
    """Tokenizer and image steps from the model repository, loaded once on first use.

    Only ``tokenizers``, Pillow and numpy: serving imports neither transformers nor torch. The results equal those of
    transformers' ``AutoTokenizer`` and (PIL backend) ``CLIPImageProcessor`` loaded from the same files
    (tests/query/test_preprocess.py).
    """

    def __init__(self, repo: Path, card: mr.ModelCard) -> None:
        self.repo = Path(repo)
        self.card = card
        self._text: TextSteps | None = None
        self._image: ImageSteps | None = None
        self._lock = threading.Lock()

    def _load(self) -> None:
        with self._lock:
            if self._text is not None:
                return
            image = ImageSteps.load(mr.processor_dir(self.repo) / PROCESSOR_FILE, int(self.card.image_size))
            self._text = TextSteps.load(mr.tokenizer_dir(self.repo), int(self.card.text_max_length))
            self._image = image

    def tokenize(self, texts: list[str]) -> dict[str, np.ndarray]:
        """One padded batch: to the bucket of the longest text, or to ``text_max_length`` for a fixed-length graph."""
        rows = self._token_rows(texts)
        return self._pad(rows, self._width(max((len(ids) for ids, _ in rows), default=0)))

    def tokenize_groups(self, texts: list[str]) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """Texts grouped by padded width, as (indices into ``texts``, batch) pairs.

        Why: a batch costs its longest text times its size, and product texts run from 5 to 77 tokens; grouping them
        by bucket keeps a few long ones from making every short one pay for their padding.
        """
        rows = self._token_rows(texts)
        widths = np.array([self._width(len(ids)) for ids, _ in rows])
        groups = []
        for width in np.unique(widths):
            index = np.flatnonzero(widths == width)
            groups.append((index, self._pad([rows[i] for i in index], int(width))))
        return groups

    def _token_rows(self, texts: list[str]) -> list[tuple[list[int], list[int]]]:
        if not texts:
            return []
        self._load()
        return self._text.rows(list(texts))

    def _width(self, length: int) -> int:
        """Padded width for a text of ``length`` tokens: a multiple of TEXT_LENGTH_BUCKET, so queries share shapes
        (Triton batches only equal shapes), never past what the graph takes."""
        limit = self.card.text_max_length
        if not self.card.text_dynamic_length:
            return limit
        return min(limit, max(1, -(-length // TEXT_LENGTH_BUCKET)) * TEXT_LENGTH_BUCKET)

    def _pad(self, rows: list[tuple[list[int], list[int]]], width: int) -> dict[str, np.ndarray]:
        self._load()
        ids = np.full((len(rows), width), self._text.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        left = self._text.padding_left
        for i, (row_ids, row_mask) in enumerate(rows):
            n = len(row_ids)
            cols = slice(width - n, width) if left else slice(0, n)
            ids[i, cols] = row_ids
            mask[i, cols] = row_mask
        return {"input_ids": ids, "attention_mask": mask}

    def pixels(self, images: list[Image.Image]) -> np.ndarray:
        """(n, 3, height, width) float32 pixel values for the image tower."""
        self._load()
        steps = self._image
        out = np.empty((len(images), 3, *steps.size), dtype=np.float32)
        for i, image in enumerate(images):
            out[i] = steps(image)
        return out
