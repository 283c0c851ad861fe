"""Photo URLs fetched from a real HTTP server on loopback (``ThreadingHTTPServer`` in a thread), and refused before any
connection where the address is private. No mocks: the private-address guard is tested against the same server, which
counts what it was asked."""

from __future__ import annotations

import collections
import io
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from dataclasses import replace
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image

from pipeline.errors import InvalidInput, PipelineError
from pipeline.url_fetch import (
    PRIVATE_SENTENCE,
    FetchFailed,
    FetchLimits,
    FetchRefused,
    check_url,
    fetch,
    private_kind,
    screen_url,
)

TIMEOUT = 0.5
LOCAL = FetchLimits(max_bytes=2**20, timeout_s=TIMEOUT, max_redirects=3, allow_private=True)
PUBLIC_ONLY = replace(LOCAL, allow_private=False)


def photo_bytes(color=(200, 30, 30), fmt="JPEG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buf, fmt)
    return buf.getvalue()


class PhotoServer:
    """A real HTTP server on 127.0.0.1: photos with ETag and Last-Modified, errors, slow, reset, huge and redirecting
    answers; ``hits`` counts requests per path, ``headers`` keeps the last request's headers per path."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.hits: collections.Counter[str] = collections.Counter()
        self.headers: dict[str, dict[str, str]] = {}
        self.sent: collections.Counter[str] = collections.Counter()  # body bytes written per path
        self.photos: dict[str, bytes] = {"/photo.jpg": photo_bytes(), "/photo.png": photo_bytes((0, 90, 200), "PNG")}
        self.etags: dict[str, str] = {"/photo.jpg": '"v1"', "/photo.png": '"p1"'}
        self.modified = formatdate(time.time() - 3600, usegmt=True)
        self.gate = threading.Event()  # /gated/<photo> answers once it is set
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, address: None  # a client that went away is no test failure
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                path, query = parts.path, parse_qs(parts.query)
                with server.lock:
                    server.hits[path] += 1
                    server.headers[path] = dict(self.headers.items())
                name = path.strip("/").split("/")[0]
                getattr(self, "serve_" + name.replace("-", "_").replace(".", "_"), self.serve_photo)(path, query)

            def send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def serve_photo(self, path, query) -> None:
                if path not in server.photos:
                    self.send(404, b"no such photo")
                    return
                etag = server.etags[path]
                validators = {"ETag": etag, "Last-Modified": server.modified}
                if self.headers.get("If-None-Match") == etag or (
                    "If-None-Match" not in self.headers and self.headers.get("If-Modified-Since") == server.modified
                ):
                    self.send_response(304)
                    for key, value in validators.items():
                        self.send_header(key, value)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.close_connection = True
                    return
                kind = "image/png" if path.endswith(".png") else "image/jpeg"
                self.send(200, server.photos[path], {"Content-Type": kind, **validators})

            def serve_gated(self, path, query) -> None:
                server.gate.wait(10)
                self.serve_photo(path.removeprefix("/gated"), query)

            def serve_text(self, path, query) -> None:
                self.send(200, b"<html>not a photo</html>", {"Content-Type": "text/html"})

            def serve_status(self, path, query) -> None:
                code = int(path.rsplit("/", 1)[1])
                self.send(code, b"error page")

            def serve_slow(self, path, query) -> None:
                time.sleep(TIMEOUT * 4)
                self.send(200, b"too late")

            def serve_drip(self, path, query) -> None:
                """One byte every 25 ms: no single read times out (a 40th of the drip test's read timeout, so that a
                loaded machine's stalls do not reach it), the whole fetch must."""
                self.send_response(200)
                self.send_header("Content-Length", "1000")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                for _ in range(1000):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.025)

            def serve_reset(self, path, query) -> None:
                """Close with a TCP reset, no answer at all."""
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True

            def serve_hangup(self, path, query) -> None:
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True

            def serve_huge(self, path, query) -> None:
                """A gigabyte announced, written slowly: reading it would take minutes."""
                self.send_response(200)
                self.send_header("Content-Length", str(2**30))
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                for _ in range(2**30 // CHUNK):
                    self.wfile.write(b"\0" * CHUNK)
                    with server.lock:
                        server.sent[path] += CHUNK
                    time.sleep(0.05)

            def serve_chunked(self, path, query) -> None:
                """Chunks without end and without Content-Length."""
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                for _ in range(10_000):
                    self.wfile.write(b"%x\r\n%s\r\n" % (CHUNK, b"\1" * CHUNK))
                    with server.lock:
                        server.sent[path] += CHUNK

            def serve_r(self, path, query) -> None:
                """/r/N redirects N more times, then to the photo; statuses cycle through the five redirects."""
                left = int(path.rsplit("/", 1)[1])
                status = (301, 302, 303, 307, 308)[left % 5]
                target = f"/r/{left - 1}" if left else "/photo.jpg"
                self.send(status, b"", {"Location": target})

            def serve_relative(self, path, query) -> None:
                self.send(302, b"", {"Location": "../photo.png"})

            def serve_to(self, path, query) -> None:
                self.send(302, b"", {"Location": query["u"][0]})

            def serve_secret(self, path, query) -> None:
                self.send(200, b"the metadata service's secrets")

        return Handler


CHUNK = 1 << 16


@pytest.fixture
def server():
    srv = PhotoServer()
    yield srv
    srv.close()


def _one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text and "Traceback" not in text, text
    return text


# --- what is fetched


def test_a_photo_is_fetched_with_its_validators_and_our_headers(server):
    got = fetch(server.url("/photo.jpg"), LOCAL)
    assert got.status == 200 and got.body == server.photos["/photo.jpg"]
    assert Image.open(io.BytesIO(got.body)).size == (40, 30)
    assert got.etag == '"v1"' and got.last_modified == server.modified and got.content_type == "image/jpeg"
    assert got.url == got.final_url == server.url("/photo.jpg")
    sent = server.headers["/photo.jpg"]
    assert sent["User-Agent"] == "product-matcher/1.0" and sent["Accept"] == "image/*"
    assert sent["Host"] == f"127.0.0.1:{server.port}"
    assert "If-None-Match" not in sent and "If-Modified-Since" not in sent


def test_not_modified_is_304_without_a_body(server):
    url = server.url("/photo.jpg")
    by_etag = fetch(url, LOCAL, etag='"v1"')
    assert (by_etag.status, by_etag.body, by_etag.etag) == (304, None, '"v1"')
    assert server.headers["/photo.jpg"]["If-None-Match"] == '"v1"'
    by_date = fetch(url, LOCAL, last_modified=server.modified)
    assert (by_date.status, by_date.body, by_date.last_modified) == (304, None, server.modified)
    assert server.headers["/photo.jpg"]["If-Modified-Since"] == server.modified
    changed = fetch(url, LOCAL, etag='"v0"')
    assert changed.status == 200 and changed.body == server.photos["/photo.jpg"] and changed.etag == '"v1"'


def test_a_body_that_is_no_photo_is_returned_as_it_is(server):
    got = fetch(server.url("/text"), LOCAL)
    assert got.status == 200 and got.body == b"<html>not a photo</html>" and got.content_type == "text/html"


def test_redirects_are_followed_up_to_the_limit(server):
    got = fetch(server.url("/r/2"), LOCAL)  # three redirects
    assert got.status == 200 and got.body == server.photos["/photo.jpg"]
    assert got.final_url == server.url("/photo.jpg") and got.url == server.url("/r/2")
    relative = fetch(server.url("/relative/x"), LOCAL)
    assert relative.final_url == server.url("/photo.png") and relative.body == server.photos["/photo.png"]
    with pytest.raises(FetchFailed, match=r"too many redirects \(more than 3\)") as err:
        fetch(server.url("/r/3"), LOCAL)
    assert server.url("/r/3") in _one_line(err.value)
    assert server.hits["/r/0"] == 2 and server.hits["/photo.jpg"] == 1  # the fourth redirect was not followed


# --- what fails, as one sentence


@pytest.mark.parametrize(("code", "words"), [(404, "HTTP 404 Not Found"), (500, "HTTP 500 Internal Server Error")])
def test_http_errors_name_the_status(server, code, words):
    with pytest.raises(FetchFailed) as err:
        fetch(server.url(f"/status/{code}"), LOCAL)
    assert _one_line(err.value) == f"Could not fetch {server.url(f'/status/{code}')}: {words}."


def test_a_slow_server_times_out(server):
    start = time.monotonic()
    with pytest.raises(FetchFailed, match=rf"timed out after {TIMEOUT:g} s"):
        fetch(server.url("/slow"), LOCAL)
    assert time.monotonic() - start < TIMEOUT * 3


def test_a_dripping_server_meets_the_overall_deadline(server):
    limits = replace(LOCAL, timeout_s=1.0)
    start = time.monotonic()
    with pytest.raises(FetchFailed, match=r"took longer than 3 s in all"):
        fetch(server.url("/drip"), limits)
    assert time.monotonic() - start < 3.0 + 2.0


@pytest.mark.parametrize("path", ["/reset", "/hangup"])
def test_a_connection_dropped_without_answer_fails(server, path):
    with pytest.raises(FetchFailed, match=r"connection (reset|closed)") as err:
        fetch(server.url(path), LOCAL)
    _one_line(err.value)


def test_nothing_listening_is_connection_refused():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(FetchFailed, match="connection refused"):
        fetch(f"http://127.0.0.1:{port}/a.jpg", LOCAL)


def test_an_announced_huge_body_is_refused_before_reading(server):
    start = time.monotonic()
    with pytest.raises(FetchFailed, match=r"larger than 1 MB \(1024\.0 MB announced\)"):
        fetch(server.url("/huge"), LOCAL)
    assert time.monotonic() - start < 1.0
    time.sleep(0.2)
    assert server.sent["/huge"] <= 4 * CHUNK  # what the socket buffers took before the close, not the gigabyte


def test_a_chunked_body_stops_once_past_the_limit(server):
    with pytest.raises(FetchFailed, match=r"larger than 1 MB") as err:
        fetch(server.url("/chunked"), LOCAL)
    assert "announced" not in _one_line(err.value)
    time.sleep(0.2)
    # The server was stopped, not read to its end (10,000 chunks): what it got out before the close is the 1 MB read
    # plus what loopback's socket buffers took, which the kernel autotunes to several MB.
    assert server.sent["/chunked"] < 400 * CHUNK


def test_an_unknown_host_fails_with_a_sentence():
    with pytest.raises(FetchFailed, match="was not found") as err:
        fetch("http://no-such-host.invalid/a.jpg", LOCAL)
    _one_line(err.value)


def test_a_long_url_is_shortened_in_the_sentence(server):
    url = server.url("/status/404?" + "q" * 500)
    with pytest.raises(FetchFailed) as err:
        fetch(url, LOCAL)
    assert len(_one_line(err.value)) < 200 and "..." in str(err.value)


# --- what is refused


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "ftp://example.com/a.jpg", "data:image/png;base64,iVBORw0KGgo=", "javascript:alert(1)",
     "example.com/a.jpg", "//example.com/a.jpg", "http:///a.jpg", "http://exa mple.com/a.jpg",
     "http://example.com:99999/a.jpg", ""],
)  # fmt: skip
def test_other_schemes_and_broken_urls_are_refused(url):
    with pytest.raises(FetchRefused) as err:
        check_url(url, LOCAL)
    assert isinstance(err.value, InvalidInput) and isinstance(err.value, PipelineError)
    _one_line(err.value)
    with pytest.raises(FetchRefused):
        fetch(url, LOCAL)


@pytest.mark.parametrize(
    ("host", "address", "kind"),
    [("127.0.0.1", "127.0.0.1", "loopback"), ("localhost", "127.0.0.1", "loopback"),
     ("2130706433", "127.0.0.1", "loopback"), ("127.1", "127.0.0.1", "loopback"),
     ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1", "IPv4-mapped loopback"), ("0.0.0.0", "0.0.0.0", "unspecified")],
)  # fmt: skip
def test_loopback_in_every_spelling_is_refused_without_a_request(server, host, address, kind):
    url = server.url("/photo.jpg", host=host)
    with pytest.raises(FetchRefused) as err:
        fetch(url, PUBLIC_ONLY)
    text = _one_line(err.value)
    article = "an" if kind[0] in "aeiouI" else "a"
    assert text == f"Refused {url}: {address} is {article} {kind} address; {PRIVATE_SENTENCE}."
    assert "ALLOW_PRIVATE_PHOTO_URLS=1" in text
    assert server.hits["/photo.jpg"] == 0


def test_ipv6_loopback_is_refused():
    with pytest.raises(FetchRefused, match=r"::1 is a loopback address"):
        fetch("http://[::1]:8000/a.jpg", PUBLIC_ONLY)


@pytest.mark.parametrize(
    ("url", "kind"),
    [("http://10.0.0.1/a.jpg", "private"), ("http://192.168.1.20/a.jpg", "private"),
     ("http://172.16.5.4/a.jpg", "private"), ("http://169.254.169.254/latest/meta-data/", "link-local"),
     ("http://[fe80::1]/a.jpg", "link-local"), ("http://[fc00::1]/a.jpg", "private"),
     ("http://224.0.0.1/a.jpg", "multicast"), ("http://240.0.0.1/a.jpg", "reserved"),
     ("http://[::]/a.jpg", "unspecified"),
     ("http://[::ffff:10.0.0.1]/a.jpg", "IPv4-mapped private"),
     ("http://[::ffff:169.254.169.254]/a.jpg", "IPv4-mapped link-local")],
)  # fmt: skip
def test_private_literal_addresses_are_refused_with_no_network(url, kind):
    start = time.monotonic()
    with pytest.raises(FetchRefused, match=f" is an? {kind} address; ") as err:
        check_url(url, PUBLIC_ONLY)
    assert PRIVATE_SENTENCE in str(err.value)
    with pytest.raises(FetchRefused):
        fetch(url, PUBLIC_ONLY)
    assert time.monotonic() - start < 0.5  # nothing was tried: 10.0.0.1 would take the whole timeout


def test_public_addresses_pass():
    for address in ("8.8.8.8", "93.184.216.34", "2606:4700::1111", "::ffff:8.8.8.8"):
        assert private_kind(address) is None, address
    check_url("https://93.184.216.34/a.jpg", PUBLIC_ONLY)


def test_a_name_with_any_private_address_is_refused():
    """The resolver's answer is judged as a whole: one private address among public ones refuses the URL."""
    both = screen_url  # the real checks, with a resolver standing in for DNS
    with pytest.raises(FetchRefused, match=r"10\.1\.2\.3 is a private address"):
        both("http://shop.example/a.jpg", PUBLIC_ONLY, resolver=lambda host, port: ["93.184.216.34", "10.1.2.3"])
    target = both("https://shop.example/a.jpg", PUBLIC_ONLY, resolver=lambda host, port: ["93.184.216.34"])
    assert (target.host, target.port, target.path) == ("shop.example", 443, "/a.jpg")
    assert target.addresses == ("93.184.216.34",)


def test_the_connection_goes_to_the_checked_address_under_the_original_name(server):
    """No second look-up: a name that DNS does not know is fetched from the address the check resolved it to, and
    the Host header still names it."""

    def screen(url, limits):
        return screen_url(url, limits, resolver=lambda host, port: ["127.0.0.1"])

    got = fetch(server.url("/photo.jpg", host="photos.shop.invalid"), LOCAL, _screen=screen)
    assert got.body == server.photos["/photo.jpg"]
    assert server.headers["/photo.jpg"]["Host"] == f"photos.shop.invalid:{server.port}"


def _first_hop_allowed(calls: list[str]):
    """A screen that lets the first URL through to the loopback server (standing in for a public shop) and judges
    every later hop by the real rules."""

    def screen(url, limits):
        calls.append(url)
        return screen_url(url, replace(limits, allow_private=len(calls) == 1))

    return screen


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"])
def test_a_redirect_to_a_private_address_is_refused_without_connecting(server, host):
    secret = server.url("/secret", host=host)
    calls: list[str] = []
    with pytest.raises(FetchRefused, match="loopback address") as err:
        fetch(server.url(f"/to?u={secret}"), PUBLIC_ONLY, _screen=_first_hop_allowed(calls))
    assert secret in _one_line(err.value)
    assert calls == [server.url(f"/to?u={secret}"), secret]
    assert server.hits["/to"] == 1 and server.hits["/secret"] == 0


@pytest.mark.parametrize("target", ["file:///etc/passwd", "http://169.254.169.254/latest/meta-data/"])
def test_a_redirect_to_another_scheme_or_the_metadata_service_is_refused(server, target):
    with pytest.raises(FetchRefused):
        fetch(server.url(f"/to?u={target}"), PUBLIC_ONLY, _screen=_first_hop_allowed([]))


def test_a_redirect_within_the_allowed_host_is_followed(server):
    calls: list[str] = []
    with pytest.raises(FetchRefused):  # the second hop is loopback again, judged by the real rules
        fetch(server.url("/r/0"), PUBLIC_ONLY, _screen=_first_hop_allowed(calls))
    assert len(calls) == 2 and server.hits["/photo.jpg"] == 0


def test_allow_private_fetches_loopback_by_name(server):
    got = fetch(server.url("/photo.png", host="localhost"), LOCAL)
    assert got.body == server.photos["/photo.png"] and got.content_type == "image/png"


# --- https: the certificate is verified against the name in the URL


@pytest.fixture
def tls_server(tmp_path, monkeypatch):
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    srv = PhotoServer(tls=context)
    yield srv, Path(cert)
    srv.close()


def test_https_verifies_the_certificate(tls_server, monkeypatch):
    server, cert = tls_server
    with pytest.raises(FetchFailed, match="certificate is not valid") as err:
        fetch(server.url("/photo.jpg", host="localhost", scheme="https"), LOCAL)  # self-signed: not trusted
    _one_line(err.value)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # OpenSSL's own variable: trust this one certificate
    got = fetch(server.url("/photo.jpg", host="localhost", scheme="https"), LOCAL)
    assert got.body == server.photos["/photo.jpg"]
    assert server.headers["/photo.jpg"]["Host"] == f"localhost:{server.port}"

    def screen(url, limits):  # the checked address is right, the name is not the certificate's
        return screen_url(url, limits, resolver=lambda host, port: ["127.0.0.1"])

    with pytest.raises(FetchFailed, match="certificate is not valid"):
        fetch(server.url("/photo.jpg", host="photos.shop.invalid", scheme="https"), LOCAL, _screen=screen)
