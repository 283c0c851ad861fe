"""The Catalogue tab and the ``/ingest``, ``/delete_products`` and ``/catalogue`` endpoints; ``app.catalogue`` does the
work. The admin token is asked for once per browser session (kept in its state, never in the page's HTML); API clients
pass it as ``admin_token``. Imports run in their own concurrency group, so searching goes on meanwhile.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from pipeline.errors import PipelineError
from pipeline.ingestion.column_maps import TARGETS, mapping_from_choices
from pipeline.ingestion.formats import parse_mapping

from . import handlers as h
from .catalogue import MODES, PAGE_SIZE, READ_ONLY, CatalogueManager, bad_rows_csv, problem_rows
from .shown import shown_to_people

LOCKED = "🔒 Enter the admin token to upload, change or delete products."
UNLOCKED = "🔓 Changes allowed in this browser session."


def _who(request: gr.Request | None) -> str:
    return getattr(getattr(request, "client", None), "host", None) or "unknown"


def _photo_cell(path: str | None, photo_ok: Callable[[str | None], bool]) -> str:
    if not photo_ok(path):
        return ""
    return f'<img src="/gradio_api/file={html.escape(str(path), quote=True)}" alt="" style="height:48px">'


def _table(page: dict, photo_ok) -> list[list]:
    return [
        [_photo_cell(p["image"], photo_ok), p["id"], p["name"], p["brand"] or "", p["category"] or "",
         h.price_text(p["price"]) if p["price"] is not None else ""]
        for p in page["products"]
    ]  # fmt: skip


def _many(count: int, word: str = "product", bold: bool = False) -> str:
    number = f"**{count:,}**" if bold else f"{count:,}"
    return f"{number} {word}" + ("" if count == 1 else "s")


def _summary(report: dict) -> str:
    lines = [
        f"### Import done: {_many(report['rows'], 'row')}",
        f"**{report['added']:,}** added · **{report['updated']:,}** updated · **{report['unchanged']:,}** unchanged · "
        f"**{report['deleted']:,}** deleted · {_many(len(report['bad']), 'bad row', bold=True)} · catalogue version "
        f"{report['catalog_version']} · {report['seconds']:.1f} s",
    ]
    if report.get("format"):
        lines.insert(1, html.escape(str(report["format"])))
    photos, without, failed = report.get("photos", 0), report.get("without_photo", 0), report.get("failed_photos")
    if photos or without or failed:
        lines.append(
            f"{_many(photos, 'photo')} embedded · {_many(without)} without a photo (found by their text) · "
            f"{_many(len(failed or []), 'photo')} left out (in the table below)"
        )
    downloads = report.get("downloads") or {}
    if downloads:
        lines.append(
            f"Photo URLs: {downloads.get('fetched', 0):,} downloaded · {downloads.get('not_modified', 0):,} unchanged "
            f"since the last import · {downloads.get('failed', 0):,} failed"
        )
    if report.get("skipped"):
        shown = "; ".join(html.escape(s) for s in report["skipped"][:5])
        more = f" (and {len(report['skipped']) - 5} more)" if len(report["skipped"]) > 5 else ""
        lines.append(f"Skipped in the upload: {shown}{more}")
    pairs = report.get("duplicates") or []
    if pairs:
        shown = "; ".join(
            f"{html.escape(str(d['a']))} ~ {html.escape(str(d['b']))} ({d['cosine']:.4f})" for d in pairs[:10]
        )
        more = f" (and {len(pairs) - 10} more)" if len(pairs) > 10 else ""
        lines.append(
            f"**Near-identical photos** ({_many(len(pairs), 'pair')}; merge or fix them; with the app stopped, "
            f"`python -m pipeline duplicates` lists them all): {shown}{more}"
        )
    return "\n\n".join(lines)


def build_catalogue_tab(manager: CatalogueManager, photo_ok: Callable[[str | None], bool], after_change: dict):
    """Inside an open ``gr.Tab``: the Catalogue tab. ``after_change`` is the ``.then`` that refreshes the search tabs
    (filter choices, examples, status line) once the catalogue changed."""
    token_state = gr.State("")

    @shown_to_people
    def unlock(token: str, request: gr.Request):
        manager.gate.check(token, _who(request))
        return token, UNLOCKED, gr.Textbox(value="")

    def run_ingest(catalogue, photos_zip, mode, admin_token, photos, request, progress, mapping=None):
        def show(state) -> None:
            progress(state.fraction, desc=state.words())

        return manager.ingest(
            _path(catalogue), _path(photos_zip), [_path(p) for p in photos or []], mode, admin_token, _who(request),
            on_progress=show, mapping=mapping,
        )  # fmt: skip

    # The endpoints' parameter names are what API clients see (client.view_api()).
    @shown_to_people
    def ingest_catalogue(
        catalogue: str | None,
        photos_zip: str | None = None,
        mode: str = "update",
        admin_token: str = "",
        photos: list[str] | None = None,
        column_map: str = "",
        request: gr.Request = None,
        progress=gr.Progress(),
    ):
        """Import a catalogue file (a Shopify or WooCommerce export, a Google Merchant feed, or JSON / JSONL / CSV in
        the sample schema) with its photos (URLs in the file, a zip, or single files):
        mode update (default), sync or replace; ``column_map``: a file of another schema, its columns renamed
        ("Product Name=name,Picture=image_path", as the CLI's --map). Returns the report as JSON (rows, added,
        updated, unchanged, deleted, bad rows with line, id and reason)."""
        mapping = parse_mapping(column_map) if isinstance(column_map, str) and column_map.strip() else None
        return run_ingest(catalogue, photos_zip, mode, admin_token, photos, request, progress, mapping).to_json()

    @shown_to_people
    def delete_products(ids: list[str] | str, admin_token: str = "", request: gr.Request = None):
        """Delete products by id (a list, or one text with commas or spaces). Returns the ids deleted and unknown."""
        return manager.delete(ids, admin_token, _who(request))

    @shown_to_people
    def catalogue(page: int = 1, query: str = "", page_size: int = PAGE_SIZE):
        """One page of the catalogue (id, name, brand, category, price, image), searched by id or part of a name."""
        return manager.page(query, page, page_size)

    def page_view(page: int, query: str):
        got = catalogue(page, query)
        words = f"{_many(got['total'])} · page {got['page']} of {got['pages']}"
        return _table(got, photo_ok), words, got["page"]

    @shown_to_people
    def show_columns(catalogue_file):
        """The file's format, and for a file in a schema of its own a choice of column per field."""
        hidden = [gr.Dropdown(choices=[], value=None) for _ in TARGETS]
        path = _path(catalogue_file)
        if not path or not manager.writable:  # read-only: nothing will be imported, so nothing is read
            return "", gr.Accordion(visible=False), {}, *hidden
        try:
            found, chosen = manager.columns(path)
        except PipelineError as err:
            return f"⚠ {html.escape(str(err), quote=False)}", gr.Accordion(visible=False), {}, *hidden
        name = html.escape(Path(path).name)
        if not found.mappable:
            words = f"**{name}** is {found.label}: its columns are known, nothing to choose."
            return words, gr.Accordion(visible=False), {}, *hidden
        remembered = manager.column_maps.get(found.columns)
        words = (
            f"**{name}** has the columns {html.escape(', '.join(found.columns))}. Below, the column that holds each "
            "field (change any; leave a field empty when the file has none). "
            + ("Filled in as at the last import of a file with these columns." if remembered else
               "The choice is remembered for the next file with these columns.")
        )  # fmt: skip
        state = {"columns": found.columns}
        boxes = [gr.Dropdown(choices=found.columns, value=chosen[t]) for t in TARGETS]
        return words, gr.Accordion(visible=True, open=True), state, *boxes

    def page_mapping(state: dict, choices: list) -> dict[str, str] | None:
        if not state or not state.get("columns"):
            return None
        return mapping_from_choices(dict(zip(TARGETS, choices, strict=True)), state["columns"]) or None

    @shown_to_people
    def page_ingest(values: dict, request: gr.Request, progress=gr.Progress()):
        """``values``: every input by component (the inputs are a set: the column choices are many)."""
        mapping = page_mapping(values[columns_state], [values[box] for box in column_boxes])
        report = run_ingest(values[catalogue_file], values[zip_file], values[mode], values[token_state],
                            values[photo_files], request, progress, mapping)  # fmt: skip
        data = report.to_json()
        rows = [[b.line, b.product_id or "", b.reason] for b in problem_rows(report)]
        csv_file = bad_rows_csv(report)
        return _summary(data), rows, gr.File(value=str(csv_file) if csv_file else None, visible=bool(csv_file)), data

    @shown_to_people
    def page_delete(ids, token, request: gr.Request):
        done = delete_products(ids, token, request)
        unknown = f" Not in the catalogue: {', '.join(done['unknown'])}." if done["unknown"] else ""
        gone = f"Deleted {_many(len(done['deleted']))}: {', '.join(done['deleted'])}." if done["deleted"] else ""
        return (gone + unknown).strip() or "Nothing was deleted.", ""

    def pick(ids: str, evt: gr.SelectData):
        row = evt.row_value if isinstance(getattr(evt, "row_value", None), list) else None
        product_id = row[1] if row and len(row) > 1 else None
        chosen = parse(ids)
        if product_id and product_id not in chosen:
            chosen.append(product_id)
        return ", ".join(chosen)

    def parse(ids: str) -> list[str]:
        return [p for p in (ids or "").replace(",", " ").split() if p]

    if not manager.writable:
        gr.Markdown(f"⚠ {html.escape(READ_ONLY)}", elem_id="catalogue-read-only")
    with gr.Accordion("Admin token", open=manager.writable):
        with gr.Row():
            token_box = gr.Textbox(
                label="Admin token", type="password", placeholder="ADMIN_TOKEN", scale=4, elem_id="admin-token"
            )
            unlock_button = gr.Button("Unlock", scale=1, elem_id="unlock", interactive=manager.writable)
        lock_note = gr.Markdown(LOCKED, elem_id="lock-note")
    with gr.Accordion("Import a catalogue", open=True):
        gr.Markdown(
            "A catalogue file as your shop exports it: a **Shopify** or **WooCommerce** product export (CSV), a "
            "**Google Merchant** feed (TSV, CSV or XML), or the sample schema (`id, SKU, name, brand, category, color, "
            "price, description, text, image_path`). Photos named by **URL** are downloaded during the import: upload "
            "the file alone. Photos named by file go with it: a **.zip** (paths relative to the zip's root or to the "
            "catalogue's folder inside it; the catalogue may be inside the zip too) or single photo files."
        )
        with gr.Row():
            catalogue_file = gr.File(label="Catalogue (.csv, .tsv, .xml, .json, .jsonl)",
                                     file_types=[".csv", ".tsv", ".xml", ".json", ".jsonl"],
                                     elem_id="catalogue-file")  # fmt: skip
            zip_file = gr.File(label="Photos (.zip)", file_types=[".zip"], elem_id="photos-zip")
            photo_files = gr.File(label="or single photos", file_count="multiple", file_types=["image"],
                                  elem_id="photo-files")  # fmt: skip
        columns_note = gr.Markdown(elem_id="columns-note")
        columns_state = gr.State({})
        with gr.Accordion("Columns", open=True, visible=False, elem_id="column-mapping") as columns_box:
            column_boxes = []
            for start in range(0, len(TARGETS), 5):
                with gr.Row():
                    for target in TARGETS[start : start + 5]:
                        box = gr.Dropdown(label=target, choices=[], value=None, interactive=True,
                                          elem_id=f"map-{target}")  # fmt: skip
                        column_boxes.append(box)
        mode = gr.Radio([(words, key) for key, words in MODES.items()], value="update", label="How",
                        elem_id="ingest-mode")  # fmt: skip
        ingest_button = gr.Button("Import", variant="primary", elem_id="ingest", interactive=manager.writable)
        # Room for the progress bar, which an empty Markdown (no height) would hide during a first import.
        summary = gr.Markdown(elem_id="ingest-summary", min_height=72)
        bad_table = gr.Dataframe(headers=["line", "id", "reason"], label="Bad rows", interactive=False,
                                 elem_id="bad-rows")  # fmt: skip
        bad_csv = gr.File(label="Bad rows as CSV", visible=False, elem_id="bad-rows-csv")
        report_json = gr.JSON(label="Report (what the /ingest API returns)", visible=False)
    with gr.Accordion("Products", open=True):
        with gr.Row():
            query = gr.Textbox(label="Search by id or name", scale=3, elem_id="catalogue-search")
            page_number = gr.Number(value=1, minimum=1, precision=0, label="Page", scale=1, elem_id="catalogue-page")
            show_button = gr.Button("Show", scale=1, elem_id="catalogue-show")
        page_words = gr.Markdown(elem_id="catalogue-count")
        table = gr.Dataframe(
            headers=["photo", "id", "name", "brand", "category", "price"],
            datatype=["html", "str", "str", "str", "str", "str"],
            interactive=False,
            elem_id="catalogue-table",
        )
        with gr.Row():
            to_delete = gr.Textbox(label="Products to delete (click rows, or type ids)", scale=4, elem_id="delete-ids")
            delete_button = gr.Button("Delete", variant="stop", scale=1, elem_id="delete", interactive=manager.writable)
        delete_note = gr.Markdown(elem_id="delete-note")

    # Progress and a refusal's "Error" badge go on the notes and the report, never over the boxes people type in.
    gr.on([unlock_button.click, token_box.submit], unlock, inputs=[token_box],
          outputs=[token_state, lock_note, token_box], show_progress_on=[lock_note],
          api_visibility="private")  # fmt: skip
    browse = {"fn": page_view, "inputs": [page_number, query], "outputs": [table, page_words, page_number],
              "show_progress_on": [table], "api_visibility": "private"}  # fmt: skip
    gr.on([show_button.click, query.submit], **browse)
    # The first page as soon as the page loads (no triggers and no inputs: on load only), so the count is there.
    gr.on(None, **{**browse, "fn": lambda: page_view(1, ""), "inputs": None})
    catalogue_file.change(show_columns, inputs=[catalogue_file],
                          outputs=[columns_note, columns_box, columns_state, *column_boxes],
                          show_progress_on=[columns_note], api_visibility="private")  # fmt: skip
    ingest_button.click(
        page_ingest,
        inputs={catalogue_file, zip_file, photo_files, mode, token_state, columns_state, *column_boxes},
        outputs=[summary, bad_table, bad_csv, report_json],
        show_progress_on=[summary],
        api_visibility="private",
        concurrency_id="catalogue",
        concurrency_limit=2,  # the second reaches the manager, which tells it to wait
    ).success(**browse).then(**after_change)
    delete_button.click(
        page_delete, inputs=[to_delete, token_state], outputs=[delete_note, to_delete], show_progress_on=[delete_note],
        api_visibility="private",
    ).success(**browse).then(**after_change)  # fmt: skip
    table.select(pick, inputs=[to_delete], outputs=[to_delete], show_progress="hidden", api_visibility="private")

    # The API: the same functions, with the token as a parameter (hidden JSON components carry lists and reports).
    api = gr.Button(visible=False)
    api_ids, api_out = gr.JSON(visible=False), gr.JSON(visible=False)
    api_map = gr.Textbox(value="", visible=False)
    api.click(ingest_catalogue, inputs=[catalogue_file, zip_file, mode, token_box, photo_files, api_map],
              outputs=[api_out],
              api_name="ingest", concurrency_id="catalogue", concurrency_limit=2)  # fmt: skip
    api.click(delete_products, inputs=[api_ids, token_box], outputs=[api_out], api_name="delete_products")
    api.click(catalogue, inputs=[page_number, query], outputs=[api_out], api_name="catalogue")
    return browse


def _path(value) -> str | None:
    """A file from the page or the API: a path, or Gradio's file data (a dict or an object with ``path``)."""
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        return value.get("path")
    return getattr(value, "path", value)
