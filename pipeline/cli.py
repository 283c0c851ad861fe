"""``python -m pipeline build-model | ingest | delete | match | evaluate | triton | status``.

Each command is a thin wrapper over the library; a ``PipelineError`` becomes one line on stderr and exit status 2, never
a stack trace. Progress goes to stderr so ``--json`` output on stdout can be piped.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .errors import PipelineError
from .ingestion.duplicates import DEFAULT_THRESHOLD
from .ops import compare_models, evaluate, triton
from .settings import DEFAULT_MODEL_SOURCE, Settings, SettingsError


def _build_model(args: argparse.Namespace, settings: Settings) -> int:
    from .model_build.build_model import build_default_model, build_model
    from .model_repo import CARD_FILE, ModelCard

    out = Path(args.out or settings.model_repository)
    if args.if_missing and (out / CARD_FILE).is_file():
        print(f"model {ModelCard.load(out).label} is already in {out}; nothing to build")
        return 0
    options = {
        "precision": args.precision,
        "revision": args.revision,
        "triton_backend": args.triton_backend,
        "max_batch_size": args.max_batch_size,
        "calibration": Path(args.calibration) if args.calibration else None,
        "calibration_rows": args.calibration_rows,
    }
    source = args.source or settings.model_source
    if args.pretrained:
        options["pretrained"] = args.pretrained
    card = build_model(source, out, **options) if source else build_default_model(out, **options)
    print(f"built {card.label}: {card.embedding_dim}-d, identity {card.identity}")
    return 0


def _filters(args: argparse.Namespace):
    from .types import Filters

    return Filters(
        categories=tuple(args.category or ()),
        brands=tuple(args.brand or ()),
        colors=tuple(args.color or ()),
        min_price=args.min_price,
        max_price=args.max_price,
    )


def _ingest(args: argparse.Namespace, settings: Settings) -> int:
    from .ingestion.catalogue import Catalogue
    from .ingestion.formats import parse_mapping
    from .service import Pipeline

    mapping = parse_mapping(args.map) if args.map is not None else None  # a bad spec: one sentence, exit 2
    with Pipeline(settings) as pipe:
        if args.if_empty and not args.reset and pipe.index.count():
            print(f"the catalogue already holds {pipe.index.count()} products; not adding {args.catalog}")
            return 0
        images = Path(args.images) if args.images else None
        report = Catalogue(pipe).ingest(
            Path(args.catalog), images, reset=args.reset, sync=args.sync, fmt=args.format, mapping=mapping
        )
        print(json.dumps(report.to_json(), indent=2) if args.json else report.summary())
    return 0 if report.rows and len(report.bad) < report.rows else 2


def _delete(args: argparse.Namespace, settings: Settings) -> int:
    from .ingestion.catalogue import Catalogue
    from .service import Pipeline

    with Pipeline(settings) as pipe:
        done = Catalogue(pipe).delete(args.ids)
    gone = done.deleted
    if gone:
        print(f"deleted {len(gone)} product{'s' if len(gone) != 1 else ''}: {', '.join(gone)}; "
              f"catalogue version {done.catalog_version}")  # fmt: skip
    if done.unknown:
        print(f"not in the catalogue: {', '.join(done.unknown)}", file=sys.stderr)
    return 0 if gone or not done.unknown else 2


def _duplicates(args: argparse.Namespace, settings: Settings) -> int:
    from .ingestion.catalogue import Catalogue
    from .service import Pipeline

    with Pipeline(settings) as pipe:
        report = Catalogue(pipe).duplicates(args.threshold, progress=not args.json)
    print(json.dumps(report.to_json(), indent=2) if args.json else report.render())
    return 0


def _match(args: argparse.Namespace, settings: Settings) -> int:
    from .service import Pipeline
    from .types import LEVEL_WORDS

    with Pipeline(settings) as pipe:
        if args.text is not None:
            result = pipe.matcher.match_text(args.text, args.top_k, _filters(args), diverse=args.diverse)
        elif args.similar is not None:
            result = pipe.matcher.similar(args.similar, args.top_k, _filters(args), diverse=args.diverse)
        else:
            result = pipe.matcher.match_image(
                Path(args.image), args.top_k, _filters(args), args.refine, args.refine_weight, diverse=args.diverse
            )
        if args.json:
            print(json.dumps(result.to_json(with_metadata=args.metadata), indent=2, default=str))
            return 0
        for warning in result.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if not result.matches:
            print("No products in the catalogue match these filters.")
        for rank, m in enumerate(result.matches, 1):
            price = f"{m.price:.2f}" if isinstance(m.price, (int, float)) else "-"
            print(
                f"{rank:>2}. {m.score:6.3f}  {LEVEL_WORDS[m.level]:<16} {m.id:<12} {m.name}"
                f"  [{m.brand or '-'} | {m.category or '-'} | {price}]"
            )
        if result.matches and result.best_level == "none":
            print("No close match in the catalogue: these are the nearest products.")
        stages = ", ".join(f"{k} {v:.1f} ms" for k, v in result.timings_ms.items())
        print(f"({'cache hit' if result.cache_hit else 'cache miss'}; {stages})", file=sys.stderr)
    return 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from .ops.status import collect, render
    from .service import Pipeline

    with Pipeline(settings) as pipe:
        report = collect(pipe)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0 if all(report[k]["ok"] for k in ("model", "inference", "qdrant", "mongo")) else 2


def _triton(args: argparse.Namespace, settings: Settings) -> int:
    if not args.model_repository:
        args.model_repository = str(settings.model_repository)
    return triton.run_from_args(args)


def _evaluate(args: argparse.Namespace, settings: Settings) -> int:
    return evaluate.run_from_args(args, settings)


def _add_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--category", action="append", help="only this category (repeat for several)")
    p.add_argument("--brand", action="append", help="only this brand (repeat for several)")
    p.add_argument("--color", action="append", help="only this colour (repeat for several)")
    p.add_argument("--min-price", type=float)
    p.add_argument("--max-price", type=float)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.splitlines()[0])
    root.add_argument("-v", "--verbose", action="store_true", help="log details (and tracebacks) to stderr")
    sub = root.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "build-model", help="export a CLIP, SigLIP or open_clip model (or the offline model) to the model repository"
    )
    p.add_argument(
        "--source",
        help="hub id (CLIP or SigLIP), hf-hub:ORG/NAME (open_clip), an open_clip architecture with --pretrained, a "
        "local CLIP / SigLIP / open_clip folder, or 'offline' (default: MODEL_SOURCE or "
        f"{DEFAULT_MODEL_SOURCE})",
    )
    p.add_argument("--pretrained", metavar="TAG_OR_FILE", help="open_clip architectures: the weights (tag or file)")
    p.add_argument("--out", help="model repository to write (default: MODEL_REPOSITORY)")
    p.add_argument(
        "--precision",
        choices=("fp32", "fp16", "int8", "int8-static"),  # quantize.PRECISIONS; parsing never imports the build
        default="fp32",
        help="int8: dynamic (no data needed); int8-static: activation ranges measured on --calibration",
    )
    p.add_argument("--calibration", metavar="CATALOG", help="int8-static: catalogue whose photos and texts calibrate")
    p.add_argument("--calibration-rows", type=int, metavar="N", help="products read from --calibration (default 256)")
    p.add_argument("--revision", help="hub revision (branch, tag or commit)")
    p.add_argument(
        "--triton-backend",
        choices=("python", "onnxruntime"),
        default="python",
        help="python: CPU Triton from the nvidia-pytriton wheel; onnxruntime: NVIDIA's Triton container (GPU)",
    )
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--if-missing", action="store_true", help="do nothing when the repository already holds a model")
    p.set_defaults(run=_build_model)

    p = sub.add_parser(
        "ingest",
        help="add or update the products of a catalogue file (JSON, JSONL or CSV; a Shopify, WooCommerce or Google "
        "Merchant export)",
    )
    p.add_argument("catalog")
    p.add_argument(
        "--format",
        choices=("auto", "sample", "shopify", "woocommerce", "merchant"),  # formats.FORMATS
        default="auto",
        help="how to read the file (default: from its columns)",
    )
    p.add_argument(
        "--map",
        metavar="SPEC",
        help='rename the file\'s columns onto the sample schema, e.g. "Product Name=name,Picture=image_path"',
    )
    p.add_argument("--images", help="folder to look up absolute or foreign image paths by file name")
    p.add_argument(
        "--reset", action="store_true", help="start from an empty catalogue: drop the vectors and the MongoDB products"
    )
    p.add_argument("--sync", action="store_true", help="also delete the products that the file no longer has")
    p.add_argument("--if-empty", action="store_true", help="only when the catalogue holds no product yet (demo data)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_ingest)

    p = sub.add_parser("delete", help="remove products from the catalogue (MongoDB and the vector index)")
    p.add_argument("ids", nargs="+", metavar="ID")
    p.set_defaults(run=_delete)

    p = sub.add_parser("match", help="find the products that match a description or a photo")
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument("--text")
    query.add_argument("--image")
    query.add_argument("--similar", metavar="ID", help="more like this product (its stored photo)")
    p.add_argument("--refine", metavar="WORDS", help="with --image: words that refine the photo ('in red')")
    p.add_argument("--refine-weight", type=float, help="with --refine: 0 (the photo) to 1 (the words)")
    p.add_argument("--diverse", action="store_true", help="re-rank with MMR: no near-copies side by side")
    p.add_argument("--top-k", type=int, default=5)
    _add_filters(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--metadata", action="store_true", help="with --json: include every metadata field")
    p.set_defaults(run=_match)

    p = sub.add_parser("status", help="model, backends, catalogue size and version")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_status)

    p = sub.add_parser("triton", help="serve the model repository with the bundled Triton Inference Server")
    triton.add_arguments(p)
    p.set_defaults(run=_triton)

    p = sub.add_parser(
        "compare-models", help="model repositories compared: agreement (precisions of one model), recall, speed, size"
    )
    compare_models.add_arguments(p)
    p.set_defaults(run=lambda args, settings: compare_models.run_from_args(args, settings))

    p = sub.add_parser("duplicates", help="pairs of products whose photos are near-identical")
    p.add_argument(
        "--threshold", type=float, help=f"cosine from which two photos count as one (default {DEFAULT_THRESHOLD})"
    )
    p.add_argument("--json", action="store_true", help="the pairs as JSON")
    p.set_defaults(run=_duplicates)

    p = sub.add_parser("evaluate", help="retrieval quality of the pipeline on labelled queries")
    evaluate.add_arguments(p)
    p.set_defaults(run=_evaluate)
    return root


def main(argv: list[str] | None = None) -> int:
    try:  # before the arguments, so a bad setting is one sentence for every command, --help included
        settings = Settings.from_env()
    except SettingsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.run(args, settings)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
