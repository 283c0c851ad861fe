"""The Gradio app through its client API, as a separate ``python -m app`` process on real components.

Queries go through ``gradio_client`` exactly as the README shows; the app runs the tiny test model over the demo
catalogue. Also here: login (GRADIO_AUTH), the share link on an offline machine (GRADIO_SHARE=1), which files the
server hands out, start-up failures, and the page's wording for each match level (plain functions, no server).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError, AuthenticationError

from app import handlers as h
from app.config import AppConfig
from pipeline.errors import InvalidInput
from pipeline.settings import SettingsError
from pipeline.types import Filters, Match, MatchResult

pytest.register_assert_rewrite("tests.support.app_fixtures")  # before the import below: it is also loaded as a plugin

from ..support.app_fixtures import DEMO_CATALOG, REPO_ROOT, demo_rows, start_app  # noqa: E402

pytest_plugins = ("tests.support.app_fixtures",)

MATCH_FIELDS = {"id", "name", "brand", "category", "price", "currency", "score", "level", "image", "image_url", "url"}
# One product per category: enough to show that ranking works without a query per product.
SAMPLE = demo_rows()[::4]


@pytest.fixture(scope="module")
def client(app_server):
    return Client(app_server.url, verbose=False, download_files=str(app_server.log_path.parent / "downloads"))


def test_text_query_returns_the_described_product_first(client):
    for row in SAMPLE:
        gallery, result = client.predict(row["text"], api_name="/match_text")
        assert result["matches"][0]["id"] == row["id"], (row["text"], result["matches"][:3])
        assert len(gallery) == len(result["matches"]) == 8  # the page's default top-k
        assert gallery[0]["caption"].startswith(f"{row['name']} · {row['brand']} · {row['price']:.2f} · score ")
        assert Path(gallery[0]["image"]).is_file()  # the product photo, downloaded by the client


def test_json_has_every_field(client):
    _, result = client.predict(SAMPLE[0]["text"], top_k=3, api_name="/match_text")
    assert {"matches", "best_level", "best_level_words", "cache_hit", "timings_ms", "warnings"} <= set(result)
    first = result["matches"][0]
    assert set(first) == MATCH_FIELDS
    row = SAMPLE[0]
    assert (first["name"], first["brand"], first["category"], first["price"]) == (
        row["name"],
        row["brand"],
        row["category"],
        row["price"],
    )
    assert first["level"] in {"match", "similar", "none"} and isinstance(first["score"], float)
    assert "/photos/" in first["image"] and first["image"].endswith(".jpg"), "the photo store's copy, not the source"
    assert first["image_url"] == "/gradio_api/file=" + first["image"]
    assert {"embed", "search", "total"} <= set(result["timings_ms"])
    again = client.predict(SAMPLE[0]["text"], top_k=3, api_name="/match_text")[1]
    assert again["cache_hit"] is True and again["matches"] == result["matches"]


def test_image_query_returns_the_photographed_product_first(client):
    for row in SAMPLE[:4]:
        photo = DEMO_CATALOG.parent / row["image_path"]
        gallery, result = client.predict(handle_file(str(photo)), top_k=3, api_name="/match_image")
        first = result["matches"][0]
        assert first["id"] == row["id"]
        assert first["score"] == pytest.approx(1.0, abs=1e-3) and first["level"] == "match"
        assert result["best_level"] == "match" and gallery[0]["caption"].endswith("· Match")
        assert Path(gallery[0]["image"]).read_bytes()[:2] == b"\xff\xd8"  # the photo store's JPEG copy


def test_filters(client):
    _, mugs = client.predict("coffee mug", top_k=20, categories=["Mugs"], api_name="/match_text")
    assert len(mugs["matches"]) == 4 and {m["category"] for m in mugs["matches"]} == {"Mugs"}
    _, brand = client.predict("black", top_k=20, brands=["Tolvane", "Fennick"], api_name="/match_text")
    assert brand["matches"] and {m["brand"] for m in brand["matches"]} <= {"Tolvane", "Fennick"}
    _, priced = client.predict("gift", top_k=50, min_price=20, max_price=60, api_name="/match_text")
    expected = sum(20 <= r["price"] <= 60 for r in demo_rows())
    assert len(priced["matches"]) == expected and all(20 <= m["price"] <= 60 for m in priced["matches"])
    photo = handle_file(str(DEMO_CATALOG.parent / SAMPLE[1]["image_path"]))  # a mug, filtered out
    _, caps = client.predict(photo, categories=["Caps"], api_name="/match_image")
    assert caps["matches"] and {m["category"] for m in caps["matches"]} == {"Caps"}
    gallery, nothing = client.predict("umbrella", brands=["No Such Brand"], api_name="/match_text")
    assert gallery == [] and nothing["matches"] == [] and nothing["best_level"] == "none"
    with pytest.raises(AppError, match="lowest price is above the highest"):
        client.predict("umbrella", min_price=100, max_price=10, api_name="/match_text")


def test_empty_text_is_a_clear_error_and_the_app_keeps_serving(client):
    with pytest.raises(AppError, match="Please type a description of the product you are looking for"):
        client.predict("   ", api_name="/match_text")
    with pytest.raises(AppError, match="Please upload a photo"):
        client.predict(None, api_name="/match_image")
    with pytest.raises(AppError, match=r"Choose a product first: click one of the results \(through the API"):
        client.predict("", api_name="/similar")  # the page's "More like this" before any result was clicked
    assert client.predict(SAMPLE[2]["text"], api_name="/match_text")[1]["matches"][0]["id"] == SAMPLE[2]["id"]


def test_corrupt_upload_is_a_clear_error(client, tmp_path):
    broken = tmp_path / "photo.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG" * 10)
    with pytest.raises(AppError, match="not a supported image"):
        client.predict(handle_file(str(broken)), api_name="/match_image")
    truncated = tmp_path / "half.jpg"
    truncated.write_bytes((DEMO_CATALOG.parent / SAMPLE[0]["image_path"]).read_bytes()[:300])
    with pytest.raises(AppError, match="not a supported image"):
        client.predict(handle_file(str(truncated)), api_name="/match_image")


def test_api_names_and_defaults(client):
    api = client.view_api(print_info=False, return_format="dict")
    endpoints = api["named_endpoints"]
    # examples, status and selection stay private; the catalogue's own endpoints are tested in test_catalogue.py
    assert set(endpoints) == {
        "/match_image", "/match_text", "/similar", "/ingest", "/delete_products", "/catalogue", "/health"
    }  # fmt: skip
    assert client.predict(api_name="/health") == {"ok": True, "products": len(demo_rows())}
    filters = ["top_k", "categories", "brands", "min_price", "max_price"]
    expected = {
        "/match_image": ("image", [*filters, "refine", "refine_weight", "diverse"]),
        "/match_text": ("text", [*filters, "diverse"]),
        "/similar": ("product_id", [*filters, "diverse"]),
    }
    for name, (query, rest) in expected.items():
        params = endpoints[name]["parameters"]
        assert params[0]["parameter_name"] == query
        assert [p["parameter_name"] for p in params[1:]] == rest
        assert all(p["parameter_has_default"] for p in params[1:])
        assert [r["component"] for r in endpoints[name]["returns"]] == ["Gallery", "Json"]
    categories = endpoints["/match_text"]["parameters"][2]["type"]["items"]["enum"]
    assert sorted(categories) == sorted({r["category"] for r in demo_rows()})  # choices come from the catalogue


def test_concurrent_queries_all_get_their_own_answer(app_server):
    """Eight clients at once. One ``gradio_client.Client`` per thread, as README advises: a single Client shared by
    threads lost an answer under load in CI (gradio_client 2.7.2: the job ended in ``CancelledError``, its client's
    one shared event stream having ended before the answer came)."""
    local = threading.local()

    def ask(row):
        if not hasattr(local, "client"):
            local.client = Client(app_server.url, verbose=False, download_files=False)
        client = local.client
        if row["id"] in {r["id"] for r in SAMPLE[::2]}:
            photo = handle_file(str(DEMO_CATALOG.parent / row["image_path"]))
            return row["id"], client.predict(photo, top_k=2, api_name="/match_image")[1]
        return row["id"], client.predict(row["text"], top_k=2, api_name="/match_text")[1]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, SAMPLE * 2))
    assert [result["matches"][0]["id"] for _, result in answers] == [pid for pid, _ in answers]


def test_the_server_hands_out_catalogue_photos_and_nothing_else(app_server, client):
    """Only the photo store under DATA_DIR is served: the stored copy of a product's photo, not its source file, not
    the code, not the system."""
    _, result = client.predict(SAMPLE[0]["text"], top_k=1, api_name="/match_text")
    stored = Path(result["matches"][0]["image"])
    ok = httpx.get(f"{app_server.url}gradio_api/file={stored}", timeout=10)
    assert ok.status_code == 200 and ok.content == stored.read_bytes() and ok.content[:2] == b"\xff\xd8"
    source = (DEMO_CATALOG.parent / SAMPLE[0]["image_path"]).resolve()
    for secret in (source, REPO_ROOT / "pyproject.toml", Path("/etc/passwd"), DEMO_CATALOG):
        refused = httpx.get(f"{app_server.url}gradio_api/file={secret.resolve()}", timeout=10)
        assert refused.status_code in (403, 404), (secret, refused.status_code)


def test_uploads_above_the_size_limit_are_refused(client, app_server, tmp_path):
    big = tmp_path / "huge.jpg"
    big.write_bytes(b"\xff\xd8" + os.urandom(3 * 2**20))  # the app under test runs with MAX_IMAGE_MB=2
    with pytest.raises(ValueError, match="exceeds the maximum file size of 2097152 bytes"):
        client.predict(handle_file(str(big)), api_name="/match_image")  # the client reads the limit from the app
    upload = httpx.post(f"{app_server.url}gradio_api/upload", files={"files": big.open("rb")}, timeout=30)
    assert upload.status_code == 413  # and the server refuses it too
    assert client.predict(SAMPLE[3]["text"], api_name="/match_text")[1]["matches"][0]["id"] == SAMPLE[3]["id"]
    assert "Traceback" not in app_server.log()


# The client example README.md shows. Once README.md has it (a ```python block that imports gradio_client), the test
# runs README's own text; until then this copy, which README must carry verbatim.
README_EXAMPLE = """\
from gradio_client import Client, handle_file

client = Client("http://127.0.0.1:7860/")

# A description: the first parameter is the query; every other parameter has a default.
gallery, result = client.predict("Red cotton crew-neck T-shirt by Northwind", api_name="/match_text")
print(result["best_level_words"])
for match in result["matches"]:
    print(match["id"], match["name"], match["brand"], match["price"], match["score"], match["level"])

# A photo, with filters; `gallery` holds (photo file, caption) pairs, `result` the matches as JSON.
gallery, result = client.predict(
    handle_file("assets/demo_catalog/images/demo-001.jpg"),
    top_k=3,
    categories=["T-shirts"],
    max_price=50,
    api_name="/match_image",
)
print(result["matches"][0]["name"])  # Classic Crew Tee
"""


def _readme_example() -> str:
    readme = REPO_ROOT / "README.md"
    if readme.is_file():
        blocks = readme.read_text().split("```python\n")[1:]
        for block in blocks:
            code = block.split("```", 1)[0]
            if "gradio_client" in code and "/match_image" in code:
                return code
    return README_EXAMPLE


def test_readme_client_example_works_as_written(app_server, tmp_path):
    code = _readme_example()
    assert "http://127.0.0.1:7860/" in code
    script = tmp_path / "example.py"
    script.write_text(code.replace("http://127.0.0.1:7860/", app_server.url))
    done = subprocess.run([sys.executable, str(script)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()  # the client's own "Loaded as API" line comes first
    first = next(line for line in lines if line.startswith("demo-"))
    assert first.startswith("demo-001 Classic Crew Tee Northwind 19.95 ")
    assert lines[-1] == "Classic Crew Tee"


def test_json_only_clients_fetch_just_the_photos_they_show(app_server, tmp_path):
    """``download_files=False``: the gallery comes back as URLs (nothing downloaded), and ``image_url`` serves the
    match's own photo."""
    client = Client(app_server.url, verbose=False, download_files=False)
    gallery, result = client.predict(SAMPLE[1]["text"], top_k=3, api_name="/match_text")
    assert all(item["image"]["url"].startswith(app_server.url) for item in gallery), "URLs, not downloaded files"
    best = result["matches"][0]
    photo = httpx.get(app_server.url.rstrip("/") + best["image_url"], timeout=10)
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
    assert photo.content == Path(best["image"]).read_bytes()


def test_unexpected_errors_are_logged_and_shown_as_one_generic_sentence(caplog):
    import gradio as gr

    from app.shown import shown_to_people as _shown_to_people

    @_shown_to_people
    def broken(text: str = ""):
        raise RuntimeError("internal detail that must not reach the page")

    @_shown_to_people
    def refused(text: str = ""):
        raise InvalidInput("Please type a description of the product you are looking for.")

    with pytest.raises(gr.Error) as err:
        broken("x")
    assert err.value.message == h.GENERIC_ERROR and "internal detail" not in str(err.value)
    assert "internal detail" in caplog.text and "Traceback" in caplog.text  # the log keeps what a developer needs
    with pytest.raises(gr.Error, match="Please type a description"):
        refused()


# -- login and share link: a second app, started with both -------------------------------------------------------------
AUTH = ("shopper", "correct horse battery")


@pytest.fixture(scope="module")
def guarded_app(app_data, model_repo, tmp_path_factory):
    app = start_app(
        app_data,
        model_repo,
        tmp_path_factory.mktemp("guarded-app"),
        GRADIO_AUTH=":".join(AUTH),
        GRADIO_SHARE="1",
    )
    yield app
    assert app.stop() == 0, app.log()[-3000:]


def test_share_link_offline_is_one_clear_line_and_the_app_serves_locally(guarded_app):
    lines = [line for line in guarded_app.log().splitlines() if "GRADIO_SHARE=1" in line]
    assert len(lines) == 1, guarded_app.log()
    assert "no share link can be made here" in lines[0] and "Serving locally only." in lines[0]
    assert guarded_app.started_in_s < 90  # the share probe gives up within seconds, it does not hang
    assert "Could not create share link" not in guarded_app.log()  # Gradio's own multi-line advice is not reached
    assert "gradio.live" not in guarded_app.log()


def test_login_protects_page_and_api(guarded_app):
    with pytest.raises(AuthenticationError, match="credentials were not provided"):
        Client(guarded_app.url, verbose=False)
    with pytest.raises(ValueError, match="Could not login"):
        Client(guarded_app.url, auth=(AUTH[0], "wrong"), verbose=False)
    assert httpx.get(f"{guarded_app.url}config", timeout=10).status_code == 401
    call = httpx.post(f"{guarded_app.url}gradio_api/call/match_text", json={"data": ["mug"]}, timeout=10)
    assert call.status_code == 401
    photo = (DEMO_CATALOG.parent / SAMPLE[0]["image_path"]).resolve()
    assert httpx.get(f"{guarded_app.url}gradio_api/file={photo}", timeout=10).status_code == 401
    client = Client(guarded_app.url, auth=AUTH, verbose=False, download_files=False)
    _, result = client.predict(SAMPLE[1]["text"], api_name="/match_text")
    assert result["matches"][0]["id"] == SAMPLE[1]["id"]


# -- start-up failures: one sentence, exit status 2, no traceback ------------------------------------------------------
def _run_app(tmp_path, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GRADIO_", "MONGODB", "QDRANT", "TRITON"))}
    return subprocess.run(
        [sys.executable, "-m", "app"],
        cwd=REPO_ROOT,
        env={**clean, "DATA_DIR": str(tmp_path / "data"), "GRADIO_SERVER_PORT": "1", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_start_without_a_model_says_what_to_do(tmp_path):
    done = _run_app(tmp_path, MODEL_REPOSITORY=str(tmp_path / "no-model"))
    assert done.returncode == 2
    assert "No model in" in done.stderr and "build-model" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_second_app_on_the_same_data_folder_is_one_sentence(app_server, model_repo, tmp_path):
    """The running app holds its data folder; a second one stops before opening anything, and the first serves on."""
    data = _data_dir_of(app_server)
    done = _run_app(tmp_path, DATA_DIR=str(data), MODEL_REPOSITORY=str(model_repo))
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if "in use by another app" in line]
    assert len(lines) == 1 and f"pid {app_server.process.pid}" in lines[0] and "own DATA_DIR" in lines[0]
    assert "Traceback" not in done.stderr
    assert httpx.get(app_server.url, timeout=10).status_code == 200


def _data_dir_of(app: object) -> Path:
    return app.log_path.parent / "data"


def test_bad_app_settings_are_one_sentence(tmp_path):
    done = _run_app(tmp_path, GRADIO_AUTH="no-colon-here")
    assert done.returncode == 2 and done.stderr.strip() == (
        "app: GRADIO_AUTH must look like user:password (both parts non-empty)."
    )


# -- the page's wording, without a server ------------------------------------------------------------------------------
def _match(level: str, score: float, **extra) -> Match:
    return Match("p1", "Trail Cap", "Tolvane", "Caps", 22.0, score, level, None, {"id": "p1", **extra})


def _result(*matches: Match) -> MatchResult:
    return MatchResult("text", list(matches), False, {"embed": 1.0, "total": 2.0}, 1)


def test_headings_say_each_level_in_plain_words():
    assert h.heading(_result(_match("match", 0.95), _match("similar", 0.8)), Filters()).startswith(
        "### Match\n1 product looks like"
    )
    assert h.heading(_result(_match("similar", 0.8)), Filters()).startswith("### Similar products")
    nothing_close = h.heading(_result(_match("none", 0.2)), Filters())
    assert nothing_close.startswith("### No close match\nNothing in the catalogue looks like")
    assert h.heading(_result(), Filters(brands=("X",))).startswith("### No product fits these filters")
    assert h.heading(_result(), Filters()).startswith("### The catalogue is empty")
    assert h.caption(_match("none", 0.2)) == "Trail Cap · Tolvane · 22.00 · score 0.20 · No close match"
    assert h.details(_match("similar", 0.8, color="red", image_file="/srv/x.jpg")) == {
        "id": "p1",
        "color": "red",
        "score": 0.8,
        "match": "Similar product",
    }


def test_request_values_are_checked():
    assert h.make_filters(None, "Caps", "", 10) == Filters(brands=("Caps",), max_price=10.0)
    assert h.make_filters([], [], 0, 0) == Filters()  # what the page sends with empty price boxes
    for bad in ({"min_price": -1}, {"min_price": "cheap"}, {"categories": [1, 2]}):
        with pytest.raises(InvalidInput):
            h.make_filters(bad.get("categories"), None, bad.get("min_price"), None)
    assert h.image_source({"path": "/tmp/x.png", "url": "http://h/file=/tmp/x.png"}) == "/tmp/x.png"
    assert h.image_source({"path": None, "url": "data:image/png;base64,aGVsbG8="}) == b"hello"
    assert h.image_source(None) is None


def test_app_config_from_env():
    config = AppConfig.from_env({"GRADIO_SERVER_PORT": "8080", "GRADIO_SHARE": "1", "GRADIO_AUTH": "a:b:c"})
    expected = (8080, True, ("a", "b:c"), "127.0.0.1")
    assert (config.server_port, config.share, config.auth, config.server_name) == expected
    assert "b:c" not in repr(config) and config.public_warning() is None
    assert AppConfig.from_env({"GRADIO_SERVER_NAME": "0.0.0.0"}).server_name == "0.0.0.0"
    assert "anyone who has the share link" in AppConfig.from_env({"GRADIO_SHARE": "1"}).public_warning()
    assert AppConfig.from_env({}).public_warning() is None
    assert AppConfig.from_env({}) == AppConfig()
    for env in ({"GRADIO_SHARE": "maybe"}, {"GRADIO_SERVER_PORT": "http"}, {"GRADIO_CONCURRENCY": "0"}):
        with pytest.raises(SettingsError):
            AppConfig.from_env(env)


def test_the_status_line_says_each_notice_once(tmp_path, offline_repo, mongo_uri):
    """Every page load passes on what the start found; the notices decided anew must not pile up (the offline
    model's notice showed twice on every page)."""
    from pipeline.service import Pipeline
    from pipeline.settings import Settings

    settings = Settings(data_dir=tmp_path / "data", model_repository=offline_repo, mongodb_uri=mongo_uri)
    with Pipeline(settings) as pipe:
        started = h.page_info(pipe)
        again = h.page_info(pipe, [*started.problems, "MongoDB does not answer (ping): refused"])
    assert started.problems == (h.OFFLINE_NOTICE, h.EMPTY_CATALOGUE)
    assert again.problems == ("MongoDB does not answer (ping): refused", h.OFFLINE_NOTICE, h.EMPTY_CATALOGUE)


def test_uncalibrated_thresholds_are_said_on_the_page(settings):
    """A model whose card holds the default thresholds (built without calibration) says so; thresholds the operator
    sets, or that evaluate --calibrate measured, silence it."""
    from pipeline.service import Pipeline

    with Pipeline(settings) as pipe:
        assert not pipe.card.thresholds_calibrated
        assert h.UNCALIBRATED_NOTICE in h.page_info(pipe).problems
        assert "not calibrated" in h.page_info(pipe).markdown()
    only_one = settings.with_(match_threshold=0.7)
    with Pipeline(only_one) as pipe:
        assert h.UNCALIBRATED_NOTICE in h.page_info(pipe).problems  # the similar threshold is still a default
    both = settings.with_(match_threshold=0.7, similar_threshold=0.5)
    with Pipeline(both) as pipe:
        assert h.UNCALIBRATED_NOTICE not in h.page_info(pipe).problems


def test_the_offline_models_thresholds_are_its_own(offline_repo):
    from pipeline.model_repo import ModelCard

    card = ModelCard.load(offline_repo)
    assert card.thresholds_calibrated and "tune_offline_model" in card.thresholds_calibration
