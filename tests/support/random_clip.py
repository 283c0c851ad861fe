"""A CLIP with random weights but the real tokenizer and preprocessing, saved like a hub checkpoint.

The model hub cannot be reached on the machines that run our tests and benchmarks, and no package ships pretrained CLIP
weights. ``build-model`` must still be exercised on the real loading path (``from_pretrained`` on a folder), so the
tests and benchmarks build a CLIP from a ``CLIPConfig`` (tiny for tests, ViT-B/32-shaped for benchmarks) and save it
with ``save_pretrained``, together with a CLIP tokenizer made from the real BPE vocabulary that ships inside the
``open_clip_torch`` wheel (installed with ``--no-deps``; only its data file is read).
"""

from __future__ import annotations

import gzip
import importlib.metadata
from pathlib import Path

from pipeline.errors import ModelNotFound

BPE_FILE = "open_clip/bpe_simple_vocab_16e6.txt.gz"


def bpe_vocab_path() -> Path:
    try:
        dist = importlib.metadata.distribution("open_clip_torch")
    except importlib.metadata.PackageNotFoundError as err:
        raise ModelNotFound(
            "The CLIP BPE vocabulary comes from the open_clip_torch wheel: "
            "install it with 'pip install --no-deps open_clip_torch==3.3.0'."
        ) from err
    return Path(dist.locate_file(BPE_FILE))


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-to-printable-character table (so BPE never sees whitespace or control bytes)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def clip_tokenizer():
    """The original CLIP tokenizer (49,408 tokens), built from the BPE merges as OpenAI's SimpleTokenizer does."""
    from transformers import CLIPTokenizer

    with gzip.open(bpe_vocab_path(), "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(_bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    # transformers 5: the keyword names are vocab=/merges=; vocab_file=/merges_file= silently gave wrong ids.
    return CLIPTokenizer(vocab={tok: i for i, tok in enumerate(vocab)}, merges=merges, model_max_length=77)


def save_random_clip(out: Path, size: str = "tiny", seed: int = 0) -> Path:
    """Save a random-weight CLIP (``tiny`` for tests, ``vit-b-32`` for benchmarks) with tokenizer and processor."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    if size == "tiny":
        text = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_hidden_layers": 2}
        vision = {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "image_size": 64,
            "patch_size": 16,
        }
        projection_dim = 32
    elif size == "vit-b-32":
        text = {"hidden_size": 512, "intermediate_size": 2048, "num_attention_heads": 8, "num_hidden_layers": 12}
        vision = {
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_attention_heads": 12,
            "num_hidden_layers": 12,
            "image_size": 224,
            "patch_size": 32,
        }
        projection_dim = 512
    else:
        raise ValueError(f"unknown size {size!r}; use 'tiny' or 'vit-b-32'")
    torch.manual_seed(seed)
    text.update(
        vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407
    )
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)
    model = CLIPModel(config).eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    clip_tokenizer().save_pretrained(out)
    side = vision["image_size"]
    CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side}).save_pretrained(out)
    return out
