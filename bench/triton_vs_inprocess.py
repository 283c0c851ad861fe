"""Triton vs in-process inference: the same ViT-B/32 towers, one run (issue 4, item 6).

The random-weight ViT-B/32 CLIP (real shape) is served two ways from the same ONNX files:

- in-process: ``OrtBackend`` (onnxruntime in this process);
- Triton: a real local ``tritonserver`` (``TritonServer``; Python backend running onnxruntime, dynamic batching on,
  one instance) reached through ``TritonBackend`` (tritonclient.http, binary tensors, one client per thread).

Both sides get the same onnxruntime intra-op thread count (``--threads``, default: all cores), printed with the table;
the Triton side gets it through the model config's ``intra_op_thread_count`` in a copy of the repository (config files
rewritten, ONNX files linked, not copied). Inputs are tokenized / preprocessed beforehand: only the embedding call is
timed (``backend.run`` on one query).

- single-query latency (one client, requests one after another), Triton / in-process, for text and photo -- target
  <= 1.3; per tower, rounds of 5 calls per side, alternating sides, median;
- throughput (queries/s) with 1, 4 and 8 client threads, each thread calling ``backend.run`` on one query at a time in
  a loop for ``--seconds``; Triton / in-process at the same concurrency -- target >= 1.0 at 8 clients. Triton's own
  statistics give the mean dynamic batch size.

Note: on a 2-core machine the in-process side already uses both cores for one query, and tritonserver, its Python
stub and the HTTP clients share those cores with it, so Triton can only win where batching several queries into one
onnxruntime call is cheaper than running them one by one.

Run: ``.venv/bin/python -m bench.triton_vs_inprocess [--repeats 30] [--seconds 4] [--threads N] [--json OUT]``.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as c
from pipeline import model_repo as mr
from pipeline.inference.ort_backend import OrtBackend
from pipeline.inputs import load_image
from pipeline.model_build.triton_repo import (
    DEFAULT_QUEUE_DELAY_US,
    IDENTITY_PARAMETER,
    text_specs,
    visual_specs,
    write_triton_model,
)
from pipeline.query.preprocess import Preprocessor

CONCURRENCY = (1, 4, 8)
LATENCY_BLOCK = 5
TARGETS = {"latency": 1.3, "throughput8": 1.0}


def triton_repo(repo: Path, threads: int, delay_us: int, instances: int = 1, max_batch: int = 64) -> Path:
    """A copy of ``repo`` whose configs pin onnxruntime's intra-op threads (ONNX files are symlinks, not copies)."""
    card = mr.ModelCard.load(repo)
    out = repo.parent / f".{repo.name}-triton-t{threads}-i{instances}-d{delay_us}-{card.identity}"
    if out.exists():
        shutil.rmtree(out)
    for model, specs in ((mr.TEXT_MODEL, text_specs(card)), (mr.VISUAL_MODEL, visual_specs(card))):
        inputs, outputs = specs
        write_triton_model(
            out / model,
            model,
            inputs,
            outputs,
            max_batch_size=max_batch,
            backend="python",
            instances=instances,
            max_queue_delay_us=delay_us,
            intra_op_threads=threads,
            parameters={IDENTITY_PARAMETER: card.identity},
        )
        os.symlink(mr.onnx_path(repo, model).resolve(), mr.onnx_path(out, model))
    shutil.copy2(repo / mr.CARD_FILE, out / mr.CARD_FILE)
    return out


def throughput(backend, model: str, inputs: dict[str, np.ndarray], clients: int, seconds: float) -> float:
    """Queries per second with ``clients`` threads, each sending one query at a time for ``seconds``."""
    counts = [0] * clients
    errors: list[BaseException] = []
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client(i: int) -> None:
        try:
            backend.run(model, inputs)  # this thread's connection, opened before the clock
            start.wait()
            while time.perf_counter() < stop_at[0]:
                backend.run(model, inputs)
                counts[i] += 1
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + 3600
    start.wait()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise errors[0]
    return sum(counts) / elapsed


def batch_stats(triton, model: str) -> tuple[int, int]:
    stats = triton.statistics(model)["model_stats"][0]
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))


def main(argv: list[str] | None = None) -> int:
    from pipeline.inference.triton_backend import TritonBackend
    from pipeline.processes.triton import TritonNotInstalled, TritonServer

    p = c.parser(__doc__)
    p.add_argument("--seconds", type=float, default=None, help="length of each throughput measurement (default 4)")
    p.add_argument(
        "--threads", type=int, default=None, help="onnxruntime intra-op threads, both sides (default: cores)"
    )
    p.add_argument("--queue-delay-us", type=int, default=DEFAULT_QUEUE_DELAY_US, help="Triton dynamic batching delay")
    p.add_argument("--instances", type=int, default=1, help="Triton instances per tower (threads split between them)")
    p.add_argument(
        "--instance-threads", type=int, default=None, help="onnxruntime threads per Triton instance (default: split)"
    )
    p.add_argument("--models", default="image,text", help="which towers to put under load (default image,text)")
    args = p.parse_args(argv)
    rounds = c.repeats(args, 20)
    tp_rounds = 1 if args.smoke else 5
    seconds = args.seconds or (0.2 if args.smoke else 4.0)
    threads = args.threads or os.cpu_count() or 1
    repo = c.model_repo(args)
    info = c.machine()
    card = mr.ModelCard.load(repo)
    pre = Preprocessor(repo, card)
    tokens = pre.tokenize(["navy blue cotton t-shirt with a round neck for men"])
    pixels = pre.pixels([load_image(c.query_photos(1)[0])])
    inputs = {"text": (mr.TEXT_MODEL, tokens), "image": (mr.VISUAL_MODEL, {mr.VISUAL_INPUT: pixels})}
    loaded = [m.strip() for m in ("image" if args.smoke else args.models).split(",") if m.strip() in inputs]

    local = OrtBackend(repo, threads=threads)
    # default: the same threads in total as the in-process side
    triton_threads = args.instance_threads or max(1, threads // args.instances)
    served = triton_repo(repo, triton_threads, args.queue_delay_us, args.instances)
    try:
        server = TritonServer(served, ready_timeout=300).start()
    except TritonNotInstalled as exc:
        print(f"Triton is not installed here: {exc}", file=sys.stderr)
        return 2
    triton = TritonBackend(server.url, timeout_s=120)
    try:
        triton.check(card)
        local.check(card)
        same = {k: float(np.max(np.abs(local.run(m, x) - triton.run(m, x)))) for k, (m, x) in inputs.items()}
        c.note(f"Triton at {server.url}; max |Triton - in-process| = {same}")

        # Per tower, rounds of 5 calls in a row per side (the round's sample is the block's median): a call right
        # after the other side's call would also measure that side's onnxruntime threads still spinning.
        latency = c.Samples()
        c.note(f"single-query latency: {rounds} interleaved rounds of {LATENCY_BLOCK} calls per side and tower ...")
        for kind, (model, x) in inputs.items():
            steps = {
                f"{kind}|in-process": lambda r, model=model, x=x: local.run(model, x),
                f"{kind}|triton": lambda r, model=model, x=x: triton.run(model, x),
            }
            c.interleave(steps, rounds, warmup=2, samples=latency, block=LATENCY_BLOCK)

        qps: dict[tuple[str, str, int], list[float]] = {}
        batching: dict[tuple[str, int], list[float]] = {}
        for kind in loaded:
            model, x = inputs[kind]
            for clients in CONCURRENCY:
                c.note(f"throughput: {kind}, {clients} clients, {tp_rounds} x {seconds:g} s per side ...")
                for r in range(tp_rounds):
                    order = ("in-process", "triton") if r % 2 == 0 else ("triton", "in-process")
                    for side in order:
                        if side == "triton":
                            before = batch_stats(triton, model)
                            value = throughput(triton, model, x, clients, seconds)
                            after = batch_stats(triton, model)
                            runs = max(1, after[1] - before[1])
                            batching.setdefault((kind, clients), []).append((after[0] - before[0]) / runs)
                        else:
                            value = throughput(local, model, x, clients, seconds)
                        qps.setdefault((kind, side, clients), []).append(value)
    finally:
        triton.close()
        local.close()
        server.stop()
        shutil.rmtree(served, ignore_errors=True)

    rows = []
    for kind in inputs:
        ratio = latency.ratio(f"{kind}|triton", f"{kind}|in-process")
        rows.append([
            f"{kind}: single-query latency (ms)", latency.median_ms(f"{kind}|in-process"),
            latency.median_ms(f"{kind}|triton"), ratio.median, ratio.spread(), "-",
            c.verdict(ratio.median, TARGETS["latency"], True),
        ])  # fmt: skip
    for kind in loaded:
        for clients in CONCURRENCY:
            ours, theirs = qps[(kind, "in-process", clients)], qps[(kind, "triton", clients)]
            ratio = c.Ratio.of([t / o for t, o in zip(theirs, ours, strict=True)])
            target = c.verdict(ratio.median, TARGETS["throughput8"], False) if clients == 8 else ""
            rows.append([
                f"{kind}: throughput, {clients} client{'s' if clients > 1 else ''} (queries/s)",
                float(np.median(ours)), float(np.median(theirs)), ratio.median, ratio.spread(),
                float(np.median(batching[(kind, clients)])), target,
            ])  # fmt: skip
    payload = c.report(
        "triton_vs_inprocess",
        info,
        f"Triton vs in-process, {card.label}, latency {rounds} rounds, throughput {tp_rounds} x {seconds:g} s per cell",
        ["measure", "in-process", "Triton", "Triton / in-process", "p25-p75", "mean Triton batch", "target"],
        rows,
        model=str(repo),
        intra_op_threads=f"in-process {threads}; Triton {args.instances} instance(s) per tower x {triton_threads} "
        "(onnxruntime intra-op threads)",
        triton=f"Python backend + onnxruntime, dynamic batching max_queue_delay {args.queue_delay_us} us, "
        "max_batch_size 64, HTTP binary tensors",
        max_abs_difference=str({k: f"{v:.1e}" for k, v in same.items()}),
    )
    payload["qps"] = {f"{k[0]}|{k[1]}|{k[2]}": v for k, v in qps.items()}
    c.write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
