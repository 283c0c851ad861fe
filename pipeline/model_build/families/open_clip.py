"""open_clip models: ``hf-hub:ORG/NAME``, an open_clip architecture with ``--pretrained`` (a tag or a weights file),
or a local folder in open_clip's hub layout (``open_clip_config.json``, ``open_clip_model.safetensors`` or
``open_clip_pytorch_model.bin``, and the tokenizer files when the config names an HF tokenizer).

Loaded with open_clip's own factory (``create_model``, ``get_tokenizer``); open_clip is imported beside a
torchvision stand-in (``torchvision_standin.py`` says exactly why). open_clip's image transforms are torchvision
code, so they are not run: the parameters open_clip records on the model (``visual.preprocess_cfg``: size, resize
mode, interpolation, mean, std) are written to the processor file, and the client applies them with Pillow and
numpy the way torchvision does.
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

from ...errors import ModelNotFound
from ...query.preprocess import OPEN_CLIP_PROCESSOR_TYPE
from .base import Loaded, inert_mask, local_revision, normalised
from .hub import hub_error, require_hub
from .tokenizer_files import clean_normalizers, prepend_normalizers, sentencepiece_tokenizer_json

CONFIG_FILE = "open_clip_config.json"
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
HF_HUB = "hf-hub:"
TOKENIZER_JSON = "tokenizer.json"


def is_open_clip_folder(folder: Path) -> bool:
    return (Path(folder) / CONFIG_FILE).is_file()


def architectures() -> set[str]:
    """open_clip's built-in architecture names (its model_configs/*.json), read without importing open_clip."""
    try:
        files = importlib.metadata.files("open_clip_torch") or []
    except importlib.metadata.PackageNotFoundError:
        return set()
    prefix = "open_clip/model_configs/"
    return {Path(str(f)).stem for f in files if str(f).startswith(prefix) and str(f).endswith(".json")}


def import_open_clip():
    """open_clip, imported with the torchvision stand-in where the real torchvision cannot be imported."""
    import transformers  # noqa: F401 - before the stand-in exists, so transformers never sees it

    from .torchvision_standin import torchvision_standin

    try:
        with torchvision_standin():
            import open_clip
    except ImportError as err:
        raise ModelNotFound(
            f"open_clip cannot be imported ({err}); install the build requirements (requirements-build.txt, and "
            "requirements-nodeps.txt with --no-deps)."
        ) from err
    return open_clip


def _spec(source: str, pretrained: str | None, revision: str | None) -> tuple[str, str | None, str, str]:
    """(open_clip model name, pretrained, revision for the card, display name), refusing what cannot work."""
    local = Path(source).expanduser()
    if local.is_dir():
        if pretrained:
            raise ModelNotFound("--pretrained goes with an open_clip architecture name, not with a model folder.")
        if not is_open_clip_folder(local):
            raise ModelNotFound(f"{source} has no {CONFIG_FILE}: it is not a folder in open_clip's hub layout.")
        if not any((local / name).is_file() for name in WEIGHT_FILES):
            raise ModelNotFound(f"{source} has {CONFIG_FILE} but no weights ({' or '.join(WEIGHT_FILES)}).")
        return f"local-dir:{local.resolve()}", None, local_revision(local), local.name
    if source.startswith(HF_HUB):
        if pretrained:
            raise ModelNotFound("--pretrained goes with an open_clip architecture name, not with an hf-hub: source.")
        if revision:
            raise ModelNotFound(
                "open_clip loads an hf-hub: model at the hub's main revision; --revision cannot be honoured. "
                "Download the revision into a folder and pass the folder."
            )
        repo_id = source[len(HF_HUB) :]
        require_hub(source)
        try:
            from huggingface_hub import HfApi

            rev = HfApi().model_info(repo_id).sha or "main"
        except Exception as err:  # huggingface_hub raises its own errors for unknown repos and network trouble
            raise hub_error(source, str(err).splitlines()[0][:200]) from err
        return source, None, rev, repo_id.split("/")[-1]
    if not pretrained:
        raise ModelNotFound(
            f"{source} is an open_clip architecture: name its weights with --pretrained (a tag such as webli, or a "
            "weights file)."
        )
    weights = Path(pretrained).expanduser()
    if weights.is_file():
        rev = "local-" + _file_digest(weights)
    else:
        require_hub(f"{source} --pretrained {pretrained}")
        rev = pretrained
    return source, str(weights) if weights.is_file() else pretrained, rev, f"{source}-{weights.stem or pretrained}"


def _file_digest(path: Path) -> str:
    from ... import model_repo as mr

    return mr.sha256_file(path)[:12]


def _towers(model):
    import torch

    # Normalised as x / |x| (not open_clip's F.normalize, whose clamp exports as a Clip node: in the FP16 text graph
    # that node made onnxruntime 1.32's NchwcTransformer crash the process when the session was created).
    class TextTower(torch.nn.Module):
        """open_clip's ``encode_text(ids)``, L2-normalised; the mask input is part of the shared contract only:
        open_clip's text towers mask by themselves (causal mask, or the pad id)."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return normalised(self.model.encode_text(inert_mask(input_ids, attention_mask)))

    class VisualTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values):
            return normalised(self.model.encode_image(pixel_values))

    return TextTower().eval(), VisualTower().eval()


def _text_is_padding_invariant(model) -> bool:
    """Causal attention pooled at the end-of-text token: tokens after it (padding) cannot change the embedding."""
    text = getattr(model, "text", model)
    pool = getattr(text, "pool_type", getattr(model, "text_pool_type", None))
    causal = getattr(text, "attn_mask", None) is not None
    return pool in ("argmax", "eos") and causal and getattr(text, "cls_emb", None) is None


def _clip_bpe_tokenizer(open_clip, context_length: int):
    """open_clip's SimpleTokenizer vocabulary (the CLIP BPE file it ships) as a transformers CLIPTokenizer.

    open_clip pads with id 0, which is the token "!": made the pad token, "!" would be split off as a special token.
    The client pads with end-of-text instead, as Hugging Face's CLIP does; only padding-invariant text towers
    (causal attention pooled at the first end-of-text) get this tokenizer, and the build checks that padding changes
    nothing."""
    import gzip

    from transformers import CLIPTokenizer

    from .clip_bpe import bpe_vocab_and_merges

    with gzip.open(open_clip.tokenizer.default_bpe(), "rt", encoding="utf-8") as fh:
        vocab, merges = bpe_vocab_and_merges(fh.read())
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=context_length)


def load(source: str, revision: str | None, pretrained: str | None = None) -> Loaded:
    name, weights, rev, display = _spec(source, pretrained, revision)
    open_clip = import_open_clip()
    import torch

    try:
        model = open_clip.create_model(name, pretrained=weights, load_weights=True, require_pretrained=True).eval()
        tokenizer = open_clip.get_tokenizer(name)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise ModelNotFound(f"open_clip could not load {source}: {str(err).splitlines()[0][:300]}") from err
    cfg = dict(model.visual.preprocess_cfg)
    size = cfg.get("size", 224)
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    if height != width:
        raise ModelNotFound(f"{source} takes {height}x{width} images; build-model exports square image towers only.")
    text_cfg = (open_clip.get_model_config(name) or {}) if not name.startswith(("local-dir:", HF_HUB)) else {}
    if name.startswith("local-dir:"):
        text_cfg = json.loads((Path(name[len("local-dir:") :]) / CONFIG_FILE).read_text())["model_cfg"]
    text_cfg = text_cfg.get("text_cfg", {})
    tok_kwargs = dict(text_cfg.get("tokenizer_kwargs", {}))
    length = int(tokenizer.context_length)
    text, visual = _towers(model)
    with torch.no_grad():
        dim = int(visual(torch.zeros(1, 3, height, width)).shape[-1])

    if isinstance(tokenizer, open_clip.tokenizer.HFTokenizer):
        if tokenizer.strip_sep_token or tokenizer.tokenizer_mode:
            raise ModelNotFound(f"{source}: open_clip's strip_sep_token and tokenizer_mode are not supported.")
        hf = tokenizer.tokenizer
        dynamic = unpadded = False

        def save_tokenizer(folder: Path) -> None:
            hf.model_max_length = length
            hf.save_pretrained(folder)
            path = Path(folder) / TOKENIZER_JSON
            if not getattr(hf, "is_fast", False):
                sentencepiece_tokenizer_json(hf, path, str(hf.eos_token))
            prepend_normalizers(path, clean_normalizers(tok_kwargs.get("clean", "whitespace")))

    elif type(tokenizer) is open_clip.tokenizer.SimpleTokenizer:
        if tokenizer.reduction_fn is not None:
            raise ModelNotFound(f"{source}: open_clip's token reduction (reduction_mask) is not supported.")
        hf = _clip_bpe_tokenizer(open_clip, length)
        if not _text_is_padding_invariant(model):
            raise ModelNotFound(
                f"{source}: a text tower on open_clip's BPE tokenizer that is not causal with end-of-text pooling "
                "is not supported (it would need open_clip's zero padding)."
            )
        # open_clip's CLIP class adds all context_length position embeddings (fixed length); its TextTransformer
        # (CustomTextCLIP) slices them to the sequence (any length).
        dynamic = isinstance(model, open_clip.CustomTextCLIP)
        unpadded = True

        def save_tokenizer(folder: Path) -> None:
            hf.save_pretrained(folder)
            prepend_normalizers(Path(folder) / TOKENIZER_JSON, clean_normalizers(tok_kwargs.get("clean", "lower")))

    else:
        raise ModelNotFound(f"{source}: open_clip's {type(tokenizer).__name__} is not supported by build-model.")

    def reference_tokens(texts: list[str]) -> list[list[int]]:
        rows = tokenizer(list(texts)).tolist()
        if not unpadded:
            return rows
        return [row[: max(i for i, t in enumerate(row) if t != 0) + 1] for row in rows]  # zeros after end-of-text

    processor = {
        "image_processor_type": OPEN_CLIP_PROCESSOR_TYPE,
        "size": height,
        "resize_mode": cfg.get("resize_mode", "shortest"),
        "interpolation": cfg.get("interpolation", "bicubic"),
        "image_mean": list(cfg.get("mean")),
        "image_std": list(cfg.get("std")),
        "fill_color": cfg.get("fill_color", 0),
    }
    return Loaded(
        family="open_clip",
        name=display,
        revision=rev,
        text_tower=text,
        visual_tower=visual,
        embedding_dim=dim,
        text_length=length,
        text_dynamic_length=dynamic,
        image_size=height,
        save_tokenizer=save_tokenizer,
        processor_config=processor,
        reference_tokens=reference_tokens,
        reference_unpadded=unpadded,
        extra={"open_clip": {"model": name, "pretrained": pretrained, "preprocess_cfg": cfg}},
    )
