"""The model table: what each candidate architecture costs on this CPU, exported by the pipeline from its real shape.

``python -m bench.model_table [--smoke] [--json OUT] [--models a,b,...] [--precisions fp32,int8] [--cache DIR]
[--repeats N] [--products N] [--model-repo REPO] [--build-timeout S]``

Why random weights: the model hub cannot be reached here and no package ships the weights, but what a network costs
on a CPU is its shape (layers, widths, image size, sequence length, vocabulary), not the values of its weights. So each
architecture is a random-weight checkpoint made from the config that ships inside open_clip or transformers, saved as
that library saves a checkpoint, and exported by the pipeline's own ``build_model`` (parity checks included) into a
model repository under ``--cache`` (``bench/.cache/model_table/``, reused by later runs). Published models that share
one architecture are one row (``ARCHITECTURES`` says which): the same graph measured three times would only show the
machine's noise.

Each build runs in a child process: the measuring process then never imports torch (the app does not either), the
build's wall time and peak memory are recorded, and a build that fails, is killed (out of memory) or runs past
``--build-timeout`` becomes a row that says so instead of ending the run.

Measured per model x precision, every step of every model in one process, interleaved round by round in a rotating
order (bench/README.md), so load from elsewhere moves all models alike:

- ``text@1``: the bare text tower on one tokenised product name (a query-sized text; tokenising not included);
- ``image@1``: the bare image tower on one preprocessed photo; ``prep@1``: decoding that photo and the model's own
  preprocessing (its size, resize mode, mean/std), what a photo query adds before the tower;
- ``images@32``: the image tower at batch 32 (preprocessed photos), as images/s;
- ``ingest``: ``pipeline.ingestion.embedding.embed_batches`` (the ingest's embedding path: photos decoded and
  preprocessed in worker threads while the towers run, batches of 32, both towers) over ``--products`` products of the
  fashion catalogue in ../shared/data, as products/s.

Beside each absolute figure, the cost relative to the first row (CLIP ViT-B/32 fp32 by default) as the median of
per-round time ratios, which holds better than milliseconds on a shared machine.
"""

from __future__ import annotations

import contextlib
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import _common as c

BATCH = 32
DEFAULT_PRODUCTS = 64
SMOKE_PRODUCTS = 8
SINGLE_CALLS = 5  # batch-1 calls per round (median kept): one call of a small tower is too short to time alone
IMAGE_CALLS = 3  # batch-1 image calls per round: a ViT-L/16 at 384 px takes seconds a call here
DEFAULT_PRECISIONS = ("fp32", "int8")
DEFAULT_BUILD_TIMEOUT = 1800
TABLE_DIR = "model_table"


# ------------------------------------------------------------------------------------------------------ architectures
@dataclass(frozen=True)
class Arch:
    """One row group of the table: an architecture, where its shape comes from, and the published models it is."""

    key: str
    label: str
    shape: str  # the config the random checkpoint is built from
    stands_for: str  # the published checkpoints with this very architecture (one row for all of them)
    tiny: str  # the TINY stand-in of its family that --smoke measures instead


def _save_clip(out: Path, size: str) -> Path:
    from tests.support.random_clip import save_random_clip

    return save_random_clip(out, size=size)


def _save_open_clip(out: Path, arch: str | None) -> Path:
    from tests.support.random_families import save_random_open_clip

    return save_random_open_clip(out, kind="siglip", size="base" if arch else "tiny", arch=arch)


def _save_siglip_tiny(out: Path) -> Path:
    from tests.support.random_families import save_random_siglip

    return save_random_siglip(out, size="tiny")


ARCHITECTURES = {
    a.key: a
    for a in (
        Arch(
            "clip-vit-b-32",
            "CLIP ViT-B/32",
            "transformers CLIPConfig, ViT-B/32 at 224 px (tests.support.random_clip, vit-b-32)",
            "openai/clip-vit-base-patch32 (the default before this table)",
            "clip",
        ),
        Arch(
            "vit-b-16-siglip",
            "ViT-B-16-SigLIP",
            "open_clip config ViT-B-16-SigLIP (timm vit_base_patch16_siglip_224, text 12 x 768, 64 tokens, "
            "vocab 32,000)",
            "timm/ViT-B-16-SigLIP (webli), Marqo-Ecommerce-B, Marqo-FashionSigLIP: the same open_clip architecture "
            "(203 M parameters, 768-d)",
            "open_clip",
        ),
        Arch(
            "vit-l-16-siglip-256",
            "ViT-L-16-SigLIP-256",
            "open_clip config ViT-L-16-SigLIP-256 (timm vit_large_patch16_siglip_256, text 24 x 1024, 64 tokens)",
            "Marqo-Ecommerce-L (652 M parameters, 1024-d; its hub image processor is 256 x 256, so the 256-pixel "
            "ViT-L, not the 384), timm/ViT-L-16-SigLIP-256",
            "open_clip",
        ),
        Arch(
            "vit-l-16-siglip-384",
            "ViT-L-16-SigLIP-384",
            "open_clip config ViT-L-16-SigLIP-384 (timm vit_large_patch16_siglip_384, text 24 x 1024, 64 tokens)",
            "timm/ViT-L-16-SigLIP-384 (Marqo-Ecommerce-L's shape at 384 pixels: 2.1x its image FLOPs)",
            "open_clip",
        ),
        Arch(
            "vit-b-16-siglip2",
            "ViT-B-16-SigLIP2",
            "open_clip config ViT-B-16-SigLIP2 (as ViT-B-16-SigLIP, text vocab 256,000 = Gemma's, tanh GELU)",
            "timm/ViT-B-16-SigLIP2, google/siglip2-base-patch16-224",
            "siglip",
        ),
    )
}
_REAL_SAVERS: dict[str, Callable[[Path], Path]] = {
    "clip-vit-b-32": lambda out: _save_clip(out, "vit-b-32"),
    "vit-b-16-siglip": lambda out: _save_open_clip(out, "ViT-B-16-SigLIP"),
    "vit-l-16-siglip-256": lambda out: _save_open_clip(out, "ViT-L-16-SigLIP-256"),
    "vit-l-16-siglip-384": lambda out: _save_open_clip(out, "ViT-L-16-SigLIP-384"),
    "vit-b-16-siglip2": lambda out: _save_open_clip(out, "ViT-B-16-SigLIP2"),
}
#: --smoke: the tests' small checkpoint of each family (transformers CLIP, open_clip SigLIP-style, transformers SigLIP)
TINY: dict[str, tuple[str, Callable[[Path], Path]]] = {
    "clip": ("tiny transformers CLIP", lambda out: _save_clip(out, "tiny")),
    "open_clip": ("tiny open_clip SigLIP-style", lambda out: _save_open_clip(out, None)),
    "siglip": ("tiny transformers SigLIP", _save_siglip_tiny),
}


@dataclass
class Target:
    """A model repository to measure: built here from a checkpoint (``name`` under the cache) or given."""

    name: str  # cache folder and row name
    label: str
    precision: str
    root: Path | None  # the cache folder; None for a repository given with --model-repo
    repo: Path
    build: dict = field(default_factory=dict)  # how its build went (seconds, peak memory, or why it failed)

    @property
    def built(self) -> bool:
        return self.build.get("ok", False)

    @property
    def row_id(self) -> str:
        return f"{self.name} {self.precision}"


def _saver(name: str) -> Callable[[Path], Path]:
    if name.startswith("tiny-"):
        return TINY[name.removeprefix("tiny-")][1]
    return _REAL_SAVERS[name]


# ---------------------------------------------------------------------------------------------------------- building
def build_in_child(name: str, precision: str, root: str, calibration: str | None) -> None:
    """Run in a child process: save the random checkpoint once, then ``build_model`` it; print one JSON line."""
    import shutil

    started = time.monotonic()
    result: dict = {"ok": False}
    try:
        root_path = Path(root)
        checkpoint, done = root_path / "checkpoint", root_path / "checkpoint.done"
        if not done.is_file():
            if checkpoint.exists():
                shutil.rmtree(checkpoint)
            _saver(name)(checkpoint)
            done.write_text(time.strftime("%Y-%m-%d %H:%M:%S") + "\n")
            result["checkpoint_s"] = round(time.monotonic() - started, 1)
        from pipeline.model_build.build_model import build_model

        begun = time.monotonic()
        calib = Path(calibration) if calibration and precision == "int8-static" else None
        build_model(str(checkpoint), root_path / f"repo-{precision}", precision, calibration=calib)
        result.update(ok=True, build_s=round(time.monotonic() - begun, 1))
    except Exception as err:  # any failure: the parent records it as the row's reason, in one line
        result["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
    result["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    print(json.dumps(result), flush=True)


def _current(repo: Path) -> bool:
    """A repository built by an earlier run is reused when its card loads and its ONNX files are the card's."""
    from pipeline import model_repo as mr

    try:
        mr.verify_files(repo, mr.ModelCard.load(repo))
    except Exception:  # missing, half-written or changed: build again
        return False
    return True


def _mem_available_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return round(int(line.split()[1]) / 2**20, 1)
    return None


def ensure_built(target: Target, calibration: Path, timeout: float) -> None:
    """Build ``target`` in a child process unless a current build is cached; record how it went in ``target.build``
    (and beside the repository, so a later run that reuses it can still say what the build cost)."""
    from pipeline.processes.locks import locked

    assert target.root is not None
    target.root.mkdir(parents=True, exist_ok=True)
    record = target.root / f"build-{target.precision}.json"
    with locked(target.root / ".lock"):  # two runs at once build each model once
        if _current(target.repo):
            with contextlib.suppress(OSError, ValueError):
                target.build = json.loads(record.read_text())
            target.build.update(ok=True, cached=True)
            return
        c.note(f"building {target.label} {target.precision} in a child process ({_mem_available_gib()} GiB free)")
        code = "import json, sys; from bench.model_table import build_in_child as b; b(*json.loads(sys.argv[1]))"
        argv = json.dumps([target.name, target.precision, str(target.root), str(calibration)])
        started = time.monotonic()
        try:
            proc = subprocess.run(
                [sys.executable, "-c", code, argv], cwd=c.REPO_ROOT, stdout=subprocess.PIPE, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            target.build = {"ok": False, "error": f"build ran past --build-timeout {timeout:g} s and was stopped"}
            return
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode < 0:
            why = f"the build was killed by signal {-proc.returncode}"
            if proc.returncode == -9:
                why += f" (out of memory: {_mem_available_gib()} GiB free after it)"
            target.build = {"ok": False, "error": why}
        elif lines:
            target.build = json.loads(lines[-1])
        else:
            target.build = {"ok": False, "error": f"the build process exited with status {proc.returncode}"}
        target.build["wall_s"] = round(time.monotonic() - started, 1)
        target.build["date"] = time.strftime("%Y-%m-%d")
        if target.built:
            record.write_text(json.dumps(target.build) + "\n")


def parameters(checkpoint: Path) -> int | None:
    """Parameter count of a saved checkpoint, read from its safetensors headers (no torch, nothing loaded)."""
    total, found = 0, False
    for path in sorted(Path(checkpoint).glob("*.safetensors")):
        with open(path, "rb") as fh:
            header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
        for key, tensor in header.items():
            if key != "__metadata__":
                total += _numel(tensor["shape"])
                found = True
    return total if found else None


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


# --------------------------------------------------------------------------------------------------------- measuring
@dataclass
class Prepared:
    """A built model ready to time, with its inputs made by its own preprocessing (each model has its image size
    and text length)."""

    target: Target
    encoder: object  # pipeline.query.encoder.Encoder
    texts: list[dict]  # tokenised product names, one per batch-1 call
    photos: list[bytes]  # photo files, one per decode + preprocess call
    pixels: object  # (BATCH, 3, s, s) preprocessed photos; batch-1 calls take its first rows
    products: list  # catalogue rows the ingest embeds


def prepare(target: Target, rows) -> Prepared:
    from pipeline import model_repo as mr
    from pipeline.inference.ort_backend import OrtBackend
    from pipeline.ingestion.embedding import photo_batches
    from pipeline.inputs import read_image_bytes
    from pipeline.ops.compare_models import _tiled
    from pipeline.query.encoder import Encoder
    from pipeline.query.preprocess import Preprocessor

    card = mr.ModelCard.load(target.repo)
    backend = OrtBackend(target.repo)
    backend.check(card)
    pre = Preprocessor(target.repo, card)
    products = rows.products
    names = [str(p.fields.get("name") or p.text) for p in _tiled(products, SINGLE_CALLS)]
    photos = [read_image_bytes(p.photos[0]) for p in _tiled(products, SINGLE_CALLS)]
    batch = next(iter(photo_batches(_tiled(products, BATCH), pre, BATCH)))
    return Prepared(target, Encoder(card, pre, backend), [pre.tokenize([n]) for n in names], photos, batch.pixels,
                    products)  # fmt: skip


def _median_call(fn: Callable[[object], object], items: list) -> float:
    """Median seconds of one call over ``items`` (a step that returns a float has timed itself: c.interleave)."""
    return statistics.median(c.timed(lambda item=item: fn(item)) for item in items)


def _ingest(p: Prepared) -> None:
    from pipeline.ingestion.embedding import embed_batches

    done = sum(len(b.products) for b in embed_batches(p.encoder, p.products, BATCH))
    if done != len(p.products):
        raise SystemExit(f"{p.target.row_id}: {len(p.products) - done} photos could not be read a second time")


MEASURES = ("text@1", "image@1", "prep@1", "images@32", "ingest")


def steps_of(p: Prepared) -> dict[str, Callable[[int], object]]:
    """The timed steps of one model, named ``"<row> <precision>|<measure>"``."""
    from pipeline import model_repo as mr
    from pipeline.inputs import load_image

    run, pre = p.encoder.backend.run, p.encoder.preprocessor
    singles = [p.pixels[i : i + 1] for i in range(IMAGE_CALLS)]
    steps: dict[str, Callable[[int], object]] = {
        "text@1": lambda r: _median_call(lambda x: run(mr.TEXT_MODEL, x), p.texts),
        "image@1": lambda r: _median_call(lambda x: run(mr.VISUAL_MODEL, {mr.VISUAL_INPUT: x}), singles),
        "prep@1": lambda r: _median_call(lambda data: pre.pixels([load_image(data)]), p.photos),
        "images@32": lambda r: _median_call(lambda x: run(mr.VISUAL_MODEL, {mr.VISUAL_INPUT: x}), [p.pixels]),
        "ingest": lambda r: _median_call(lambda _: _ingest(p), [None]),
    }
    return {f"{p.target.row_id}|{name}": step for name, step in steps.items()}


def _announced(steps: dict[str, Callable[[int], object]], rounds: int) -> dict[str, Callable[[int], object]]:
    """The same steps, saying when each round starts: a full run takes the better part of an hour."""
    started: set[int] = set()

    def wrap(step: Callable[[int], object]) -> Callable[[int], object]:
        def run(r: int) -> object:
            if r not in started:
                started.add(r)
                c.note(f"round {r + 1} of {rounds}")
            return step(r)

        return run

    return {name: wrap(step) for name, step in steps.items()}


def warm_up(p: Prepared) -> None:
    """Sessions created and first-run allocations done for every shape timed, before any round counts."""
    from pipeline import model_repo as mr

    p.encoder.backend.run(mr.TEXT_MODEL, p.texts[0])
    for rows in (1, BATCH):
        p.encoder.backend.run(mr.VISUAL_MODEL, {mr.VISUAL_INPUT: p.pixels[:rows]})


# ------------------------------------------------------------------------------------------------------------ output
ARCH_FIELDS = ("architecture", "shape", "stands_for", "measured_as")
HEADERS = ("model", "precision", "params (M)", "dim", "ONNX MB", "text@1 ms", "image@1 ms", "prep@1 ms",
           "images/s @32", "ingest products/s", "img@32 x ref", "ingest x ref", "build")  # fmt: skip


def onnx_mb(repo: Path) -> float:
    from pipeline import model_repo as mr

    return sum(mr.onnx_path(repo, m).stat().st_size for m in (mr.TEXT_MODEL, mr.VISUAL_MODEL)) / 1e6


def _build_cell(build: dict) -> str:
    if not build.get("ok"):
        return f"not built: {build.get('error', 'unknown')}"
    if build.get("given"):
        return "given (--model-repo)"
    cost = f"{build['build_s']:.0f} s, {build['peak_rss_gib']:.1f} GiB" if "build_s" in build else ""
    if build.get("cached"):
        return f"cached ({cost})" if cost else "cached"
    return cost


def _rate(per_s: float) -> str:
    """Items per second with two decimals below 10 (ViT-L at 384 px does 0.35 images/s here)."""
    return f"{per_s:.2f}" if per_s < 10 else f"{per_s:.1f}"


def _params(target: Target) -> str:
    count = parameters(target.root / "checkpoint") if target.root else None
    return f"{count / 1e6:.1f}" if count else "-"


def row_of(t: Target, samples: c.Samples | None, reference: str | None, n_products: int) -> tuple[list, dict]:
    """A table row and its JSON record (absolute medians, ratios to the reference with their spread)."""
    if not t.built or samples is None:
        return [t.label, t.precision, _params(t), "-", "-", *(["-"] * 7), _build_cell(t.build)], {"build": t.build}
    from pipeline import model_repo as mr

    card = mr.ModelCard.load(t.repo)
    ms = {m: samples.median_ms(f"{t.row_id}|{m}") for m in MEASURES}
    ratios = {m: samples.ratio(f"{t.row_id}|{m}", f"{reference}|{m}") for m in MEASURES} if reference else {}
    size = onnx_mb(t.repo)
    ratio = lambda m: f"{ratios[m].median:.2f}" if m in ratios else "-"  # noqa: E731
    row = [t.label, t.precision, _params(t), card.embedding_dim, f"{size:.0f}", f"{ms['text@1']:.1f}",
           f"{ms['image@1']:.1f}", f"{ms['prep@1']:.1f}", _rate(BATCH / ms["images@32"] * 1000),
           f"{n_products / ms['ingest'] * 1000:.2f}", ratio("images@32"), ratio("ingest"),
           _build_cell(t.build)]  # fmt: skip
    record = {
        "repo": str(t.repo),
        "family": card.family,
        "source": card.source,
        "embedding_dim": card.embedding_dim,
        "image_size": card.image_size,
        "text_length": card.text_max_length,
        "text_dynamic_length": card.text_dynamic_length,
        "onnx_mb": round(size, 1),
        "median_ms": {m: round(v, 3) for m, v in ms.items()},
        "time_vs_reference": {m: r.to_json() for m, r in ratios.items()},
        "build": t.build,
    }
    return row, record


# -------------------------------------------------------------------------------------------------------------- main
def targets(args, names: list[str], precisions: list[str]) -> list[Target]:
    """The models to measure: each architecture (or, with --smoke, its family's tiny stand-in, once per family) in
    each precision, then any --model-repo."""
    cache = Path(args.cache).resolve() / TABLE_DIR
    chosen: dict[str, str] = {}
    for key in names:
        arch = ARCHITECTURES[key]
        if args.smoke:
            chosen.setdefault(f"tiny-{arch.tiny}", TINY[arch.tiny][0])
        else:
            chosen[key] = arch.label
    out = [Target(n, label, x, cache / n, cache / n / f"repo-{x}") for n, label in chosen.items() for x in precisions]
    if args.model_repo:
        from pipeline import model_repo as mr

        repo = Path(args.model_repo).resolve()
        card = mr.ModelCard.load(repo)
        out.append(Target(repo.name, card.name, card.precision, None, repo, {"ok": True, "given": True}))
    return out


def _catalogue(args) -> Path:
    if args.catalog:
        return Path(args.catalog)
    fashion = c.SHARED_DATA / "fashion" / "catalog.jsonl"
    return fashion if fashion.is_file() else c.REPO_ROOT / "assets" / "demo_catalog" / "catalog.jsonl"


def _architecture_rows(names: list[str], smoke: bool) -> list[list[str]]:
    rows = []
    for key in names:
        a = ARCHITECTURES[key]
        measured = TINY[a.tiny][0] + " (smoke)" if smoke else a.label
        rows.append([a.label, a.shape, a.stands_for, measured])
    return rows


def main(argv: list[str] | None = None) -> int:
    p = c.parser(__doc__)
    p.add_argument("--models", default=",".join(ARCHITECTURES), help=f"architectures, of {', '.join(ARCHITECTURES)}")
    p.add_argument("--precisions", default=",".join(DEFAULT_PRECISIONS), help="fp32, fp16, int8, int8-static")
    p.add_argument("--products", type=int, default=None, help=f"products ingested (default {DEFAULT_PRODUCTS})")
    p.add_argument("--catalog", type=Path, default=None, help="catalogue of the ingest (default: ../shared fashion)")
    p.add_argument("--build-timeout", type=float, default=DEFAULT_BUILD_TIMEOUT, help="seconds one build may take")
    args = p.parse_args(argv)
    from pipeline.model_build.quantize import PRECISIONS

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    precisions = [x.strip() for x in args.precisions.split(",") if x.strip()]
    if bad := [n for n in names if n not in ARCHITECTURES]:
        p.error(f"unknown model {bad[0]!r}; choose from {', '.join(ARCHITECTURES)}")
    if bad := [x for x in precisions if x not in PRECISIONS]:
        p.error(f"unknown precision {bad[0]!r}; choose from {', '.join(PRECISIONS)}")
    rounds = c.repeats(args, 3)
    catalog = _catalogue(args)
    n_products = args.products or (SMOKE_PRODUCTS if args.smoke else DEFAULT_PRODUCTS)
    todo = targets(args, names, precisions)
    for t in todo:
        if t.root is not None:
            ensure_built(t, catalog, args.build_timeout)
    from pipeline.ops.compare_models import read_rows

    rows = read_rows(catalog, max(2, n_products))
    ready = [prepare(t, rows) for t in todo if t.built]
    info = c.machine()  # after the builds: the load and other processes' CPU are those of the measurement
    for prepared in ready:
        warm_up(prepared)
    steps = _announced({name: step for prepared in ready for name, step in steps_of(prepared).items()}, rounds)
    c.note(f"{len(ready)} models, {len(steps)} steps, {rounds} interleaved rounds, ingest of {len(rows.products)}")
    samples = c.interleave(steps, rounds, warmup=0) if steps else None
    reference = ready[0].target.row_id if ready else None
    table_rows, records = [], {}
    for t in todo:
        row, records[t.row_id] = row_of(t, samples, reference, len(rows.products))
        table_rows.append(row)
    architectures = _architecture_rows(names, args.smoke)
    print("\narchitectures (one row each; the published models beside it share its graph):")
    print(c.table(["architecture", "shape from", "stands for", "measured as"], architectures))
    payload = c.report(
        "model_table",
        info,
        f"model table: random weights of the real shapes, {rounds} interleaved rounds, ingest of {len(rows.products)} "
        f"products of {catalog.parent.name}" + (" (SMOKE: tiny stand-ins, measures nothing)" if args.smoke else ""),
        HEADERS,
        table_rows,
        reference=f"x ref: time over {reference}'s, median of per-round ratios" if reference else "none built",
        models=records,
        architectures=[dict(zip(ARCH_FIELDS, a, strict=True)) for a in architectures],
        peak_rss_gib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        mem_available_gib=_mem_available_gib(),
    )
    c.write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
