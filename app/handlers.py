"""What the page shows for a query: plain functions from request values and ``MatchResult`` to gallery items, JSON and
text. No Gradio here and no pipeline logic: ranking, levels, validation of queries and caching all live in ``pipeline``.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from pipeline.errors import InvalidInput, PipelineError
from pipeline.inputs import NOT_AN_IMAGE
from pipeline.types import LEVEL_WORDS, Filters, Match, MatchResult, web_link

log = logging.getLogger("app")

GENERIC_ERROR = "Something went wrong on our side; it has been logged. Please try again."
STAGE_ORDER = ("validate", "embed", "cache", "search", "metadata", "total")
HIDDEN_METADATA = {"image_file", "image_files"}  # paths on the server: the photo itself is in the gallery


# -- request values -> pipeline arguments ------------------------------------------------------------------------------
def as_choices(value: object, what: str) -> tuple[str, ...]:
    """A multiselect value from the page or the API: None, one string or a list of strings."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(v for v in value if v)
    raise InvalidInput(f"The {what} filter must be a list of names.")


def as_price(value: object, which: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        price = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"The {which} price must be a number.") from None
    if not math.isfinite(price) or price < 0:
        raise InvalidInput(f"The {which} price must be zero or more.")
    return price


def make_filters(categories: object, brands: object, min_price: object, max_price: object) -> Filters:
    """Filters from the page or the API. A price of 0 means no limit: the page's number boxes send 0 when empty."""
    low, high = as_price(min_price, "lowest") or None, as_price(max_price, "highest") or None
    if low is not None and high is not None and low > high:
        raise InvalidInput("The lowest price is above the highest price; swap them or clear one.")
    return Filters(
        categories=as_choices(categories, "category"),
        brands=as_choices(brands, "brand"),
        min_price=low,
        max_price=high,
    )


def image_source(payload: object) -> str | bytes | None:
    """The uploaded photo as Gradio hands it over without preprocessing: a file-data dict (path in Gradio's upload
    folder, already checked by Gradio), a data: URL, or a plain path string from an in-process caller."""
    if payload is None or payload == "":
        return None
    if isinstance(payload, (str, Path)):
        return str(payload)
    if isinstance(payload, dict):
        url = payload.get("url") or ""
        if not payload.get("path") and url.startswith("data:"):
            try:
                return base64.b64decode(url.split(",", 1)[1], validate=False)
            except (IndexError, binascii.Error):
                raise InvalidInput(NOT_AN_IMAGE) from None
        if payload.get("path"):
            return str(payload["path"])
    raise InvalidInput("Please upload a photo of the product you are looking for.")


# -- results -> what the page shows ------------------------------------------------------------------------------------
def level_words(level: str) -> str:
    return LEVEL_WORDS.get(level, level)


def price_text(price: object) -> str:
    return f"{price:.2f}" if isinstance(price, (int, float)) else "price unknown"


def caption(match: Match) -> str:
    parts = [match.name, match.brand, price_text(match.price), f"score {match.score:.2f}", level_words(match.level)]
    return " · ".join(p for p in parts if p)


# What a product without a photo (or with one the server may not serve) shows: grey, saying "no photo". A file, served
# as it is (a static path, see server.static_paths), not a picture drawn per answer that Gradio encodes and hashes.
PLACEHOLDER_PHOTO = Path(__file__).resolve().parent / "static" / "no-photo.png"


def placeholder_photo() -> str:
    return str(PLACEHOLDER_PHOTO)


def gallery_items(matches: Iterable[Match], photo_ok: Callable[[str | None], bool]) -> list[tuple[object, str]]:
    """(photo, caption) pairs; a photo the server may not serve (missing, or outside the catalogue folders known at
    start-up) becomes a grey placeholder so that the rest of the result still shows."""
    return [(m.image if photo_ok(m.image) else placeholder_photo(), caption(m)) for m in matches]


def details(match: Match | dict) -> dict:
    """The selected product's full metadata, with its score and match level in words."""
    if isinstance(match, Match):
        match = {**match.to_json(with_metadata=True)}
    metadata = {k: v for k, v in (match.get("metadata") or {}).items() if k not in HIDDEN_METADATA}
    return {
        "id": match.get("id"),
        **({"url": match["url"]} if match.get("url") else {}),
        **metadata,
        "score": match.get("score"),
        "match": level_words(str(match.get("level"))),
    }


def product_link(match: Match | dict | None) -> str:
    """The selected product's page in the shop, opened in a new tab; empty without an http(s) link."""
    url = match.url if isinstance(match, Match) else (match or {}).get("url")
    link = web_link(url)
    if not link:
        return ""
    return (
        f'<a href="{html.escape(link, quote=True)}" target="_blank" rel="noopener noreferrer" '
        'class="product-link">Open the product page in the shop ↗</a>'
    )


def heading(result: MatchResult, filters: Filters) -> str:
    filtered = any(filters.key()[:3]) or filters.min_price is not None or filters.max_price is not None
    if not result.matches:
        if filtered:
            return (
                "### No product fits these filters\nClear a category or brand filter, or widen the price range, "
                "and match again."
            )
        return (
            "### The catalogue is empty\nThere is nothing to match yet: import a catalogue in the **Catalogue** tab "
            "(the app must be started with `ADMIN_TOKEN`), or stop the app and run "
            "`python -m pipeline ingest assets/demo_catalog/catalog.jsonl`."
        )
    counts = {level: sum(m.level == level for m in result.matches) for level in ("match", "similar")}
    if result.best_level == "match":
        extra = f" and {counts['similar']} similar" if counts["similar"] else ""
        many = counts["match"] > 1
        return (
            f"### Match\n{counts['match']} product{'s look' if many else ' looks'} like what you are looking "
            f"for{extra}."
        )
    if result.best_level == "similar":
        return (
            f"### Similar products\nNo exact match, but {counts['similar']} product"
            f"{'s are' if counts['similar'] > 1 else ' is'} similar to what you are looking for."
        )
    return (
        "### No close match\nNothing in the catalogue looks like what you are looking for. The nearest products are "
        "shown below, but they are probably not it."
    )


UNCALIBRATED_NOTICE = (
    "The match levels (Match / Similar product) use default score thresholds: they were not calibrated for this model, "
    "whose scores may sit higher or lower than the defaults assume. Measure them on your catalogue with "
    "'python -m pipeline evaluate --catalog CATALOG --queries QUERIES --calibrate' (or set MATCH_THRESHOLD and "
    "SIMILAR_THRESHOLD)."
)
OFFLINE_NOTICE = (
    "This is the category-level offline model, not CLIP: it finds the kind of product (a wallet, a watch, a banana) "
    "but ignores colour and brand, and misses kinds ImageNet has no class for (heels, packaged groceries)."
)


@dataclass(frozen=True)
class PageInfo:
    """What the status line says about the running system (read once, at start-up)."""

    model: str
    backend: str
    vectors: str
    metadata: str
    products: int | None = None
    problems: tuple[str, ...] = field(default_factory=tuple)
    storage: str = ""

    def markdown(self) -> str:
        products = "" if self.products is None else f" · **Catalogue** {self.products} products"
        products += f" ({self.storage})" if self.storage else ""
        line = (
            f"**Model** {self.model} · **Inference** {self.backend} · **Vectors** Qdrant {self.vectors} · "
            f"**Metadata** {self.metadata}{products}"
        )
        return line + "".join(f"\n\n⚠ {p}" for p in self.problems)


def query_status(result: MatchResult) -> str:
    stages = sorted(result.timings_ms, key=lambda s: STAGE_ORDER.index(s) if s in STAGE_ORDER else len(STAGE_ORDER))
    times = " · ".join(f"{stage} {result.timings_ms[stage]:.1f} ms" for stage in stages)
    cache = "cache hit" if result.cache_hit else "cache miss"
    return f"**Last query** ({result.kind}) {cache} · {times}"


PHOTO_URL = "/gradio_api/file="  # where the page's server hands out a photo it is allowed to serve


def photo_url(path: str | None, photo_ok: Callable[[str | None], bool]) -> str | None:
    """The URL path (below the app's root) of a catalogue photo, or None when the server may not serve it."""
    return PHOTO_URL + quote(str(path)) if path and photo_ok(path) else None


def result_json(result: MatchResult, photo_ok: Callable[[str | None], bool] = lambda path: False) -> dict:
    """What API clients get: the matches (id, name, brand, category, price, score, level, image, image_url) and the
    verdict. ``image_url`` lets a client that wants JSON only (``Client(..., download_files=False)``) fetch just the
    photos it shows, instead of gradio_client downloading the whole gallery for every answer."""
    data = result.to_json()
    for match, row in zip(result.matches, data["matches"], strict=True):
        row["image_url"] = photo_url(match.image, photo_ok)
    data["best_level_words"] = level_words(result.best_level)
    return json.loads(json.dumps(data, default=str))


@dataclass
class Page:
    """Everything one answered query puts on the page."""

    gallery: list[tuple[object, str]]
    data: dict
    state: dict
    warnings: list[str]


def present(result: MatchResult, filters: Filters, info: PageInfo, photo_ok: Callable[[str | None], bool]) -> Page:
    state = {
        "matches": [m.to_json(with_metadata=True) for m in result.matches],
        "heading": heading(result, filters),
        "status": info.markdown() + "\n\n" + query_status(result),
    }
    return Page(gallery_items(result.matches, photo_ok), result_json(result, photo_ok), state, list(result.warnings))


# -- the pipeline as the page sees it ----------------------------------------------------------------------------------
def is_inside(path: str | Path, folders: Iterable[Path]) -> bool:
    resolved = Path(path).resolve()
    return any(resolved.is_relative_to(folder) for folder in folders)


EMPTY_CATALOGUE = (
    "The catalogue is empty: import one in the Catalogue tab (the app must be started with ADMIN_TOKEN), or stop the "
    "app and run 'python -m pipeline ingest assets/demo_catalog/catalog.jsonl'."
)


def page_info(pipe, problems: Iterable[str] = ()) -> PageInfo:
    """What the status line says now; ``problems`` are those found at start-up (the empty-catalogue and offline-model
    notices are decided here: the first goes away once products are in, and neither is said twice)."""
    settings = pipe.settings
    problems = [p for p in problems if p not in (EMPTY_CATALOGUE, OFFLINE_NOTICE, UNCALIBRATED_NOTICE)]  # see below
    try:
        model = pipe.card.label
        if pipe.card.kind == "offline":
            problems.append(OFFLINE_NOTICE)
        if not thresholds_known(pipe.card, settings):
            problems.append(UNCALIBRATED_NOTICE)
    except PipelineError as err:
        model = f"unavailable ({err})"
    try:
        backend = pipe.encoder.backend.description
    except PipelineError:
        backend = f"Triton at {settings.triton_url}" if settings.triton_url else "in-process onnxruntime"
    vectors = f"server at {settings.qdrant_url}" if settings.qdrant_url else "Edge (embedded)"
    try:
        products = pipe.index.count()
        if products == 0:
            problems.append(EMPTY_CATALOGUE)
    except PipelineError:
        products = None
    return PageInfo(model, backend, vectors, pipe.mongo_mode, products, tuple(problems), storage_words(settings))


def thresholds_known(card, settings) -> bool:
    """Whether the levels mean what they say: thresholds measured for this model, or both set by the operator."""
    overridden = settings.match_threshold is not None and settings.similar_threshold is not None
    return card.thresholds_calibrated or overridden


def storage_words(settings) -> str:
    """Whether the catalogue survives a restart, where the container knows (Hugging Face Spaces' /data)."""
    if settings.data_persistent is True:
        return f"kept in {settings.data_dir}: survives restarts"
    if settings.data_persistent is False:
        return (
            f"kept in {settings.data_dir}, which is lost when the Space restarts: enable persistent storage (/data) "
            "to keep it"
        )
    return ""


def filter_choices(pipe) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Category and brand choices as (label with product count, value), from the index's facets, most frequent
    first (empty lists when the index does not answer)."""
    try:
        return tuple(
            [(f"{value} ({count})", value) for value, count in pipe.index.facet(name)] for name in ("category", "brand")
        )
    except PipelineError as err:
        log.warning("Cannot read the filter choices from the index: %s", err)
        return [], []


def catalogue_examples(pipe, photos: int = 8, texts: int = 4) -> tuple[list[str], list[str]]:
    """A few photos and descriptions of the catalogue as it is now, one per category first (empty when the index does
    not answer)."""
    try:
        _, rows = pipe.listing.page("", 0, 200)
    except PipelineError as err:
        log.warning("Cannot read examples from the catalogue: %s", err)
        return [], []
    seen: set = set()
    spread = [r for r in rows if not (r.get("category") in seen or seen.add(r.get("category")))]
    spread += [r for r in rows if r not in spread]
    paths = [pipe.photos.path(r.get("image_file")) for r in spread]
    photo_list = [str(p) for p in paths if p is not None and p.is_file()]
    text_list = [r.get("text") or r.get("name") for r in spread if r.get("text") or r.get("name")]
    return photo_list[:photos], text_list[:texts]
