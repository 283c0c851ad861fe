"""Peak memory of the app's process with the ViT-B/32 model loaded (issue 6, item 4).

Each measurement is a fresh subprocess that reports its own peak resident set (``VmHWM`` from /proc/self/status, else
``ru_maxrss``):

- baseline: the bare onnxruntime sessions of both towers (created as ``OrtBackend`` creates them), one text and one
  photo inference, nothing else;
- the pipeline (``Pipeline(settings)``) with the model loaded, answering a few text and photo queries (cache misses),
  on an empty catalogue and on a catalogue of 10,000 products (synthetic vectors in Qdrant local mode + MongoDB
  documents, prepared by the parent before the clock).

Printed: MiB and the ratio to the baseline, whether ``torch``/``transformers`` got imported, and the RSS of the
separate MongoDB-protocol server process the pipeline starts (not part of the app process, but part of what it costs).
Children of each kind run ``--repeats`` times, alternating; the table shows the median.

Run: ``.venv/bin/python -m bench.memory [--products 10000] [--repeats 2] [--json OUT]``.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as c

QUERIES = 3


def peak_mib() -> dict[str, float]:
    """This process's peak and current resident set in MiB."""
    out = {"peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss": float("nan")}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out["peak" if key == "VmHWM" else "rss"] = int(value.split()[0]) / 1024
    except (OSError, ValueError):
        pass
    return out


def rss_of(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


# ------------------------------------------------------------------------------------------------------------ children
def child_bare(repo: Path) -> dict:
    import numpy as np
    import onnxruntime as ort

    from pipeline import model_repo as mr

    sessions = {
        m: ort.InferenceSession(str(mr.onnx_path(repo, m)), ort.SessionOptions(), providers=["CPUExecutionProvider"])
        for m in (mr.TEXT_MODEL, mr.VISUAL_MODEL)
    }
    card = json.loads((repo / mr.CARD_FILE).read_text())
    length, size = card["text_max_length"], card["image_size"]
    ids = np.full((1, length), 49407, dtype=np.int64)
    ids[0, :3] = [49406, 320, 49407]
    mask = (np.arange(length) < 3).astype(np.int64)[None]
    pixels = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    for _ in range(QUERIES):
        sessions[mr.TEXT_MODEL].run([mr.OUTPUT], {"input_ids": ids, "attention_mask": mask})
        sessions[mr.VISUAL_MODEL].run([mr.OUTPUT], {mr.VISUAL_INPUT: pixels})
    return {}


def child_pipeline(repo: Path, data: Path) -> dict:
    from pipeline.service import Pipeline
    from pipeline.settings import Settings

    photos = c.query_photos(QUERIES)
    with Pipeline(Settings(data_dir=data, model_repository=repo)) as pipe:
        found = []
        for i in range(QUERIES):
            found.append(len(pipe.matcher.match_text(f"memory probe query {os.getpid()} {i}").matches))
            found.append(len(pipe.matcher.match_image(photos[i]).matches))
        server = pipe._mongo_server.process.pid if pipe._mongo_server and pipe._mongo_server.process else None
        mongo = rss_of(server) if server else None
        pipe.events.flush()
        return {"matches": found, "mongo_server_rss_mib": mongo, "products": pipe.index.count()}


def child_main(mode: str, repo: Path, data: Path | None) -> None:
    extra = child_bare(repo) if mode == "bare" else child_pipeline(repo, data)
    mods = sys.modules
    result = {**peak_mib(), **extra, "torch": "torch" in mods, "transformers": "transformers" in mods}
    print("RESULT " + json.dumps(result), flush=True)


# -------------------------------------------------------------------------------------------------------------- parent
def run_child(mode: str, repo: Path, data: Path | None) -> dict:
    cmd = [sys.executable, "-m", "bench.memory", "--child", mode, "--model-repo", str(repo)]
    if data is not None:
        cmd += ["--data", str(data)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=c.REPO_ROOT, timeout=600)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise SystemExit(f"memory child {mode!r} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def prepare(repo: Path, data: Path, n: int) -> None:
    from bench.query_path import fill_catalogue
    from pipeline.service import Pipeline
    from pipeline.settings import Settings

    with Pipeline(Settings(data_dir=data, model_repository=repo)) as pipe:
        seconds = fill_catalogue(pipe, n)
    c.note(f"catalogue of {n} products prepared in {seconds:.1f} s")


def main(argv: list[str] | None = None) -> int:
    p = c.parser(__doc__)
    p.add_argument("--products", type=int, default=None, help="catalogue size (default 10,000; 100 with --smoke)")
    p.add_argument("--child", choices=["bare", "pipeline"], help=argparse_hidden())
    p.add_argument("--data", type=Path, help=argparse_hidden())
    args = p.parse_args(argv)
    if args.child:
        child_main(args.child, Path(args.model_repo), args.data)
        return 0
    rounds = 1 if args.smoke else c.repeats(args, 2)
    n = args.products or (100 if args.smoke else 10_000)
    repo = c.model_repo(args)
    info = c.machine()
    results: dict[str, list[dict]] = {"bare": [], "empty": [], "full": []}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        full = Path(tmp) / "full"
        c.note(f"preparing a catalogue of {n} products ...")
        prepare(repo, full, n)
        kinds = ["bare", "full"] if args.smoke else list(results)  # smoke: two children are proof enough
        for r in range(rounds):
            for kind in kinds[r % len(kinds) :] + kinds[: r % len(kinds)]:
                data = None if kind == "bare" else (full if kind == "full" else Path(tmp) / f"empty{r}")
                results[kind].append(run_child("bare" if kind == "bare" else "pipeline", repo, data))
                c.note(f"round {r}: {kind}: peak {results[kind][-1]['peak']:.0f} MiB")

    def med(kind: str, key: str = "peak") -> float:
        values = [x[key] for x in results[kind] if x.get(key) is not None]
        return statistics.median(values) if values else float("nan")

    base = med("bare")
    labels = {
        "bare": f"bare onnxruntime sessions (both towers, {QUERIES} x (1 text + 1 photo))",
        "empty": f"pipeline, empty catalogue, {QUERIES} text + {QUERIES} photo queries",
        "full": f"pipeline, {n} products, {QUERIES} text + {QUERIES} photo queries",
    }
    rows = [
        [
            labels[kind],
            med(kind),
            med(kind) / base,
            runs[0]["torch"],
            med(kind, "mongo_server_rss_mib") if kind != "bare" else "-",
        ]
        for kind, runs in results.items()
        if runs
    ]
    payload = c.report(
        "memory",
        info,
        f"Peak RSS of one process (MiB, median of {rounds} runs each; ratio to the bare sessions)",
        ["process", "peak MiB", "x bare", "torch imported", "MongoDB server RSS MiB (separate process)"],
        rows,
        model=str(repo),
        spread="peak MiB per run: " + "; ".join(f"{k}: {[round(x['peak']) for x in v]}" for k, v in results.items()),
    )
    payload["runs"] = results
    c.write_json(args.json, payload)
    return 0


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    raise SystemExit(main())
