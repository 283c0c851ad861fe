"""tokenizer.json for tokenizers that do not come with one, and text cleaning folded into it.

The client tokenizes with the ``tokenizers`` library alone (pipeline/query/preprocess.py), so every family must leave
a ``tokenizer.json`` that reproduces its own tokenizer, cleaning included: SigLIP's sentencepiece tokenizer and
open_clip's ``clean`` functions do part of their work in Python before the vocabulary is applied. That work becomes
normalizers placed in front of the tokenizer's own. The build then checks the file against the library's tokenizer
on ``base.CHECK_TEXTS`` and refuses a mismatch.

Not reproduced (Python-only steps, rare in product texts): ftfy's repair of mis-decoded text and ``html.unescape``
that open_clip's ``basic_clean`` applies.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

#: ASCII punctuation, as ``string.punctuation`` (what SigLIP's and open_clip's canonicalize remove), as a regex class
PUNCTUATION_CLASS = "[" + "".join("\\" + c for c in string.punctuation) + "]"


def clean_normalizers(clean: str) -> list[dict]:
    """tokenizers normalizers equal to open_clip's ``get_clean_fn(clean)`` (less ftfy and html.unescape) and to
    SigLIP's ``canonicalize_text`` (``canonicalize``)."""
    strip = {"type": "Strip", "strip_left": True, "strip_right": True}
    collapse = {"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": " "}
    if clean == "canonicalize":
        drop = {"type": "Replace", "pattern": {"Regex": PUNCTUATION_CLASS}, "content": ""}
        return [strip, {"type": "Lowercase"}, drop, collapse, strip]
    if clean == "lower":
        return [strip, collapse, strip, {"type": "Lowercase"}]
    if clean == "whitespace":
        return [strip, collapse, strip]
    raise ValueError(f"unknown clean function {clean!r}")


def prepend_normalizers(path: Path, normalizers: list[dict]) -> None:
    """Put ``normalizers`` in front of the normalizer of the tokenizer.json at ``path``."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    current = data.get("normalizer")
    tail = [] if current is None else current["normalizers"] if current["type"] == "Sequence" else [current]
    data["normalizer"] = {"type": "Sequence", "normalizers": [*normalizers, *tail]}
    Path(path).write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")


def sentencepiece_tokenizer_json(tokenizer, path: Path, eos_token: str) -> None:
    """A sentencepiece (slow) tokenizer as tokenizer.json: transformers' generic SpmConverter for the vocabulary,
    normaliser and pre-tokenizer, then the end-of-sequence token appended to each text (``X </s>``, SigLIP's
    ``build_inputs_with_special_tokens``)."""
    from tokenizers import processors
    from transformers.convert_slow_tokenizer import SpmConverter

    fast = SpmConverter(tokenizer).converted()
    eos_id = fast.token_to_id(eos_token)
    fast.post_processor = processors.TemplateProcessing(
        single=f"$A {eos_token}", pair=f"$A {eos_token} $B {eos_token}", special_tokens=[(eos_token, eos_id)]
    )
    fast.save(str(path))
