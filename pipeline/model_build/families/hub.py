"""Reaching the Hugging Face hub: one quick connection attempt, and one sentence when it fails."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

from ...errors import ModelNotFound


def hub_unreachable(timeout_s: float = 3.0) -> str | None:
    """Why the Hugging Face hub cannot be reached from here, or None. One quick connection attempt: without it,
    huggingface_hub retries for ~30 s and prints each retry twice before giving up."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return "HF_HUB_OFFLINE is set"
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT", "").strip() or "https://huggingface.co")
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as err:
        return f"{host} cannot be reached: {err.strerror or err}"
    return None


def hub_error(source: str, why: str) -> ModelNotFound:
    return ModelNotFound(
        f"Could not download '{source}' from the Hugging Face hub ({why}). "
        "Use a local CLIP folder saved with save_pretrained (--source /path/to/clip), a local open_clip or SigLIP "
        "folder, or the packaged offline model (--source offline)."
    )


def require_hub(source: str) -> None:
    if why := hub_unreachable():
        raise hub_error(source, why)
