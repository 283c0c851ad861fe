"""The original CLIP BPE vocabulary (``bpe_simple_vocab_16e6.txt.gz``) as the vocabulary and merges transformers'
``CLIPTokenizer`` takes, built as OpenAI's and open_clip's ``SimpleTokenizer`` build it (49,408 tokens)."""

from __future__ import annotations


def bytes_to_unicode() -> dict[int, str]:
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


def bpe_vocab_and_merges(text: str) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """``text``: the unzipped BPE file. transformers 5: pass them as ``vocab=`` / ``merges=`` (the ``*_file``
    keyword names silently gave wrong ids)."""
    lines = text.split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab)}, merges
