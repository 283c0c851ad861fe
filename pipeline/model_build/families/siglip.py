"""transformers ``SiglipModel`` checkpoints: SigLIP and the fixed-resolution SigLIP 2 checkpoints (a hub id or a
folder saved with ``save_pretrained``).

SigLIP's text tower was trained on token ids padded to a fixed length (64) with no attention mask, and pools the last
position: so the exported text tower takes exactly ``max_position_embeddings`` tokens and ignores the mask input (kept
for the shared contract). Its image processor squashes the photo to the tower's size (no crop), mean and std 0.5.
The NaFlex SigLIP 2 checkpoints (``Siglip2Model``) take patch sequences of varying length and are refused.
"""

from __future__ import annotations

import json
from pathlib import Path

from ...errors import ModelNotFound
from .base import Loaded
from .clip import hf_reference_tokens, load_pretrained, towers
from .tokenizer_files import clean_normalizers, prepend_normalizers, sentencepiece_tokenizer_json

TOKENIZER_JSON = "tokenizer.json"


def is_siglip_folder(folder: Path) -> str | None:
    """The ``model_type`` of a transformers checkpoint folder if it is a SigLIP one, else None."""
    config = Path(folder) / "config.json"
    if not config.is_file():
        return None
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError):
        return None
    return model_type if model_type in ("siglip", "siglip2") else None


def refuse_naflex(source: str) -> None:
    raise ModelNotFound(
        f"{source} is a SigLIP 2 NaFlex checkpoint (Siglip2Model), whose image tower takes patch sequences of varying "
        "length; build-model exports fixed-resolution towers: use a fixed-resolution SigLIP 2 checkpoint "
        "(SiglipModel, e.g. google/siglip2-base-patch16-224) or its open_clip version."
    )


def load(source: str, revision: str | None) -> Loaded:
    from transformers import SiglipImageProcessor, SiglipModel

    model, tokenizer, processor, rev = load_pretrained(source, revision, SiglipModel, SiglipImageProcessor, "SigLIP")
    length = int(model.config.text_config.max_position_embeddings)
    text, visual = towers(model, {"use_mask": False})
    slow = not getattr(tokenizer, "is_fast", False)

    def save_tokenizer(folder: Path) -> None:
        tokenizer.model_max_length = length
        tokenizer.save_pretrained(folder)
        if slow:  # SiglipTokenizer: sentencepiece, with its canonicalisation done in Python
            path = Path(folder) / TOKENIZER_JSON
            sentencepiece_tokenizer_json(tokenizer, path, str(tokenizer.eos_token))
            canon = clean_normalizers("canonicalize")
            if not getattr(tokenizer, "do_lower_case", True):
                canon = [n for n in canon if n["type"] != "Lowercase"]
            prepend_normalizers(path, canon)

    size = int(model.config.vision_config.image_size)
    return Loaded(
        family="siglip",
        name=Path(source).name if Path(source).is_dir() else source.rstrip("/").split("/")[-1],
        revision=rev,
        text_tower=text,
        visual_tower=visual,
        embedding_dim=int(model.config.text_config.projection_size or model.config.text_config.hidden_size),
        text_length=length,
        text_dynamic_length=False,
        image_size=size,
        save_tokenizer=save_tokenizer,
        processor_config={**json.loads(processor.to_json_string()), "image_processor_type": "SiglipImageProcessor"},
        reference_tokens=hf_reference_tokens(tokenizer, length, pad=True),
        extra={"text_attention_mask": "ignored (SigLIP was trained on fixed-length padded ids without a mask)"},
    )
