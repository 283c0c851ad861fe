"""The REST API beside the page: one process, one port.

``build_api`` makes a FastAPI app of its own (``/api/v1/...``, ``/api/docs``, ``/api/openapi.json``, ``/metrics``);
``ServingApp`` is Gradio's app with that one in front of it: requests for those paths go to the REST API, everything
else to Gradio as before. In front, not mounted inside, because Gradio's own middleware would answer every CORS
preflight with "any origin" and add its headers to every answer; the REST API has its own allow-list
(``CORS_ORIGINS``), its own body bounds and its own errors. ``serve`` passes the ``ServingApp`` to ``launch`` (the
hook Gradio's own ``gr.Server`` uses), so the share link, the login and the queue work as they did.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import endpoints as e
from ..catalogue import CatalogueManager, NotAllowed
from ..config import AppConfig
from . import models as m
from .metrics import CONTENT_TYPE, METRICS, Metrics
from .routes import SMALL_BODY, PhotoCheck, error_json, error_response, make_router
from .security import ApiError, QueryGate, RateLimiter, ReadGate, bearer, client_address

log = logging.getLogger("app")

API_PREFIXES = ("/api/",)
API_PATHS = ("/metrics",)


def is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIXES) or path in API_PATHS


@dataclass
class RestApi:
    """What the endpoints share: the pipeline, the page's search state and catalogue manager, and the gates."""

    pipe: object
    config: AppConfig
    manager: CatalogueManager
    search: e.Search
    metrics: Metrics = field(default_factory=lambda: METRICS)

    def __post_init__(self) -> None:
        self.read_gate = ReadGate(self.config.api_keys, self.config.auth)
        self.limiter = RateLimiter(*self.config.rate_limit) if self.config.rate_limit else None
        self.queries = QueryGate(self.config.concurrency, self.config.queue_size)
        self.photo_ok = PhotoCheck(self.search.folders)

    async def reader(self, request: Request) -> str:
        """Depends: the read rule (API key, login or open), then the rate limit; the caller's identity."""
        caller = self.read_gate.check(request)
        if self.limiter is not None:
            self.limiter.check(caller)
        return caller

    async def admin(self, request: Request, what: str = "the catalogue was not changed") -> str:
        """The admin token of ``Authorization: Bearer``, checked by the Catalogue tab's gate (its slow-down on wrong
        guesses included): 401 without one, 403 when wrong or when no ADMIN_TOKEN is set."""
        who = client_address(request)
        if self.limiter is not None:
            self.limiter.check("ip:" + who)
        token = bearer(request)
        try:
            await run_in_threadpool(self.manager.gate.check, token, who)
        except NotAllowed as err:
            if self.manager.writable and not token:
                raise ApiError(
                    401, "unauthorized", f"Send the admin token as 'Authorization: Bearer <ADMIN_TOKEN>'; {what}.",
                    {"WWW-Authenticate": "Bearer"},
                ) from None  # fmt: skip
            raise ApiError(403, "forbidden", str(err)) from None
        return token or ""


class BodyLimit:
    """Bounded request bodies: refused from Content-Length before reading, and reading stops once a chunked body
    passes the bound (413 either way). ``limits`` maps a path to its bound; other paths get ``SMALL_BODY``."""

    def __init__(self, app: ASGIApp, limits: dict[str, int]) -> None:
        self.app, self.limits = app, limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope["path"], SMALL_BODY)
        words = f"The request is larger than the {_size(limit)} this endpoint takes."
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await error_json(413, words)(scope, receive, send)
            return
        got = 0
        started = False

        async def counted() -> dict:
            nonlocal got
            message = await receive()
            if message["type"] == "http.request":
                got += len(message.get("body", b""))
                if got > limit:
                    raise ApiError(413, "too_large", words)
            return message

        async def watch(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watch)
        except ApiError as err:
            if started:
                raise
            await error_response(err)(scope, receive, send)


def _size(limit: int) -> str:
    return f"{limit / 2**20:.1f} MB" if limit >= 2**20 else f"{limit // 2**10} KB"


class Metered:
    """Outermost: each request's endpoint (the route's template), status and time go to the metrics."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def watch(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "other"
            self.metrics.observe_request(endpoint, scope.get("method", ""), status, time.perf_counter() - started)


def build_api(rest: RestApi) -> FastAPI:
    settings = rest.pipe.settings
    image = int(settings.max_image_mb * 2**20)
    app = FastAPI(
        title="Product matcher API",
        version="1",
        summary="Find the catalogue products that match a photo or a description.",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.include_router(make_router(rest))

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        mode = rest.config.metrics
        if mode == "0" or (mode == "admin" and not rest.manager.writable):
            raise ApiError(404, "not_found", "Metrics are off: set METRICS=1, or ADMIN_TOKEN to read them with it.")
        if mode == "admin":
            await rest.admin(request, "metrics need it unless METRICS=1")
        return Response(rest.metrics.render(), media_type=CONTENT_TYPE)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> Response:
        return error_response(err)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> Response:
        return error_response(err)

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes,
                description=DESCRIPTION,
            )  # fmt: skip
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            body = m.SearchRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(body.pop("$defs", {}))
            components["SearchRequest"] = body
            # FastAPI lists a 422 for every route with parameters; this API answers 400 instead (routes.ApiRoute)
            for operations in schema["paths"].values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                components.pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # the search body (JSON or multipart) is declared by hand: add the model it names
    # Inner to outer: bounded bodies, CORS (so that a 413 still reaches the shop's page), metrics around everything.
    # A search body may carry a photo in base64 (4/3 of its bytes); an import, a catalogue and its zip.
    limits = {
        "/api/v1/search": (image // 3 + 1) * 4 + SMALL_BODY,
        "/api/v1/catalogue/import": int(settings.max_upload_mb * 2**20) + SMALL_BODY,
    }
    app.add_middleware(BodyLimit, limits=limits)
    origins = list(rest.config.cors_origins)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=["GET", "POST", "DELETE"],
        allow_headers=["Authorization", "Content-Type", "X-API-Key"],
        allow_credentials=False,
        max_age=600,
    )
    app.add_middleware(Metered, metrics=rest.metrics)
    rest.metrics.watch_catalogue(rest.pipe)
    return app


DESCRIPTION = (
    "The product matcher's search API. Searching needs an `X-API-Key` when the server has `API_KEYS`, else HTTP "
    "Basic with the page's login when it has `GRADIO_AUTH`; catalogue changes need `Authorization: Bearer "
    "<ADMIN_TOKEN>`. Errors are JSON: `{status, error, message}`."
)


def serving_app(api: ASGIApp):
    """Gradio's ``App`` with ``api`` in front (see the module's docstring); passed to ``Blocks.launch(_app=...)``."""
    from gradio.routes import App, ORJSONResponse

    class ServingApp(App):
        def build_middleware_stack(self) -> ASGIApp:
            page = super().build_middleware_stack()

            async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
                if scope["type"] == "http" and is_api_path(scope["path"]):
                    await api(scope, receive, send)
                else:
                    await page(scope, receive, send)

            return dispatch

    # What Gradio's create_app gives an app it makes itself.
    return ServingApp(default_response_class=ORJSONResponse)
