"""Fetching a catalogue photo given as an http(s) URL, safely.

A URL in a catalogue is hostile until proven otherwise. Only ``http`` and ``https``; the host is resolved here, once,
and refused when any of its addresses is on a private network (loopback, RFC 1918, link-local and with it the cloud
metadata service, multicast, unspecified, reserved, and the IPv4-mapped IPv6 forms of those) unless
``FetchLimits.allow_private``. The connection then goes to the address that was checked, never through a second DNS
look-up (so DNS rebinding cannot swap it), with the original name in the ``Host`` header and, for https, as the
certificate's expected name. Redirects are followed by hand, each new URL checked the same way before any connection.
Every socket operation has ``timeout_s`` and the whole fetch an overall deadline of three times that; the body is
refused from its ``Content-Length`` before reading, and reading stops as soon as more than ``max_bytes`` arrived.

The content is not decoded here: the caller checks it is an image with its own decoder. Every failure is one sentence
naming the URL: ``FetchRefused`` for a URL we will not fetch, ``FetchFailed`` for one that was tried and failed.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from .errors import InvalidInput, PipelineError

PRIVATE_SENTENCE = (
    "photos are fetched only from public addresses "
    "(set ALLOW_PRIVATE_PHOTO_URLS=1 to allow private ones, e.g. a shop's own intranet)"
)
USER_AGENT = "product-matcher/1.0"
SCHEMES = {"http": 80, "https": 443}
REDIRECTS = (301, 302, 303, 307, 308)
DEADLINE_FACTOR = 3.0  # the whole fetch, redirects included, may take this many times timeout_s
CHUNK = 1 << 16
URL_CHARS = 120  # URLs in messages are shortened to this


class FetchRefused(InvalidInput):
    """A URL we will not fetch: another scheme than http(s), or an address on a private network."""


class FetchFailed(PipelineError):
    """The URL was tried and failed: an HTTP error, a timeout, a reset, a body too large, too many redirects."""


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int = 20 * 2**20
    timeout_s: float = 10.0
    max_redirects: int = 3
    allow_private: bool = False


@dataclass
class Fetched:
    url: str  # as asked
    final_url: str  # after redirects
    status: int  # 200, or 304 when not modified
    body: bytes | None  # None on 304
    etag: str | None
    last_modified: str | None
    content_type: str | None


@dataclass(frozen=True)
class Target:
    """A URL that passed the checks: where to connect (``addresses``, all checked) and what to ask for."""

    url: str
    scheme: str
    host: str  # the name (or literal address) as in the URL: Host header, SNI and certificate name
    port: int
    path: str  # path and query, as sent in the request line
    addresses: tuple[str, ...]


Resolver = Callable[[str, int], Sequence[str]]
Screen = Callable[[str, FetchLimits], Target]


def short(url: str) -> str:
    """The URL as a message shows it: one printable line of at most ``URL_CHARS`` characters."""
    text = "".join(c if c.isprintable() and not c.isspace() else "?" for c in url)
    return text if len(text) <= URL_CHARS else text[: URL_CHARS - 3] + "..."


def _parts(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of an http(s) URL, or FetchRefused."""
    if not isinstance(url, str) or not url.strip():
        raise FetchRefused("Refused an empty photo URL: give an http:// or https:// address.")
    if any(not c.isprintable() or c.isspace() for c in url):
        raise FetchRefused(f"Refused {short(url)}: a URL may not contain spaces or control characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:
        raise FetchRefused(f"Refused {short(url)}: it is not a usable URL ({err}).") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        what = f"the scheme {scheme + ':'!r} is not fetched" if scheme else "it has no scheme"
        raise FetchRefused(f"Refused {short(url)}: {what}; photo URLs must start with http:// or https://.")
    host = parts.hostname
    if not host:
        raise FetchRefused(f"Refused {short(url)}: it names no host.")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return scheme, host, port or SCHEMES[scheme], path


def _literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def private_kind(address: str) -> str | None:
    """What kind of non-public address ``address`` is ("loopback", "private", ...), or None for a public one."""
    ip = _literal(address)
    if ip is None:
        return "unparsable"
    if isinstance(ip, ipaddress.IPv6Address):
        for how, inner in (("IPv4-mapped", ip.ipv4_mapped), ("6to4", ip.sixtofour)):
            kind = private_kind(str(inner)) if inner is not None else None
            if kind:
                return f"{how} {kind}"
        if ip.ipv4_mapped is not None:
            return None
    for kind, flag in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("site-local", isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local),
        ("private", ip.is_private),
        ("non-public", not ip.is_global),
    ):
        if flag:
            return kind
    return None


def _refuse_private(url: str, address: str, limits: FetchLimits) -> None:
    if limits.allow_private:
        return
    kind = private_kind(address)
    if kind:
        article = "an" if kind[0] in "aeiouIU" else "a"
        raise FetchRefused(f"Refused {short(url)}: {address} is {article} {kind} address; {PRIVATE_SENTENCE}.")


def check_url(url: str, limits: FetchLimits) -> None:
    """The checks that need no network: the scheme, a host, and a literal address that is not private."""
    _, host, _, _ = _parts(url)
    if _literal(host) is not None:
        _refuse_private(url, host.split("%", 1)[0], limits)


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (``socket.getaddrinfo``), first the one to try first."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    out: list[str] = []
    for *_, sockaddr in infos:
        address = str(sockaddr[0]).split("%", 1)[0]
        if address not in out:
            out.append(address)
    return out


def screen_url(url: str, limits: FetchLimits, resolver: Resolver = resolve) -> Target:
    """The URL checked and resolved: FetchRefused when it may not be fetched (any address private), FetchFailed when
    its host cannot be resolved. Nothing is connected to."""
    check_url(url, limits)
    scheme, host, port, path = _parts(url)
    try:
        addresses = list(resolver(host, port))
    except (OSError, UnicodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise FetchFailed(f"Could not fetch {short(url)}: the host {host!r} was not found ({reason}).") from None
    if not addresses:
        raise FetchFailed(f"Could not fetch {short(url)}: the host {host!r} has no address.")
    for address in addresses:
        _refuse_private(url, address, limits)
    return Target(url, scheme, host, port, path, tuple(addresses))


class _Deadline:
    """The overall deadline of one fetch: socket timeouts never reach past it, and a timer shuts the open socket down
    when it passes (a server dripping a byte at a time cannot hold a read forever)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.expired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def timeout(self, timeout_s: float) -> float:
        left = self.remaining()
        if left <= 0:
            self.expired = True
            raise TimeoutError("deadline")
        return min(timeout_s, left)

    def watch(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock = sock
            if sock is not None and self.expired:
                _shutdown(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._sock is not None:
                _shutdown(self._sock)

    def cancel(self) -> None:
        self._timer.cancel()


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _PinnedConnection(http.client.HTTPConnection):
    """An HTTP connection to an address already checked: ``host`` is only what the Host header says."""

    def __init__(self, target: Target, timeout: float, deadline: _Deadline) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._target = target
        self._deadline = deadline
        self.pinned_sock: socket.socket | None = None

    def connect(self) -> None:
        last: OSError | None = None
        for address in self._target.addresses:
            try:
                sock = socket.create_connection((address, self.port), self._deadline.timeout(self.timeout))
            except OSError as err:
                last = err
                continue
            self._deadline.watch(sock)
            self.sock = self.pinned_sock = self._wrap(sock)
            self._deadline.watch(self.sock)
            return
        assert last is not None
        raise last

    def _wrap(self, sock: socket.socket) -> socket.socket:
        return sock


class _PinnedTLSConnection(_PinnedConnection):
    """The same over TLS: SNI and certificate verification against the name in the URL."""

    default_port = 443

    def _wrap(self, sock: socket.socket) -> socket.socket:
        context = ssl.create_default_context()
        try:
            return context.wrap_socket(sock, server_hostname=self._target.host)
        except BaseException:
            sock.close()
            raise


def _failed(url: str, reason: str) -> FetchFailed:
    return FetchFailed(f"Could not fetch {short(url)}: {reason}.")


def _header(response: http.client.HTTPResponse, name: str) -> str | None:
    value = response.getheader(name)
    if value is None:
        return None
    return value.strip() or None


def _read_body(
    response: http.client.HTTPResponse, sock: socket.socket | None, url: str, limits: FetchLimits, deadline: _Deadline
) -> bytes:
    mb = f"{limits.max_bytes / 2**20:g} MB"
    length = _header(response, "Content-Length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise _failed(url, f"the server sent an unusable Content-Length {short(length)!r}") from None
        if declared > limits.max_bytes:
            raise _failed(url, f"the photo is larger than {mb} ({declared / 2**20:.1f} MB announced)")
    chunks: list[bytes] = []
    got = 0
    while True:
        if sock is not None:  # each read waits at most timeout_s, never past the deadline
            sock.settimeout(deadline.timeout(limits.timeout_s))
        chunk = response.read1(CHUNK)
        if deadline.expired:  # the timer shut the socket down: what arrived is not the whole photo
            raise TimeoutError("deadline")
        if not chunk:
            break
        got += len(chunk)
        if got > limits.max_bytes:
            raise _failed(url, f"the photo is larger than {mb}")
        chunks.append(chunk)
    return b"".join(chunks)


def _request(
    target: Target, limits: FetchLimits, headers: dict[str, str], deadline: _Deadline
) -> tuple[http.client.HTTPResponse, bytes | None]:
    """One request to the checked address: the response (its status and headers) and, for a 200, the body."""
    kind = _PinnedTLSConnection if target.scheme == "https" else _PinnedConnection
    conn = kind(target, deadline.timeout(limits.timeout_s), deadline)
    try:
        conn.request("GET", target.path, headers=headers)
        response = conn.getresponse()
        # http.client lets go of conn.sock once the answer says "close": the socket it read is kept as pinned_sock
        body = _read_body(response, conn.pinned_sock, target.url, limits, deadline) if response.status == 200 else None
        return response, body
    finally:
        deadline.watch(None)
        conn.close()


def _follow(url: str, limits: FetchLimits, headers: dict[str, str], deadline: _Deadline, screen: Screen) -> Fetched:
    current = url
    redirects = 0
    while True:
        target = screen(current, limits)  # FetchRefused before any connection to a refused address
        response, body = _request(target, limits, headers, deadline)
        status = response.status
        if status in REDIRECTS:
            location = _header(response, "Location")
            if not location:
                raise _failed(current, f"HTTP {status} {response.reason} without a Location to go to")
            redirects += 1
            if redirects > limits.max_redirects:
                raise _failed(url, f"too many redirects (more than {limits.max_redirects})")
            current = urljoin(current, location)
            continue
        etag, modified = _header(response, "ETag"), _header(response, "Last-Modified")
        content_type = _header(response, "Content-Type")
        if status == 304:
            if "If-None-Match" not in headers and "If-Modified-Since" not in headers:
                raise _failed(current, "HTTP 304 Not Modified to a request that was not conditional")
            etag = etag or headers.get("If-None-Match")
            modified = modified or headers.get("If-Modified-Since")
            return Fetched(url, current, 304, None, etag, modified, content_type)
        if status != 200:
            reason = " ".join(str(response.reason or "").split())[:80]
            raise _failed(current, f"HTTP {status} {reason}".rstrip())
        return Fetched(url, current, 200, body, etag, modified, content_type)


def fetch(
    url: str,
    limits: FetchLimits,
    etag: str | None = None,
    last_modified: str | None = None,
    *,
    _screen: Screen = screen_url,
) -> Fetched:
    """GET ``url`` within ``limits``; conditional when ``etag`` / ``last_modified`` are given (status 304, no body,
    when not modified). ``_screen`` checks and resolves each URL of the chain, redirects included (tests pass one
    that lets a first hop through)."""
    headers = {"User-Agent": USER_AGENT, "Accept": "image/*", "Accept-Encoding": "identity", "Connection": "close"}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    deadline = _Deadline(limits.timeout_s * DEADLINE_FACTOR)
    try:
        return _follow(url, limits, headers, deadline, _screen)
    except PipelineError:
        raise
    except (TimeoutError, OSError, http.client.HTTPException, ssl.SSLError, ValueError) as err:
        raise _failed(url, _reason(err, limits, deadline)) from None
    finally:
        deadline.cancel()


def _reason(err: BaseException, limits: FetchLimits, deadline: _Deadline) -> str:
    """A short sentence for a failed transfer (never a traceback)."""
    # A last read waits only for what is left of the deadline, so its timeout can fire before the deadline's timer.
    if deadline.expired or (isinstance(err, TimeoutError) and deadline.remaining() <= 0.05):
        return f"it took longer than {deadline.seconds:g} s in all"
    if isinstance(err, TimeoutError):
        return f"timed out after {limits.timeout_s:g} s"
    if isinstance(err, ssl.SSLCertVerificationError):
        return f"its certificate is not valid ({err.verify_message or 'verification failed'})"
    if isinstance(err, ssl.SSLError):
        return f"the TLS handshake failed ({err.reason or err.__class__.__name__})"
    if isinstance(err, http.client.RemoteDisconnected):
        return "connection closed by the server without an answer"
    if isinstance(err, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return "connection reset"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, http.client.IncompleteRead):
        return "the connection closed before the whole photo arrived"
    if isinstance(err, http.client.HTTPException):
        return f"the server's answer is not valid HTTP ({err.__class__.__name__})"
    text = " ".join(str(getattr(err, "strerror", None) or err or err.__class__.__name__).split())
    return text[:120]
