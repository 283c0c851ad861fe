"""The Gradio page and its two API endpoints, wired to one shared ``Pipeline``.

Only layout and wiring live here: the query goes to ``pipe.matcher``, and ``app.handlers`` turns the answer into what
the page shows. A ``PipelineError`` becomes a ``gr.Error`` with its sentence (the API client raises it too); any other
exception is logged with its traceback and the person sees one generic sentence. The app keeps serving either way.

The endpoint functions run with ``preprocess=False``: Gradio's own image preprocessing would try to decode a broken
upload before our code sees it and answer with a generic error, while the pipeline's validation says what is wrong.
Gradio still checks that an uploaded file is in its upload folder before calling us.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from pipeline.errors import InvalidInput, PipelineError
from pipeline.types import Filters

from . import handlers as h
from .catalogue import CatalogueManager
from .catalogue_tab import build_catalogue_tab
from .config import AppConfig
from .shown import shown_to_people

log = logging.getLogger("app")

INTRO = (
    "# Product matcher\n"
    "Find products in the catalogue from a **photo** or a **description**. Each result says whether it is a "
    "*match*, a *similar product*, or *no close match*."
)
WAITING = "### Results\nUpload a photo or type a description, then press **Match**."
# Captions carry name, brand, price, score and level: let them wrap instead of ending in an ellipsis.
CSS = "#results .caption-label { white-space: normal; max-width: calc(100% - 8px); line-height: 1.3; }"


def build_demo(
    pipe,
    config: AppConfig | None = None,
    info: h.PageInfo | None = None,
    manager: CatalogueManager | None = None,
) -> gr.Blocks:
    """The page for ``pipe``. The gallery shows photos from the photo store under ``DATA_DIR`` only (the folder
    ``launch(allowed_paths=...)`` gets), so photos of catalogues imported later show as well."""
    config = config or AppConfig()
    manager = manager or CatalogueManager(pipe)
    folders = [pipe.settings.photos_path.resolve()]
    problems = list(info.problems) if info else []
    live = {"info": info or h.page_info(pipe)}  # refreshed on every page load and after every catalogue change
    categories, brands = h.filter_choices(pipe)
    photo_examples, text_examples = h.catalogue_examples(pipe)
    default_k = config.default_top_k
    refine_default = pipe.settings.refine_weight

    def photo_ok(path: str | None) -> bool:
        return bool(path) and Path(path).is_file() and h.is_inside(path, folders)

    def current_info() -> h.PageInfo:
        return live["info"]

    def refresh():
        """On every page load and after a catalogue change: filter choices (with counts), examples and the status line
        as the catalogue is now."""
        live["info"] = h.page_info(pipe, problems)
        categories, brands = h.filter_choices(pipe)
        photos, texts = h.catalogue_examples(pipe)
        return (
            gr.Dropdown(choices=categories),
            gr.Dropdown(choices=brands),
            live["info"].markdown(),
            gr.Dataset(samples=[[p] for p in photos]),
            gr.Dataset(samples=[[t] for t in texts]),
        )

    def respond(run: Callable[[int, Filters], object], top_k, categories, brands, min_price, max_price):
        filters = h.make_filters(categories, brands, min_price, max_price)
        result = run(top_k, filters)
        page = h.present(result, filters, current_info(), photo_ok)
        for warning in page.warnings:
            gr.Warning(html.escape(warning, quote=False))
        return page.gallery, page.data, page.state

    # The endpoints' parameter names and defaults are what API clients see (client.view_api()).
    @shown_to_people
    def match_image(
        image: dict | str | None,
        top_k: int = default_k,
        categories: list[str] | None = None,
        brands: list[str] | None = None,
        min_price: float | None = None,
        max_price: float | None = None,
        refine: str | None = None,
        refine_weight: float = refine_default,
        diverse: bool = False,
    ):
        """Find the catalogue products that look like a photo; ``refine``: words that move the search ("in red"),
        by ``refine_weight`` (0: the photo alone, 1: the words alone); ``diverse``: no near-copies side by side.
        Returns the gallery (photo, caption) and the matches as JSON (id, name, brand, category, price, score, level,
        image, image_url)."""
        source = h.image_source(image)
        return respond(
            lambda k, f: pipe.matcher.match_image(source, k, f, refine or None, refine_weight, diverse=bool(diverse)),
            top_k, categories, brands, min_price, max_price,
        )  # fmt: skip

    @shown_to_people
    def match_text(
        text: str,
        top_k: int = default_k,
        categories: list[str] | None = None,
        brands: list[str] | None = None,
        min_price: float | None = None,
        max_price: float | None = None,
        diverse: bool = False,
    ):
        """Find the catalogue products that fit a description (its words and meaning: exact SKUs and names come
        first); ``diverse``: no near-copies side by side. Returns the gallery (photo, caption) and the matches as JSON
        (id, name, brand, category, price, score, level, image, image_url)."""
        return respond(
            lambda k, f: pipe.matcher.match_text(text, top_k=k, filters=f, diverse=bool(diverse)),
            top_k, categories, brands, min_price, max_price,
        )  # fmt: skip

    @shown_to_people
    def similar(
        product_id: str,
        top_k: int = default_k,
        categories: list[str] | None = None,
        brands: list[str] | None = None,
        min_price: float | None = None,
        max_price: float | None = None,
        diverse: bool = False,
    ):
        """More like this: the products whose photos are closest to this product's (itself excluded, filters
        applied). Returns the gallery (photo, caption) and the matches as JSON."""
        if not str(product_id or "").strip():  # the page passes the result clicked last: none yet
            raise InvalidInput("Choose a product first: click one of the results (through the API: pass its id).")
        return respond(
            lambda k, f: pipe.matcher.similar(product_id, top_k=k, filters=f, diverse=bool(diverse)),
            top_k, categories, brands, min_price, max_price,
        )  # fmt: skip

    @shown_to_people
    def show(state: dict):
        matches = state.get("matches") or []
        first = h.details(matches[0]) if matches else None
        chosen = matches[0]["id"] if matches else ""
        return state.get("heading", WAITING), state.get("status", current_info().markdown()), first, chosen

    @shown_to_people
    def select(state: dict, evt: gr.SelectData):
        matches = (state or {}).get("matches") or []
        index = evt.index if isinstance(evt.index, int) else None
        if index is None or not 0 <= index < len(matches):
            return None, ""
        return h.details(matches[index]), matches[index]["id"]

    with gr.Blocks(title=config.title, analytics_enabled=False) as demo:
        with gr.Tabs():
            with gr.Tab("Search", id="search-tab"):
                gr.Markdown(INTRO)
                with gr.Row(equal_height=False):
                    with gr.Column(scale=2, min_width=320):
                        with gr.Tabs():
                            with gr.Tab("Image", id="image-tab"):
                                image = gr.Image(
                                    label="Photo of the product",
                                    type="filepath",
                                    sources=["upload", "webcam", "clipboard"],
                                    height=280,
                                    elem_id="query-image",
                                )
                                refine = gr.Textbox(
                                    label="Refine with words (optional)",
                                    placeholder='e.g. "in red", "but leather"',
                                    max_lines=1,
                                    elem_id="refine-text",
                                )
                                refine_weight = gr.Slider(
                                    0, 1, value=refine_default, step=0.05, label="Weight of the words",
                                    elem_id="refine-weight",
                                )  # fmt: skip
                                image_button = gr.Button("Match", variant="primary", elem_id="match-image")
                                photo_samples = gr.Dataset(
                                    components=[gr.Image(type="filepath", visible=False)],
                                    samples=[[p] for p in photo_examples],
                                    label="Photos from the catalogue",
                                    samples_per_page=8,
                                    elem_id="photo-examples",
                                )
                            with gr.Tab("Text", id="text-tab"):
                                text = gr.Textbox(
                                    label="Description",
                                    placeholder="e.g. red cotton T-shirt — press Enter or Match",
                                    lines=1,
                                    max_lines=1,
                                    elem_id="query-text",
                                )
                                text_button = gr.Button("Match", variant="primary", elem_id="match-text")
                                text_samples = gr.Dataset(
                                    components=[gr.Textbox(visible=False)],
                                    samples=[[t] for t in text_examples],
                                    label="Descriptions from the catalogue",
                                    elem_id="text-examples",
                                )
                        with gr.Accordion("Filters", open=True):
                            top_k = gr.Slider(1, 50, value=default_k, step=1, label="Number of results")
                            category_box = gr.Dropdown(
                                categories, value=[], multiselect=True, label="Categories", allow_custom_value=True
                            )
                            brand_box = gr.Dropdown(
                                brands, value=[], multiselect=True, label="Brands", allow_custom_value=True
                            )
                            diverse = gr.Checkbox(
                                value=False, label="Diverse results (no near-copies side by side)", elem_id="diverse"
                            )
                            with gr.Row():
                                # 0 (what an empty box sends) means no limit; the API's default is None, the same.
                                min_price = gr.Number(value=None, minimum=0, label="Lowest price (0 = any)")
                                max_price = gr.Number(value=None, minimum=0, label="Highest price (0 = any)")
                    with gr.Column(scale=3, min_width=360):
                        heading = gr.Markdown(WAITING, elem_id="result-heading")
                        gallery = gr.Gallery(
                            label="Products",
                            columns=4,
                            height="auto",
                            object_fit="contain",
                            allow_preview=False,
                            interactive=False,
                            elem_id="results",
                        )
                        details = gr.JSON(label="Selected product (click a result)", elem_id="details")
                        more_button = gr.Button("More like this", elem_id="more-like-this")
                        with gr.Accordion("Results as JSON (what the API returns)", open=False):
                            data = gr.JSON(label="Matches", elem_id="matches-json")
            with gr.Tab("Catalogue", id="catalogue-tab"):
                catalogue_tab = gr.Column()
        status = gr.Markdown(current_info().markdown(), elem_id="status")
        last = gr.State({})
        chosen = gr.Textbox(visible=False, elem_id="chosen-product")  # the selected result; API: the product id
        after_change = {
            "fn": refresh,
            "outputs": [category_box, brand_box, status, photo_samples, text_samples],
            "api_visibility": "private",
        }
        with catalogue_tab:
            build_catalogue_tab(manager, photo_ok, after_change)

        filters = [top_k, category_box, brand_box, min_price, max_price]
        outputs = [gallery, data, last]
        after = {
            "fn": show, "inputs": [last], "outputs": [heading, status, details, chosen], "api_visibility": "private"
        }  # fmt: skip
        gr.on(
            [image_button.click],
            match_image,
            inputs=[image, *filters, refine, refine_weight, diverse],
            outputs=outputs,
            api_name="match_image",
            preprocess=False,
            concurrency_id="match",
        ).success(**after)
        gr.on(
            [text_button.click, text.submit],
            match_text,
            inputs=[text, *filters, diverse],
            outputs=outputs,
            api_name="match_text",
            preprocess=False,
            concurrency_id="match",
        ).success(**after)
        more_button.click(
            similar,
            inputs=[chosen, *filters, diverse],
            outputs=outputs,
            api_name="similar",
            preprocess=False,
            concurrency_id="match",
        ).success(**after)
        gallery.select(select, inputs=[last], outputs=[details, chosen], api_visibility="private")
        photo_samples.click(lambda sample: sample[0], inputs=[photo_samples], outputs=[image], api_visibility="private")
        text_samples.click(lambda sample: sample[0], inputs=[text_samples], outputs=[text], api_visibility="private")
        demo.load(**after_change)

        def health() -> dict:
            """For monitors and load tests: the index's product count (microseconds), no model and no MongoDB,
            through the same queue as a query, so the cost of a query over this is the pipeline's own."""
            try:
                return {"ok": True, "products": pipe.index.count()}
            except PipelineError as err:
                return {"ok": False, "problem": str(err)}

        health_out = gr.JSON(visible=False)
        gr.Button(visible=False).click(health, outputs=[health_out], api_name="health", concurrency_id="match")

    demo.queue(default_concurrency_limit=config.concurrency, max_size=config.queue_size)
    return demo
