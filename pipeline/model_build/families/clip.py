"""transformers ``CLIPModel`` checkpoints (a hub id or a folder saved with ``save_pretrained``)."""

from __future__ import annotations

import json
from pathlib import Path

from ...errors import ModelNotFound
from .base import Loaded, inert_mask, local_revision, normalised
from .hub import hub_error


def towers(model, text_kwargs: dict | None = None):
    """The library's ``get_text_features`` / ``get_image_features``, normalised, as two modules to trace.

    ``text_kwargs``: ``{"use_mask": False}`` for families whose text tower was trained without an attention mask.
    """
    import torch

    use_mask = (text_kwargs or {}).get("use_mask", True)

    class TextTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            if use_mask:
                return normalised(self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))
            return normalised(self.model.get_text_features(input_ids=inert_mask(input_ids, attention_mask)))

    class VisualTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values):
            return normalised(self.model.get_image_features(pixel_values=pixel_values))

    return TextTower().eval(), VisualTower().eval()


def load_pretrained(source: str, revision: str | None, model_class, processor_class, what: str):
    """``from_pretrained`` of model, tokenizer and image processor (a folder or a hub id); one sentence on failure."""
    from transformers import AutoTokenizer

    local = Path(source).expanduser()
    is_local = local.is_dir()
    where = str(local if is_local else source)
    kwargs = {} if is_local else {"revision": revision or "main"}
    try:
        model = model_class.from_pretrained(where, **kwargs).eval()
        tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
        processor = processor_class.from_pretrained(where, **kwargs)
    except (OSError, ValueError, ImportError) as err:
        if is_local:
            raise ModelNotFound(
                f"{source} is not a {what} checkpoint saved with save_pretrained (config, weights, tokenizer and "
                f"preprocessor files): {str(err).splitlines()[0]}"
            ) from err
        raise hub_error(source, str(err).splitlines()[0][:200]) from err
    rev = local_revision(local) if is_local else getattr(model.config, "_commit_hash", None) or revision or "main"
    return model, tokenizer, processor, rev


def hf_reference_tokens(tokenizer, length: int, pad: bool):
    def tokens(texts: list[str]) -> list[list[int]]:
        padding = "max_length" if pad else False
        out = tokenizer(list(texts), padding=padding, truncation=True, max_length=length)
        return [list(row) for row in out["input_ids"]]

    return tokens


def load(source: str, revision: str | None) -> Loaded:
    from transformers import CLIPImageProcessor, CLIPModel

    model, tokenizer, processor, rev = load_pretrained(source, revision, CLIPModel, CLIPImageProcessor, "CLIP")
    length = int(model.config.text_config.max_position_embeddings)
    text, visual = towers(model)

    def save_tokenizer(folder: Path) -> None:
        tokenizer.model_max_length = length
        tokenizer.save_pretrained(folder)

    return Loaded(
        family="clip",
        name=Path(source).name if Path(source).is_dir() else source.rstrip("/").split("/")[-1],
        revision=rev,
        text_tower=text,
        visual_tower=visual,
        embedding_dim=int(model.config.projection_dim),
        text_length=length,
        text_dynamic_length=True,
        image_size=int(model.config.vision_config.image_size),
        save_tokenizer=save_tokenizer,
        processor_config={**json.loads(processor.to_json_string()), "image_processor_type": "CLIPImageProcessor"},
        reference_tokens=hf_reference_tokens(tokenizer, length, pad=False),
        reference_unpadded=True,
    )
