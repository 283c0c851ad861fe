"""The app manages its own catalogue through its API (gradio_client), as README's "Your own catalogue" shows: real
uploads into a running app, real searches afterwards, hostile files, tokens and a second import at once."""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from PIL import Image

from ..conftest import shared

pytest.register_assert_rewrite("tests.support.app_fixtures")  # before the import below: it is also loaded as a plugin

from ..support.app_fixtures import start_app  # noqa: E402

pytest_plugins = ("tests.support.app_fixtures",)
TOKEN = "correct horse battery staple"


@pytest.fixture(scope="module")
def admin_app(app_data, model_repo, tmp_path_factory):
    app = start_app(app_data, model_repo, tmp_path_factory.mktemp("catalogue-app"), ADMIN_TOKEN=TOKEN)
    yield app
    assert app.stop() == 0, app.log()[-3000:]


@pytest.fixture(scope="module")
def client(admin_app):
    return Client(admin_app.url, verbose=False, download_files=False)


def _seed_zip(folder: Path, rows: list[dict] | None = None, name: str = "seed.zip") -> tuple[Path, Path]:
    """The seed sample as a user would upload it: catalog.jsonl beside a zip of its images/ folder."""
    seed = shared("seed_sample")
    rows = rows if rows is not None else [json.loads(x) for x in (seed / "catalog.jsonl").read_text().splitlines()]
    folder.mkdir(parents=True, exist_ok=True)
    catalogue = folder / "catalog.jsonl"
    catalogue.write_text("\n".join(json.dumps(r) for r in rows))
    archive = folder / name
    with zipfile.ZipFile(archive, "w") as zf:
        for r in rows:
            zf.write(seed / r["image_path"], r["image_path"])
    return catalogue, archive


def _ingest(client, catalogue, archive=None, mode="update", token=TOKEN):
    return client.predict(
        handle_file(str(catalogue)) if catalogue else None,
        handle_file(str(archive)) if archive else None,
        mode,
        token,
        [],
        api_name="/ingest",
    )


def _count(client) -> int:
    return client.predict(1, "", api_name="/catalogue")["total"]


def _indexed(client) -> int:
    """The index's own count as it is written (``/health``), where the tab lists finished catalogues only."""
    return client.predict(api_name="/health")["products"]


def test_upload_search_sync_and_delete(client, tmp_path):
    catalogue, archive = _seed_zip(tmp_path / "seed")
    before = _count(client)
    report = _ingest(client, catalogue, archive)
    assert (report["rows"], report["added"], report["bad"]) == (10, 10, [])
    assert _count(client) == before + 10
    rows = [json.loads(x) for x in catalogue.read_text().splitlines()]
    _, found = client.predict(rows[4]["text"], top_k=3, api_name="/match_text")
    assert found["matches"][0]["id"] == rows[4]["id"]
    photo = handle_file(str(shared("seed_sample", rows[7]["image_path"])))
    _, found = client.predict(photo, top_k=3, api_name="/match_image")
    assert found["matches"][0]["id"] == rows[7]["id"] and "/photos/" in found["matches"][0]["image"]
    page = client.predict(1, rows[0]["name"], api_name="/catalogue")
    assert rows[0]["id"] in {p["id"] for p in page["products"]} and page["total"] < 10
    assert client.predict(1, '{"$gt": ""}', api_name="/catalogue")["total"] == 0, "a literal, not an operator"

    again = _ingest(client, catalogue, archive)
    assert (again["added"], again["unchanged"]) == (0, 10), "the same upload twice changes nothing"

    gone = rows[2]
    kept_catalogue, kept_archive = _seed_zip(tmp_path / "kept", [r for r in rows if r["id"] != gone["id"]])
    synced = _ingest(client, kept_catalogue, kept_archive, mode="sync")
    assert synced["deleted"] >= 1 and _count(client) == 9, "sync keeps only what the file names"
    for _ in range(2):  # the second time from the result cache, if it were stale
        _, found = client.predict(gone["text"], top_k=10, api_name="/match_text")
        assert gone["id"] not in {m["id"] for m in found["matches"]}
    with pytest.raises(Exception, match="Nothing was changed: syncing to it would delete all 9 products") as refused:
        _ingest(client, kept_catalogue, None, mode="sync")  # the photos' zip forgotten: every row bad
    said = str(refused.value)
    assert "No product could be read from catalog.jsonl" in said and "/uploads/" not in said, said
    assert _count(client) == 9

    deleted = client.predict([rows[0]["id"], "no-such-id"], TOKEN, api_name="/delete_products")
    assert deleted["deleted"] == [rows[0]["id"]] and deleted["unknown"] == ["no-such-id"]
    _, found = client.predict(rows[0]["text"], top_k=10, api_name="/match_text")
    assert rows[0]["id"] not in {m["id"] for m in found["matches"]}


def test_wrong_or_missing_token_changes_nothing(client, admin_app, tmp_path):
    catalogue, archive = _seed_zip(tmp_path / "seed")
    before = _count(client)
    started = time.monotonic()
    for token in ("wrong", "", "wrong again"):
        with pytest.raises(Exception, match="admin token"):
            _ingest(client, catalogue, archive, token=token)
    assert time.monotonic() - started >= 0.5 + 1 + 2 - 0.2, "refusals in a row are slowed down"
    with pytest.raises(Exception, match="admin token"):
        client.predict(["1"], "nope", api_name="/delete_products")
    assert _count(client) == before
    assert TOKEN not in admin_app.log() and "wrong again" not in admin_app.log()


def _zip_with(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 120, 200)).save(buf, "JPEG")
    return buf.getvalue()


def test_hostile_uploads_are_refused_with_a_sentence(client, admin_app, tmp_path):
    row = {"id": "hostile-1", "name": "Blue thing", "image_path": "img/1.jpg"}
    catalogue = tmp_path / "catalog.jsonl"
    catalogue.write_text(json.dumps(row))
    outside = tmp_path / "escaped.jpg"
    slip = _zip_with(tmp_path / "slip.zip", {"img/1.jpg": _jpeg(), f"../../../../../..{outside}": _jpeg()})
    with pytest.raises(Exception, match="points outside the archive"):
        _ingest(client, catalogue, slip)
    absolute = _zip_with(tmp_path / "abs.zip", {"img/1.jpg": _jpeg(), str(outside): _jpeg()})
    with pytest.raises(Exception, match="points outside the archive"):
        _ingest(client, catalogue, absolute)
    bomb = _zip_with(tmp_path / "bomb.zip", {"img/1.jpg": _jpeg(), "img/big.png": b"\0" * (300 * 2**20)})
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(Exception, match="zip bomb"):
        _ingest(client, catalogue, bomb)
    assert not outside.exists()
    assert not list((Path(admin_app.log_path).parent / "data" / "uploads").glob("*/**/*.jpg")), "nothing left behind"

    rows = [row, {"id": "hostile-2", "name": "Broken photo", "image_path": "img/2.jpg"},
            {"id": "hostile-3", "name": "Escape", "image_path": "../../etc/passwd"},
            {"id": "hostile-4", "name": "Missing", "image_path": "img/4.jpg"}]  # fmt: skip
    catalogue.write_text("\n".join(json.dumps(r) for r in rows))
    mixed = _zip_with(tmp_path / "mixed.zip", {"img/1.jpg": _jpeg(), "img/2.jpg": b"\xff\xd8 not a jpeg",
                                               "notes.txt": b"hello", "run.sh": b"rm -rf /"})  # fmt: skip
    report = _ingest(client, catalogue, mixed)
    assert report["added"] == 1 and [b["id"] for b in report["bad"]] == ["hostile-2", "hostile-3", "hostile-4"]
    reasons = [b["reason"] for b in report["bad"]]
    assert "not a supported image" in reasons[0]
    # Said as the person knows the upload: never the server's private folder it was unpacked into.
    assert reasons[1] == (
        "image path ../../etc/passwd points outside the catalogue folder, and no photo named passwd is among the "
        "uploaded photos"
    )
    assert reasons[2] == "image 4.jpg not found among the uploaded photos"
    assert any("notes.txt" in s for s in report["skipped"]) and any("run.sh" in s for s in report["skipped"])


def test_a_second_import_at_once_is_told_to_wait(client, admin_app, tmp_path):
    fashion = shared("fashion")
    rows = [json.loads(x) for x in (fashion / "catalog.jsonl").read_text().splitlines()]
    catalogue = tmp_path / "fashion.jsonl"
    catalogue.write_text("\n".join(json.dumps(r) for r in rows))
    archive = tmp_path / "fashion.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for r in rows:
            zf.write(fashion / r["image_path"], r["image_path"])
    first: dict = {}
    worker = threading.Thread(target=lambda: first.update(report=_ingest(Client(admin_app.url, verbose=False),
                                                                         catalogue, archive)))  # fmt: skip
    before, listed = _indexed(client), _count(client)
    worker.start()
    deadline = time.monotonic() + 120
    while _indexed(client) == before and worker.is_alive() and time.monotonic() < deadline:
        time.sleep(0.2)  # until the first import is writing products
    assert worker.is_alive(), "the first import ended before the second could be tried"
    assert _count(client) == listed, "while an import runs, the tab lists the catalogue as it was before it"
    small, small_zip = _seed_zip(tmp_path / "seed")
    with pytest.raises(Exception, match="Another catalogue import is running"):
        _ingest(client, small, small_zip)
    _, answer = client.predict("a watch", top_k=3, api_name="/match_text")  # searching goes on meanwhile
    assert answer["matches"]
    worker.join(timeout=600)
    assert first["report"]["added"] == len(rows)


def test_read_only_without_admin_token(app_server, tmp_path):
    client = Client(app_server.url, verbose=False, download_files=False)
    catalogue, archive = _seed_zip(tmp_path / "seed")
    with pytest.raises(Exception, match="read-only: no ADMIN_TOKEN"):
        _ingest(client, catalogue, archive, token="anything")
    assert client.predict(1, "", api_name="/catalogue")["total"] == 32


def test_readme_catalogue_api_example_works_as_written(admin_app, tmp_path):
    """README's "Your own catalogue" example, run as a person would (a copy of it, in a folder of its own beside the
    repository's assets), against an app started with ADMIN_TOKEN."""
    import subprocess
    import sys

    from ..support.app_fixtures import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in readme.split("```python\n")[1:]]
    block = next(b for b in blocks if "/delete_products" in b)
    assert '"http://127.0.0.1:7860/"' in block and '"the ADMIN_TOKEN the app was started with"' in block
    code = block.replace("http://127.0.0.1:7860/", admin_app.url).replace("the ADMIN_TOKEN the app was started with",
                                                                         TOKEN)  # fmt: skip
    (tmp_path / "assets").symlink_to(REPO_ROOT / "assets")
    (tmp_path / "example.py").write_text(code)
    done = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report, mapped, page, deleted = done.stdout.strip().splitlines()[-4:]
    rows, added, updated, unchanged, bad = map(int, report.split())
    assert rows == 32 and added + updated + unchanged == 32 and bad == 0
    assert mapped.startswith("Read stock-list.csv with its columns renamed by --map (Ref → id")
    assert mapped.endswith(" 1")
    assert client_count(admin_app, "stock-1") == 1
    assert page.startswith(tuple("123456789")) and "'demo-001'" in page
    assert deleted == "['demo-001'] []"
    assert client_count(admin_app, "demo-001") == 0


def client_count(app, query: str) -> int:
    return Client(app.url, verbose=False, download_files=False).predict(1, query, api_name="/catalogue")["total"]


def test_an_import_reports_near_identical_photos_and_the_tab_shows_them(client, tmp_path):
    from app.catalogue_tab import _summary

    seed = shared("seed_sample")
    row = json.loads((seed / "catalog.jsonl").read_text().splitlines()[0])
    twins = [dict(row, id=f"twin-{n}", SKU=f"TWIN-{n}", name=f"Twin listing {n}", image_path=f"twin-{n}.jpg")
             for n in (1, 2)]  # fmt: skip
    (tmp_path / "twins").mkdir()
    catalogue, archive = tmp_path / "twins" / "catalog.jsonl", tmp_path / "twins" / "twins.zip"
    catalogue.write_text("\n".join(json.dumps(r) for r in twins))
    with zipfile.ZipFile(archive, "w") as zf:  # the same photo under two names, as a shop lists one product twice
        for r in twins:
            zf.write(seed / row["image_path"], r["image_path"])
    report = _ingest(client, catalogue, archive)
    # The tests' random CLIP finds every photo alike; the byte-identical pair comes first, at cosine 1.
    assert (report["duplicates"][0]["a"], report["duplicates"][0]["b"]) == ("twin-1", "twin-2"), report["duplicates"]
    assert report["duplicates"][0]["cosine"] >= 0.9999
    shown = _summary(report)
    assert "Near-identical photos" in shown and "twin-1 ~ twin-2" in shown
    done = client.predict(["twin-1", "twin-2"], TOKEN, api_name="/delete_products")
    assert sorted(done["deleted"]) == ["twin-1", "twin-2"]


def test_the_import_report_writes_large_numbers_one_way():
    from app.catalogue_tab import _summary

    report = {"rows": 12000, "added": 11000, "updated": 1000, "unchanged": 0, "deleted": 2500, "bad": [],
              "catalog_version": 3, "seconds": 95.0}  # fmt: skip
    assert _summary(report).splitlines()[:3] == [
        "### Import done: 12,000 rows",
        "",
        "**11,000** added · **1,000** updated · **0** unchanged · **2,500** deleted · **0** bad rows · catalogue "
        "version 3 · 95.0 s",
    ]
