"""A shop's own files, end to end: the held-out fashion catalogue as a Shopify export, a WooCommerce export and a Google
Merchant feed, its photos served by URL on loopback, each imported by ``python -m pipeline ingest FILE`` with no flag.

``python -m bench.shop_formats [--smoke] [--products N] [--model-repo REPO] [--json OUT]``

The catalogue is the held-out half of ``../shared/data/fashion`` (``bench.holdout``), with what a shop's file has and
the data lacks: a price per product (made from its id), a brand, a second photo per product (its photo mirrored and cut,
served under another URL), every tenth product without any photo, and one second photo whose URL answers 404. For each
format, in a data folder of its own, the ingest runs as a person runs it (``ALLOW_PRIVATE_PHOTO_URLS=1``, the photos
being on loopback), then:

- every product's title, as a text query, finds a product of that title first (fashion has products that share a
  name, or differ in case only, "Pack of 3" and "Pack Of 3", which no text search tells apart: any of them counts),
  and that product's price is the one its row gave;
- every product's second photo, as a photo query, finds that product first;
- the products without a photo are found by their titles the same way (they are among the titles above; counted apart);
- the ingest's report names the broken URL with its status;
- a second import of the same file makes no full download (every photo answered "not modified" or not asked for);

and once, in a data folder of its own without the setting, the Merchant feed's import makes no request at all. Prints a
table; exit status 1 when any check fails. ``--smoke``: 12 products and the tiny test model (checks the plumbing only:
the tiny model's titles are found by BM25, its photos by their exact copies).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image, ImageOps

from bench import _common as c
from bench.holdout import split_data

REPO_ROOT = Path(__file__).resolve().parents[1]
FORMATS = ("shopify", "woocommerce", "merchant")
FILES = {"shopify": "products_export.csv", "woocommerce": "wc-product-export.csv", "merchant": "merchant-feed.tsv"}
BROKEN = "/missing/second-photo.jpg"


@dataclass
class Product:
    id: str  # the fashion id; each format's own id is made from it (``own_id``)
    title: str
    category: str | None
    description: str
    price: float
    photo: str | None  # URL path of the main photo, None: a product without a photo
    second: str | None  # URL path of the second photo


def own_id(fmt: str, product: Product) -> str:
    return f"fashion-{product.id}" if fmt == "shopify" else product.id


class PhotoServer:
    """The photos on 127.0.0.1, with an ETag; ``full`` counts 200 answers with a body, ``requests`` every request."""

    def __init__(self, photos: dict[str, bytes]) -> None:
        self.photos, self.full, self.requests = photos, 0, 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                body = server.photos.get(self.path)
                with server.lock:
                    server.requests += 1
                if body is None:
                    self._send(404, b"no such photo", {})
                    return
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                if self.headers.get("If-None-Match") == etag:
                    self._send(304, b"", {"ETag": etag})
                    return
                with server.lock:
                    server.full += 1
                self._send(200, body, {"ETag": etag, "Content-Type": "image/jpeg"})

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str | None) -> str:
        return self.base + path if path else ""

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=90)
    return out.getvalue()


def catalogue(limit: int | None) -> tuple[list[Product], dict[str, bytes]]:
    """The held-out fashion products with a price, a second photo, some without a photo; the photos by URL path."""
    rows = split_data()["heldout"]["fashion"].catalog
    images = REPO_ROOT.parent / "shared" / "data" / "fashion"
    products, photos = [], {}
    for n, row in enumerate(rows[:limit] if limit else rows):
        digest = int(hashlib.sha256(str(row["id"]).encode()).hexdigest()[:8], 16)
        with Image.open(images / "images" / Path(row["image_path"]).name) as picture:
            main, second = f"/photos/{row['id']}.jpg", f"/photos/{row['id']}-back.jpg"
            photos[main] = (images / "images" / Path(row["image_path"]).name).read_bytes()
            w, h = picture.size
            photos[second] = _jpeg(ImageOps.mirror(picture.convert("RGB")).crop((w // 10, h // 10, w, h)))
        without = n % 10 == 3
        products.append(
            Product(
                id=str(row["id"]),
                title=str(row["name"]),
                category=row.get("category"),
                description=str(row.get("description") or row["name"]),
                price=round(5 + (digest % 9000) / 100, 2),
                photo=None if without else main,
                second=None if without else (BROKEN if n == 1 else second),
            )
        )
    return products, photos


def write_file(fmt: str, products: list[Product], server: PhotoServer, folder: Path) -> Path:
    """The catalogue as the shop system exports it (its own columns, its own way of giving several photos)."""
    path = folder / FILES[fmt]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        if fmt == "shopify":
            out = csv.writer(handle)
            out.writerow(["Handle", "Title", "Body (HTML)", "Vendor", "Type", "Tags", "Published", "Variant SKU",
                          "Variant Price", "Image Src", "Image Position"])  # fmt: skip
            for p in products:
                out.writerow([own_id(fmt, p), p.title, f"<p>{p.description}</p>", "Atelier Held", p.category or "",
                              "fashion", "TRUE", f"SKU-{p.id}", f"{p.price:.2f}", server.url(p.photo),
                              "1" if p.photo else ""])  # fmt: skip
                if p.second:  # an image row: same Handle, most cells empty
                    out.writerow([own_id(fmt, p), "", "", "", "", "", "", "", "", server.url(p.second), "2"])
        elif fmt == "woocommerce":
            out = csv.writer(handle)
            out.writerow(["ID", "Type", "SKU", "Name", "Published", "Description", "Regular price", "Categories",
                          "Images"])  # fmt: skip
            for p in products:
                images = ", ".join(server.url(x) for x in (p.photo, p.second) if x)
                out.writerow([p.id, "simple", f"SKU-{p.id}", p.title, "1", p.description, f"{p.price:.2f}",
                              f"Clothing > {p.category or 'Other'}", images])  # fmt: skip
        else:
            out = csv.writer(handle, delimiter="\t")
            out.writerow(["id", "title", "description", "link", "image_link", "additional_image_link", "price",
                          "brand", "product_type"])  # fmt: skip
            for p in products:
                out.writerow([p.id, p.title, p.description, f"https://shop.example/p/{p.id}", server.url(p.photo),
                              server.url(p.second), f"{p.price:.2f} EUR", "Atelier Held",
                              f"Apparel > {p.category or 'Other'}"])  # fmt: skip
    return path


@dataclass
class Outcome:
    fmt: str
    products: int = 0
    titles_first: int = 0
    prices_right: int = 0
    seconds_first: int = 0
    with_second: int = 0
    photoless_first: int = 0
    photoless: int = 0
    broken_named: bool = False
    second_import_downloads: int = -1
    ingest_s: float = 0.0
    misses: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.titles_first == self.prices_right == self.products
            and self.seconds_first == self.with_second
            and self.photoless_first == self.photoless
            and self.broken_named
            and self.second_import_downloads == 0
        )


def _ingest(path: Path, data: Path, repo: Path, allow: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("QDRANT_URL", "MONGODB_URI", "TRITON_URL")}
    env.update(DATA_DIR=str(data), MODEL_REPOSITORY=str(repo), PYTHONPATH=str(REPO_ROOT))
    env["ALLOW_PRIVATE_PHOTO_URLS"] = "1" if allow else "0"
    return subprocess.run([sys.executable, "-m", "pipeline", "ingest", str(path)], env=env, capture_output=True,
                          text=True, timeout=3600)  # fmt: skip


def check_format(fmt: str, products: list[Product], server: PhotoServer, repo: Path, work: Path) -> Outcome:
    from pipeline.service import Pipeline
    from pipeline.settings import Settings

    outcome = Outcome(fmt, products=len(products))
    path = write_file(fmt, products, server, work)
    data = work / f"data-{fmt}"
    started = time.perf_counter()
    done = _ingest(path, data, repo, allow=True)
    outcome.ingest_s = time.perf_counter() - started
    said = done.stdout + done.stderr
    if done.returncode != 0:
        outcome.misses.append(f"ingest exited with {done.returncode}: {said[-500:]}")
        return outcome
    outcome.broken_named = server.url(BROKEN) in said and "404" in said
    by_title: dict[str, set[str]] = {}
    for p in products:
        by_title.setdefault(p.title.casefold(), set()).add(own_id(fmt, p))
    price_of = {own_id(fmt, p): p.price for p in products}
    settings = Settings.from_env().with_(data_dir=data, model_repository=repo, qdrant_url=None, mongodb_uri=None)
    with Pipeline(settings) as pipe:
        for p in products:
            first = pipe.matcher.match_text(p.title, top_k=1).matches[:1]
            hit = bool(first) and first[0].id in by_title[p.title.casefold()]
            outcome.titles_first += hit
            outcome.prices_right += hit and first[0].price == price_of[first[0].id]
            if not p.photo:
                outcome.photoless += 1
                outcome.photoless_first += hit
            if not hit:
                outcome.misses.append(f"title {p.title!r}: first {first[0].id if first else None}")
            if p.second and p.second != BROKEN:
                outcome.with_second += 1
                photo = Image.open(io.BytesIO(server.photos[p.second]))
                found = pipe.matcher.match_image(photo, top_k=1).matches[:1]
                outcome.seconds_first += bool(found) and found[0].id == own_id(fmt, p)
                if not found or found[0].id != own_id(fmt, p):
                    outcome.misses.append(f"second photo of {p.id}: first {found[0].id if found else None}")
    before = server.full
    again = _ingest(path, data, repo, allow=True)
    outcome.second_import_downloads = server.full - before if again.returncode == 0 else -1
    return outcome


def main(argv: list[str] | None = None) -> int:
    p = c.parser(__doc__)
    p.add_argument("--products", type=int, default=None, help="held-out products to use (default: all, ~500)")
    args = p.parse_args(argv)
    limit = 12 if args.smoke and args.products is None else args.products
    repo = c.model_repo(args)
    info = c.machine()
    products, photos = catalogue(limit)
    server = PhotoServer(photos)
    outcomes: list[Outcome] = []
    try:
        with tempfile.TemporaryDirectory(prefix="shop-formats-") as tmp:
            work = Path(tmp)
            for fmt in FORMATS:
                c.note(f"{fmt}: {len(products)} products, photos from {server.base}")
                outcomes.append(check_format(fmt, products, server, repo, work))
            before = server.requests
            refused = _ingest(work / FILES["merchant"], work / "data-refused", repo, allow=False)
            no_requests = server.requests == before
            named = "ALLOW_PRIVATE_PHOTO_URLS" in refused.stdout + refused.stderr
    finally:
        server.close()
    rows = [
        [o.fmt, o.products, f"{o.titles_first}/{o.products}", f"{o.prices_right}/{o.products}",
         f"{o.seconds_first}/{o.with_second}", f"{o.photoless_first}/{o.photoless}", "yes" if o.broken_named else "NO",
         o.second_import_downloads, f"{o.ingest_s:.1f}", "ok" if o.ok else "FAILED"]
        for o in outcomes
    ]  # fmt: skip
    refusal = (f"{'no request made' if no_requests else 'REQUESTS MADE'}, "
               f"{'the setting named' if named else 'the setting NOT named'}")  # fmt: skip
    payload = c.report(
        "shop_formats",
        info,
        f"The held-out fashion catalogue as a shop exports it, photos by URL on loopback ({len(products)} products, "
        f"model {repo.name})",
        ["format", "products", "title first", "right price", "2nd photo first", "no photo, by title", "404 named",
         "2nd import downloads", "ingest s", "verdict"],
        rows,
        without_the_setting=refusal,
    )  # fmt: skip
    for o in outcomes:
        for miss in o.misses[:10]:
            print(f"  {o.fmt}: {miss}")
    payload["outcomes"] = [o.__dict__ | {"ok": o.ok} for o in outcomes]
    c.write_json(args.json, payload)
    return 0 if all(o.ok for o in outcomes) and no_requests and named else 1


if __name__ == "__main__":
    sys.exit(main())
