"""Concurrent queries batched into the model, as Triton's dynamic batcher does for the in-process backend.

Sixteen visitors' text queries run one by one fight for the same two cores: each run pays the graph's fixed cost and
the threads' switching, and the sixteenth waits for the other fifteen. Run as one batch they cost about one run.

How: per tower and input shape a *lane*. A query that finds its lane idle runs at once, alone: a lone visitor never
waits for company. A query that finds a run in progress waits; when that run ends, the first waiting query leads the
next run, after waiting ``window_s`` for more to join (those that were answered a moment ago and send their next
query), and takes every waiting query up to ``max_batch`` rows. Each caller gets exactly its own rows back; an error of
the batched run reaches every caller of that batch. A request of ``max_batch`` rows or more (an ingest's batch) runs
as it is, past the lanes. Only queries whose inputs have the same names, trailing shapes and types share a run (text
queries are padded to shared buckets by the preprocessor, photos all have the model's size), so a batched answer
equals the one the query gets alone.

The model is fixed for the life of the backend, and the catalogue is not the model's business: a batch can mix queries
but never two models or catalogue versions.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .. import model_repo as mr
from .base import InferenceBackend

log = logging.getLogger(__name__)


@dataclass
class _Request:
    inputs: dict[str, np.ndarray]
    rows: int
    ready: threading.Event = field(default_factory=threading.Event)
    leads: bool = False  # woken to lead the next run rather than with an answer
    result: np.ndarray | None = None
    error: BaseException | None = None


@dataclass
class _Lane:
    pending: list[_Request] = field(default_factory=list)
    running: bool = False


class BatchingBackend:
    """An ``InferenceBackend`` in front of another that runs concurrent calls of a tower as one batch."""

    def __init__(
        self,
        backend: InferenceBackend,
        window_s: float,
        max_batch: int,
        on_batch: Callable[[str, int], None] | None = None,
    ) -> None:
        self.inner = backend
        self.window_s = max(0.0, float(window_s))
        limit = getattr(backend, "max_batch_size", None)
        self.max_batch = max(1, min(int(max_batch), limit) if limit else int(max_batch))
        self.on_batch = on_batch
        self.max_batch_size = getattr(backend, "max_batch_size", None)
        self.description = f"{backend.description}, concurrent queries batched (up to {self.max_batch})"
        self._lock = threading.Lock()
        self._lanes: dict[tuple, _Lane] = {}

    def run(self, model: str, inputs: dict[str, np.ndarray]) -> np.ndarray:
        rows = _rows(inputs)
        if self.max_batch <= 1 or rows >= self.max_batch:
            return self._run_inner(model, inputs, rows)
        key = (model, tuple(sorted((name, a.shape[1:], a.dtype.str) for name, a in inputs.items())))
        me = _Request(inputs, rows)
        with self._lock:
            lane = self._lanes.setdefault(key, _Lane())
            lane.pending.append(me)
            lead_now = not lane.running
            lane.running = True
        if not lead_now:
            me.ready.wait()
            if not me.leads:
                return _answer(me)
            if self.window_s:  # others are about: give the ones just answered a moment to come back
                time.sleep(self.window_s)
        self._lead(model, lane)
        return _answer(me)

    def _lead(self, model: str, lane: _Lane) -> None:
        """Run the lane's waiting queries (this caller's first) as one batch, answer them, hand the lane on."""
        with self._lock:
            batch, rows = [], 0
            while lane.pending and (not batch or rows + lane.pending[0].rows <= self.max_batch):
                request = lane.pending.pop(0)
                batch.append(request)
                rows += request.rows
        try:
            if len(batch) == 1:
                outputs = [self._run_inner(model, batch[0].inputs, rows)]
            else:
                joined = {name: np.concatenate([r.inputs[name] for r in batch]) for name in batch[0].inputs}
                out = self._run_inner(model, joined, rows)
                bounds = np.cumsum([0] + [r.rows for r in batch])
                outputs = [out[a:b] for a, b in itertools.pairwise(bounds)]
            for request, output in zip(batch, outputs, strict=True):
                request.result = output
        except BaseException as err:  # every caller of the batch gets it, as it would have alone
            for request in batch:
                request.error = err
        finally:
            with self._lock:
                if lane.pending:
                    nxt = lane.pending[0]
                    nxt.leads = True
                    nxt.ready.set()
                else:
                    lane.running = False
            for request in batch:
                request.ready.set()

    def _run_inner(self, model: str, inputs: dict[str, np.ndarray], rows: int) -> np.ndarray:
        out = self.inner.run(model, inputs)
        if self.on_batch is not None:
            try:
                self.on_batch(model, rows)
            except Exception:  # a metrics hook never fails a query
                log.exception("on_batch failed")
        return out

    def check(self, card: mr.ModelCard) -> None:
        self.inner.check(card)

    def close(self) -> None:
        self.inner.close()


def _rows(inputs: dict[str, np.ndarray]) -> int:
    return int(next(iter(inputs.values())).shape[0]) if inputs else 0


def _answer(request: _Request) -> np.ndarray:
    if request.error is not None:
        raise request.error
    assert request.result is not None
    return request.result
