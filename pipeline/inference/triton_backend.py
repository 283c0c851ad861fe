"""Inference through a Triton server (``TRITON_URL``), and a wrapper that falls back to in-process inference.

Why it looks like this:

* ``tritonclient.http`` clients are not thread-safe (gevent underneath), and Gradio runs handlers in worker threads:
  each thread gets its own client from a ``threading.local``, created on first use and closed by ``close()``.
* Batches are sent as binary tensors, split to the model's ``max_batch_size`` (read from the server's model config),
  and a large batch goes out as several requests at once (a small thread pool), so Triton's dynamic batcher and the
  server's cores are used while the next chunk is still being serialised.
* Every transport failure becomes ``BackendUnavailable`` with the URL in the message, once, here; callers never see
  gevent or socket exceptions.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import numpy as np

from .. import model_repo as mr
from ..errors import BackendUnavailable, ModelMismatch, PipelineError

if TYPE_CHECKING:
    from ..settings import Settings
    from .base import InferenceBackend

log = logging.getLogger(__name__)

_NUMPY_TO_TRITON = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64", np.dtype(np.float16): "FP16"}


RECHECK_S = 1.0  # the served model's identity is checked again at most this long after the last check
_NO_LIMIT = 1 << 30  # a model with max_batch_size 0 takes whole batches

#: server answers that mean "cannot serve now" (fallback-worthy) rather than "your request is wrong"
_UNAVAILABLE_WORDS = (
    "timed out",
    "timeout",
    "unavailable",
    "not ready",
    "unknown model",
    "is not found",
    "shutting down",
)


def _split_url(url: str) -> tuple[str, bool]:
    """tritonclient wants "host:port" without a scheme; "https://" means TLS."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if not parts.hostname:
        raise PipelineError(f"TRITON_URL {url!r} is not a URL like http://127.0.0.1:8000.")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port or (443 if parts.scheme == 'https' else 8000)}", parts.scheme == "https"


def _transport_errors() -> tuple[type[BaseException], ...]:
    """What a dead, unreachable or too slow server raises through tritonclient.http (gevent + geventhttpclient)."""
    from http.client import HTTPException

    import gevent

    return (OSError, ConnectionError, HTTPException, gevent.Timeout)


class TritonBackend:
    """The ``InferenceBackend`` protocol over Triton's HTTP API (models ``clip_text`` and ``clip_visual``)."""

    def __init__(
        self,
        url: str,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 5.0,
        max_in_flight: int = 4,
        chunk_size: int | None = None,
    ) -> None:
        self.url = url if "://" in url else f"http://{url}"
        self._address, self._ssl = _split_url(url)
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.chunk_size = chunk_size  # requests smaller than max_batch_size keep more of them in flight
        self.description = f"Triton at {self.url}"
        self._local = threading.local()
        self._clients: list[object] = []
        self._lock = threading.Lock()
        self._batch_limits: dict[str, int] = {}
        self._pool = ThreadPoolExecutor(max_workers=max(1, max_in_flight), thread_name_prefix="triton-infer")
        self._errors = _transport_errors()
        # The card the server was last checked against, when, and whether a connection was lost since. A Triton that
        # comes back may have been restarted on another model repository, so it is checked again before it is used:
        # after a lost connection, and otherwise at most RECHECK_S after the last check (the HTTP client reconnects
        # to a restarted server by itself, unseen; no Triton restarts and loads its models within that time).
        self._checked: mr.ModelCard | None = None
        self._checked_at = 0.0
        self._lost = False

    # ------------------------------------------------------------------ clients
    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            import tritonclient.http as httpclient

            client = httpclient.InferenceServerClient(
                self._address,
                connection_timeout=self.connect_timeout_s,
                network_timeout=self.timeout_s,
                ssl=self._ssl,
            )
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def _drop_client(self) -> None:
        """After a transport error the connection may be half-dead: the next call in this thread starts afresh (and
        the server is checked again first: it may be another one now)."""
        self._lost = True
        client = getattr(self._local, "client", None)
        self._local.client = None
        if client is not None:
            with self._lock:
                if client in self._clients:
                    self._clients.remove(client)
            try:
                client.close()
            except Exception:  # already broken; nothing to report
                log.debug("closing a broken Triton client failed", exc_info=True)

    def _call(self, what: str, fn: Callable):
        """Run one client call: transport failures become ``BackendUnavailable``, server errors a sentence."""
        from tritonclient.utils import InferenceServerException

        try:
            return fn(self._client())
        except InferenceServerException as exc:
            message = exc.message() or str(exc)
            lowered = message.lower()
            if any(words in lowered for words in _UNAVAILABLE_WORDS):
                self._drop_client()
                raise BackendUnavailable(f"Triton at {self.url} does not answer: {message} (while {what}).") from None
            raise PipelineError(f"Triton at {self.url} rejected {what}: {message}") from None
        except self._errors as exc:
            self._drop_client()
            detail = str(exc) or type(exc).__name__
            raise BackendUnavailable(
                f"Triton at {self.url} does not answer: {detail} (while {what}). Start it with "
                "'python -m pipeline triton', or unset TRITON_URL to run the models in-process."
            ) from None

    # --------------------------------------------------------------- protocol
    def _model_config(self, model: str) -> dict:
        return self._call(f"reading the {model} config", lambda c: c.get_model_config(model))

    def batch_limit(self, model: str) -> int:
        """The model's ``max_batch_size`` from the server (cached; the server's config is the truth, not ours)."""
        limit = self._batch_limits.get(model)
        if limit is None:
            limit = int(self._model_config(model).get("max_batch_size", 0)) or _NO_LIMIT
            self._batch_limits[model] = limit
        return limit

    @property
    def max_batch_size(self) -> int | None:
        """The smaller of the two towers' limits; None while the server cannot be asked (run() splits anyway)."""
        try:
            limit = min(self.batch_limit(m) for m in (mr.TEXT_MODEL, mr.VISUAL_MODEL))
        except PipelineError:
            return None
        return None if limit >= _NO_LIMIT else limit

    def _infer_one(self, model: str, inputs: dict[str, np.ndarray]) -> np.ndarray:
        import tritonclient.http as httpclient

        request = []
        for name, array in inputs.items():
            array = np.ascontiguousarray(array)
            datatype = _NUMPY_TO_TRITON.get(array.dtype)
            if datatype is None:
                raise PipelineError(
                    f"Cannot send a {array.dtype} tensor {name!r} to Triton (expected float32 or int64)."
                )
            tensor = httpclient.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array, binary_data=True)
            request.append(tensor)
        outputs = [httpclient.InferRequestedOutput(mr.OUTPUT, binary_data=True)]
        result = self._call(f"{model} inference", lambda c: c.infer(model, request, outputs=outputs))
        return result.as_numpy(mr.OUTPUT)

    def _recheck(self) -> None:
        """After a lost connection, before any embedding is used: the same model as before, or ``ModelMismatch``
        (never a silent mix of vector spaces in one index)."""
        if self._checked is None:
            return
        lost = self._lost
        if lost or time.monotonic() - self._checked_at > RECHECK_S:
            if lost:
                self._batch_limits.clear()  # the restarted server's configs are the truth now
            self.check(self._checked)
            if lost:
                log.info("Triton at %s answers again, serving %s.", self.url, self._checked.label)

    def run(self, model: str, inputs: dict[str, np.ndarray]) -> np.ndarray:
        self._recheck()
        sizes = {len(a) for a in inputs.values()}
        if len(sizes) != 1:
            raise PipelineError(f"Inputs of {model} have different batch sizes: {sorted(sizes)}.")
        total = sizes.pop()
        step = min(self.batch_limit(model), self.chunk_size or _NO_LIMIT)
        if total <= step:
            return self._infer_one(model, inputs)
        chunks = [{k: v[i : i + step] for k, v in inputs.items()} for i in range(0, total, step)]
        # several requests in flight: the server batches and computes one while the next is on the wire
        futures = [self._pool.submit(self._infer_one, model, chunk) for chunk in chunks]
        return np.concatenate([f.result() for f in futures])

    def check(self, card: mr.ModelCard) -> None:
        """Both models ready, and their tensors (names, dtypes, shapes) and identity match the local model card."""
        expected = {
            mr.TEXT_MODEL: (
                {name: ("INT64", [-1, mr.text_sequence_dim(card)]) for name in mr.TEXT_INPUTS},
                {mr.OUTPUT: ("FP32", [-1, card.embedding_dim])},
            ),
            mr.VISUAL_MODEL: (
                {mr.VISUAL_INPUT: ("FP32", [-1, 3, card.image_size, card.image_size])},
                {mr.OUTPUT: ("FP32", [-1, card.embedding_dim])},
            ),
        }
        for model, (want_inputs, want_outputs) in expected.items():
            if not self._call(f"asking whether {model} is ready", lambda c, m=model: c.is_model_ready(m)):
                raise BackendUnavailable(
                    f"Triton at {self.url} answers but its model {model} is not ready; "
                    "start it with 'python -m pipeline triton' on this model repository."
                )
            meta = self._call(f"reading the {model} metadata", lambda c, m=model: c.get_model_metadata(m))
            for kind, want, got in (
                ("input", want_inputs, meta.get("inputs", [])),
                ("output", want_outputs, meta.get("outputs", [])),
            ):
                served = {t["name"]: (t["datatype"], [int(d) for d in t["shape"]]) for t in got}
                if served != want:
                    raise ModelMismatch(
                        f"Triton at {self.url} serves {model} with {kind}s {_describe(served)}, but the local "
                        f"model card ({card.label}) expects {_describe(want)}; restart Triton on the model repository "
                        "that was built with this model, or rebuild it."
                    )
            parameters = self._model_config(model).get("parameters", {})
            identity = parameters.get(mr.IDENTITY_PARAMETER, {}).get("string_value")
            if identity and identity != card.identity:
                raise ModelMismatch(
                    f"Triton at {self.url} serves other weights for {model} (model identity {identity}) than the "
                    f"local model card ({card.label}, identity {card.identity}); restart Triton on the current model "
                    "repository."
                )
        self._checked, self._checked_at, self._lost = card, time.monotonic(), False

    def statistics(self, model: str = "") -> dict:
        """Triton's inference statistics (how many requests vs. executions: shows dynamic batching at work)."""
        return self._call("reading statistics", lambda c: c.get_inference_statistics(model))

    def close(self) -> None:
        """Close every thread's client (open keep-alive connections would delay a server's shutdown) and the pool."""
        self._pool.shutdown(wait=True)
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            try:
                client.close()
            except Exception:  # closing a client another thread made can fail; the socket still goes
                log.debug("closing a Triton client failed", exc_info=True)
        self._local = threading.local()


def _describe(tensors: dict[str, tuple[str, list[int]]]) -> str:
    return ", ".join(f"{name} {dtype} {shape}" for name, (dtype, shape) in sorted(tensors.items())) or "none"


class FallbackBackend:
    """Use ``primary`` (Triton) until it stops answering, then switch for good to ``make_fallback()`` (in-process).

    The switch is logged once and shown in ``description`` (the status line), so a person can see that Triton was lost.
    It does not switch back by itself: restart the app once Triton is up again. ``ModelMismatch`` is never masked.
    """

    def __init__(self, primary: InferenceBackend, make_fallback: Callable[[], InferenceBackend]) -> None:
        self.primary = primary
        self._make_fallback = make_fallback
        self._fallback: InferenceBackend | None = None
        self._reason = ""
        self._lock = threading.Lock()

    @property
    def active(self) -> InferenceBackend:
        return self._fallback or self.primary

    @property
    def description(self) -> str:
        if self._fallback is None:
            return self.primary.description
        return f"{self._fallback.description} (fallback: {self.primary.description} does not answer)"

    @property
    def max_batch_size(self) -> int | None:
        return self.active.max_batch_size

    @property
    def switched(self) -> bool:
        return self._fallback is not None

    def _switch(self, exc: BackendUnavailable) -> InferenceBackend:
        with self._lock:
            if self._fallback is None:
                fallback = self._make_fallback()
                log.warning("%s Switching to %s (TRITON_FALLBACK=local).", exc, fallback.description)
                self._reason = str(exc)
                self._fallback = fallback
            return self._fallback

    def run(self, model: str, inputs: dict[str, np.ndarray]) -> np.ndarray:
        backend = self._fallback
        if backend is None:
            try:
                return self.primary.run(model, inputs)
            except BackendUnavailable as exc:
                backend = self._switch(exc)
        return backend.run(model, inputs)

    def check(self, card: mr.ModelCard) -> None:
        backend = self._fallback
        if backend is None:
            try:
                return self.primary.check(card)
            except BackendUnavailable as exc:
                backend = self._switch(exc)
        backend.check(card)

    def close(self) -> None:
        self.primary.close()
        if self._fallback is not None:
            self._fallback.close()


def from_settings(settings: Settings, repo=None) -> InferenceBackend:
    """``TRITON_URL`` set: Triton, wrapped in a fallback to in-process onnxruntime when ``TRITON_FALLBACK=local``."""
    if not settings.triton_url:
        raise PipelineError("TRITON_URL is not set.")
    # Batches of a few items keep several requests in flight during ingestion, so the server batches and overlaps them.
    backend: InferenceBackend = TritonBackend(settings.triton_url, timeout_s=settings.triton_timeout_s, chunk_size=8)
    if (settings.triton_fallback or "").lower() == "local":
        from .ort_backend import OrtBackend

        local_repo = repo if repo is not None else settings.model_repository
        backend = FallbackBackend(backend, lambda: OrtBackend(local_repo))
    elif settings.triton_fallback:
        raise PipelineError(
            f"TRITON_FALLBACK={settings.triton_fallback!r} is not known; use 'local' or leave it unset."
        )
    return backend
