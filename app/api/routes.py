"""The REST API's endpoints, under ``/api/v1``: the same pipeline calls as the page's (``app.endpoints``) and the same
catalogue service as the Catalogue tab (``app.catalogue``), so answers, checks and reports are theirs.

Each pipeline call runs in a worker thread, at most ``GRADIO_CONCURRENCY`` queries at once (``QueryGate``); reading
the request (a multipart photo, an ``image_url`` fetched through ``pipeline.url_fetch``) happens before that.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline.errors import (
    BackendUnavailable,
    CatalogError,
    InvalidInput,
    ModelMismatch,
    ModelNotFound,
    PipelineError,
    StorageFull,
)
from pipeline.ingestion.formats import parse_mapping
from pipeline.ingestion.photo_downloads import limits_of
from pipeline.inputs import NOT_AN_IMAGE, read_image_bytes
from pipeline.query.matcher import level_thresholds
from pipeline.types import MatchResult, web_link
from pipeline.url_fetch import fetch

from .. import handlers as h
from ..catalogue import Busy as ImportRunning
from ..catalogue import NotAllowed
from . import models as m
from .security import ApiError, client_address

log = logging.getLogger("app")

SMALL_BODY = 64 * 2**10  # what a request without a photo or a catalogue may send
MAX_ID = 200
# The page's sentences for values the schema's types refuse before the pipeline sees them (the pipeline's own checks
# say the rest: ranges, empty text, unreadable photos).
FIELD_SENTENCES = {
    "top_k": "The number of results must be a whole number.",
    "min_price": "The lowest price must be a number.",
    "max_price": "The highest price must be a number.",
    "categories": "The category filter must be a list of names.",
    "brands": "The brand filter must be a list of names.",
    "refine_weight": "The weight of the words must be a number from 0 to 1.",
    "diverse": "diverse must be true or false.",
    "text": "The description must be text.",
    "refine": "The words that refine a photo must be text.",
    "image_url": "image_url must be one http:// or https:// address.",
    "image_base64": "image_base64 must be a photo's bytes in base64.",
    "filters": "filters must be an object with categories, brands, min_price and max_price.",
}
STATUS_CODES = {
    400: "invalid_input", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 413: "too_large", 415: "unsupported_media_type", 429: "rate_limited", 500: "internal",
    503: "unavailable",
}  # fmt: skip


def errors(*codes: int) -> dict:
    """The error answers a route can give, for its schema."""
    return {code: {"model": m.ErrorOut} for code in codes}


READING = (400, 401, 403, 429, 503)  # bad input, key or login, rate limit, a backend down or busy
ADMIN = (400, 401, 403, 409, 413, 429, 503)


# -- errors as JSON ----------------------------------------------------------------------------------------------------
def error_json(status: int, message: str, code: str | None = None, headers: dict | None = None) -> JSONResponse:
    body = {"status": status, "error": code or STATUS_CODES.get(status, "error"), "message": message}
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_sentence(errors: list[dict]) -> str:
    """One sentence for pydantic's first complaint: the page's own where it has one."""
    first = errors[0] if errors else {}
    loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
    kind = first.get("type", "")
    if kind == "json_invalid":
        return "The request body is not valid JSON."
    if kind == "extra_forbidden":
        return f"Unknown field {'.'.join(loc)!r}: see /api/docs for what a request may hold."
    if kind == "missing":
        return f"{'.'.join(loc) or 'The request body'} is required."
    if kind == "model_type" or kind == "model_attributes_type":
        return "Send a JSON object: see /api/docs." if not loc else FIELD_SENTENCES.get(loc[-1], "Send a JSON object.")
    for part in reversed(loc):
        if part in FIELD_SENTENCES:
            return FIELD_SENTENCES[part]
    return f"{'.'.join(loc) or 'The request'}: {first.get('msg', 'not valid')}."


def pipeline_status(err: PipelineError) -> int:
    if isinstance(err, NotAllowed):
        return 403
    if isinstance(err, ImportRunning):
        return 409
    if isinstance(err, (InvalidInput, CatalogError)):
        return 400
    if isinstance(err, (BackendUnavailable, ModelMismatch, ModelNotFound, StorageFull)):
        return 503
    return 500


def error_response(err: BaseException) -> Response:
    if isinstance(err, ApiError):
        return error_json(err.status, err.message, err.code, err.headers)
    if isinstance(err, (RequestValidationError, ValidationError)):
        return error_json(400, _validation_sentence(list(err.errors())))
    if isinstance(err, PipelineError):
        return error_json(pipeline_status(err), str(err))
    if isinstance(err, StarletteHTTPException):
        detail = err.detail if isinstance(err.detail, str) else "That request cannot be answered."
        if err.status_code == 404:
            detail = "There is no such endpoint: see /api/docs."
        return error_json(err.status_code, detail, headers=getattr(err, "headers", None))
    log.error("Unexpected error in the REST API", exc_info=err)
    return error_json(500, h.GENERIC_ERROR)


class ApiRoute(APIRoute):
    """Every failure inside an endpoint (its parameters' validation included) becomes an ``ErrorOut``."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as err:  # every error becomes JSON, never a traceback
                return error_response(err)

        return answer


# -- answers -----------------------------------------------------------------------------------------------------------
SHOWN = {"id", "name", "brand", "category", "price", "currency", "url"}


def public_fields(doc: dict) -> dict:
    """A product's other fields as a client may see them (no server paths, no internal keys), JSON-safe."""
    rest = {
        k: v for k, v in doc.items()
        if k not in SHOWN and k not in h.HIDDEN_METADATA and not k.startswith("_")
        and k not in ("content_hash", "product_id")
    }  # fmt: skip
    return {k: _json_safe(v) for k, v in rest.items()}


def _json_safe(value: object) -> object:
    """``value`` as ``json.loads(json.dumps(value, default=str))`` gives it back (keys as strings, anything else JSON
    lacks as its str), without encoding and parsing every field of every match of every answer."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, dict):
        return {_json_key(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return str(value)


def _json_key(key: object) -> str:
    if isinstance(key, str):
        return key
    return json.dumps(key) if isinstance(key, (bool, int, float)) or key is None else str(key)


def search_json(result: MatchResult, photo_ok) -> dict:
    """What ``/match_text`` and ``/match_image`` give (``handlers.result_json``: the same matches, scores, levels and
    ``image_url``), with each product's level in words, its link and its other fields."""
    matches = [
        {
            "id": match.id, "name": match.name, "brand": match.brand, "category": match.category,
            "price": match.price if isinstance(match.price, (int, float)) else None, "currency": match.currency,
            "score": match.score, "level": match.level, "level_words": h.level_words(match.level), "url": match.url,
            "image_url": h.photo_url(match.image, photo_ok), "fields": public_fields(match.metadata),
        }
        for match in result.matches
    ]  # fmt: skip
    return {
        "kind": result.kind,
        "best_level": result.best_level,
        "best_level_words": h.level_words(result.best_level),
        "cache_hit": result.cache_hit,
        "catalog_version": result.catalog_version,
        "timings_ms": result.timings_ms,
        "warnings": list(result.warnings),
        "matches": matches,
    }


class PhotoCheck:
    """``Search.photo_ok`` (a file inside the photo store), with the costly part, resolving the path, remembered per
    path: the store's folder is fixed and its files are named by their content."""

    def __init__(self, folders: list[Path]) -> None:
        self.folders = folders
        self._inside = functools.lru_cache(maxsize=100_000)(lambda path: h.is_inside(path, self.folders))

    def __call__(self, path: str | None) -> bool:
        return bool(path) and self._inside(str(path)) and os.path.isfile(path)


def product_json(pid: str, doc: dict, pipe, photo_ok) -> dict:
    photo = pipe.photos.path(doc.get("image_file"))
    price = doc.get("price")
    return {
        "id": pid,
        "name": str(doc.get("name") or doc.get("text") or pid),
        "brand": doc.get("brand"),
        "category": doc.get("category"),
        "price": price if isinstance(price, (int, float)) else None,
        "currency": str(doc["currency"]) if doc.get("currency") else None,
        "url": web_link(doc.get("url")),
        "image_url": h.photo_url(str(photo) if photo else None, photo_ok),
        "fields": public_fields(doc),
    }


# -- reading a search request ------------------------------------------------------------------------------------------
FORM_FIELDS = {"text", "image_url", "image_base64", "top_k", "diverse", "refine", "refine_weight"}
FORM_FILTERS = {"categories", "brands", "min_price", "max_price"}


def _form_query(form: FormData) -> tuple[m.SearchRequest, UploadFile | None]:
    unknown = set(form.keys()) - FORM_FIELDS - FORM_FILTERS - {"image"}
    if unknown:
        raise ApiError(400, "invalid_input", f"Unknown field {sorted(unknown)[0]!r}: see /api/docs.")
    image = form.get("image")
    if image is not None and not isinstance(image, UploadFile):
        raise ApiError(400, "invalid_input", "The field 'image' must be a file (multipart/form-data).")
    for key in (*FORM_FIELDS, *FORM_FILTERS):
        if any(not isinstance(v, str) for v in form.getlist(key)):
            raise ApiError(400, "invalid_input", FIELD_SENTENCES.get(key, f"The field {key!r} must be text."))
    data: dict[str, Any] = {k: form.get(k) for k in FORM_FIELDS if form.get(k) not in (None, "")}
    filters: dict[str, Any] = {"categories": form.getlist("categories"), "brands": form.getlist("brands")}
    filters.update({k: form.get(k) for k in ("min_price", "max_price") if form.get(k) not in (None, "")})
    data["filters"] = filters
    if isinstance(image, UploadFile) and not image.filename and not image.size:
        image = None  # a form's empty file field
    return m.SearchRequest.model_validate(data), image


@dataclass
class Photo:
    data: bytes | None
    decode_s: float | None


def _too_large(data: bytes, limit: int) -> None:
    """413 with the page's sentence when a photo is over ``MAX_IMAGE_MB``."""
    if len(data) > limit:
        try:
            read_image_bytes(data, limit)
        except InvalidInput as err:
            raise ApiError(413, "too_large", str(err)) from None


def _from_base64(text: str, limit: int) -> bytes:
    if text.startswith("data:"):
        text = text.partition(",")[2]
    if len(text) > (limit // 3 + 1) * 4 + 4:
        _too_large(b"\0" * (limit + 1), limit)
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(NOT_AN_IMAGE) from None
    _too_large(data, limit)
    return data


# -- the router --------------------------------------------------------------------------------------------------------
def _search_body_schema() -> dict:
    form = {
        "type": "object",
        "properties": {
            "image": {"type": "string", "format": "binary", "description": "The photo (JPEG, PNG, WebP, GIF, BMP)."},
            "text": {"type": "string"},
            "image_url": {"type": "string"},
            "top_k": {"type": "integer", "minimum": 1, "maximum": 100},
            "categories": {"type": "array", "items": {"type": "string"}},
            "brands": {"type": "array", "items": {"type": "string"}},
            "min_price": {"type": "number", "minimum": 0},
            "max_price": {"type": "number", "minimum": 0},
            "diverse": {"type": "boolean"},
            "refine": {"type": "string"},
            "refine_weight": {"type": "number", "minimum": 0, "maximum": 1},
        },
    }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/SearchRequest"}},
                "multipart/form-data": {"schema": form},
            },
        }
    }


IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "catalogue": {"type": "string", "format": "binary",
                                      "description": "JSON, JSONL, CSV, TSV or a Merchant XML feed"},
                        "photos": {"type": "string", "format": "binary", "description": "A .zip of the photos"},
                        "mode": {"type": "string", "enum": ["update", "sync", "replace"], "default": "update"},
                        "column_map": {"type": "string", "example": "Product Name=name,Picture=image_path",
                                       "description": "A file in a schema of its own: its columns renamed onto the "
                                                      "sample schema's (as ingest --map)"},
                    },
                }
            }
        },
    }
}  # fmt: skip
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def _upload_name(upload: UploadFile, fallback: str) -> str:
    name = SAFE_NAME.sub("_", Path(upload.filename or "").name).strip("._")[:100]
    return name or fallback


def make_router(api) -> APIRouter:
    """The endpoints of ``api`` (an ``app.api.RestApi``: the pipeline, the page's state, the gates)."""
    pipe, settings = api.pipe, api.pipe.settings
    image_limit = int(settings.max_image_mb * 2**20)
    router = APIRouter(prefix="/api/v1", route_class=ApiRoute)
    # (as defaults, not Annotated aliases: this module's annotations are strings, resolved in its globals)
    reader = Depends(api.reader)
    product_id_param = PathParam(max_length=MAX_ID, description="The product's id.")

    async def read_photo(query: m.SearchRequest, upload: UploadFile | None) -> Photo:
        given = [x for x in (query.image_url, query.image_base64, upload) if x is not None]
        if len(given) > 1:
            raise ApiError(400, "invalid_input", "Send one photo: image, image_url or image_base64.")
        if not given:
            return Photo(None, None)
        if query.text is not None:
            raise ApiError(
                400, "invalid_input", "Send either text or a photo; to add words to a photo, use refine.",
            )  # fmt: skip
        started = time.perf_counter()
        if upload is not None:
            data = await upload.read(image_limit + 1)
            _too_large(data, image_limit)
        elif query.image_base64 is not None:
            data = _from_base64(query.image_base64, image_limit)
        else:
            data = (await run_in_threadpool(fetch, query.image_url, limits_of(settings))).body or b""
        return Photo(data, time.perf_counter() - started)

    def run_search(query: m.SearchRequest, photo: Photo) -> MatchResult:
        f = query.filters
        filters = h.make_filters(f.categories, f.brands, f.min_price, f.max_price)
        top_k = api.config.default_top_k if query.top_k is None else query.top_k
        if photo.data is not None:
            return pipe.matcher.match_image(
                photo.data, top_k, filters, query.refine or None, query.refine_weight, diverse=query.diverse
            )
        if query.refine:
            raise InvalidInput("refine moves a photo's search towards words: send it with a photo.")
        return pipe.matcher.match_text(query.text, top_k=top_k, filters=filters, diverse=query.diverse)

    @router.post(
        "/search", response_model=m.SearchResponse, openapi_extra=_search_body_schema(),
        responses=errors(*READING, 413, 415), summary="Products that fit a description or look like a photo",
    )  # fmt: skip
    async def search(request: Request, caller: str = reader) -> Response:
        """The same matches as the page's `/match_text` (a `text`) and `/match_image` (a photo: multipart field
        `image`, `image_url` or `image_base64`, with optional `refine` words), ranked, with their scores and levels."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        upload = None
        if kind == "multipart/form-data":
            form = await request.form(max_files=1, max_fields=64)
            query, upload = _form_query(form)
        elif kind in ("application/json", ""):
            body = await request.body()
            query = m.SearchRequest.model_validate_json(body or b"{}")
        else:
            raise ApiError(415, "unsupported_media_type", "Send the search as application/json or multipart/form-data.")
        photo = await read_photo(query, upload)
        async with api.queries:
            result = await run_in_threadpool(run_search, query, photo)
        api.metrics.observe_query(result, photo.decode_s)
        return JSONResponse(search_json(result, api.photo_ok))  # built to the schema: not validated again

    def lookup(pid: str) -> dict:
        try:
            doc = pipe.store.get_many([pid]).get(pid)
        except BackendUnavailable:
            doc = None
        if doc is None:
            doc = pipe.index.products([pid]).get(pid)  # MongoDB down, or not there: what the index holds
        if doc is None:
            raise ApiError(404, "not_found", f"There is no product {pid!r} in the catalogue.")
        return doc

    @router.get("/products/{product_id}", response_model=m.ProductOut, responses=errors(*READING, 404))
    async def product(product_id: str = product_id_param, caller: str = reader) -> dict:
        """One product with every field."""
        async with api.queries:
            doc = await run_in_threadpool(lookup, product_id)
        return product_json(product_id, doc, pipe, api.photo_ok)

    @router.get("/products/{product_id}/similar", response_model=m.SearchResponse, responses=errors(*READING, 404))
    async def similar(
        product_id: str = product_id_param,
        caller: str = reader,
        top_k: Annotated[
            int | None,
            Query(json_schema_extra={"minimum": 1, "maximum": 100}, description="Results (default: APP_TOP_K)."),
        ] = None,
        categories: Annotated[list[str] | None, Query()] = None,
        brands: Annotated[list[str] | None, Query()] = None,
        min_price: Annotated[float | None, Query()] = None,
        max_price: Annotated[float | None, Query()] = None,
        diverse: bool = False,
    ) -> Response:
        """More like this: the products whose photos are closest to this product's (itself excluded)."""

        def run() -> MatchResult:
            if not pipe.index.products([product_id]):
                raise ApiError(404, "not_found", f"There is no product {product_id!r} in the catalogue.")
            filters = h.make_filters(categories, brands, min_price, max_price)
            k = api.config.default_top_k if top_k is None else top_k
            return pipe.matcher.similar(product_id, top_k=k, filters=filters, diverse=diverse)

        async with api.queries:
            result = await run_in_threadpool(run)
        api.metrics.observe_query(result)
        return JSONResponse(search_json(result, api.photo_ok))

    @router.get("/facets", response_model=m.FacetsOut, responses=errors(*READING))
    async def facets(caller: str = reader) -> dict:
        """The categories and brands of the catalogue, with their product counts, most frequent first."""

        def run() -> dict:
            values = {name: pipe.index.facet(name) for name in ("category", "brand")}
            return {
                "categories": [{"value": v, "count": c} for v, c in values["category"]],
                "brands": [{"value": v, "count": c} for v, c in values["brand"]],
            }

        return await run_in_threadpool(run)

    @router.get("/health", response_model=m.HealthOut, responses={503: {"model": m.HealthOut}})
    async def health() -> Response:
        """Ready or not (503), the model's identity, the catalogue's version and size. Open to all (monitors)."""
        problems: list[str] = []
        model, products, version = None, None, None
        try:
            card = pipe.card
            model = {
                "label": card.label, "identity": card.identity, "kind": card.kind, "family": card.family,
                "thresholds": {kind: dict(zip(("match", "similar"), level_thresholds(card, pipe.settings, kind),
                                              strict=True)) for kind in ("text", "image")},
                "thresholds_calibration": card.thresholds_calibration,
            }  # fmt: skip
        except PipelineError as err:
            problems.append(str(err))
        try:
            products, version = pipe.index.count(), pipe.index.info().catalog_version
        except PipelineError as err:
            problems.append(str(err))
        body = {
            "ready": not problems,
            "model": model,
            "inference": api.search.info.backend if api.search.info else "",
            "catalogue": {"products": products, "version": version},
            "problems": problems,
        }
        return JSONResponse(body, status_code=200 if not problems else 503)

    # -- catalogue changes: ADMIN_TOKEN ----------------------------------------------------------------------------
    @router.post(
        "/catalogue/import", response_model=m.ImportReport, openapi_extra=IMPORT_BODY,
        responses=errors(*ADMIN), summary="Import a catalogue file and its photos",
    )  # fmt: skip
    async def import_catalogue(request: Request) -> dict:
        """The Catalogue tab's import (`Authorization: Bearer <ADMIN_TOKEN>`): a catalogue file and/or a zip of
        photos, mode update (default), sync or replace. The report is the tab's. One import at a time (409)."""
        token = await api.admin(request)  # before the upload is read
        form = await request.form(max_files=2, max_fields=8)
        unknown = set(form.keys()) - {"catalogue", "photos", "mode", "column_map"}
        if unknown:
            fields = "catalogue, photos, mode, column_map"
            raise ApiError(400, "invalid_input", f"Unknown field {sorted(unknown)[0]!r}: send {fields}.")
        column_map = form.get("column_map") or ""
        if not isinstance(column_map, str):
            raise ApiError(400, "invalid_input", "column_map must be text: SOURCE=TARGET pairs separated by commas.")
        mapping = parse_mapping(column_map) if column_map.strip() else None
        files = {key: form.get(key) for key in ("catalogue", "photos")}
        for key, value in files.items():
            if value is not None and not isinstance(value, UploadFile):
                raise ApiError(400, "invalid_input", f"The field {key!r} must be a file (multipart/form-data).")
        mode = form.get("mode") or "update"
        if not isinstance(mode, str):
            raise ApiError(400, "invalid_input", "mode must be update, sync or replace.")
        settings.uploads_path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="api-import-", dir=settings.uploads_path) as folder:
            paths: dict[str, Path | None] = {}
            for key, fallback in (("catalogue", "catalogue.jsonl"), ("photos", "photos.zip")):
                upload = files[key]
                if upload is None or not (upload.filename or upload.size):
                    paths[key] = None
                    continue
                target = Path(folder) / key / _upload_name(upload, fallback)
                target.parent.mkdir()
                await run_in_threadpool(_save, upload, target)
                paths[key] = target
            report = await run_in_threadpool(
                functools.partial(api.manager.ingest, mapping=mapping),
                paths["catalogue"], paths["photos"], [], mode, token, client_address(request),
            )  # fmt: skip
        return report.to_json()

    @router.delete("/products/{product_id}", response_model=m.DeletedOut, responses=errors(*ADMIN, 404))
    async def delete_product(request: Request, product_id: str = product_id_param) -> dict:
        """Delete one product (`Authorization: Bearer <ADMIN_TOKEN>`), from MongoDB and the vector index."""
        token = await api.admin(request)
        done = await run_in_threadpool(api.manager.delete, [product_id], token, client_address(request))
        if product_id not in done["deleted"]:
            raise ApiError(404, "not_found", f"There is no product {product_id!r} in the catalogue.")
        return {"deleted": done["deleted"], "catalog_version": done["catalog_version"]}

    return router


def _save(upload: UploadFile, target: Path) -> None:
    upload.file.seek(0)
    with open(target, "wb") as out:
        while chunk := upload.file.read(1 << 20):
            out.write(chunk)
