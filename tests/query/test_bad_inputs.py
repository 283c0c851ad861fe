"""Every kind of input a public demo meets, caused for real (files made here) through the matcher and the page's
request handlers: a clear sentence or an answer, never a crash, and the pipeline still answering afterwards."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from app import handlers as h
from pipeline.errors import InvalidInput
from pipeline.ingestion.ingest import ingest
from pipeline.types import Filters

from ..conftest import shared


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.open(shared("seed_sample", "images", "Adidas-1.jpg")).convert("RGB")


@pytest.fixture
def seeded(pipeline):
    ingest(pipeline, shared("seed_sample", "catalog.jsonl"), progress=False)
    return pipeline


def _bytes(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def _png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` (a decompression bomb's calling card)."""
    data = bytearray(_bytes(Image.new("RGB", (8, 8)), "PNG"))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def _gif(photo) -> bytes:
    frames = [photo.resize((120, 90)), Image.new("RGB", (120, 90), (0, 255, 0))]
    return _bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


REFUSED = {
    "zero bytes": (lambda p: b"", "empty"),
    "random bytes named .jpg": (lambda p: np.random.default_rng(0).bytes(5000), "not a supported image"),
    "truncated JPEG": (lambda p: _bytes(p, "JPEG")[:4000], "not a supported image"),
    "PNG declaring 30000x30000": (lambda p: _png_declaring(30000, 30000), "pixels.* than we accept"),
    "SVG": (lambda p: b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "not a supported image"),
    "PDF": (lambda p: b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", "not a supported image"),
    "HEIC": (lambda p: b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\0" * 100, "not a supported image"),
    "EPS (never handed to Ghostscript)": (
        lambda p: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",
        "not a supported image",
    ),
}
ANSWERED = {
    "huge valid photo (downscaled)": lambda p: _bytes(p.resize((6000, 4500)), "JPEG", quality=40),
    "animated GIF (first frame)": _gif,
    "CMYK JPEG": lambda p: _bytes(p.convert("CMYK"), "JPEG"),
    "16-bit PNG": lambda p: _bytes(p.convert("L").convert("I;16"), "PNG"),
    "PNG with alpha": lambda p: _bytes(p.convert("RGBA"), "PNG"),
    "greyscale": lambda p: _bytes(p.convert("L"), "JPEG"),
    "palette PNG": lambda p: _bytes(p.convert("P"), "PNG"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_unusable_photos_are_a_sentence(seeded, photo, case):
    make, words = REFUSED[case]
    with pytest.raises(InvalidInput, match=words):
        seeded.matcher.match_image(make(photo))
    assert seeded.matcher.match_text("jacket").matches, "still answering"


@pytest.mark.parametrize("case", ANSWERED)
def test_unusual_but_real_photos_are_answered(seeded, photo, case):
    result = seeded.matcher.match_image(ANSWERED[case](photo), top_k=3)
    assert len(result.matches) == 3


def test_exif_orientation_is_applied(seeded, photo):
    """The same photo stored sideways with an EXIF 'rotate 90' tag ranks like the upright photo: its own product
    first, at cosine ~1."""
    upright = seeded.matcher.match_image(shared("seed_sample", "images", "Adidas-1.jpg"), top_k=1).matches[0]
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    sideways = _bytes(photo.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif.tobytes(), quality=95)
    turned = seeded.matcher.match_image(sideways, top_k=1).matches[0]
    assert turned.id == upright.id and turned.score > 0.98
    without_tag = _bytes(photo.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95)
    assert seeded.matcher.match_image(without_tag, top_k=1).matches[0].score < turned.score


def test_a_data_url_that_is_not_base64_is_a_sentence(seeded):
    for url in ("data:image/png,%%%not-base64%%%", "data:image/png;base64,!!!!", "data:"):
        with pytest.raises(InvalidInput):
            seeded.matcher.match_image(h.image_source({"path": None, "url": url}))


@pytest.mark.parametrize(
    "text",
    [
        "caf\u00e9 \U0001f45f red sneakers \U0001f525",
        "\u05e0\u05e2\u05dc\u05d9 \u05e1\u05e4\u05d5\u05e8\u05d8 \u05d0\u05d3\u05d5\u05de\u05d5\u05ea",
        "shoe\x00\x07\x1b[31m with\u200bcontrol\x7f chars",
        "\u202eeltit desrever",
    ],
)
def test_emoji_right_to_left_and_control_characters_are_answered(seeded, text):
    result = seeded.matcher.match_text(text, top_k=3)
    assert len(result.matches) == 3 and not result.warnings


@pytest.mark.parametrize("text", ["", "   \t\n  ", "\x00\x01\x02", None])
def test_empty_descriptions_are_a_sentence(seeded, text):
    with pytest.raises(InvalidInput, match="type a description"):
        seeded.matcher.match_text(text)


def test_a_huge_description_is_cut_and_the_answer_says_so(seeded):
    result = seeded.matcher.match_text("navy track jacket " * 6000, top_k=3)  # ~108,000 characters
    assert result.matches and "only its first 1000 characters" in result.warnings[0]


@pytest.mark.parametrize("top_k", [0, -1, 10_000, "ten", None, 2.5e9])
def test_bad_numbers_of_results(seeded, top_k):
    with pytest.raises(InvalidInput, match=r"number of results|between 1 and 100"):
        seeded.matcher.match_text("jacket", top_k=top_k)


def test_bad_filters_from_the_page_or_the_api(seeded):
    with pytest.raises(InvalidInput, match="lowest price is above"):
        h.make_filters(None, None, 50, 10)
    for price in ("nan", float("nan"), float("inf"), "-inf", -5, "abc"):
        with pytest.raises(InvalidInput, match="price"):
            h.make_filters(None, None, price, None)
    with pytest.raises(InvalidInput, match="list of names"):
        h.make_filters(None, {"$gt": ""}, None, None)
    # an operator-looking string is a literal brand: nothing is called "$where"
    assert seeded.matcher.match_text("jacket", filters=Filters(brands=("$where",))).matches == []
    assert seeded.matcher.match_text("jacket", filters=Filters(brands=('{"$gt": ""}',))).matches == []
    assert seeded.matcher.match_text("jacket", filters=Filters(categories=("No such category",))).matches == []
    many = (*(f"category {i}" for i in range(499)), "Apparel / Jackets")
    found = seeded.matcher.match_text("jacket", top_k=10, filters=Filters(categories=many)).matches
    assert found and {m.category for m in found} == {"Apparel / Jackets"}
