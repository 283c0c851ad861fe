"""What a person hands in, checked and decoded: a photo's bytes and pixels, a description's text.

One module that the query path, ingestion, calibration and evaluation share, so every photo and every description is
refused for the same reasons with the same sentence, wherever it comes from.
"""

from __future__ import annotations

import contextlib
import io
import unicodedata
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InvalidInput

ImageSource = str | Path | bytes | Image.Image
PHOTO_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # JPEG also opens MPO (camera) files
DRAFT_SIDE = 2048
NOT_AN_IMAGE = "This file is not a supported image: send a photo as JPEG, PNG, WebP, GIF or BMP."


def read_image_bytes(source: str | Path | bytes, max_bytes: int = 20 * 2**20) -> bytes:
    """A photo's bytes, checked for being there and for their size before anything decodes them (the one place that
    checks a photo's size: queries key their cache by these bytes, ingestion stores them)."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise InvalidInput(f"The image {path.name} does not exist.")
        if path.stat().st_size > max_bytes:
            raise InvalidInput(f"The image is larger than {max_bytes / 2**20:g} MB; please use a smaller photo.")
        data = path.read_bytes()
    else:
        data = source
    if len(data) > max_bytes:
        raise InvalidInput(f"The image is larger than {max_bytes / 2**20:g} MB; please use a smaller photo.")
    if not data:
        raise InvalidInput("The image file is empty.")
    return data


def load_image(source: ImageSource, max_bytes: int = 20 * 2**20, max_pixels: int = 40_000_000) -> Image.Image:
    """Decode a photo as RGB with its EXIF orientation applied; a clear ``InvalidInput`` for anything unusable."""
    if isinstance(source, Image.Image):
        image = source
    else:
        data = read_image_bytes(source, max_bytes)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                # Only raster formats: PIL would hand an EPS file to Ghostscript, and a PDF or SVG is no photo.
                image = Image.open(io.BytesIO(data), formats=PHOTO_FORMATS)
                if image.width * image.height > max_pixels:
                    raise InvalidInput(
                        f"The image is {image.width}x{image.height} pixels, more than we accept; "
                        "please use a smaller photo."
                    )
                # A large JPEG is decoded at a fraction of its size (the towers read 224 pixels, the store keeps 1024).
                image.draft("RGB", (DRAFT_SIDE, DRAFT_SIDE))
                image.load()  # an animated GIF or WebP: its first frame
        except InvalidInput:
            raise
        except Image.DecompressionBombError:
            raise InvalidInput("The image has more pixels than we accept; please use a smaller photo.") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as err:
            raise InvalidInput(NOT_AN_IMAGE) from err
    # A broken EXIF block must not lose an otherwise good photo.
    with contextlib.suppress(Exception):
        image = ImageOps.exif_transpose(image)
    return to_rgb(image)  # transparency onto white, as the image processor does


def clean_text(text: str | None, max_chars: int = 1000) -> str:
    """Normalise a description: control characters out, whitespace collapsed, at most ``max_chars`` kept (the text
    tower reads about 77 tokens anyway; ``text_was_cut`` tells the caller, who says so). Emoji and right-to-left text
    stay. Empty text is a person's mistake and gets a sentence, not a crash."""
    if text is not None and not isinstance(text, str):
        raise InvalidInput("The description must be text.")
    visible = "".join(ch if unicodedata.category(ch)[0] != "C" or ch in "\t\n" else " " for ch in (text or ""))
    cleaned = " ".join(visible.split())
    if not cleaned:
        raise InvalidInput("Please type a description of the product you are looking for.")
    return cleaned[:max_chars].rstrip()


def text_was_cut(text: str | None, max_chars: int = 1000) -> bool:
    return text is not None and len(" ".join(str(text).split())) > max_chars


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with any transparency (an alpha band or a transparent colour key) composited onto white."""
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")
