"""Read a catalogue file (JSON array, JSONL or CSV) and validate every row.

A bad row is reported with its line number and reason and the rest go on: one typo must not block a catalogue of
thousands. Image paths are resolved relative to the catalogue file and may not escape its folder, except that with
``--images DIR`` an absolute or foreign path is looked up by file name under DIR (the original sample metadata.json
holds absolute paths from another machine).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CatalogError
from .formats import FileColumns, FormatRead, columns_of, read_rows

# Part of every content hash: products stored by an older layout (photos served from where the catalogue lay, no
# lexical vector) differ from what an ingest would store now, so they are stored again once.
STORE_FORMAT = b"\0store-3"  # 2: the photo store and the BM25 vector; 3: several photos, photo URLs
SCHEMA = ("id", "SKU", "name", "brand", "category", "color", "price", "description", "text", "image_path")
WEB_SCHEMES = ("http", "https")
TEXT_FIELDS = ("name", "brand", "category", "color", "description")
STRING_FIELDS = ("name", "brand", "category", "color", "SKU", "description", "text")


PhotoSource = Path | str  # a local file (resolved and checked) or an http(s) URL, fetched during the ingest


@dataclass
class Product:
    line: int
    id: str
    fields: dict
    photos: list[PhotoSource]  # the main photo first; empty: a product without a photo (found by its text)
    text: str
    content_hash: str = ""
    photo_problems: list[str] = field(default_factory=list)  # photos named but left out, each with why


def is_url(name: str) -> bool:
    """Whether a photo is named by a URL (any scheme: only http(s) are fetched, the others are refused by name)."""
    return "://" in name[:16] or name.startswith("//")


def _photo_names(row: dict) -> list[str]:
    """The photos a row names, in order, each once: ``image_paths`` (a list, or text) or ``image_path``."""
    given = row.get("image_paths")
    if given is None:
        given = row.get("image_path")
    if given is None:
        return []
    if isinstance(given, str):
        given = [given]
    if not isinstance(given, list) or not all(isinstance(g, str) for g in given if g is not None):
        raise ValueError("image_path must be text (a file or a URL), or a list of them")
    return list(dict.fromkeys(g.strip() for g in given if g and g.strip()))


@dataclass
class BadRow:
    line: int
    reason: str
    product_id: str | None = None

    def __str__(self) -> str:
        who = f" (id {self.product_id})" if self.product_id else ""
        return f"line {self.line}{who}: {self.reason}"


@dataclass
class CatalogRows:
    products: list[Product] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)
    total: int = 0
    format: str = ""  # formats.FORMATS, or "mapped"
    format_sentence: str = ""  # "Read products.csv as a Shopify product export (42 rows, 12 products)."


MAX_CATALOGUE_MB = 512  # read whole (a JSON array must be); a larger file is refused before anything is read


def _encoding(path: Path) -> str:
    """UTF-8 (with or without a byte-order mark) or UTF-16 with its mark, as spreadsheets save CSV files."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    return "utf-8-sig"


def _raw_rows(
    path: Path, fmt: str = "auto", mapping: dict[str, str] | None = None, shop_url: str | None = None
) -> FormatRead:
    """The file's records in the sample schema (``formats.read_rows``), after the checks that it is a text file."""
    # A file none of whose columns is an id or a name is refused there, with its columns (and --map) named.
    return read_rows(path, catalogue_text(path), fmt, mapping, shop_url)


def file_columns(path: Path) -> FileColumns:
    """The format a catalogue file would be read as and its own column names (for the Catalogue tab's column
    mapping), after the same checks as an import: one sentence (``CatalogError``) for a file that is none."""
    return columns_of(path, catalogue_text(path))


def catalogue_text(path: Path) -> str:
    """A catalogue file's text, refused with one sentence when it is too big, not a catalogue or not text."""
    path = Path(path)
    suffix = path.suffix.lower()
    size = path.stat().st_size
    if size > MAX_CATALOGUE_MB * 2**20:
        raise CatalogError(
            f"The catalogue {path.name} is {size / 2**20:,.0f} MB, more than the {MAX_CATALOGUE_MB} MB read at once; "
            "split it into several files (the same ingest command adds each)."
        )
    if suffix not in (".csv", ".tsv", ".json", ".jsonl", ".ndjson", ".xml", ".txt", ""):
        raise CatalogError(
            f"{path.name} is not a catalogue file: use JSON (an array), JSONL, CSV or TSV, or an XML product feed."
        )
    try:
        text = path.read_text(encoding=_encoding(path))
    except UnicodeDecodeError:
        raise CatalogError(
            f"The catalogue {path.name} is not UTF-8 or UTF-16 text (is it a spreadsheet or a zip?): save it as "
            "CSV (UTF-8), JSON or JSONL."
        ) from None
    except OSError as err:
        raise CatalogError(f"Cannot read the catalogue {path}: {err}") from err
    if "\x00" in text:
        raise CatalogError(f"{path.name} is not a text catalogue (it holds binary data): use JSON, JSONL or CSV.")
    return text


def product_text(fields: dict) -> str:
    """The text that is embedded: the ``text`` field when present, else composed from the descriptive fields.

    The descriptive fields (``TEXT_FIELDS``, in that order) are joined with single spaces, whitespace collapsed. This
    is the one definition: ingestion, ``bench/tune_offline_model.py`` (which tunes the offline model on these texts)
    and the tests call it, on a validated row or on a raw catalogue row alike (both give the same text).
    """
    given = fields.get("text")
    if isinstance(given, (int, float)) and not isinstance(given, bool):  # as _validate turns a numeric text into str
        given = str(given)
    if isinstance(given, str) and given.strip():
        return " ".join(given.split())
    parts = [str(fields[k]).strip() for k in TEXT_FIELDS if fields.get(k) not in (None, "")]
    return " ".join(" ".join(parts).split())


# A price written with thousands separators ("1,250", "12,345.50"): the only comma a price may have.
THOUSANDS = re.compile(r"\d{1,3}(,\d{3})+(\.\d+)?")


def _price(value: object) -> float | None:
    """The price as a number, or None when it is left empty. Raises ValueError with what is wrong with it: a comma
    that is not a thousands separator ("12,50") is refused rather than read as 1250 or guessed as 12.5."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ValueError("is not a number")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip().strip("$€£").strip()
        if "," in text:
            if not THOUSANDS.fullmatch(text):
                raise ValueError("has a comma that is not a thousands separator: write decimals with a point (12.50)")
            text = text.replace(",", "")
        try:
            number = float(text)
        except ValueError:
            raise ValueError("is not a number") from None
    else:
        raise ValueError("is not a number")
    if not math.isfinite(number):
        raise ValueError("is not a number")
    if number < 0:
        raise ValueError("is negative")
    return number


def resolve_image(
    image_path: str, root: Path | list[Path], images_dir: Path | None, images_label: str | None = None
) -> Path:
    """Where the photo is; raises ValueError with the reason when it may not or cannot be used.

    ``root``: the folder (or folders, tried in order: an upload's catalogue folder, then the zip's root) that relative
    paths are relative to; a relative path may not leave it. ``images_label``: how the reason names ``images_dir``
    (an upload's private folder means nothing to the person; default: "under" the folder)."""
    given = Path(str(image_path).replace("\\", "/"))
    roots = [Path(r).resolve() for r in (root if isinstance(root, list) else [root])]
    escapes = False
    if not given.is_absolute():
        for base in roots:
            candidate = (base / given).resolve()
            if not candidate.is_relative_to(base):
                escapes = True
            elif candidate.is_file():
                return candidate
        if escapes and images_dir is None:
            raise ValueError(f"image path {image_path} points outside the catalogue folder")
    if images_dir is not None:
        candidate = (images_dir / given.name).resolve()
        if candidate.is_file():
            return candidate
        where = images_label or f"under {images_dir}"
        if escapes:
            raise ValueError(
                f"image path {image_path} points outside the catalogue folder, and no photo named {given.name} is "
                f"{where}"
            )
        raise ValueError(f"image {given.name} not found {where}")
    if given.is_absolute():
        raise ValueError(f"image path {image_path} is absolute; pass --images DIR to look it up by file name")
    raise ValueError(f"image {image_path} not found")


def _validate(
    line: int, row: object, seen: dict[str, int], root: list[Path], images_dir: Path | None, images_label: str | None
) -> Product | BadRow:
    if isinstance(row, str):
        return BadRow(line, row)
    if not isinstance(row, dict):
        return BadRow(line, "not a JSON object")
    raw_id = row.get("id")
    if raw_id is None or isinstance(raw_id, (bool, dict, list)) or not str(raw_id).strip():
        return BadRow(line, "missing id")
    product_id = str(raw_id).strip()
    if product_id in seen:
        return BadRow(line, f"duplicate id (first seen on line {seen[product_id]})", product_id)
    seen[product_id] = line
    fields = dict(row)
    fields["id"] = product_id
    try:
        fields["price"] = _price(row.get("price"))
    except ValueError as err:
        return BadRow(line, f"price {row.get('price')!r} {err}", product_id)
    for name in STRING_FIELDS:
        value = fields.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            fields[name] = str(value)
        elif value is not None and not isinstance(value, str):
            return BadRow(line, f"{name} must be text", product_id)
    if not fields.get("name") and not fields.get("text"):
        return BadRow(line, "missing name", product_id)
    try:
        names = _photo_names(fields)
    except ValueError as err:
        return BadRow(line, str(err), product_id)
    # A local photo that cannot be used makes the row bad (the product keeps what it had: a photo not uploaded yet
    # must not replace it by a product without one); a URL is fetched during the ingest, and one that fails is left
    # out and reported (the shop's server is not the person's mistake).
    photos: list[PhotoSource] = []
    problems: list[str] = []
    for name in names:
        if is_url(name):
            scheme = name.split("://", 1)[0].lower() if "://" in name else ""
            if scheme in WEB_SCHEMES:
                photos.append(name)
            else:
                problems.append(f"photo {name[:120]}: only http and https photo URLs are fetched")
            continue
        try:
            photos.append(resolve_image(name, root, images_dir, images_label))
        except ValueError as err:
            return BadRow(line, str(err), product_id)
    # The content: the row and the photos' bytes (a URL: its text; the photo behind it is checked when fetched), not
    # where a photo happens to lie (an upload unpacks into a new folder each time), so the same catalogue twice
    # changes nothing.
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode())
    for photo in photos:
        digest.update(photo.encode() if isinstance(photo, str) else photo.read_bytes())
        digest.update(b"\0")
    digest.update(STORE_FORMAT)
    text = product_text(fields)
    return Product(line, product_id, fields, photos, text, digest.hexdigest()[:32], problems)


def read_catalog(
    path: Path,
    images_dir: Path | None = None,
    image_roots: list[Path] | None = None,
    images_label: str | None = None,
    fmt: str = "auto",
    mapping: dict[str, str] | None = None,
    shop_url: str | None = None,
) -> CatalogRows:
    """Every row of the file, validated. Relative image paths resolve against ``image_roots`` (default: the
    catalogue's folder); ``images_dir``: where absolute or foreign paths are looked up by file name, named
    ``images_label`` in the reasons of bad rows. ``fmt``, ``mapping``, ``shop_url``: how the file is read
    (``formats.read_rows``: the sample schema, a Shopify, WooCommerce or Google Merchant export, or renamed columns)."""
    path = Path(path)
    if not path.is_file():
        raise CatalogError(f"The catalogue file {path} does not exist.")
    images_dir = Path(images_dir).resolve() if images_dir else None
    read = _raw_rows(path, fmt, mapping, shop_url)
    result = CatalogRows(format=read.format, format_sentence=read.sentence)
    seen: dict[str, int] = {}
    for line, row in read.rows:
        result.total += 1
        checked = _validate(line, row, seen, image_roots or [path.parent], images_dir, images_label)
        if isinstance(checked, BadRow):
            result.bad.append(checked)
        else:
            result.products.append(checked)
    return result
