"""What every benchmark shares: the cached ViT-B/32 model, the machine description, interleaved timing and the table.

Timing rules (the machine has 2 cores shared with other work): a baseline and its subject are measured in ONE process,
interleaved round by round (the order alternates each round), and the ratio of each round is taken before the median,
so a burst of load from elsewhere hits both sides of a ratio instead of one. The spread of the per-round ratios (25th
to 75th percentile) is printed next to each median, with the load average before and after, so a reader can tell a
quiet run from a noisy one.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # ``python bench/x.py`` as well as ``python -m bench.x``
    sys.path.insert(0, str(REPO_ROOT))

DEFAULT_CACHE = REPO_ROOT / "bench" / ".cache"
SHARED_DATA = Path(os.environ.get("SHARED_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


# ----------------------------------------------------------------------------------------------------------- arguments
def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description.strip().splitlines()[0])
    p.add_argument(
        "--smoke", action="store_true", help="tiny CLIP, small data, 2 repeats: proves it runs, measures nothing"
    )
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the results as JSON here")
    p.add_argument("--repeats", type=int, default=None, help="measured rounds (default depends on the benchmark)")
    p.add_argument(
        "--cache", type=Path, default=DEFAULT_CACHE, help=f"where models are built once (default {DEFAULT_CACHE})"
    )
    p.add_argument(
        "--model-repo",
        type=Path,
        default=None,
        help="use this model repository (build-model output) instead of building",
    )
    return p


def repeats(args: argparse.Namespace, default: int) -> int:
    if args.repeats:
        return max(1, args.repeats)
    return 2 if args.smoke else default


# ------------------------------------------------------------------------------------------------------------ the model
def model_repo(args: argparse.Namespace, precision: str = "fp32") -> Path:
    """The model repository to measure: ``--model-repo``, else a random-weight CLIP built once under ``--cache``.

    ``--smoke`` builds the tiny CLIP; otherwise the real ViT-B/32 shape (``tests.support.random_clip``), ~1-2 min once.
    """
    if args.model_repo:
        return Path(args.model_repo).resolve()
    size = "tiny" if args.smoke else "vit-b-32"
    root = Path(args.cache).resolve() / size
    repo = root / f"model_repository-{precision}"
    from pipeline.processes.locks import locked

    root.mkdir(parents=True, exist_ok=True)
    with locked(root / ".lock"):  # two benchmarks started at once build the model once
        if not _current(repo):
            from pipeline.model_build.build_model import build_model
            from tests.support.random_clip import save_random_clip

            clip = root / "clip"
            if not (clip / "config.json").is_file():
                note(f"saving a random-weight CLIP ({size}) to {clip}")
                save_random_clip(clip, size=size)
            note(f"building the {precision} model repository {repo} (once; later runs reuse it)")
            build_model(source=str(clip), out=repo, precision=precision)
    return repo


def _current(repo: Path) -> bool:
    """A cached repository is reused only if today's exporter would write the same kind (a dynamic text axis)."""
    from pipeline.model_repo import ModelCard

    try:
        return ModelCard.load(repo).text_dynamic_length
    except Exception:  # missing or unreadable card: build again
        return False


def note(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------- the machine
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> dict:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    mem_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gib": mem_gib,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "onnxruntime": _version("onnxruntime"),
        "torch": _version("torch"),
        "numpy": _version("numpy"),
        "qdrant-client": _version("qdrant-client"),
        "tritonclient": _version("tritonclient"),
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or "default",
        "load_before": load(),
        "cpu_clock_before": cpu_clock(),
    }


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_clock() -> dict[str, float]:
    """Wall time, busy CPU seconds of the whole machine, and CPU seconds of this process and its reaped children."""
    busy = float("nan")
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        busy = (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    own = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    return {"wall": time.monotonic(), "busy": busy, "own": own}


def others_cpu(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU the rest of the machine used while we measured (core-seconds, and as a share of all cores)."""
    wall = after["wall"] - before["wall"]
    other = max(0.0, (after["busy"] - before["busy"]) - (after["own"] - before["own"]))
    cores = os.cpu_count() or 1
    return {"wall_s": round(wall, 1), "other_core_s": round(other, 1), "other_share": round(other / (wall * cores), 3)}


def machine_line(info: dict) -> str:
    return (
        f"machine: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), {info['memory_gib']} GiB; "
        f"Python {info['python']}, onnxruntime {info['onnxruntime']}, torch {info['torch']}, numpy {info['numpy']}, "
        f"qdrant-client {info['qdrant-client']}; BLAS threads {info['blas_threads']}; {info['date']}"
    )


# --------------------------------------------------------------------------------------------------------------- timing
@dataclass
class Samples:
    """Seconds per round for each named measurement, filled by ``interleave``."""

    times: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        self.times.setdefault(name, []).append(seconds)

    def median_ms(self, name: str) -> float:
        return statistics.median(self.times[name]) * 1000

    def ratio(self, subject: str, baseline: str) -> Ratio:
        pairs = list(zip(self.times[subject], self.times[baseline], strict=True))
        return Ratio.of([s / b for s, b in pairs if b > 0])


@dataclass
class Ratio:
    median: float
    p25: float
    p75: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Ratio:
        values = sorted(values)
        if not values:
            return cls(float("nan"), float("nan"), float("nan"), 0)
        return cls(statistics.median(values), _quantile(values, 0.25), _quantile(values, 0.75), len(values))

    def spread(self) -> str:
        return f"{self.p25:.3f}-{self.p75:.3f}"

    def to_json(self) -> dict:
        return {"median": round(self.median, 4), "p25": round(self.p25, 4), "p75": round(self.p75, 4), "n": self.n}


def _quantile(values: Sequence[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    pos = q * (len(values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _run_timed(step: Callable[[int], object], r: int) -> float:
    """Seconds one call took; a step that returns a float has timed itself (e.g. it waits untimed first)."""
    start = time.perf_counter()
    result = step(r)
    elapsed = time.perf_counter() - start
    return result if isinstance(result, float) else elapsed


def interleave(
    steps: dict[str, Callable[[int], object]],
    rounds: int,
    warmup: int = 1,
    samples: Samples | None = None,
    block: int = 1,
) -> Samples:
    """Run every step once per round (round number as argument), rotating the order each round; time each call.

    Warm-up rounds run first (negative round numbers) and are not recorded. A step that returns a float reports its
    own duration in seconds. With ``block`` > 1 each step runs that
    many times in a row per round and the round's sample is the median of the block (the first call of a block pays
    for whatever the previous step left behind, e.g. another thread pool still spinning).
    """
    samples = samples or Samples()
    names = list(steps)
    for r in range(-warmup, rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            seconds = statistics.median(_run_timed(steps[name], r) for _ in range(block))
            if r >= 0:
                samples.add(name, seconds)
    return samples


# -{9}------------------------------------------------------------------------------------------------------ output
def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[_cell(c) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    return "\n".join([line, rule, *body])


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def verdict(value: float, target: float, at_most: bool) -> str:
    if value != value:  # NaN
        return "n/a"
    ok = value <= target if at_most else value >= target
    return ("met" if ok else "MISSED") + f" ({'<=' if at_most else '>='}{target:g})"


def report(
    name: str, info: dict, title: str, headers: Sequence[str], rows: Sequence[Sequence[object]], **extra
) -> dict:
    """Print the machine line and the table (plus ``extra`` notes); return the JSON payload."""
    info = {**info, "load_after": load()}
    print(f"\n{title}")
    print(machine_line(info))
    noise = others_cpu(info["cpu_clock_before"], cpu_clock())
    info["other_processes_cpu"] = noise
    print(
        f"load average (1/5/15 min) before: {info['load_before']}, after: {info['load_after']}; other processes used "
        f"{noise['other_core_s']} core-s in {noise['wall_s']} s ({noise['other_share']:.0%} of all cores)"
    )
    print(table(headers, rows))
    for key, value in extra.items():
        if isinstance(value, str):
            print(f"{key}: {value}")
    return {"benchmark": name, "machine": info, "headers": list(headers), "rows": [list(r) for r in rows], **extra}


def write_json(path: Path | None, payload: dict) -> None:
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    note(f"results written to {path}")


def _json_default(value: object) -> object:
    if isinstance(value, Ratio):
        return value.to_json()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    return str(value)


# --------------------------------------------------------------------------------------------------------- data helpers
def unit_vectors(rng, n: int, dim: int):
    import numpy as np

    v = rng.standard_normal((n, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def query_photos(limit: int) -> list[Path]:
    """Real product photos for image queries (grocery shelf photos, 348x348 JPEG), else the fashion catalogue's."""
    for folder in (SHARED_DATA / "grocery_store" / "queries", SHARED_DATA / "fashion" / "images"):
        if folder.is_dir():
            photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
            if photos:
                return photos[:limit]
    raise SystemExit(f"no query photos under {SHARED_DATA} (set SHARED_DATA to the shared data folder)")
