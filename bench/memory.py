"""Start-up time and peak memory of the serving process with the ViT-B/32 model (issue 6 item 4, issue 11 item 4).

Each measurement is a fresh subprocess (``--child KIND``) that reports its own peak resident set (``VmHWM`` from
/proc/self/status, else ``ru_maxrss``), how long after its start it reached each milestone, and whether torch /
transformers got imported. Times are taken from the moment the parent starts the child (``time.monotonic`` is
system-wide on Linux), so they include the interpreter's own start and every import.

- ``bare``: the bare onnxruntime sessions of both towers, created as ``OrtBackend`` creates them (``cpu_session``), then
  3 x (1 text + 1 photo) inferences on ready-made inputs: the baseline for time (sessions loaded) and memory;
- ``python``: the interpreter with numpy, nothing else (what the ``bare`` and ``index`` processes both contain);
- ``index``: only the vector store (``open_vector_store``) over the catalogue of N products, answering 3 fused text and
  3 photo searches with random unit vectors; its own memory = its peak minus the ``python`` process's peak;
- ``pipeline``: what ``python -m app`` does before and while serving, without Gradio: ``apply_process_defaults``,
  ``Pipeline(settings, serving=True)``, ``app.server.warm_up`` (model, preprocessing, index, MongoDB, cache), then a
  first ``match_text`` (the app is ready to answer once that answer is back), then 3 text + 3 photo queries (cache
  misses), on an empty catalogue and on N products (synthetic vectors in Qdrant Edge + MongoDB documents, prepared by
  the parent before the clock).

Targets (issue 11): first answer within 2x the time the bare sessions take to load; peak RSS with N products at most
1.3x (bare sessions + the index's own memory). The MongoDB-protocol server the pipeline starts is a separate process;
its RSS is printed apart. Each kind runs ``--repeats`` times (default 2), the order rotating each round; ratios are
taken per round and the table shows their median.

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
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as c

QUERIES = 3
FIRST_QUERY = "a warm navy blue winter jacket with a hood"
READY_TARGET = 2.0  # first answer / bare sessions loaded
MEMORY_TARGET = 1.3  # peak with N products / (bare sessions + the index's own memory)


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
class Clock:
    """Seconds since the parent started this process."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.marks: dict[str, float] = {}

    def mark(self, name: str) -> None:
        self.marks[name] = round(time.monotonic() - self.t0, 4)


def child_bare(repo: Path, clock: Clock, _data: Path | None, _round: int) -> dict:
    import numpy as np

    from pipeline import model_repo as mr
    from pipeline.inference.onnx_session import cpu_session

    sessions = {m: cpu_session(mr.onnx_path(repo, m)) for m in (mr.TEXT_MODEL, mr.VISUAL_MODEL)}
    clock.mark("sessions")
    card = json.loads((repo / mr.CARD_FILE).read_text())
    length, size = card["text_max_length"], card["image_size"]
    from tokenizers import Tokenizer

    # The model's own token ids (a CLIP's and a SigLIP's vocabularies differ), padded to the full length with the
    # last of them: what the text tower takes at most.
    tokens = Tokenizer.from_file(str(mr.tokenizer_dir(repo) / "tokenizer.json")).encode("red shirt").ids[:length]
    ids = np.full((1, length), tokens[-1], dtype=np.int64)
    ids[0, : len(tokens)] = tokens
    mask = (np.arange(length) < len(tokens)).astype(np.int64)[None]
    pixels = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    for i in range(QUERIES):
        sessions[mr.TEXT_MODEL].run([mr.OUTPUT], {"input_ids": ids, "attention_mask": mask})
        if i == 0:
            clock.mark("first_inference")
        sessions[mr.VISUAL_MODEL].run([mr.OUTPUT], {mr.VISUAL_INPUT: pixels})
    return {}


def child_python(_repo: Path, clock: Clock, _data: Path | None, _round: int) -> dict:
    import numpy as np

    np.zeros(1)
    clock.mark("imports")
    return {}


def child_index(repo: Path, clock: Clock, data: Path | None, _round: int) -> dict:
    import numpy as np

    from bench._common import unit_vectors
    from pipeline.model_repo import ModelCard
    from pipeline.settings import Settings
    from pipeline.storage.vectors import open_vector_store

    card = ModelCard.load(repo)
    store = open_vector_store(Settings(data_dir=data, model_repository=repo), serving=True)
    try:
        store.check_model(card)
        products = store.count()
        queries = unit_vectors(np.random.default_rng(os.getpid()), 2 * QUERIES, card.embedding_dim)
        found = []
        for i in range(QUERIES):
            found.append(len(store.search_text(queries[2 * i], card.text_weight, 10)))
            found.append(len(store.search(queries[2 * i + 1], "image", 10)))
        clock.mark("searched")
    finally:
        store.close()
    return {"products": products, "matches": found}


def child_pipeline(repo: Path, clock: Clock, data: Path | None, round_: int) -> dict:
    from pipeline.settings import apply_process_defaults

    apply_process_defaults()  # as python -m app does, before numpy loads
    from app.server import warm_up
    from pipeline.service import Pipeline
    from pipeline.settings import Settings

    clock.mark("imports")
    photos = c.query_photos(QUERIES * (round_ + 1))[QUERIES * round_ :]  # other photos each round: cache misses
    with Pipeline(Settings(data_dir=data, model_repository=repo), serving=True) as pipe:
        problems = warm_up(pipe)
        clock.mark("warm_up")
        first = pipe.matcher.match_text(f"{FIRST_QUERY} {os.getpid()}")
        clock.mark("first_answer")
        found = [len(first.matches)]
        for i in range(QUERIES):
            found.append(len(pipe.matcher.match_text(f"memory probe query {os.getpid()} {i}").matches))
            found.append(len(pipe.matcher.match_image(photos[i % len(photos)]).matches))
        server = pipe._mongo_server.server_pid if pipe._mongo_server else None
        mongo = rss_of(server) if server else None
        pipe.events.flush()
        return {
            "matches": found,
            "cache_hit": first.cache_hit,
            "mongo_server_rss_mib": mongo,
            "products": pipe.index.count(),
            "problems": problems,
        }


CHILDREN = {"bare": child_bare, "python": child_python, "index": child_index, "pipeline": child_pipeline}


def child_main(mode: str, repo: Path, data: Path | None, t0: float, round_: int) -> None:
    clock = Clock(t0 if t0 else time.monotonic())
    extra = CHILDREN[mode](repo, clock, data, round_)
    mods = sys.modules
    result = {
        **peak_mib(),
        **extra,
        "seconds": clock.marks,
        "torch": "torch" in mods,
        "transformers": "transformers" in mods,
    }
    print("RESULT " + json.dumps(result), flush=True)


# -------------------------------------------------------------------------------------------------------------- parent
def run_child(mode: str, repo: Path, data: Path | None, round_: int) -> dict:
    cmd = [sys.executable, "-m", "bench.memory", "--child", mode, "--model-repo", str(repo), "--round", str(round_)]
    if data is not None:
        cmd += ["--data", str(data)]
    t0 = time.monotonic()
    proc = subprocess.run([*cmd, "--t0", repr(t0)], capture_output=True, text=True, cwd=c.REPO_ROOT, timeout=600)
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


def measure(repo: Path, n: int, rounds: int, kinds: list[str]) -> dict[str, list[dict]]:
    """Every kind once per round, the order rotating; the ``full`` and ``index`` children share one catalogue."""
    results: dict[str, list[dict]] = {kind: [] for kind in kinds}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        full = Path(tmp) / "full"
        c.note(f"preparing a catalogue of {n} products ...")
        prepare(repo, full, n)
        for r in range(rounds):
            for kind in kinds[r % len(kinds) :] + kinds[: r % len(kinds)]:
                mode = "pipeline" if kind in ("empty", "full") else kind
                data = {"full": full, "index": full, "empty": Path(tmp) / f"empty{r}"}.get(kind)
                results[kind].append(run_child(mode, repo, data, r))
                got = results[kind][-1]
                c.note(f"round {r}: {kind}: peak {got['peak']:.0f} MiB, seconds {got['seconds']}")
    return results


def summarise(results: dict[str, list[dict]], n: int) -> tuple[list[list], dict]:
    def med(kind: str, key: str = "peak") -> float:
        values = [_get(x, key) for x in results.get(kind, [])]
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else float("nan")

    def per_round(fn) -> c.Ratio:
        rounds = min(len(v) for v in results.values())
        values = []
        for r in range(rounds):
            try:
                values.append(fn({k: v[r] for k, v in results.items()}))
            except (KeyError, TypeError, ZeroDivisionError):
                continue
        return c.Ratio.of(values)

    def flags(kind: str) -> str:
        runs = results.get(kind) or [{}]
        return f"{_yes(runs[0].get('torch'))} / {_yes(runs[0].get('transformers'))}"

    own = per_round(lambda x: x["index"]["peak"] - x["python"]["peak"])
    memory = per_round(lambda x: x["full"]["peak"] / (x["bare"]["peak"] + x["index"]["peak"] - x["python"]["peak"]))
    ready = per_round(lambda x: x["full"]["seconds"]["first_answer"] / x["bare"]["seconds"]["sessions"])
    empty_ready = per_round(lambda x: x["empty"]["seconds"]["first_answer"] / x["bare"]["seconds"]["sessions"])
    empty_memory = per_round(lambda x: x["empty"]["peak"] / x["bare"]["peak"])
    index_label = f"vector store alone, {n} products, {QUERIES} text + {QUERIES} photo searches"
    pipe_label = f"pipeline (warm_up, first answer, {QUERIES} text + {QUERIES} photo queries)"
    memory_verdict = c.verdict(memory.median, MEMORY_TARGET, at_most=True)
    ready_verdict = c.verdict(ready.median, READY_TARGET, at_most=True)
    rows = [
        row("peak RSS: bare onnxruntime sessions, both towers", med("bare"), "MiB", flags=flags("bare")),
        row("peak RSS: interpreter + numpy", med("python"), "MiB", flags=flags("python")),
        row(f"peak RSS: {index_label}", med("index"), "MiB", flags=flags("index")),
        row("  the index's own memory (vector store - interpreter + numpy)", own.median, "MiB"),
    ]
    if "empty" in results:
        rows.append(
            row(f"peak RSS: {pipe_label}, empty catalogue", med("empty"), "MiB", empty_memory.median, "bare sessions",
                flags=flags("empty"))
        )  # fmt: skip
    rows += [
        row(f"peak RSS: {pipe_label}, {n} products", med("full"), "MiB", memory.median, "bare sessions + index's own",
            memory_verdict, flags("full")),
        row("start: bare, both sessions loaded", med("bare", "seconds.sessions"), "s"),
        row("start: bare, first text inference", med("bare", "seconds.first_inference"), "s"),
        row("start: pipeline, imports done", med("full", "seconds.imports"), "s"),
        row(f"start: pipeline, warm_up done ({n} products)", med("full", "seconds.warm_up"), "s"),
        row(f"start: pipeline, first answer ({n} products)", med("full", "seconds.first_answer"), "s", ready.median,
            "bare sessions loaded", ready_verdict),
    ]  # fmt: skip
    if "empty" in results:
        rows.append(
            row("start: pipeline, first answer (empty catalogue)", med("empty", "seconds.first_answer"), "s",
                empty_ready.median, "bare sessions loaded")
        )  # fmt: skip
    ratios = {"memory": memory, "ready": ready, "index_own_mib": own, "empty_ready": empty_ready}
    return rows, ratios


def row(measure: str, value: float, unit: str, ratio: object = "-", to: str = "-", target: str = "-", flags: str = "-"):
    return [measure, value, unit, ratio, to, target, flags]


def _get(run: dict, key: str):
    value: object = run
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _yes(flag: object) -> str:
    return "-" if flag is None else ("yes" if flag else "no")


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = c.parser(__doc__)
    p.add_argument("--products", type=int, default=None, help="catalogue size (default 10,000; 100 with --smoke)")
    p.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--t0", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child_main(args.child, Path(args.model_repo), args.data, args.t0, args.round)
        return 0
    rounds = 1 if args.smoke else c.repeats(args, 2)
    n = args.products or (100 if args.smoke else 10_000)
    repo = c.model_repo(args)
    info = c.machine()
    kinds = ["bare", "python", "index", "full"] if args.smoke else ["bare", "python", "index", "empty", "full"]
    results = measure(repo, n, rounds, kinds)
    rows, ratios = summarise(results, n)
    mongo = [x.get("mongo_server_rss_mib") for k in ("empty", "full") for x in results.get(k, [])]
    mongo = [m for m in mongo if m is not None]
    payload = c.report(
        "memory",
        info,
        f"Start-up and peak RSS of one process (median of {rounds} run(s) of each; ratios per round, then median)",
        ["measure", "median", "unit", "ratio", "ratio to", "target", "torch / transformers imported"],
        rows,
        model=str(repo),
        products=n,
        ratios={k: v.to_json() for k, v in ratios.items()},
        spread=(
            f"ratio p25-p75: memory {ratios['memory'].spread()}, first answer {ratios['ready'].spread()}; "
            + "peak MiB per run: "
            + "; ".join(f"{k}: {[round(x['peak']) for x in v]}" for k, v in results.items())
        ),
        mongo_server=(
            f"the local MongoDB-protocol server (a separate process) had {statistics.median(mongo):.0f} MiB RSS"
            if mongo
            else "no local MongoDB-protocol server was started"
        ),
    )
    payload["runs"] = results
    c.write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
