"""The page in a real browser: Debian's chromium, driven by Playwright's Python API, against ``python -m app``.

Types a description (Match button, then Enter), uploads a photo in the Image tab, clicks a result for its details,
and checks that an error shows as a message in the page. Screenshots go to ``test-artifacts/`` (gitignored).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.support.app_fixtures")  # before the import below: it is also loaded as a plugin

from ..support.app_fixtures import DEMO_CATALOG, REPO_ROOT, demo_rows  # noqa: E402

pytest_plugins = ("tests.support.app_fixtures",)

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
TIMEOUT_MS = 30_000

if not CHROMIUM.exists() and os.environ.get("REQUIRE_BROWSER", "").strip() in {"1", "true", "yes"}:
    raise RuntimeError("REQUIRE_BROWSER is set but /usr/bin/chromium is missing: run scripts/install_browser.sh")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian chromium is missing (/usr/bin/chromium): apt-get install -y chromium"
)


@contextlib.contextmanager
def opened(browser, url: str) -> Iterator:
    """A fresh browser session on the app at ``url``, once its status line shows; a JavaScript error in the page
    fails the test."""
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(url)
    expect(page.locator("#status")).to_contain_text("in-process onnxruntime")
    yield page
    context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"


@pytest.fixture
def page(browser, app_server):
    with opened(browser, app_server.url) as page:
        yield page


def _first_caption(page):
    return page.locator("#results .caption-label").first


def _screenshot(page, name: str, full_page: bool = True) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=full_page)


def test_text_tab_match_button_and_enter(page):
    from playwright.sync_api import expect

    rows = demo_rows()
    first, second = rows[8], rows[20]  # a sneaker, a umbrella
    page.get_by_role("tab", name="Text").click()
    box = page.get_by_label("Description")
    box.fill(first["text"])
    page.locator("#match-text").click()
    expect(_first_caption(page)).to_contain_text(first["name"])
    expect(page.locator("#results .caption-label")).to_have_count(8)
    expect(page.locator("#status")).to_contain_text("Last query")
    expect(page.locator("#result-heading")).not_to_contain_text("press Match")
    expect(page.locator("#details")).to_contain_text(first["SKU"])  # the best result's full metadata

    box.fill(second["text"])
    box.press("Enter")
    expect(_first_caption(page)).to_contain_text(second["name"])

    page.locator("#results .thumbnail-item").nth(1).click()  # another result: its details replace the first's
    expect(page.locator("#details")).not_to_contain_text(second["SKU"])
    _screenshot(page, "app-text-tab.png")


def test_image_tab_upload(page):
    from playwright.sync_api import expect

    row = demo_rows()[13]
    page.get_by_role("tab", name="Image").click()
    page.locator("#query-image input[type=file]").set_input_files(str(DEMO_CATALOG.parent / row["image_path"]))
    expect(page.locator("#query-image img").first).to_be_visible()
    page.locator("#match-image").click()
    expect(_first_caption(page)).to_contain_text(f"{row['name']} · {row['brand']}")
    expect(_first_caption(page)).to_contain_text("Match")
    expect(page.locator("#result-heading")).to_contain_text("Match")
    _screenshot(page, "app-image-tab.png")


def test_an_error_is_a_message_in_the_page(page):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Text").click()
    page.locator("#match-text").click()
    toast = page.get_by_text("Please type a description of the product you are looking for.")
    expect(toast).to_be_visible()
    expect(toast).to_be_in_viewport()
    page.wait_for_timeout(500)  # let the message finish sliding in before the screenshot
    _screenshot(page, "app-error.png", full_page=False)
