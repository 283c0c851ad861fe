"""The Catalogue tab in a real browser: Debian's chromium, driven by Playwright, against ``python -m app`` started with
``ADMIN_TOKEN``.

Real uploads through the page: a catalogue file and a zip of photos made from the project's own demo catalogue (its
generated drawings, under a new category and brand), the import's progress, its report and bad rows, the new category
offered in the Search tab without a reload, the new products found by a text and a photo query, a delete from the
products browser; a missing or wrong token is refused and changes nothing. The screenshot of the tab after the import
is README's ``assets/screenshots/catalogue-tab.png``; the others go to ``test-artifacts/`` (gitignored).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image, ImageOps

pytest.register_assert_rewrite("tests.support.app_fixtures")  # before the import below: it is also loaded as a plugin

from ..support.app_fixtures import DEMO_CATALOG, REPO_ROOT, demo_rows, start_app  # noqa: E402
from ..test_url_fetch import PhotoServer  # noqa: E402
from .test_browser import ARTIFACTS, CHROMIUM, opened  # noqa: E402

pytest_plugins = ("tests.support.app_fixtures",)
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian chromium is missing (/usr/bin/chromium): apt-get install -y chromium"
)

TOKEN = "a long browser-test admin secret"
SCREENSHOT = REPO_ROOT / "assets" / "screenshots" / "catalogue-tab.png"
CATEGORY, BRAND, LINE = "Outdoor gear", "Fellcraft", "Fellside"
# Six demo products (their own generated drawings) under new ids, names, texts, a new brand and a new category.
NEW_PRODUCTS = [  # (demo row, name, text)
    (12, "Fellside Daypack 20", "Navy hiking daypack with padded straps by Fellcraft"),
    (13, "Fellside Rain Pack", "Yellow waterproof cycling pack by Fellcraft"),
    (15, "Fellside Rucksack", "Brown waxed canvas trekking rucksack by Fellcraft"),
    (18, "Fellside Hiking Cap", "Green hiking cap with a logo patch by Fellcraft"),
    (20, "Fellside Trekking Umbrella", "Black folding trekking umbrella by Fellcraft"),
    (21, "Fellside Shelter Umbrella", "Red and white shelter umbrella by Fellcraft"),
]
# More rows (the same drawings, turned a little: each photo differs) so that the import lasts long enough (about a
# second here) for the page to show its progress; the progress is recorded as the page renders it, so not caught by
# polling.
LOTS = 120
LABELS = {"delete": "Products to delete (click rows, or type ids)", "search": "Search by id or name"}


@dataclass
class Upload:
    rows: list[dict]  # the good rows, in file order
    catalogue: Path
    photos: Path

    def photo(self, row: dict) -> Path:
        """A product's photo as a shopper would upload it (a file beside the upload)."""
        return self.catalogue.parent / row["image_path"]


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=85)
    return out.getvalue()


def _make_upload(folder: Path) -> Upload:
    demo = demo_rows()
    rows, photos = [], {}
    for n, (index, name, text) in enumerate(NEW_PRODUCTS, 1):
        base = demo[index]
        row = dict(base, id=f"outdoor-{n:03d}", SKU=f"OUT-{n:04d}", name=name, brand=BRAND, category=CATEGORY,
                   text=text, image_path=f"photos/outdoor-{n:03d}.jpg")  # fmt: skip
        rows.append(row)
        # Mirrored: a photo of its own, so that the demo product it was drawn for does not tie with it.
        photos[row["image_path"]] = _jpeg(ImageOps.mirror(Image.open(DEMO_CATALOG.parent / base["image_path"])))
    for lot in range(LOTS):
        base = rows[lot % len(NEW_PRODUCTS)]
        drawing = Image.open(io.BytesIO(photos[base["image_path"]])).convert("RGB")
        turned = drawing.rotate(2 + 2 * (lot // len(NEW_PRODUCTS)), fillcolor=drawing.getpixel((0, 0)))
        n = 100 + lot
        row = dict(base, id=f"outdoor-{n:03d}", SKU=f"OUT-{n:04d}", name=f"Stock lot {lot:03d}",
                   text=f"Outdoor stock lot number {lot}", image_path=f"photos/outdoor-{n:03d}.jpg")  # fmt: skip
        rows.append(row)
        photos[row["image_path"]] = _jpeg(turned)
    bad = dict(rows[0], id="outdoor-bad", price="abc")
    folder.mkdir(parents=True, exist_ok=True)
    catalogue = folder / "outdoor-gear.jsonl"
    catalogue.write_text("".join(json.dumps(r) + "\n" for r in [*rows, bad]), encoding="utf-8")
    archive = folder / "outdoor-gear-photos.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path, data in photos.items():
            zf.writestr(path, data)
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_bytes(data)
    return Upload(rows, catalogue, archive)


@pytest.fixture(scope="module")
def admin_app(app_data, model_repo, tmp_path_factory):
    """An app of its own (not the shared ``app_server``): this module changes its catalogue."""
    # Photo URLs on loopback (the tests' photo server) are allowed, as for a shop's own intranet.
    app = start_app(app_data, model_repo, tmp_path_factory.mktemp("catalogue-browser-app"), ADMIN_TOKEN=TOKEN,
                    ALLOW_PRIVATE_PHOTO_URLS="1")  # fmt: skip
    yield app
    code = app.stop()
    assert code == 0, f"python -m app exited with {code} on SIGTERM:\n{app.log()[-3000:]}"


@pytest.fixture(scope="module")
def upload(tmp_path_factory) -> Upload:
    return _make_upload(tmp_path_factory.mktemp("outdoor-gear"))


@pytest.fixture
def page(browser, admin_app):
    """A fresh browser session (so a locked Catalogue tab), on the Catalogue tab."""
    from playwright.sync_api import expect

    with opened(browser, admin_app.url) as page:
        page.get_by_role("tab", name="Catalogue").click()
        expect(page.locator("#lock-note")).to_contain_text("Enter the admin token")
        yield page


# -- helpers ----------------------------------------------------------------------------------------------------------
def _count(page) -> int:
    """The products count the Catalogue tab shows (``1,234 products · page 1 of 62``)."""
    from playwright.sync_api import expect

    words = page.locator("#catalogue-count")
    expect(words).to_contain_text(re.compile(r"\d+ products?"))
    return int(re.search(r"([\d,]+) products?", words.inner_text()).group(1).replace(",", ""))


def _toast(page, words: str):
    """The error message the page shows (then closed, so the next one is not confused with it)."""
    from playwright.sync_api import expect

    toast = page.locator(".toast-body").filter(has_text=words)
    expect(toast).to_be_visible()
    toast.locator(".toast-close").click()
    expect(toast).to_have_count(0)


def _attach(page, upload: Upload) -> None:
    from playwright.sync_api import expect

    page.locator("#catalogue-file input[type=file]").set_input_files(str(upload.catalogue))
    page.locator("#photos-zip input[type=file]").set_input_files(str(upload.photos))
    # Uploaded: each box links to its file on the server.
    expect(page.locator(f"#catalogue-file a[href$='/{upload.catalogue.name}']")).to_be_visible()
    expect(page.locator(f"#photos-zip a[href$='/{upload.photos.name}']")).to_be_visible()


def _unlock(page, token: str, enter: bool = False) -> None:
    box = page.locator("#admin-token input")
    box.click(timeout=5_000)  # a click, as a person's: nothing may lie over the box (an earlier refusal's badge did)
    box.fill(token)
    if enter:
        box.press("Enter")
    else:
        page.locator("#unlock").click()


def _search_text(page, text: str):
    """A text query in the Search tab (the query before it must not be one: the wait below tells them apart by the
    status line); the captions of its results."""
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Search").click()
    page.get_by_role("tab", name="Text").click()
    status = page.locator("#status")
    expect(status).not_to_contain_text("Last query (text)")
    page.get_by_label("Description", exact=True).fill(text)
    page.locator("#match-text").click()
    expect(status).to_contain_text("Last query (text)")  # shown once the results are
    return page.locator("#results .caption-label")


def _categories(page):
    """The Search tab's Categories choices as the page offers them (the dropdown opened: close it with Escape)."""
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Search").click()
    page.get_by_label("Categories").click()
    options = page.get_by_role("option")
    expect(options.first).to_be_visible()
    return options


def _loaded(image) -> bool:
    """The server served the photo and the browser decoded it."""
    return image.evaluate("img => img.complete && img.naturalWidth > 0")


def _stored_name(photo: Path) -> str:
    """The file name the photo store gives an uploaded photo: the sha256 of its bytes (``PhotoStore.key_for``)."""
    return hashlib.sha256(photo.read_bytes()).hexdigest()[:32] + ".jpg"


def _expect_photo_of(image, photo: Path) -> None:
    """``image`` shows the product's own stored photo (the photo store names it by the sha256 of the uploaded file;
    the gallery serves Gradio's cached copy of it under the same name), and it loaded."""
    from playwright.sync_api import expect

    expect(image).to_have_attribute("src", re.compile(rf"/gradio_api/file=.*/{_stored_name(photo)}$"))
    expect(image).to_be_visible()
    assert _loaded(image), f"the photo {image.get_attribute('src')} did not load"


def _screenshot(page, name: str, full_page: bool = True) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=full_page)


# -- tests ------------------------------------------------------------------------------------------------------------
def test_missing_or_wrong_token_is_refused_and_changes_nothing(page, upload):
    from playwright.sync_api import expect

    before = _count(page)
    assert before >= len(demo_rows())
    _attach(page, upload)

    _unlock(page, "not the token")
    _toast(page, "That admin token is not right; the catalogue was not changed.")
    expect(page.locator("#lock-note")).to_contain_text("Enter the admin token")

    page.locator("#ingest").click()  # the wrong token unlocked nothing
    _toast(page, "Enter the admin token first; the catalogue was not changed.")
    page.get_by_label(LABELS["delete"]).fill("demo-001")
    page.locator("#delete").click()
    _toast(page, "Enter the admin token first; the catalogue was not changed.")
    page.get_by_label(LABELS["delete"]).click(timeout=5_000)  # still there to be typed in

    page.locator("#catalogue-show").click()
    expect(page.locator("#catalogue-count")).to_contain_text(f"{before:,} products")
    expect(page.locator("#catalogue-table")).to_contain_text("demo-001")
    expect(page.locator("#status")).to_contain_text(f"{before} products")
    _screenshot(page, "catalogue-refused.png")
    choices = _categories(page)
    expect(choices.filter(has_text="T-shirts")).to_have_count(1)
    expect(choices.filter(has_text=CATEGORY)).to_have_count(0)
    page.keyboard.press("Escape")

    page.get_by_role("tab", name="Catalogue").click()
    _unlock(page, TOKEN, enter=True)  # Enter in the box does what Unlock does
    expect(page.locator("#lock-note")).to_contain_text("Changes allowed in this browser session")
    expect(page.locator("#admin-token input")).to_have_value("")  # the token is not left in the page


def test_import_search_and_delete(page, upload):
    from playwright.sync_api import expect

    before = _count(page)
    _unlock(page, TOKEN)
    expect(page.locator("#lock-note")).to_contain_text("Changes allowed in this browser session")
    _attach(page, upload)

    # Every text the import's progress bar shows, recorded as the page renders it, with the height of the box it is
    # drawn in (a first import's bar was once drawn into an empty report box of no height: there, but not to be seen).
    page.evaluate(
        """() => {
            window.progressSeen = [];
            window.progressHeights = [];
            new MutationObserver(() => {
                for (const el of document.querySelectorAll('.progress-level, .progress-text')) {
                    const words = el.textContent.trim();
                    if (words && !window.progressSeen.includes(words)) {
                        window.progressSeen.push(words);
                        const box = document.querySelector('#ingest-summary').getBoundingClientRect();
                        window.progressHeights.push(box.height);
                    }
                }
            }).observe(document.body, {subtree: true, childList: true, characterData: true});
        }"""
    )
    page.locator("#ingest").click()
    summary = page.locator("#ingest-summary")
    total = len(upload.rows) + 1
    expect(summary).to_contain_text(f"Import done: {total} rows")
    expect(summary).to_contain_text(f"{len(upload.rows)} added · 0 updated · 0 unchanged · 0 deleted · 1 bad row")
    seen = page.evaluate("window.progressSeen")
    assert any(f"of {len(upload.rows)} products" in words for words in seen), f"no progress shown: {seen}"
    heights = page.evaluate("window.progressHeights")
    assert min(heights) >= 40, f"the progress bar was drawn in a box {min(heights)} px high: {heights}"

    bad = page.locator("#bad-rows")
    expect(bad).to_contain_text("outdoor-bad")
    expect(bad).to_contain_text("price 'abc' is not a number")
    expect(page.locator("#bad-rows-csv")).to_be_visible()
    expect(page.locator("#catalogue-count")).to_contain_text(f"{before + len(upload.rows):,} products")
    _shoot_the_readme_picture(page, upload)

    # The Search tab, without a reload: the new category is offered, and the new products are found.
    page.get_by_role("tab", name="Search").click()
    expect(page.locator("#status")).to_contain_text(f"{before + len(upload.rows)} products")
    expect(_categories(page).filter(has_text=CATEGORY)).to_have_accessible_name(f"{CATEGORY} ({len(upload.rows)})")
    page.keyboard.press("Escape")

    wanted = upload.rows[0]
    captions = _search_text(page, wanted["text"])
    expect(captions.first).to_contain_text(f"{wanted['name']} · {BRAND}")
    _expect_photo_of(page.locator("#results img").first, upload.photo(wanted))
    _screenshot(page, "catalogue-new-product-by-text.png")

    other = upload.rows[4]
    page.get_by_role("tab", name="Image").click()
    page.locator("#query-image input[type=file]").set_input_files(str(upload.photo(other)))
    expect(page.locator("#query-image img").first).to_be_visible()
    page.locator("#match-image").click()
    expect(captions.first).to_contain_text(f"{other['name']} · {BRAND}")
    _expect_photo_of(page.locator("#results img").first, upload.photo(other))
    _screenshot(page, "catalogue-new-product-by-photo.png")

    # Delete it from the products browser: search by name, click its row, Delete.
    page.get_by_role("tab", name="Catalogue").click()
    page.get_by_label(LABELS["search"]).fill(wanted["name"])
    page.get_by_label(LABELS["search"]).press("Enter")
    table = page.locator("#catalogue-table")
    expect(page.locator("#catalogue-count")).to_contain_text("1 product · page 1 of 1")
    row = table.get_by_role("row").filter(has=page.get_by_role("gridcell", name=wanted["id"], exact=True))
    expect(row).to_have_count(1)
    stored = _stored_name(upload.photo(wanted))
    expect(row.locator("img")).to_have_attribute("src", re.compile(rf"/gradio_api/file=.*/photos/.*/{stored}$"))
    row.get_by_role("gridcell", name=wanted["name"], exact=True).click()
    expect(page.get_by_label(LABELS["delete"])).to_have_value(wanted["id"])
    page.locator("#delete").click()
    expect(page.locator("#delete-note")).to_contain_text(f"Deleted 1 product: {wanted['id']}.")
    expect(table).not_to_contain_text(wanted["id"])
    expect(page.get_by_label(LABELS["delete"])).to_have_value("")
    page.get_by_label(LABELS["search"]).fill("")
    page.locator("#catalogue-show").click()
    expect(page.locator("#catalogue-count")).to_contain_text(f"{before + len(upload.rows) - 1:,} products")
    _screenshot(page, "catalogue-deleted.png")

    # The refresh after the delete has reached the Search tab (one product fewer in the category), then the query.
    expect(_categories(page).filter(has_text=CATEGORY)).to_have_accessible_name(f"{CATEGORY} ({len(upload.rows) - 1})")
    page.keyboard.press("Escape")
    captions = _search_text(page, wanted["text"])
    expect(captions.first).to_be_visible()
    expect(page.locator("#results")).not_to_contain_text(f"{wanted['name']} · {BRAND}")


def _shoot_the_readme_picture(page, upload: Upload) -> None:
    """The Catalogue tab after the import, the products browser showing the new line with its thumbnails and no message
    over the page: to test-artifacts, and to README's picture with ``UPDATE_SCREENSHOTS=1``."""
    from playwright.sync_api import expect

    page.get_by_label(LABELS["search"]).fill(LINE)
    page.locator("#catalogue-show").click()
    line = [r for r in upload.rows if r["name"].startswith(LINE)]
    expect(page.locator("#catalogue-count")).to_contain_text(f"{len(line)} products · page 1 of 1")
    for row in line:
        cell = page.locator("#catalogue-table").get_by_role("gridcell", name=row["name"], exact=True)
        expect(cell).to_be_visible()
    thumbnails = page.locator("#catalogue-table [role=gridcell] img[src*='/photos/']")
    expect(thumbnails).to_have_count(len(line))
    for thumbnail in thumbnails.all():
        assert _loaded(thumbnail), f"the thumbnail {thumbnail.get_attribute('src')} did not load"
    for close in page.locator(".toast-close").all():
        close.click()
    expect(page.locator(".toast-body")).to_have_count(0)
    page.mouse.move(0, 0)
    _screenshot(page, "catalogue-tab.png")
    if os.environ.get("UPDATE_SCREENSHOTS", "").strip() in {"1", "true", "yes"}:
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        assert SCREENSHOT.stat().st_size < 400_000, f"{SCREENSHOT} is {SCREENSHOT.stat().st_size:,} bytes"


# -- a shop's own files: a Merchant feed with photo URLs, and a table in a schema of its own -------------------------
FEED_PRODUCTS = [  # (id, title, demo row whose drawing, flipped, is its photo)
    ("rg-1", "Ridgeline Summit Thermos Flask", 2),
    ("rg-2", "Ridgeline Glacier Trekking Poles", 6),
    ("rg-3", "Ridgeline Gift Voucher Card", None),  # its only photo URL answers 404
]


@pytest.fixture(scope="module")
def photo_server():
    server = PhotoServer()
    for n, row in enumerate(demo_rows()[:12]):
        drawing = Image.open(DEMO_CATALOG.parent / row["image_path"])
        server.photos[f"/p/{n}.jpg"] = _jpeg(ImageOps.flip(drawing))
        server.etags[f"/p/{n}.jpg"] = f'"d{n}"'
    yield server
    server.close()


def _merchant_feed(folder: Path, server: PhotoServer) -> Path:
    items = []
    for pid, title, drawing in FEED_PRODUCTS:
        photo = server.url(f"/p/{drawing}.jpg") if drawing is not None else server.url("/p/gone.jpg")
        items.append(
            f"<item><g:id>{pid}</g:id><title>{title}</title><link>https://shop.example/{pid}</link>"
            f"<description>{title} by Ridgeline</description><g:image_link>{photo}</g:image_link>"
            f"<g:price>{20 + len(items)}.00 EUR</g:price><g:brand>Ridgeline</g:brand></item>"
        )
    feed = folder / "ridgeline-feed.xml"
    feed.write_text(
        '<?xml version="1.0"?><rss version="2.0" xmlns:g="http://base.google.com/ns/1.0"><channel>'
        f"<title>Ridgeline</title>{''.join(items)}</channel></rss>",
        encoding="utf-8",
    )
    return feed


def test_a_merchant_feed_goes_in_alone_its_photos_fetched_from_their_urls(page, photo_server, tmp_path):
    from playwright.sync_api import expect

    feed = _merchant_feed(tmp_path, photo_server)
    _unlock(page, TOKEN)
    expect(page.locator("#lock-note")).to_contain_text("Changes allowed in this browser session")
    page.locator("#catalogue-file input[type=file]").set_input_files(str(feed))
    expect(page.locator("#columns-note")).to_contain_text("is a Google Merchant Center feed: its columns are known")
    expect(page.locator("#column-mapping")).to_be_hidden()
    page.locator("#ingest").click()  # no zip
    summary = page.locator("#ingest-summary")
    expect(summary).to_contain_text("Read ridgeline-feed.xml as a Google Merchant Center feed (3 rows)")
    expect(summary).to_contain_text("3 added")
    expect(summary).to_contain_text("Photo URLs: 2 downloaded")
    expect(summary).to_contain_text("1 product without a photo")
    bad = page.locator("#bad-rows")
    expect(bad).to_contain_text("rg-3")
    expect(bad).to_contain_text("/p/gone.jpg")
    expect(bad).to_contain_text("404")
    _screenshot(page, "catalogue-merchant-feed.png")

    captions = _search_text(page, FEED_PRODUCTS[0][1])
    expect(captions.first).to_contain_text(f"{FEED_PRODUCTS[0][1]} · Ridgeline")
    page.locator("#results img").first.click()
    link = page.locator("#product-link a")
    expect(link).to_have_attribute("href", "https://shop.example/rg-1")
    expect(link).to_have_attribute("target", "_blank")

    # No photo: found by its title, a placeholder shown. (A second text query: the captions tell the answers apart.)
    page.get_by_label("Description", exact=True).fill(FEED_PRODUCTS[2][1])
    page.locator("#match-text").click()
    expect(captions.first).to_contain_text(f"{FEED_PRODUCTS[2][1]} · Ridgeline")
    first = page.locator("#results img").first
    expect(first).to_be_visible()
    assert "/photos/" not in (first.get_attribute("src") or ""), "a product without a photo shows the placeholder"
    assert "no-photo.png" in (first.get_attribute("src") or "") and _loaded(first)  # served as it lies, not drawn


def _choose(page, target: str, column: str) -> None:
    from playwright.sync_api import expect

    box = page.locator(f"#map-{target} input")
    box.click()
    page.locator(f"#map-{target}").get_by_role("option", name=column, exact=True).click()
    expect(box).to_have_value(column)
    box.blur()


def test_a_table_of_its_own_columns_is_mapped_in_the_tab_and_the_choice_remembered(page, photo_server, tmp_path):
    from playwright.sync_api import expect

    table = tmp_path / "stock-list.csv"
    rows = [["Ref", "Product Name", "Maker", "Cost", "Picture"],
            ["sl-1", "Harbourline Canvas Deck Shoes", "Harbourline", "44.50", photo_server.url("/p/8.jpg")],
            ["sl-2", "Harbourline Rope Key Ring", "Harbourline", "6", photo_server.url("/p/9.jpg")]]  # fmt: skip
    table.write_text("\n".join(",".join(r) for r in rows) + "\n", encoding="utf-8")
    _unlock(page, TOKEN)
    expect(page.locator("#lock-note")).to_contain_text("Changes allowed in this browser session")
    page.locator("#catalogue-file input[type=file]").set_input_files(str(table))
    note = page.locator("#columns-note")
    expect(note).to_contain_text("has the columns Ref, Product Name, Maker, Cost, Picture")
    expect(note).to_contain_text("remembered for the next file with these columns")
    expect(page.locator("#column-mapping")).to_be_visible()
    for target, column in [("id", "Ref"), ("name", "Product Name"), ("brand", "Maker"), ("price", "Cost"),
                           ("image_path", "Picture")]:  # fmt: skip
        _choose(page, target, column)
    page.locator("#ingest").click()
    summary = page.locator("#ingest-summary")
    expect(summary).to_contain_text("Read stock-list.csv with its columns renamed")
    expect(summary).to_contain_text("2 added")
    expect(summary).to_contain_text("0 bad rows")
    captions = _search_text(page, rows[1][1])
    expect(captions.first).to_contain_text(f"{rows[1][1]} · Harbourline")

    # The same columns next time (another visit), in a file of another name: the choice is made already.
    page.reload()
    page.get_by_role("tab", name="Catalogue").click()
    _unlock(page, TOKEN)
    expect(page.locator("#lock-note")).to_contain_text("Changes allowed in this browser session")
    again = tmp_path / "stock-list-december.csv"
    again.write_text(table.read_text(encoding="utf-8"), encoding="utf-8")
    page.locator("#catalogue-file input[type=file]").set_input_files(str(again))
    expect(note).to_contain_text("Filled in as at the last import of a file with these columns")
    expect(page.locator("#map-name input")).to_have_value("Product Name")
    expect(page.locator("#map-id input")).to_have_value("Ref")
    page.locator("#ingest").click()
    expect(summary).to_contain_text("Read stock-list-december.csv with its columns renamed")
    expect(summary).to_contain_text("0 added · 0 updated · 2 unchanged")
