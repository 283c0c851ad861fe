"""Model families ``build-model`` exports: each loads a checkpoint with its own library and returns a ``Loaded``.

* ``clip``: transformers ``CLIPModel`` (hub id or ``save_pretrained`` folder)
* ``siglip``: transformers ``SiglipModel`` (SigLIP, fixed-resolution SigLIP 2)
* ``open_clip``: ``hf-hub:ORG/NAME``, an architecture with ``--pretrained``, or a folder in open_clip's hub layout

``load`` picks the family from the source without downloading anything it does not need; a hub id without a prefix
is read by its ``config.json`` (``model_type``).
"""

from __future__ import annotations

from pathlib import Path

from ...errors import ModelNotFound
from .base import Loaded
from .hub import hub_error, require_hub

FAMILIES = ("clip", "siglip", "open_clip")


def family_of(source: str, pretrained: str | None = None, revision: str | None = None) -> str:
    from . import open_clip, siglip

    local = Path(source).expanduser()
    if local.is_dir():
        if open_clip.is_open_clip_folder(local):
            return "open_clip"
        kind = siglip.is_siglip_folder(local)
        if kind == "siglip2":
            siglip.refuse_naflex(source)
        return "siglip" if kind else "clip"
    if source.startswith((".", "/", "~")) or local.suffix:
        raise ModelNotFound(f"The model folder {source} does not exist.")
    if pretrained or source.startswith(open_clip.HF_HUB) or source in open_clip.architectures():
        return "open_clip"
    require_hub(source)
    try:
        from transformers import AutoConfig

        model_type = AutoConfig.from_pretrained(source, revision=revision or "main").model_type
    except (OSError, ValueError) as err:
        raise hub_error(source, str(err).splitlines()[0][:200]) from err
    if model_type == "siglip2":
        siglip.refuse_naflex(source)
    if model_type not in ("clip", "siglip"):
        raise ModelNotFound(f"{source} is a {model_type} checkpoint; build-model exports CLIP and SigLIP ones.")
    return model_type


def load(source: str, revision: str | None = None, pretrained: str | None = None) -> Loaded:
    family = family_of(source, pretrained, revision)
    if family == "open_clip":
        from .open_clip import load as load_open_clip

        return load_open_clip(source, revision, pretrained)
    if pretrained:
        raise ModelNotFound("--pretrained goes with an open_clip architecture name.")
    if family == "siglip":
        from .siglip import load as load_siglip

        return load_siglip(source, revision)
    from .clip import load as load_clip

    return load_clip(source, revision)


__all__ = ["FAMILIES", "Loaded", "family_of", "load"]
