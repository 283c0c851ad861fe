"""Small random-weight checkpoints of the other families, saved as their libraries save them (no hub here).

* ``save_random_siglip``: a transformers ``SiglipModel`` from ``SiglipConfig`` (whose defaults are SigLIP base/16)
  made small, with a ``SiglipTokenizer`` whose sentencepiece model the test trains on product texts (the real one,
  ``spiece.model`` of google/siglip-*, lives on the hub) and a ``SiglipImageProcessor``.
* ``save_random_open_clip``: a folder in open_clip's hub layout from open_clip's own ``ViT-B-16-SigLIP`` config
  made small (timm's ``test_vit`` trunk, the same MAP-pooled ViT code; a 2-layer text tower), squash resize,
  mean/std 0.5 and a fixed text length of 64, with an HF tokenizer (a T5-style unigram tokenizer the test trains) in
  the folder, as the config names one; or (``tokenizer="clip"``) a CLIP-style config on open_clip's own BPE
  SimpleTokenizer (``ViT-B-32`` made small).
``size="base"`` keeps the real shapes (for the benchmark), vocabulary size included: the token embedding table is part
of a tower's size and memory, while the tokenizer the test trains only ever emits the first few hundred ids. With
``arch`` any SigLIP-style open_clip config it ships (``ViT-L-16-SigLIP-384``, ``ViT-B-16-SigLIP2``, ...) is built at
its real shape the same way (bench.model_table).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CORPUS = REPO_ROOT / "assets" / "demo_catalog" / "catalog.jsonl"


def product_texts() -> list[str]:
    rows = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
    return [f"{r.get('name', '')} {r.get('text') or r.get('description') or ''}" for r in rows]


def train_spiece(out: Path, vocab_size: int = 400, lower: bool = True) -> Path:
    """A sentencepiece unigram model trained on product texts (ids: pad 0, eos 1, unk 2), as SigLIP's is laid out."""
    import sentencepiece as spm

    texts = [t.lower() if lower else t for t in product_texts()] * 4
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=buf,
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        character_coverage=1.0,
        minloglevel=2,
    )
    out = Path(out)
    out.write_bytes(buf.getvalue())
    return out


def save_random_siglip(out: Path, size: str = "tiny", seed: int = 0) -> Path:
    import torch
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipTokenizer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = SiglipTokenizer(str(train_spiece(out / "train-spiece.model")), model_max_length=64)
    (out / "train-spiece.model").unlink()
    base = SiglipConfig()  # SigLIP base/16 at 224
    text, vision = base.text_config.to_dict(), base.vision_config.to_dict()
    text.update(vocab_size=len(tokenizer), max_position_embeddings=64, pad_token_id=1, eos_token_id=1)
    if size == "tiny":
        small = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2, "num_hidden_layers": 2}
        text.update(small, projection_size=64)
        vision.update(small, image_size=64, patch_size=16)
    torch.manual_seed(seed)
    model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    side = vision["image_size"]
    SiglipImageProcessor(size={"height": side, "width": side}).save_pretrained(out)
    return out


def t5_style_tokenizer(out: Path):
    """A T5-style fast tokenizer (sentencepiece unigram, ``</s>`` appended, pad ``<pad>``) trained on product texts:
    the kind open_clip's SigLIP configs name (timm/ViT-B-16-SigLIP is a T5 tokenizer)."""
    from transformers import SiglipTokenizer
    from transformers.convert_slow_tokenizer import SpmConverter

    spiece = train_spiece(Path(out) / "t5-spiece.model")
    slow = SiglipTokenizer(str(spiece), do_lower_case=False)
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    fast = SpmConverter(slow).converted()
    fast.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    spiece.unlink()
    return PreTrainedTokenizerFast(tokenizer_object=fast, eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


def open_clip_model_config(kind: str, size: str, arch: str | None = None) -> dict:
    """open_clip's own config for ``kind`` (ViT-B-16-SigLIP or ViT-B-32) or ``arch``; ``size="tiny"`` shrinks it."""
    from pipeline.model_build.families.open_clip import import_open_clip

    open_clip = import_open_clip()
    name = arch or ("ViT-B-16-SigLIP" if kind == "siglip" else "ViT-B-32")
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise ValueError(f"open_clip {open_clip.__version__} ships no config named {name!r}")
    if arch and size == "tiny":
        raise ValueError("arch= builds the real shape of that config; use size='base' with it")
    if size == "tiny":
        cfg["embed_dim"] = 64
        cfg["text_cfg"].update(width=64, heads=2, layers=2)
        if kind == "siglip":
            cfg["vision_cfg"].update(timm_model_name="test_vit", image_size=160)  # the size timm builds it for
        else:
            cfg["vision_cfg"].update(width=64, layers=2, head_width=32, image_size=64, patch_size=16)
    return cfg


def save_random_open_clip(
    out: Path, kind: str = "siglip", size: str = "tiny", seed: int = 0, arch: str | None = None
) -> Path:
    """``kind``: "siglip" (squash, 0.5 mean/std, fixed 64 tokens, HF tokenizer in the folder) or "clip"
    (shortest side + centre crop, OpenAI mean/std, open_clip's BPE tokenizer, dynamic length). ``arch``: the open_clip
    config to build at its real shape instead of ``kind``'s default (with ``size="base"``)."""
    import torch
    from safetensors.torch import save_file

    from pipeline.model_build.families.open_clip import import_open_clip

    open_clip = import_open_clip()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = open_clip_model_config(kind, size, arch)
    if kind == "siglip":
        tokenizer = t5_style_tokenizer(out)
        tokenizer.save_pretrained(out)
        # Tiny: a table as big as the trained vocabulary. Real shapes keep the config's (32,000 for SigLIP, 256,000
        # for SigLIP 2's Gemma vocabulary): what the real checkpoint's ONNX file weighs.
        vocab = len(tokenizer) if size == "tiny" else max(len(tokenizer), int(cfg["text_cfg"]["vocab_size"]))
        cfg["text_cfg"].update(vocab_size=vocab, hf_tokenizer_name="local-test/t5-style")
        preprocess = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic",
                      "resize_mode": "squash"}  # fmt: skip
    else:
        preprocess = {"mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD),
                      "interpolation": "bicubic", "resize_mode": "shortest"}  # fmt: skip
    preprocess["size"] = cfg["vision_cfg"]["image_size"]
    (out / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": preprocess}, indent=2))
    torch.manual_seed(seed)
    model = open_clip.create_model(f"local-dir:{out}", load_weights=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "open_clip_model.safetensors"))
    return out
