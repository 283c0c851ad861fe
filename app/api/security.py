"""Who may call the REST API, how often, and how many queries run at once.

Reading (search, products, similar, facets) is guarded by one rule, from the settings:

- ``API_KEYS`` set: an ``X-API-Key`` header holding one of them (with or without ``GRADIO_AUTH``);
- else ``GRADIO_AUTH`` set: the page's login, as HTTP Basic (``curl -u user:password``), so a login on the page never
  leaves the REST API open;
- else open, as the page is.

Catalogue changes need ``Authorization: Bearer <ADMIN_TOKEN>`` (the Catalogue tab's token and its slow-down on wrong
guesses); ``/metrics`` needs it too unless ``METRICS=1``. ``/api/v1/health`` and the schema are open. Secrets are
compared in constant time and never logged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from starlette.requests import Request


class ApiError(Exception):
    """An answer other than 200, with its status, code and sentence (and headers such as Retry-After)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def client_address(request: Request) -> str:
    """The caller's address as the server sees it (behind a proxy: set FORWARDED_ALLOW_IPS so that uvicorn takes it
    from X-Forwarded-For)."""
    return getattr(request.client, "host", None) or "unknown"


def _same(given: str, wanted: str) -> bool:
    return hmac.compare_digest(given.encode(), wanted.encode())


@dataclass(frozen=True)
class ReadGate:
    api_keys: tuple[str, ...] = ()
    login: tuple[str, str] | None = None

    def check(self, request: Request) -> str:
        """The caller's identity for rate limiting (its key, or its address), or ApiError 401/403."""
        if self.api_keys:
            given = request.headers.get("x-api-key")
            if not given:
                raise ApiError(401, "unauthorized", "Send your API key in the X-API-Key header.")
            # every key is compared, so the time taken does not tell which one nearly matched
            if not any([_same(given, key) for key in self.api_keys]):
                raise ApiError(403, "forbidden", "That API key is not valid.")
            return "key:" + given
        if self.login is not None:
            user, password = _basic(request)
            if user is None:
                raise ApiError(
                    401, "unauthorized", "Log in: send the page's user and password as HTTP Basic authentication.",
                    {"WWW-Authenticate": 'Basic realm="product matcher"'},
                )  # fmt: skip
            if not (_same(user, self.login[0]) & _same(password, self.login[1])):
                raise ApiError(
                    401, "unauthorized", "That user and password are not right.",
                    {"WWW-Authenticate": 'Basic realm="product matcher"'},
                )  # fmt: skip
        return "ip:" + client_address(request)


def _basic(request: Request) -> tuple[str | None, str]:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or not value:
        return None, ""
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None, ""
    return (user, password) if sep else (None, "")


def bearer(request: Request) -> str | None:
    """The token of ``Authorization: Bearer <token>``, or None."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


class RateLimiter:
    """``API_RATE_LIMIT``: a token bucket per caller (``requests`` per ``seconds``, bursts up to ``requests``).

    At most ``max_callers`` buckets are kept (the least recently seen go first), so a flood of addresses cannot grow
    the table without bound."""

    def __init__(self, requests: int, seconds: float, max_callers: int = 10_000, clock=time.monotonic) -> None:
        self.capacity, self.rate = float(requests), requests / seconds
        self.max_callers, self.clock = max_callers, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, caller: str) -> float:
        """0 when ``caller`` may go on now, else the seconds until it may."""
        now = self.clock()
        with self._lock:
            tokens, then = self._buckets.pop(caller, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - then) * self.rate)
            wait = 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate
            self._buckets[caller] = (tokens - 1.0 if wait == 0.0 else tokens, now)
            while len(self._buckets) > self.max_callers:
                self._buckets.popitem(last=False)
        return wait

    def check(self, caller: str) -> None:
        wait = self.take(caller)
        if wait > 0:
            raise ApiError(
                429, "rate_limited", "Too many requests: please slow down and try again in a moment.",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )  # fmt: skip


class Busy(ApiError):
    def __init__(self, waiting: int) -> None:
        super().__init__(
            503, "busy", f"The server is busy ({waiting} queries are waiting); please try again in a moment.",
            {"Retry-After": "1"},
        )  # fmt: skip


class QueryGate:
    """At most ``concurrency`` queries run at once (``GRADIO_CONCURRENCY``, as on the page) and at most ``queue_size``
    wait (``GRADIO_QUEUE_SIZE``); one more is told the server is busy (503) instead of waiting without end."""

    def __init__(self, concurrency: int, queue_size: int) -> None:
        self.concurrency, self.queue_size = concurrency, queue_size
        self._semaphore: asyncio.Semaphore | None = None
        self.waiting = 0

    async def __aenter__(self) -> QueryGate:
        if self._semaphore is None:  # made on the server's event loop
            self._semaphore = asyncio.Semaphore(self.concurrency)
        if self._semaphore.locked():
            if self.waiting >= self.queue_size:
                raise Busy(self.waiting)
            self.waiting += 1
            try:
                await self._semaphore.acquire()
            finally:
                self.waiting -= 1
        else:
            await self._semaphore.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._semaphore is not None
        self._semaphore.release()
