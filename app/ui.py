"""The Gradio page: its layout and the wiring of its events to ``app.endpoints``, over one shared ``Pipeline``.

The match endpoints run with ``preprocess=False``, so that a broken upload reaches the pipeline's validation (which says
what is wrong) instead of Gradio's image decoding (which answers with a generic error).
"""

from __future__ import annotations

import gradio as gr

from . import endpoints as e
from . import handlers as h
from .catalogue import CatalogueManager
from .catalogue_tab import build_catalogue_tab
from .config import AppConfig

INTRO = (
    "# Product matcher\n"
    "Find products in the catalogue from a **photo** or a **description**. Each result says whether it is a "
    "*match*, a *similar product*, or *no close match*."
)
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
    search = e.Search(pipe, list(info.problems) if info else [], info)
    categories, brands = h.filter_choices(pipe)
    photo_examples, text_examples = h.catalogue_examples(pipe)
    default_k = config.default_top_k
    refine_default = pipe.settings.refine_weight
    # The API's defaults (client.view_api()) for the parameters whose default depends on the configuration.
    defaults = {"top_k": default_k, "refine_weight": refine_default}

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
                        heading = gr.Markdown(e.WAITING, elem_id="result-heading")
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
                        link = gr.HTML("", elem_id="product-link")
                        more_button = gr.Button("More like this", elem_id="more-like-this")
                        with gr.Accordion("Results as JSON (what the API returns)", open=False):
                            data = gr.JSON(label="Matches", elem_id="matches-json")
            with gr.Tab("Catalogue", id="catalogue-tab"):
                catalogue_tab = gr.Column()
        status = gr.Markdown(search.info.markdown(), elem_id="status")
        last = gr.State({})
        chosen = gr.Textbox(visible=False, elem_id="chosen-product")  # the selected result; API: the product id
        after_change = {
            "fn": e.bind(e.refresh, search),
            "outputs": [category_box, brand_box, status, photo_samples, text_samples],
            "api_visibility": "private",
        }
        with catalogue_tab:
            build_catalogue_tab(manager, search.photo_ok, after_change)

        shared = [top_k, category_box, brand_box, min_price, max_price]  # in the order of e.Shared's fields
        after = {
            "fn": e.bind(e.show, search), "inputs": [last], "outputs": [heading, status, details, link, chosen],
            "api_visibility": "private",
        }  # fmt: skip

        def match(fn, query: gr.Component, own: list, api_name: str) -> dict:
            return {
                "fn": e.api(fn, search, **defaults),
                "inputs": [query, *shared, *own],
                "outputs": [gallery, data, last],
                "api_name": api_name,
                "preprocess": False,
                "concurrency_id": "match",
            }

        gr.on(
            [image_button.click], **match(e.match_image, image, [refine, refine_weight, diverse], "match_image")
        ).success(**after)
        gr.on([text_button.click, text.submit], **match(e.match_text, text, [diverse], "match_text")).success(**after)
        more_button.click(**match(e.similar, chosen, [diverse], "similar")).success(**after)
        gallery.select(e.select, inputs=[last], outputs=[details, link, chosen], api_visibility="private")
        photo_samples.click(lambda sample: sample[0], inputs=[photo_samples], outputs=[image], api_visibility="private")
        text_samples.click(lambda sample: sample[0], inputs=[text_samples], outputs=[text], api_visibility="private")
        demo.load(**after_change)

        health_out = gr.JSON(visible=False)
        health = e.bind(e.health, search)
        gr.Button(visible=False).click(health, outputs=[health_out], api_name="health", concurrency_id="match")

    demo.queue(default_concurrency_limit=config.concurrency, max_size=config.queue_size)
    return demo
