"""The app manages its own catalogue while it serves (the Catalogue tab; ``/ingest``, ``/delete_products``,
``/catalogue``): with the embedded stores one process holds a data folder, and a Space has no shell. No Gradio here;
every change goes through the catalogue service (``pipeline.ingestion.catalogue``), as the CLI's do.

Searching is open to all; a change needs ``ADMIN_TOKEN`` (none set: read-only), compared in constant time; a wrong one
is logged as an event (never the token) and each refusal in a row from a client waits longer.
"""

from __future__ import annotations

import csv
import hmac
import logging
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import InvalidInput, PipelineError
from pipeline.ingestion.catalog_reader import file_columns
from pipeline.ingestion.catalogue import Catalogue, check_mode
from pipeline.ingestion.column_maps import column_maps_for, suggested
from pipeline.ingestion.formats import FileColumns
from pipeline.ingestion.ingest import IngestReport

log = logging.getLogger("app")

MODES = {
    "update": "update: add new products and change existing ones, keep the rest",
    "sync": "sync: also delete the products the file no longer has",
    "replace": "replace: start from an empty catalogue",
}
READ_ONLY = (
    "The catalogue is read-only: no ADMIN_TOKEN is set. Start the app with ADMIN_TOKEN=<a long secret> to upload, "
    "change and delete products here."
)
MAX_WAIT_S = 8.0
PAGE_SIZE = 20


class NotAllowed(PipelineError):
    """A change to the catalogue without the right admin token."""


class Busy(PipelineError):
    """Another catalogue import is running."""


@dataclass
class AdminGate:
    """``ADMIN_TOKEN`` checked in constant time; refusals in a row from one client are slowed down (0.5 s, 1 s, 2 s ...
    up to ``MAX_WAIT_S``), so guessing costs time, and a success resets the count."""

    token: str | None
    events: object = None
    sleep: Callable[[float], None] = time.sleep
    _failures: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def enabled(self) -> bool:
        return bool(self.token)

    def check(self, given: object, who: str = "unknown") -> None:
        if not self.enabled:
            raise NotAllowed(READ_ONLY)
        offered = given if isinstance(given, str) else ""
        if hmac.compare_digest(offered.encode(), str(self.token).encode()):
            with self._lock:
                self._failures.pop(who, None)
            return
        with self._lock:
            count = self._failures.get(who, 0) + 1
            self._failures[who] = count
        if self.events is not None:
            self.events.write("admin_refused", client=who, failures_in_a_row=count, token_given=bool(offered))
        self.sleep(min(MAX_WAIT_S, 0.5 * 2 ** (count - 1)))
        raise NotAllowed(
            "That admin token is not right; the catalogue was not changed."
            if offered
            else "Enter the admin token first; the catalogue was not changed."
        )


@dataclass
class IngestProgress:
    """What the running import has done, for the page's progress bar (products done / total, rate, time left)."""

    done: int = 0
    total: int = 0
    stage: str = "starting"
    started: float = field(default_factory=time.perf_counter)

    def update(self, done: int, total: int, stage: str) -> None:
        self.done, self.total, self.stage = done, total, stage

    @property
    def fraction(self) -> float | None:
        return self.done / self.total if self.total else None

    def words(self) -> str:
        if not self.total:
            return self.stage
        elapsed = max(1e-6, time.perf_counter() - self.started)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else None
        eta = f", about {left:.0f} s left" if left is not None and self.done < self.total else ""
        return f"{self.stage}: {self.done:,} of {self.total:,} products, {rate:.1f}/s{eta}"


class CatalogueManager:
    def __init__(self, pipe, token: str | None = None) -> None:
        self.pipe = pipe
        self.catalogue = Catalogue(pipe)
        self.gate = AdminGate(token if token is not None else pipe.settings.admin_token, pipe.events)
        self._ingest_lock = threading.Lock()
        self.running: IngestProgress | None = None
        self.column_maps = column_maps_for(pipe.settings)

    @property
    def writable(self) -> bool:
        return self.gate.enabled

    # -- changes ------------------------------------------------------------------------------------------------------
    def ingest(
        self,
        catalogue: str | Path | None,
        archive: str | Path | None = None,
        photos: list[str | Path] | None = None,
        mode: str = "update",
        token: object = None,
        who: str = "unknown",
        on_progress: Callable[[IngestProgress], None] | None = None,
        mapping: dict[str, str] | None = None,
    ) -> IngestReport:
        """One upload through the catalogue service; one at a time (a second one is told to wait). ``mapping``: the
        file's columns renamed onto the schema (``--map``), remembered for the next file with the same columns once
        the import is done."""
        self.gate.check(token, who)
        check_mode(mode)
        if mapping and not catalogue:
            raise InvalidInput("A column mapping needs the catalogue file itself, not only a zip.")
        columns = file_columns(Path(catalogue)).columns if mapping else []
        if not catalogue and not archive:
            raise InvalidInput(
                "Upload a catalogue file (JSON, JSONL, CSV, TSV or a Merchant XML feed), or a zip that holds one."
            )
        if not self._ingest_lock.acquire(blocking=False):
            running = self.running.words() if self.running else "starting"
            raise Busy(f"Another catalogue import is running ({running}); please wait for it to finish.")
        try:
            progress = self.running = IngestProgress()

            def tell(done: int, total: int, stage: str) -> None:
                progress.update(done, total, stage)
                if on_progress:
                    on_progress(progress)

            report = self.catalogue.ingest_upload(
                Path(catalogue) if catalogue else None,
                Path(archive) if archive else None,
                [Path(p) for p in photos or []],
                mode,
                on_progress=tell,
                mapping=mapping or None,
            )
            if mapping:
                self.column_maps.put(columns, mapping, Path(catalogue).name)
            log.info("Catalogue import (%s): %s", mode, report.summary().splitlines()[0])
            return report
        finally:
            self.running = None
            self._ingest_lock.release()

    def columns(self, catalogue: str | Path) -> tuple[FileColumns, dict[str, str | None]]:
        """What an uploaded file is read as, its columns, and for each schema field the column that fills it (the
        choice remembered for this catalogue, else the column of that name). No token needed: nothing changes."""
        found = file_columns(Path(catalogue))
        return found, suggested(found.columns, self.column_maps.get(found.columns) if found.mappable else None)

    def delete(self, ids: object, token: object = None, who: str = "unknown") -> dict:
        self.gate.check(token, who)
        wanted = parse_ids(ids)
        if not wanted:
            raise InvalidInput("Name the products to delete (their ids).")
        done = self.catalogue.delete(wanted)
        return {"deleted": done.deleted, "unknown": done.unknown, "catalog_version": done.catalog_version}

    # -- reading ------------------------------------------------------------------------------------------------------
    def page(self, query: object = "", page: object = 1, page_size: object = PAGE_SIZE) -> dict:
        """One page of products (id, name, brand, category, price, image), searched by id or by part of the name."""
        try:
            number, size = max(1, int(page or 1)), min(100, max(1, int(page_size or PAGE_SIZE)))
        except (TypeError, ValueError):
            raise InvalidInput("The page and the page size must be whole numbers.") from None
        text = query if isinstance(query, str) else ""
        if len(text) > 200:
            raise InvalidInput("Search the catalogue with an id or a few words of a name (under 200 characters).")
        total, docs = self.pipe.listing.page(text, (number - 1) * size, size)
        pages = max(1, -(-total // size))
        rows = [
            {
                "id": d.get("id"),
                "name": d.get("name"),
                "brand": d.get("brand"),
                "category": d.get("category"),
                "price": d.get("price"),
                "image": str(photo) if (photo := self.pipe.photos.path(d.get("image_file"))) else None,
            }
            for d in docs
        ]
        return {"total": total, "page": min(number, pages), "pages": pages, "page_size": size, "products": rows}


def parse_ids(ids: object) -> list[str]:
    """Ids from the page (one text: commas, spaces or lines) or the API (a list of strings)."""
    if isinstance(ids, str):
        parts = ids.replace(",", " ").split()
    elif isinstance(ids, (list, tuple)) and all(isinstance(i, (str, int)) for i in ids):
        parts = [str(i).strip() for i in ids]
    elif ids is None:
        parts = []
    else:
        raise InvalidInput("Product ids must be a list of strings.")
    return sorted({p for p in parts if p})


def problem_rows(report: IngestReport) -> list:
    """The bad rows, then the photos left out of products that went in (a URL that failed, with why), by line."""
    return sorted([*report.bad, *report.failed_photos], key=lambda b: b.line)


def bad_rows_csv(report: IngestReport) -> Path | None:
    """The bad rows and the photos left out as a CSV file to download (line, id, reason), or None when there are
    none."""
    problems = problem_rows(report)
    if not problems:
        return None
    with tempfile.NamedTemporaryFile(
        "w", newline="", suffix=".csv", prefix="bad-rows-", delete=False, encoding="utf-8"
    ) as handle:
        writer = csv.writer(handle)
        writer.writerow(["line", "id", "reason"])
        for bad in problems:
            writer.writerow([bad.line, bad.product_id or "", bad.reason])
    return Path(handle.name)
