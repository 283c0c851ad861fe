"""The REST API (``/api/v1``) of a real ``python -m app`` on loopback, through real HTTP clients (httpx), beside the
page's own Gradio endpoints on the same port: the same answers, the page's hostile inputs refused with the page's
sentences, keys / login / CORS / rate limit / admin token honoured, the OpenAPI document valid and matching the
answers, 16 clients at once with an import meanwhile, ``/metrics`` parsed by prometheus-client, and README's
``curl`` and ``fetch`` examples run as written.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import threading
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from app.api.metrics import METRICS, Metrics, observe_batch
from app.api.security import RateLimiter
from app.config import AppConfig
from pipeline.settings import SettingsError

from ..query.test_bad_inputs import REFUSED

pytest.register_assert_rewrite("tests.support.app_fixtures")  # before the import below: it is also loaded as a plugin

from ..support.app_fixtures import DEMO_CATALOG, REPO_ROOT, demo_rows, start_app  # noqa: E402

pytest_plugins = ("tests.support.app_fixtures",)

TOKEN = "rest admin token, long enough"
SHOP = "https://shop.example"
KEYS = ("key-one-7f3a", "key-two-91bc")
LOGIN = ("shopper", "correct horse battery")
ROWS = demo_rows()
SAMPLE = ROWS[::4]  # one product per category
CATEGORIES = sorted({r["category"] for r in ROWS})


def photo_of(row: dict) -> Path:
    return DEMO_CATALOG.parent / row["image_path"]


@pytest.fixture(scope="module")
def rest_app(app_data, model_repo, tmp_path_factory):
    app = start_app(
        app_data, model_repo, tmp_path_factory.mktemp("rest-app"),
        ADMIN_TOKEN=TOKEN, CORS_ORIGINS=SHOP, MAX_IMAGE_MB="2", GRADIO_CONCURRENCY="4",
    )  # fmt: skip
    yield app
    code = app.stop()
    assert code == 0, app.log()[-3000:]


@pytest.fixture(scope="module")
def api(rest_app):
    with httpx.Client(base_url=rest_app.url.rstrip("/") + "/api/v1", timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def page(rest_app):
    return Client(rest_app.url, verbose=False, download_files=False)


def ranked(answer: dict) -> list[tuple[str, float, str]]:
    return [(m["id"], round(m["score"], 5), m["level"]) for m in answer["matches"]]


def search(api, **body) -> dict:
    response = api.post("/search", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"status", "error", "message"} and body["status"] == status, body
    assert "Traceback" not in response.text
    return body["message"]


# -- the same answers as the page's endpoints --------------------------------------------------------------------------
def test_text_search_answers_as_match_text(api, page):
    for row in SAMPLE:
        rest = search(api, text=row["text"], top_k=5)
        _, gradio = page.predict(row["text"], top_k=5, api_name="/match_text")
        assert ranked(rest) == ranked(gradio) and rest["matches"][0]["id"] == row["id"]
        assert [m["image_url"] for m in rest["matches"]] == [m["image_url"] for m in gradio["matches"]]
    filtered = search(api, text="gift", top_k=50, filters={"categories": ["Mugs", "Caps"], "min_price": 10,
                                                           "max_price": 40})  # fmt: skip
    _, gradio = page.predict("gift", top_k=50, categories=["Mugs", "Caps"], min_price=10, max_price=40,
                             api_name="/match_text")  # fmt: skip
    assert ranked(filtered) == ranked(gradio) and filtered["matches"]
    assert all(m["category"] in ("Mugs", "Caps") and 10 <= m["price"] <= 40 for m in filtered["matches"])
    first = search(api, text=SAMPLE[0]["text"], top_k=1)["matches"][0]
    row = SAMPLE[0]
    assert (first["name"], first["brand"], first["category"], first["price"]) == (
        row["name"], row["brand"], row["category"], row["price"]
    )  # fmt: skip
    assert first["fields"]["SKU"] == row["SKU"] and first["fields"]["color"] == row["color"]
    assert "image_file" not in first["fields"] and "image" not in first, "no server paths but the photo's URL"
    assert first["level_words"] in {"Match", "Similar product", "No close match"}


def test_photo_search_answers_as_match_image(api, page, rest_app):
    for row in SAMPLE[:3]:
        photo = photo_of(row)
        _, gradio = page.predict(handle_file(str(photo)), top_k=4, api_name="/match_image")
        encoded = base64.b64encode(photo.read_bytes()).decode()
        answers = [
            api.post("/search", files={"image": (photo.name, photo.read_bytes(), "image/jpeg")}, data={"top_k": "4"}),
            api.post("/search", json={"image_base64": encoded, "top_k": 4}),
            api.post("/search", json={"image_base64": f"data:image/jpeg;base64,{encoded}", "top_k": 4}),
        ]
        for answer in answers:
            assert answer.status_code == 200, answer.text
            assert ranked(answer.json()) == ranked(gradio) and answer.json()["matches"][0]["id"] == row["id"]
        best = answers[0].json()["matches"][0]
        served = httpx.get(rest_app.url.rstrip("/") + best["image_url"], timeout=10)
        assert served.status_code == 200 and served.content[:2] == b"\xff\xd8"
    photo = photo_of(SAMPLE[1])
    _, gradio = page.predict(handle_file(str(photo)), top_k=3, refine="in red", refine_weight=0.3,
                             categories=CATEGORIES[:4], api_name="/match_image")  # fmt: skip
    rest = api.post(
        "/search",
        files={"image": ("p.jpg", photo.read_bytes())},
        data={"top_k": "3", "refine": "in red", "refine_weight": "0.3", "categories": CATEGORIES[:4]},
    )
    assert rest.status_code == 200, rest.text
    assert ranked(rest.json()) == ranked(gradio)


def test_products_similar_facets_and_health(api, page):
    row = ROWS[5]
    product = api.get(f"/products/{row['id']}")
    assert product.status_code == 200, product.text
    got = product.json()
    assert (got["id"], got["name"], got["brand"], got["price"]) == (row["id"], row["name"], row["brand"], row["price"])
    assert got["fields"]["description"] == row["description"] and got["image_url"].startswith("/gradio_api/file=")
    similar = api.get(f"/products/{row['id']}/similar", params={"top_k": 3, "categories": [row["category"]]})
    assert similar.status_code == 200, similar.text
    _, gradio = page.predict(row["id"], top_k=3, categories=[row["category"]], api_name="/similar")
    assert ranked(similar.json()) == ranked(gradio) and row["id"] not in {m["id"] for m in similar.json()["matches"]}
    facets = api.get("/facets").json()
    counts = {c: sum(r["category"] == c for r in ROWS) for c in CATEGORIES}
    assert {f["value"]: f["count"] for f in facets["categories"]} == counts
    assert {f["value"] for f in facets["brands"]} == {r["brand"] for r in ROWS}
    health = api.get("/health")
    assert health.status_code == 200
    body = health.json()
    assert body["ready"] is True and body["problems"] == [] and body["catalogue"]["products"] >= len(ROWS)
    assert body["model"]["identity"] and body["catalogue"]["version"] >= 1
    # The levels' thresholds as the matcher uses them, and that this model's were never calibrated (a tiny CLIP).
    assert set(body["model"]["thresholds"]) == {"text", "image"} and body["model"]["thresholds_calibration"] == ""
    assert all(0 < t["similar"] <= t["match"] for t in body["model"]["thresholds"].values())


# -- hostile inputs: the page's battery through the REST API -----------------------------------------------------------
@pytest.fixture(scope="module")
def query_photo() -> Image.Image:
    return Image.open(photo_of(SAMPLE[0])).convert("RGB")


@pytest.mark.parametrize("case", REFUSED)
def test_unusable_photos_are_the_pages_sentence(api, page, query_photo, case, tmp_path):
    make, words = REFUSED[case]
    data = make(query_photo)
    upload = api.post("/search", files={"image": ("photo.jpg", data, "image/jpeg")})
    inline = api.post("/search", json={"image_base64": base64.b64encode(data).decode()})
    said = {error_of(upload, 400), error_of(inline, 400)}
    assert len(said) == 1 and re.search(words, said.pop()), (upload.text, inline.text)
    if data:  # the page, for the same file (Gradio itself refuses an empty upload before the pipeline)
        path = tmp_path / "photo.jpg"
        path.write_bytes(data)
        with pytest.raises(AppError) as refused:
            page.predict(handle_file(str(path)), api_name="/match_image")
        assert upload.json()["message"] in str(refused.value)


def test_bad_values_are_the_pages_sentences(api, page):
    cases = [
        ({"top_k": 0}, {"top_k": 0}),
        ({"top_k": -1}, {"top_k": -1}),
        ({"top_k": 10_000}, {"top_k": 10_000}),
        ({"top_k": 2.5e9}, {"top_k": 2.5e9}),
        ({"top_k": "ten"}, {"top_k": "ten"}),
        ({"filters": {"min_price": 100, "max_price": 10}}, {"min_price": 100, "max_price": 10}),
        ({"filters": {"min_price": -5}}, {"min_price": -5}),
        ({"filters": {"max_price": "abc"}}, {"max_price": "abc"}),
        ({"filters": {"brands": {"$gt": ""}}}, {"brands": {"$gt": ""}}),
    ]
    for body, gradio_args in cases:
        message = error_of(api.post("/search", json={"text": "umbrella", **body}), 400)
        with pytest.raises(AppError) as refused:
            page.predict("umbrella", **gradio_args, api_name="/match_text")
        assert message in str(refused.value), (body, message, str(refused.value))
    for text in ("", "   \t\n "):
        message = error_of(api.post("/search", json={"text": text}), 400)
        assert message == "Please type a description of the product you are looking for."
    assert "type a description" in error_of(api.post("/search", json={}), 400)
    # an operator-looking string is a literal brand: nothing is called "$where"
    assert search(api, text="umbrella", filters={"brands": ["$where", '{"$gt": ""}']})["matches"] == []
    huge = search(api, text="navy track jacket " * 6000, top_k=3)  # ~108,000 characters: cut, as the page does
    assert huge["matches"] and "only its first 1000 characters" in huge["warnings"][0]
    assert "Unknown field 'colour'" in error_of(api.post("/search", json={"text": "mug", "colour": "red"}), 400)
    assert "not valid JSON" in error_of(
        api.post("/search", content=b"{nope", headers={"content-type": "application/json"}), 400
    )
    assert error_of(api.post("/search", content=b"text=mug", headers={"content-type": "text/plain"}), 415)
    assert "either text or a photo" in error_of(api.post("/search", json={"text": "mug", "image_base64": "AAAA"}), 400)
    assert "with a photo" in error_of(api.post("/search", json={"text": "mug", "refine": "red"}), 400)
    assert "not a supported image" in error_of(api.post("/search", json={"image_base64": "!!!not base64!!!"}), 400)


def test_unknown_ids_and_paths_are_404(api):
    for path in ("/products/no-such-id", "/products/no-such-id/similar"):
        assert error_of(api.get(path), 404) == "There is no product 'no-such-id' in the catalogue."
    assert error_of(api.get("/products/" + "x" * 300), 400)
    assert "no such endpoint" in error_of(api.get("/nothing/here"), 404)
    assert error_of(api.delete("/facets"), 405)
    similar = "/products/demo-001/similar"
    assert error_of(api.get(similar, params={"top_k": "ten"}), 400) == "The number of results must be a whole number."
    assert error_of(api.get(similar, params={"top_k": 0}), 400) == "Ask for between 1 and 100 results."
    assert "lowest price is above" in error_of(api.get(similar, params={"min_price": 9, "max_price": 1}), 400)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/gradio_api/file=x.jpg",
        "http://localhost:{port}/x.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.7/photo.jpg",
        "http://[::1]:{port}/x.jpg",
        "http://[::ffff:127.0.0.1]/x.jpg",
        "file:///etc/passwd",
        "ftp://example.com/x.jpg",
    ],
)
def test_private_or_odd_image_urls_are_refused(api, rest_app, url):
    port = rest_app.url.rsplit(":", 1)[1].strip("/")
    message = error_of(api.post("/search", json={"image_url": url.format(port=port)}), 400)
    assert message.startswith("Refused ") and ("public addresses" in message or "http:// or https://" in message)


def test_bodies_are_bounded(api):
    big = b"\xff\xd8" + np.random.default_rng(1).bytes(int(2.2 * 2**20))  # the app runs with MAX_IMAGE_MB=2
    upload = error_of(api.post("/search", files={"image": ("big.jpg", big)}), 413)
    assert upload == "The image is larger than 2 MB; please use a smaller photo.", "the page's sentence"
    inline = error_of(api.post("/search", json={"image_base64": base64.b64encode(big[: 2**21 + 10]).decode()}), 413)
    assert "larger than 2 MB" in inline
    huge = api.post("/search", content=b"{" + b" " * (5 * 2**20) + b"}", headers={"content-type": "application/json"})
    assert "this endpoint takes" in error_of(huge, 413)

    def chunks():  # no Content-Length: the bound holds while reading
        for _ in range(30):
            yield b" " * 2**17

    streamed = api.post("/search", content=chunks(), headers={"content-type": "application/json"})
    assert "this endpoint takes" in error_of(streamed, 413)
    small = api.request(
        "DELETE", "/products/x", content=b" " * (100 * 2**10), headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert "larger than the 64 KB" in error_of(small, 413)
    assert search(api, text="mug", top_k=1)["matches"], "still answering"


# -- catalogue changes: the admin token --------------------------------------------------------------------------------
def _arrivals(folder: Path, n: int, category: str = "Arrivals", prefix: str = "arrival") -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{**ROWS[i % len(ROWS)], "id": f"{prefix}-{i:03d}", "SKU": f"ARR-{i:03d}", "category": category,
             "name": f"Arrival {i}", "text": f"Arrival number {i}"} for i in range(n)]  # fmt: skip
    catalogue = folder / "arrivals.jsonl"
    catalogue.write_text("".join(json.dumps(r) + "\n" for r in rows))
    photos = folder / "arrivals.zip"
    with zipfile.ZipFile(photos, "w") as zf:
        for image in sorted({r["image_path"] for r in rows}):
            zf.write(DEMO_CATALOG.parent / image, image)
    return catalogue, photos


def _import(api, catalogue: Path, photos: Path | None, token: str | None = TOKEN, mode: str = "update"):
    files = {"catalogue": (catalogue.name, catalogue.read_bytes())}
    if photos:
        files["photos"] = (photos.name, photos.read_bytes(), "application/zip")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return api.post("/catalogue/import", files=files, data={"mode": mode}, headers=headers, timeout=300)


def test_import_and_delete_need_the_admin_token(api, rest_app, tmp_path):
    catalogue, photos = _arrivals(tmp_path, 3, "Token test", prefix="token")
    before = api.get("/health").json()["catalogue"]["products"]
    assert "Bearer" in error_of(_import(api, catalogue, photos, token=None), 401)
    assert "not right" in error_of(_import(api, catalogue, photos, token="wrong"), 403)
    assert error_of(api.delete("/products/demo-003"), 401)
    assert error_of(api.delete("/products/demo-003", headers={"Authorization": "Bearer nope"}), 403)
    assert api.get("/health").json()["catalogue"]["products"] == before, "nothing changed"
    assert "Choose how to import" in error_of(_import(api, catalogue, photos, mode="merge"), 400)
    done = _import(api, catalogue, photos)
    assert done.status_code == 200, done.text
    report = done.json()
    assert (report["rows"], report["added"], report["bad"], report["catalog"]) == (3, 3, [], "arrivals.jsonl")
    again = _import(api, catalogue, photos).json()
    assert (again["added"], again["unchanged"]) == (0, 3), "the same upload twice changes nothing"
    found = search(api, text="Arrival number 1", top_k=5, filters={"categories": ["Token test"]})
    assert found["matches"][0]["id"] == "token-001"
    gone = api.delete("/products/token-001", headers={"Authorization": f"Bearer {TOKEN}"})
    assert gone.status_code == 200 and gone.json()["deleted"] == ["token-001"]
    assert error_of(api.get("/products/token-001"), 404)
    assert error_of(api.delete("/products/token-001", headers={"Authorization": f"Bearer {TOKEN}"}), 404)
    assert TOKEN not in rest_app.log()


def test_an_import_renames_a_files_own_columns(api, tmp_path):
    catalogue, photos = _arrivals(tmp_path, 1, "Mapped test", prefix="mapped")
    row = json.loads(catalogue.read_text().splitlines()[0])
    own = tmp_path / "own-columns.csv"
    own.write_text(f"Ref,Product Name,Group,Picture\nmapped-x,Mapped Arrival,Mapped test,{row['image_path']}\n")
    files = {"catalogue": (own.name, own.read_bytes()), "photos": (photos.name, photos.read_bytes(), "application/zip")}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    refused = api.post("/catalogue/import", files=files, data={"column_map": "Ref"}, headers=headers, timeout=300)
    assert "is not SOURCE=TARGET" in error_of(refused, 400)
    spec = "Ref=id,Product Name=name,Group=category,Picture=image_path"
    done = api.post("/catalogue/import", files=files, data={"column_map": spec}, headers=headers, timeout=300)
    assert done.status_code == 200, done.text
    report = done.json()
    assert report["format"].startswith("Read own-columns.csv with its columns renamed") and report["added"] == 1
    assert api.get("/products/mapped-x").json()["name"] == "Mapped Arrival"


# -- CORS --------------------------------------------------------------------------------------------------------------
def test_cors_allows_the_listed_origins_only(api, rest_app):
    asked = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type,x-api-key"}
    ok = api.options("/search", headers={"Origin": SHOP, **asked})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == SHOP
    assert "x-api-key" in ok.headers["access-control-allow-headers"].lower()
    evil = api.options("/search", headers={"Origin": "https://evil.example", **asked})
    assert evil.status_code == 400 and "access-control-allow-origin" not in evil.headers
    answer = api.post("/search", json={"text": "mug"}, headers={"Origin": SHOP})
    assert answer.headers["access-control-allow-origin"] == SHOP
    other = api.post("/search", json={"text": "mug"}, headers={"Origin": "https://evil.example"})
    assert other.status_code == 200 and "access-control-allow-origin" not in other.headers
    refused = api.post("/search", json={"text": "mug", "top_k": 0}, headers={"Origin": SHOP})
    assert refused.status_code == 400 and refused.headers["access-control-allow-origin"] == SHOP, "errors readable"
    # Gradio's own routes keep Gradio's rules
    assert httpx.get(rest_app.url + "config", timeout=10).status_code == 200


# -- OpenAPI -----------------------------------------------------------------------------------------------------------
def test_openapi_document_is_valid_and_matches_the_answers(api, rest_app):
    import jsonschema
    from openapi_spec_validator import validate

    spec = httpx.get(rest_app.url + "api/openapi.json", timeout=10).json()
    validate(spec)
    assert set(spec["paths"]) == {
        "/api/v1/search", "/api/v1/products/{product_id}", "/api/v1/products/{product_id}/similar",
        "/api/v1/facets", "/api/v1/health", "/api/v1/catalogue/import",
    }  # fmt: skip
    docs = httpx.get(rest_app.url + "api/docs", timeout=10)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()

    def check(path: str, method: str, response: httpx.Response) -> None:
        answers = spec["paths"][path][method]["responses"]
        schema = answers[str(response.status_code)]["content"]["application/json"]["schema"]
        jsonschema.validate(response.json(), {**schema, "components": spec["components"]})

    photo = photo_of(SAMPLE[2]).read_bytes()
    check("/api/v1/search", "post", api.post("/search", json={"text": "mug", "top_k": 3}))
    check("/api/v1/search", "post", api.post("/search", files={"image": ("p.jpg", photo)}))
    check("/api/v1/search", "post", api.post("/search", json={"text": "mug", "top_k": 0}))
    check("/api/v1/products/{product_id}", "get", api.get("/products/demo-002"))
    check("/api/v1/products/{product_id}", "get", api.get("/products/nope"))
    check("/api/v1/products/{product_id}/similar", "get", api.get("/products/demo-002/similar"))
    check("/api/v1/facets", "get", api.get("/facets"))
    check("/api/v1/health", "get", api.get("/health"))
    request = spec["paths"]["/api/v1/search"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(request)
    body = spec["components"]["schemas"]["SearchRequest"]
    assert {"text", "image_url", "image_base64", "top_k", "filters", "diverse", "refine", "refine_weight"} == set(
        body["properties"]
    )


# -- many clients at once, an import meanwhile -------------------------------------------------------------------------
def test_sixteen_clients_with_an_import_get_the_answers_they_get_alone(api, rest_app, tmp_path):
    """16 clients, each its own connection, while an import adds products in a category no query asks for. An answer
    is compared with the same query asked alone on the same catalogue version (the import makes a new one, and the
    BM25 statistics of text queries change with it)."""
    queries = [("text", r["text"]) for r in ROWS] + [("image", r["id"]) for r in ROWS[::3]]
    photos_of = {r["id"]: base64.b64encode(photo_of(r).read_bytes()).decode() for r in ROWS}

    def ask(client: httpx.Client, q) -> tuple[list, int]:
        kind, value = q
        common = {"top_k": 5, "filters": {"categories": CATEGORIES}}
        body = {"text": value, **common} if kind == "text" else {"image_base64": photos_of[value], **common}
        response = client.post("/search", json=body)
        assert response.status_code == 200, response.text
        answer = response.json()
        return [(m["id"], round(m["score"], 5)) for m in answer["matches"]], answer["catalog_version"]

    alone: dict[int, dict] = {}

    def reference() -> None:
        for q in queries:
            got, version = ask(api, q)
            alone.setdefault(version, {})[q] = got

    reference()
    catalogue, photos = _arrivals(tmp_path, 24)
    errors: list[str] = []
    answers: list[tuple] = []
    lock = threading.Lock()
    base = rest_app.url.rstrip("/") + "/api/v1"

    def one_client(n: int) -> None:
        with httpx.Client(base_url=base, timeout=120) as client:
            for i in range(8):
                q = queries[(n * 5 + i) % len(queries)]
                try:
                    got, version = ask(client, q)
                except Exception as err:
                    with lock:
                        errors.append(f"{type(err).__name__}: {err}")
                    continue
                with lock:
                    answers.append((q, got, version))

    report: dict = {}

    def run_import() -> None:
        with httpx.Client(base_url=base, timeout=300) as client:
            response = _import(client, catalogue, photos)
            if response.status_code != 200:
                errors.append(f"import: {response.status_code} {response.text[:200]}")
            else:
                report.update(response.json())

    with ThreadPoolExecutor(17) as pool:
        futures = [pool.submit(run_import)] + [pool.submit(one_client, n) for n in range(16)]
        for future in futures:
            future.result()
    reference()  # the catalogue after the import, alone again
    differing = [(q, version) for q, got, version in answers if got != alone.get(version, {}).get(q)]
    assert errors == [] and differing == []
    assert len(answers) == 16 * 8 and report["added"] == 24 and not report["bad"]
    assert api.get("/facets").json()["categories"][0]["value"] == "Arrivals", "the import went in meanwhile"
    assert "Traceback" not in rest_app.log()


# -- metrics -----------------------------------------------------------------------------------------------------------
def _families(text: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    return {family.name: family for family in text_string_to_metric_families(text)}


def test_metrics_parse_and_count_what_happened(api, rest_app, page):
    assert error_of(httpx.get(rest_app.url + "metrics", timeout=10), 401)
    page.predict("Sunny yellow mug for the page's metrics", top_k=2, api_name="/match_text")
    assert error_of(httpx.get(rest_app.url + "metrics", headers={"Authorization": "Bearer x"}, timeout=10), 403)
    search(api, text="Sunny yellow mug for metrics", top_k=2)
    search(api, text="Sunny yellow mug for metrics", top_k=2)  # a cache hit
    api.post("/search", json={"text": "mug", "top_k": 0})
    scraped = httpx.get(rest_app.url + "metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    families = _families(scraped.text)
    requests = {(s.labels["endpoint"], s.labels["status"]): s.value for s in families[
        "product_matcher_http_requests"].samples if s.name.endswith("_total")}  # fmt: skip
    assert requests[("/api/v1/search", "200")] >= 2 and requests[("/api/v1/search", "400")] >= 1
    assert all("no-such-id" not in endpoint for endpoint, _ in requests), "route templates, not raw paths"
    stages = {s.labels["stage"] for s in families["product_matcher_query_stage_seconds"].samples}
    assert {"validate", "embed", "cache", "search", "metadata", "total", "decode"} <= stages
    vias = {s.labels["via"] for s in families["product_matcher_query_stage_seconds"].samples}
    assert vias == {"rest", "page"}, "the page's (and gradio_client's) queries are measured too"
    cache = Counter()
    for s in families["product_matcher_result_cache_lookups"].samples:
        if s.name.endswith("_total"):
            cache[(s.labels["via"], s.labels["result"])] += s.value
    assert cache[("rest", "hit")] >= 1 and cache[("rest", "miss")] >= 1 and cache[("page", "miss")] >= 1
    products = families["product_matcher_catalogue_products"].samples[0].value
    assert products == api.get("/health").json()["catalogue"]["products"]
    assert families["product_matcher_catalogue_version"].samples[0].value >= 1
    assert "product_matcher_http_request_seconds" in families and "product_matcher_http_errors" in families
    runs = {s.labels["model"]: s.value for s in families["product_matcher_inference_batch_rows"].samples
            if s.name.endswith("_count")}  # fmt: skip
    assert runs.get("clip_text", 0) >= 1, "the serving app's tower runs reach the batch-size histogram"


def test_observe_batch_is_a_histogram_of_rows_by_model():
    from prometheus_client.parser import text_string_to_metric_families

    metrics = Metrics()
    for rows in (1, 16, 16, 3):
        metrics.observe_batch("clip_text", rows)
    metrics.observe_batch("clip_visual", 8)
    family = next(f for f in text_string_to_metric_families(metrics.render().decode())
                  if f.name == "product_matcher_inference_batch_rows")  # fmt: skip
    values = {(s.name, s.labels.get("model"), s.labels.get("le")): s.value for s in family.samples}
    assert values[("product_matcher_inference_batch_rows_count", "clip_text", None)] == 4
    assert values[("product_matcher_inference_batch_rows_sum", "clip_text", None)] == 36
    assert values[("product_matcher_inference_batch_rows_bucket", "clip_text", "4.0")] == 2
    assert values[("product_matcher_inference_batch_rows_count", "clip_visual", None)] == 1
    before = METRICS.batch_rows.labels("clip_text")._sum.get()
    observe_batch("clip_text", 5)  # the function the micro-batcher's on_batch is wired to
    assert METRICS.batch_rows.labels("clip_text")._sum.get() == before + 5


# -- keys, login, rate limit: apps started with them -------------------------------------------------------------------
@pytest.fixture(scope="module")
def keyed_app(app_data, model_repo, tmp_path_factory):
    app = start_app(
        app_data, model_repo, tmp_path_factory.mktemp("keyed-app"),
        API_KEYS=",".join(KEYS), API_RATE_LIMIT="5/s", METRICS="1", GRADIO_AUTH=":".join(LOGIN),
    )  # fmt: skip
    yield app
    assert app.stop() == 0, app.log()[-3000:]


def test_api_keys_and_the_rate_limit(keyed_app):
    base = keyed_app.url.rstrip("/") + "/api/v1"
    body = {"text": "coffee mug", "top_k": 2}
    with httpx.Client(base_url=base, timeout=30) as client:
        assert "X-API-Key" in error_of(client.post("/search", json=body), 401)
        assert error_of(client.post("/search", json=body, headers={"X-API-Key": "guess"}), 403)
        basic = client.post("/search", json=body, auth=LOGIN)
        assert basic.status_code == 401, "with API_KEYS set, the key is what counts"
        assert client.get("/health").status_code == 200, "open to monitors"
        statuses = [client.post("/search", json=body, headers={"X-API-Key": KEYS[1]}) for _ in range(12)]
        codes = [r.status_code for r in statuses]
        assert codes[:4] == [200] * 4 and 429 in codes, codes
        limited = next(r for r in statuses if r.status_code == 429)
        assert int(limited.headers["retry-after"]) >= 1 and "slow down" in error_of(limited, 429)
        other = client.post("/search", json=body, headers={"X-API-Key": KEYS[0]})
        assert other.status_code == 200, "each key has its own bucket"
        metrics = httpx.get(keyed_app.url + "metrics", timeout=10)
        assert metrics.status_code == 200 and "product_matcher_http_requests_total" in metrics.text, "METRICS=1"
    assert KEYS[0] not in keyed_app.log() and KEYS[1] not in keyed_app.log()


@pytest.fixture(scope="module")
def login_app(app_data, model_repo, tmp_path_factory):
    app = start_app(app_data, model_repo, tmp_path_factory.mktemp("login-app"), GRADIO_AUTH=":".join(LOGIN))
    yield app
    assert app.stop() == 0, app.log()[-3000:]


def test_the_pages_login_protects_the_rest_api_too(login_app):
    base = login_app.url.rstrip("/") + "/api/v1"
    body = {"text": "coffee mug", "top_k": 2}
    with httpx.Client(base_url=base, timeout=30) as client:
        refused = client.post("/search", json=body)
        assert "Log in" in error_of(refused, 401) and refused.headers["www-authenticate"].startswith("Basic")
        assert error_of(client.post("/search", json=body, auth=(LOGIN[0], "wrong")), 401)
        assert error_of(client.get("/facets"), 401) and error_of(client.get("/products/demo-001"), 401)
        ok = client.post("/search", json=body, auth=LOGIN)
        assert ok.status_code == 200 and ok.json()["matches"]
        assert "read-only" in error_of(client.delete("/products/demo-001", auth=LOGIN), 403)
        assert error_of(httpx.get(login_app.url + "metrics", timeout=10), 404), "off without ADMIN_TOKEN"
    assert httpx.get(login_app.url + "config", timeout=10).status_code == 401, "the page still asks for its login"


# -- README's examples, run as written ---------------------------------------------------------------------------------
def _readme_block(language: str, needle: str) -> str:
    text = (REPO_ROOT / "README.md").read_text()
    for block in text.split(f"```{language}\n")[1:]:
        code = block.split("```", 1)[0]
        if needle in code:
            return code
    raise AssertionError(f"README.md has no ```{language} block with {needle!r}")


def _answers(output: str) -> list[dict]:
    decoder, found, at = json.JSONDecoder(), [], 0
    while at < len(output):
        if output[at].isspace():
            at += 1
            continue
        value, at = decoder.raw_decode(output, at)
        found.append(value)
    return found


def test_readme_curl_example_works_as_written(rest_app):
    if shutil.which("curl") is None:
        pytest.skip("no curl on this machine")
    code = _readme_block("bash", "curl -s http://127.0.0.1:7860/api/v1/search")
    script = code.replace("http://127.0.0.1:7860/", rest_app.url)
    done = subprocess.run(["bash", "-e", "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    text, photo = _answers(done.stdout)
    assert text["matches"][0]["id"] == "demo-001" and len(text["matches"]) == 3
    assert (
        photo["kind"] == "image"
        and photo["matches"][0]["id"] == "demo-001"
        and photo["matches"][0]["level"] == ("match")
    )


JS_FIELDS = re.compile(r"(?:answer|match)\.(\w+)")


def test_readme_fetch_example_runs_with_node(rest_app, api):
    code = _readme_block("javascript", "fetch(")
    used = {name for name in JS_FIELDS.findall(code)}
    answer = search(api, text="Red cotton crew-neck T-shirt by Northwind", top_k=3)
    error = api.post("/search", json={"text": "x", "top_k": 0}).json()
    assert used <= set(answer) | set(answer["matches"][0]) | set(error), used  # the fields it reads exist
    node = shutil.which("node")
    if node is None:
        pytest.skip("no node here: the fields the example reads were checked against a real answer only")
    script = Path(rest_app.log_path.parent / "example.mjs")
    script.write_text(code.replace("http://127.0.0.1:7860", rest_app.url.rstrip("/")))
    done = subprocess.run([node, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("demo-001 Classic Crew Tee 19.95 ")
    assert lines[0].split()[-1].startswith(rest_app.url.rstrip("/") + "/gradio_api/file=")


# -- settings and the rate limiter, without a server -------------------------------------------------------------------
def test_api_settings_from_env():
    config = AppConfig.from_env(
        {"API_KEYS": " a1 , b2,,", "CORS_ORIGINS": "https://shop.example, http://localhost:3000",
         "API_RATE_LIMIT": "20/s", "METRICS": "1"}
    )  # fmt: skip
    assert config.api_keys == ("a1", "b2") and config.cors_origins == ("https://shop.example", "http://localhost:3000")
    assert config.rate_limit == (20, 1.0) and config.metrics == "1"
    assert "a1" not in repr(config) and "2 set" in repr(config)
    assert AppConfig.from_env({"API_RATE_LIMIT": "600/min"}).rate_limit == (600, 60.0)
    assert AppConfig.from_env({"API_RATE_LIMIT": "10000/h"}).rate_limit == (10000, 3600.0)
    assert AppConfig.from_env({"CORS_ORIGINS": "*"}).cors_origins == ("*",)
    defaults = AppConfig.from_env({})
    assert (defaults.api_keys, defaults.cors_origins, defaults.rate_limit, defaults.metrics) == ((), (), None, "admin")
    for env, words in (
        ({"API_RATE_LIMIT": "fast"}, "API_RATE_LIMIT"),
        ({"API_RATE_LIMIT": "0/s"}, "API_RATE_LIMIT"),
        ({"API_RATE_LIMIT": "5/day"}, "API_RATE_LIMIT"),
        ({"CORS_ORIGINS": "shop.example"}, "CORS_ORIGINS"),
        ({"CORS_ORIGINS": "https://shop.example/path"}, "CORS_ORIGINS"),
        ({"METRICS": "maybe"}, "METRICS"),
    ):
        with pytest.raises(SettingsError, match=words):
            AppConfig.from_env(env)


def test_rate_limiter_refills_and_keeps_callers_apart():
    now = [0.0]
    limiter = RateLimiter(3, 1.0, max_callers=2, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(1 / 3)
    assert limiter.take("b") == 0.0, "another caller has its own bucket"
    now[0] += 0.34
    assert limiter.take("a") == 0.0, "a third of a second gives one request back"
    limiter.take("c")  # a third caller: the least recently seen bucket ("b") goes
    assert set(limiter._buckets) == {"a", "c"}


def test_a_photo_made_here_is_refused_as_too_large_before_decoding(api):
    """A valid PNG just over MAX_IMAGE_MB (2 MB here) is refused with 413 from its size alone."""
    noise = np.random.default_rng(0).integers(0, 255, (900, 900, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "PNG")
    assert 2 * 2**20 < buf.tell() < 2.7 * 2**20  # over MAX_IMAGE_MB, under the search body's bound
    assert "larger than 2 MB" in error_of(api.post("/search", files={"image": ("n.png", buf.getvalue())}), 413)


def test_fields_are_made_json_safe_as_a_json_round_trip_would():
    """A product's fields reach the client as ``json.loads(json.dumps(fields, default=str))`` would give them."""
    import datetime
    import json

    from app.api.routes import _json_safe

    nested = {2: "two", False: "no", None: "none", 1.5: "x", "when": datetime.datetime(2021, 5, 6)}
    fields = {"sizes": ["S", "M", 3, None, True, 2.5], "made": datetime.date(2020, 1, 2), "t": (1, 2), "n": nested}
    assert json.dumps(_json_safe(fields), sort_keys=True) == json.dumps(
        json.loads(json.dumps(fields, default=str)), sort_keys=True
    )
