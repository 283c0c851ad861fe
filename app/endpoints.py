"""What the search page's events run, as plain functions of a ``Search`` (the pipeline and what the page knows of it).

The three match endpoints take the query, then the five ``Shared`` parameters (top-k and the filters), then their own;
``api()`` gives each the flat signature Gradio reads for the API: names, order and defaults as ``client.view_api()``
shows them. ``app.handlers`` turns an answer into what the page shows; ``app.ui`` wires these to the components.
"""

from __future__ import annotations

import functools
import html
import inspect
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr

from pipeline.errors import InvalidInput, PipelineError
from pipeline.types import Filters, MatchResult

from . import handlers as h
from .api.metrics import METRICS
from .shown import shown_to_people

if TYPE_CHECKING:
    from pipeline.service import Pipeline

WAITING = "### Results\nUpload a photo or type a description, then press **Match**."


@dataclass
class Search:
    """The pipeline, the folders its photos may be served from, and the status line, refreshed by ``refresh``."""

    pipe: Pipeline
    problems: list[str] = field(default_factory=list)
    info: h.PageInfo | None = None
    folders: list[Path] = field(init=False)

    def __post_init__(self) -> None:
        self.folders = [self.pipe.settings.photos_path.resolve()]
        self.info = self.info or h.page_info(self.pipe)

    def photo_ok(self, path: str | None) -> bool:
        return bool(path) and Path(path).is_file() and h.is_inside(path, self.folders)

    def answer(self, result: MatchResult, filters: Filters):
        METRICS.observe_query(result, via="page")  # the process's /metrics: page and gradio_client queries too
        page = h.present(result, filters, self.info, self.photo_ok)
        for warning in page.warnings:
            gr.Warning(html.escape(warning, quote=False))
        return page.gallery, page.data, page.state


@dataclass(frozen=True)
class Shared:
    """The parameters every match endpoint takes after its query, in the API's order."""

    top_k: int
    categories: list[str] | None = None
    brands: list[str] | None = None
    min_price: float | None = None
    max_price: float | None = None

    def filters(self) -> Filters:
        return h.make_filters(self.categories, self.brands, self.min_price, self.max_price)


def match_image(
    search: Search,
    image: dict | str | None,
    shared: Shared,
    refine: str | None = None,
    refine_weight: float = 0.5,
    diverse: bool = False,
):
    """Find the catalogue products that look like a photo; ``refine``: words that move the search ("in red"),
    by ``refine_weight`` (0: the photo alone, 1: the words alone); ``diverse``: no near-copies side by side.
    Returns the gallery (photo, caption) and the matches as JSON (id, name, brand, category, price, score, level,
    image, image_url)."""
    source = h.image_source(image)
    filters = shared.filters()
    result = search.pipe.matcher.match_image(
        source, shared.top_k, filters, refine or None, refine_weight, diverse=bool(diverse)
    )
    return search.answer(result, filters)


def match_text(search: Search, text: str, shared: Shared, diverse: bool = False):
    """Find the catalogue products that fit a description (its words and meaning: exact SKUs and names come
    first); ``diverse``: no near-copies side by side. Returns the gallery (photo, caption) and the matches as JSON
    (id, name, brand, category, price, score, level, image, image_url)."""
    filters = shared.filters()
    result = search.pipe.matcher.match_text(text, top_k=shared.top_k, filters=filters, diverse=bool(diverse))
    return search.answer(result, filters)


def similar(search: Search, product_id: str, shared: Shared, diverse: bool = False):
    """More like this: the products whose photos are closest to this product's (itself excluded, filters
    applied). Returns the gallery (photo, caption) and the matches as JSON."""
    if not str(product_id or "").strip():  # the page passes the result clicked last: none yet
        raise InvalidInput("Choose a product first: click one of the results (through the API: pass its id).")
    filters = shared.filters()
    result = search.pipe.matcher.similar(product_id, top_k=shared.top_k, filters=filters, diverse=bool(diverse))
    return search.answer(result, filters)


def api(fn: Callable, search: Search, **defaults: object) -> Callable:
    """``fn(search, query, shared, *own)`` as Gradio calls it: ``(query, top_k, categories, brands, min_price,
    max_price, *own)``, with that signature (``defaults`` replace those of ``fn`` and ``Shared``) and errors shown to
    people."""
    query, _, *own = list(inspect.signature(fn).parameters.values())[1:]
    shared = [
        inspect.Parameter(
            f.name,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            default=inspect.Parameter.empty if f.default is MISSING else f.default,
            annotation=f.type,
        )
        for f in fields(Shared)
    ]
    signature = inspect.Signature(
        [query, *(p.replace(default=defaults.get(p.name, p.default)) for p in (*shared, *own))]
    )

    @functools.wraps(fn)
    def endpoint(*args, **kwargs):
        values = signature.bind(*args, **kwargs)
        values.apply_defaults()
        given = values.arguments
        together = Shared(**{p.name: given.pop(p.name) for p in shared})
        return fn(search, given.pop(query.name), together, **given)

    endpoint.__signature__ = signature
    endpoint.__annotations__ = {
        p.name: p.annotation for p in signature.parameters.values() if p.annotation is not p.empty
    }
    return shown_to_people(endpoint)


def bind(fn: Callable, search: Search) -> Callable:
    """``fn`` with ``search`` given, and the signature Gradio reads to match."""

    @functools.wraps(fn)
    def bound(*args, **kwargs):
        return fn(search, *args, **kwargs)

    parameters = list(inspect.signature(fn).parameters.values())[1:]
    bound.__signature__ = inspect.signature(fn).replace(parameters=parameters)
    return bound


def health(search: Search) -> dict:
    """For monitors and load tests: the index's product count (microseconds), no model and no MongoDB,
    through the same queue as a query, so the cost of a query over this is the pipeline's own."""
    try:
        return {"ok": True, "products": search.pipe.index.count()}
    except PipelineError as err:
        return {"ok": False, "problem": str(err)}


@shown_to_people
def show(search: Search, state: dict):
    matches = state.get("matches") or []
    first = h.details(matches[0]) if matches else None
    chosen = matches[0]["id"] if matches else ""
    link = h.product_link(matches[0]) if matches else ""
    return state.get("heading", WAITING), state.get("status", search.info.markdown()), first, link, chosen


@shown_to_people
def select(state: dict, evt: gr.SelectData):
    matches = (state or {}).get("matches") or []
    index = evt.index if isinstance(evt.index, int) else None
    if index is None or not 0 <= index < len(matches):
        return None, "", ""
    return h.details(matches[index]), h.product_link(matches[index]), matches[index]["id"]


def refresh(search: Search):
    """On every page load and after a catalogue change: filter choices (with counts), examples and the status line
    as the catalogue is now."""
    search.info = h.page_info(search.pipe, search.problems)
    categories, brands = h.filter_choices(search.pipe)
    photos, texts = h.catalogue_examples(search.pipe)
    return (
        gr.Dropdown(choices=categories),
        gr.Dropdown(choices=brands),
        search.info.markdown(),
        gr.Dataset(samples=[[p] for p in photos]),
        gr.Dataset(samples=[[t] for t in texts]),
    )
