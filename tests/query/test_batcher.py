"""Concurrent queries batched into one tower run (``pipeline.inference.batcher``): on the tiny model's real ONNX towers
through onnxruntime, and on a recording backend for what only counting can show (how many runs, of how many rows)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from pipeline import model_repo as mr
from pipeline.inference.batcher import BatchingBackend
from pipeline.inference.ort_backend import OrtBackend
from pipeline.query.encoder import Encoder, load_encoder
from pipeline.query.preprocess import Preprocessor
from pipeline.service import Pipeline

TEXTS = [f"{colour} {thing} number {n}" for n, (colour, thing) in enumerate(
    [("red", "cotton t-shirt"), ("blue", "denim jacket with a hood"), ("black", "leather boots"), ("white", "mug")] * 6
)]  # fmt: skip


class Slow:
    """A backend that answers each row with its own first input value, slowly, and records every run's rows."""

    description = "slow test backend"
    max_batch_size = None

    def __init__(self, seconds: float = 0.05, fail_on: float | None = None) -> None:
        self.seconds, self.fail_on = seconds, fail_on
        self.runs: list[int] = []
        self.lock = threading.Lock()

    def run(self, model, inputs):
        x = inputs["x"]
        with self.lock:
            self.runs.append(len(x))
        time.sleep(self.seconds)
        if self.fail_on is not None and self.fail_on in x[:, 0]:
            raise ValueError(f"{model} cannot take {self.fail_on}")
        return np.repeat(x[:, :1], 2, axis=1).astype(np.float32)

    def check(self, card):
        pass

    def close(self):
        pass


def _encoder(repo, backend) -> Encoder:
    card = mr.ModelCard.load(repo)
    return Encoder(card, Preprocessor(repo, card), backend)


def test_batched_answers_equal_the_answers_alone_each_caller_its_own(model_repo):
    alone = _encoder(model_repo, OrtBackend(model_repo))
    seen: list[tuple[str, int]] = []
    batched = _encoder(model_repo, BatchingBackend(OrtBackend(model_repo), 0.002, 16, lambda m, n: seen.append((m, n))))
    expected = [alone.encode_texts([t])[0] for t in TEXTS]
    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(lambda t: batched.encode_texts([t])[0], TEXTS))
    for text, want, have in zip(TEXTS, expected, got, strict=True):
        np.testing.assert_allclose(have, want, atol=1e-5, err_msg=text)
    assert sum(n for _, n in seen) == len(TEXTS) and {m for m, _ in seen} == {mr.TEXT_MODEL}
    assert max(n for _, n in seen) > 1, f"16 threads at once never shared a run: {seen}"

    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (240, 240, 240)] * 4
    photos = [Image.new("RGB", (40 + i, 30), c) for i, c in enumerate(colours)]
    want = [alone.encode_images([p])[0] for p in photos]
    with ThreadPoolExecutor(16) as pool:
        have = list(pool.map(lambda p: batched.encode_images([p])[0], photos))
    np.testing.assert_allclose(np.stack(have), np.stack(want), atol=1e-5)


def test_queries_while_a_run_is_in_progress_share_the_next_run():
    inner = Slow(0.1)
    backend = BatchingBackend(inner, 0.0, 16)
    values = np.arange(12, dtype=np.float32)
    with ThreadPoolExecutor(12) as pool:
        first = pool.submit(backend.run, "t", {"x": values[:1, None]})
        time.sleep(0.03)  # the first runs alone; the others arrive during its run
        rest = [pool.submit(backend.run, "t", {"x": values[i : i + 1, None]}) for i in range(1, 12)]
        answers = [first.result(), *(f.result() for f in rest)]
    assert [float(a[0, 0]) for a in answers] == list(values), "each caller gets its own row"
    assert inner.runs == [1, 11], inner.runs


def test_a_lone_query_runs_at_once_and_big_requests_run_as_they_are():
    inner = Slow(0.0)
    backend = BatchingBackend(inner, 0.5, 4)  # a long window: a lone query must not wait for it
    started = time.perf_counter()
    backend.run("t", {"x": np.ones((1, 1), np.float32)})
    assert time.perf_counter() - started < 0.4
    out = backend.run("t", {"x": np.arange(6, dtype=np.float32)[:, None]})
    assert out.shape == (6, 2) and inner.runs == [1, 6]


def test_rows_beyond_max_batch_wait_for_the_next_run_and_shapes_never_mix():
    inner = Slow(0.1)
    backend = BatchingBackend(inner, 0.0, 4)
    with ThreadPoolExecutor(12) as pool:
        first = pool.submit(backend.run, "t", {"x": np.zeros((1, 1), np.float32)})
        time.sleep(0.03)
        same = [pool.submit(backend.run, "t", {"x": np.full((1, 1), i, np.float32)}) for i in range(1, 7)]
        wide = pool.submit(backend.run, "t", {"x": np.full((1, 3), 9, np.float32)})
        for f in [first, *same, wide]:
            f.result()
    assert wide.result().shape == (1, 2)
    narrow_runs = inner.runs[1:]
    assert sorted(narrow_runs) == [1, 2, 4], f"at most 4 rows a run; the wide input runs apart: {inner.runs}"


def test_an_error_reaches_every_caller_of_its_batch_and_the_lane_goes_on():
    inner = Slow(0.1, fail_on=3.0)
    backend = BatchingBackend(inner, 0.0, 16)
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(backend.run, "t", {"x": np.zeros((1, 1), np.float32)})
        time.sleep(0.03)
        batch = [pool.submit(backend.run, "t", {"x": np.full((1, 1), i, np.float32)}) for i in (1, 2, 3)]
        assert first.result()[0, 0] == 0
        for f in batch:
            with pytest.raises(ValueError, match=r"cannot take 3\.0"):
                f.result()
    assert backend.run("t", {"x": np.full((1, 1), 5, np.float32)})[0, 0] == 5, "the lane is free again"


def test_only_the_serving_pipeline_batches(model_repo, tmp_path):
    from pipeline.settings import Settings

    settings = Settings.from_env().with_(model_repository=model_repo, data_dir=tmp_path, triton_url=None)
    assert isinstance(load_encoder(settings, batching=True).backend, BatchingBackend)
    assert not isinstance(load_encoder(settings).backend, BatchingBackend)
    assert not isinstance(load_encoder(settings.with_(batch_max=1), batching=True).backend, BatchingBackend)
    with Pipeline(settings, serving=True) as serving, Pipeline(settings) as batch_job:
        assert isinstance(serving.encoder.backend, BatchingBackend)
        assert not isinstance(batch_job.encoder.backend, BatchingBackend), "ingest and the CLI run their own batches"
