"""``build-model``: turn a CLIP-style checkpoint (or the offline model) into a Triton model repository.

Families (``families/``): transformers CLIP, transformers SigLIP (and fixed-resolution SigLIP 2), open_clip. Each is
exported to the same contract: two ONNX towers with L2-normalised outputs and a dynamic batch axis, the text tower at
the sequence length its family needs (dynamic for CLIP, fixed for SigLIP), tokenizer.json, the family's own image
steps in the processor file, and the card (family, source, revision, dims, preprocessing).

Writes ``clip_text`` and ``clip_visual`` (ONNX + Triton config), the client-side tokenizer and image-processor files,
and the model card. Everything is built in a staging folder and moved into place only after the ONNX files were checked
against the torch network, so a failed build never leaves a half-written repository behind.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import warnings
from pathlib import Path

import numpy as np

from .. import model_repo as mr
from ..errors import ExportMismatch, ModelNotFound, PipelineError
from ..inference.onnx_session import cpu_session
from ..progress import step
from ..query.preprocess import PROCESSOR_FILE, ImageSteps, Preprocessor
from ..settings import DEFAULT_MODEL_SOURCE
from .families.base import CHECK_TEXTS, Loaded
from .families.hub import hub_error as _hub_error  # noqa: F401 - kept for callers of the old names
from .families.hub import hub_unreachable  # noqa: F401
from .quantize import PRECISIONS
from .triton_repo import write_clip_models

OPSET = 18
PARITY_ATOL = 1e-4


def _fields(loaded: Loaded, source: str) -> dict:
    """Model-card fields of a loaded family (checksums and precision come later)."""
    return {
        "name": loaded.name,
        "kind": "clip",
        "family": loaded.family,
        "source": source,
        "revision": loaded.revision,
        "embedding_dim": int(loaded.embedding_dim),
        "text_max_length": int(loaded.text_length),
        "text_dynamic_length": bool(loaded.text_dynamic_length),
        "image_size": int(loaded.image_size),
        "extra": dict(loaded.extra),
    }


def _preprocessor(stage: Path, fields: dict, full_length: bool = False) -> Preprocessor:
    """The client's own preprocessing on the files staged for this build (what serving will run)."""
    card = mr.ModelCard(**{**fields, "precision": "fp32", "sha256": {}})
    if full_length:
        card = dataclasses.replace(card, text_dynamic_length=False)
    return Preprocessor(stage, card)


def _sample_inputs(stage: Path, fields: dict, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Token batch (padded to the full length) of CHECK_TEXTS, made by the client tokenizer, and random pixels."""
    text_in = _preprocessor(stage, fields, full_length=True).tokenize(list(CHECK_TEXTS))
    rng = np.random.default_rng(seed)
    size = int(fields["image_size"])
    pixels = rng.standard_normal((3, 3, size, size)).astype(np.float32)
    return {k: text_in[k].astype(np.int64) for k in mr.TEXT_INPUTS}, pixels


def _check_inputs(stage: Path, fields: dict) -> tuple[dict[str, np.ndarray], np.ndarray]:
    return _sample_inputs(stage, fields)


def check_tokenizer(stage: Path, fields: dict, reference, unpadded: bool) -> None:
    """The saved tokenizer.json, as the client runs it, must give the library tokenizer's ids on CHECK_TEXTS
    (``unpadded``: compared without padding, where the library pads with another id that its tower ignores)."""
    pre = _preprocessor(stage, fields, full_length=True)
    texts = list(CHECK_TEXTS)
    rows = [list(ids) for ids, _ in pre._token_rows(texts)]
    got = rows if unpadded else pre.tokenize(texts)["input_ids"].tolist()
    want = [list(map(int, row)) for row in reference(texts)]
    for text, mine, theirs in zip(texts, got, want, strict=True):
        if mine != theirs:
            raise ExportMismatch(
                f"The saved tokenizer differs from the {fields['family']} library's on {text[:40]!r} "
                f"({mine[:12]}... vs {theirs[:12]}...); the model was not installed."
            )


def _export(loaded: Loaded, stage: Path, fields: dict) -> None:
    """Trace both towers to ONNX and check each graph against the library's forward pass on the same inputs."""
    import torch

    text_path, visual_path = mr.onnx_path(stage, mr.TEXT_MODEL), mr.onnx_path(stage, mr.VISUAL_MODEL)
    text_in, pixels = _sample_inputs(stage, fields)
    text_path.parent.mkdir(parents=True, exist_ok=True)
    visual_path.parent.mkdir(parents=True, exist_ok=True)
    sequence = {1: "sequence"} if fields["text_dynamic_length"] else {}
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # nn.MultiheadAttention's inference fast path (open_clip's towers use it) is one fused op with no ONNX form; the
    # ordinary path computes the same attention in exportable ops.
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        text_ref, visual_ref = _trace(loaded, text_path, visual_path, text_in, pixels, sequence)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    for what, ref in (("text", text_ref), ("image", visual_ref)):
        if ref.shape[-1] != fields["embedding_dim"]:
            raise ExportMismatch(
                f"The {what} tower gives {ref.shape[-1]}-d vectors, not {fields['embedding_dim']}-d; not installed."
            )
    check_parity(text_path, text_in, text_ref, "text")
    if fields["text_dynamic_length"]:
        # The client pads short batches to a few tokens, not to the full length: that must give the very same vectors.
        check_parity(text_path, shortest_padding(text_in), text_ref, "text (short padding)")
    check_parity(visual_path, {mr.VISUAL_INPUT: pixels}, visual_ref, "image")


def _trace(loaded: Loaded, text_path: Path, visual_path: Path, text_in: dict, pixels: np.ndarray, sequence: dict):
    """Export both towers; returns their torch outputs on the same inputs (the references)."""
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter is the one that reproduces CLIP exactly here; its tracer warnings are expected.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            loaded.text_tower,
            (torch.from_numpy(text_in["input_ids"]), torch.from_numpy(text_in["attention_mask"])),
            str(text_path),
            input_names=list(mr.TEXT_INPUTS),
            output_names=[mr.OUTPUT],
            dynamic_axes={**{name: {0: "batch", **sequence} for name in mr.TEXT_INPUTS}, mr.OUTPUT: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
        torch.onnx.export(
            loaded.visual_tower,
            (torch.from_numpy(pixels),),
            str(visual_path),
            input_names=[mr.VISUAL_INPUT],
            output_names=[mr.OUTPUT],
            dynamic_axes={mr.VISUAL_INPUT: {0: "batch"}, mr.OUTPUT: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
        text_ref = loaded.text_tower(*(torch.from_numpy(text_in[k]) for k in mr.TEXT_INPUTS)).numpy()
        visual_ref = loaded.visual_tower(torch.from_numpy(pixels)).numpy()
    return text_ref, visual_ref


def shortest_padding(text_in: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same token batch cut to its longest row (right padding): what a dynamic sequence axis must agree with."""
    width = int(text_in["attention_mask"].sum(axis=1).max())
    return {name: np.ascontiguousarray(array[:, :width]) for name, array in text_in.items()}


def _run_onnx(path: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    return cpu_session(path).run([mr.OUTPUT], inputs)[0]


def check_parity(path: Path, inputs: dict[str, np.ndarray], reference: np.ndarray, what: str) -> float:
    """Run the exported graph and fail loudly when it does not reproduce ``reference``."""
    got = _run_onnx(path, inputs)
    diff = float(np.max(np.abs(got - reference))) if got.shape == reference.shape else float("inf")
    if not diff <= PARITY_ATOL:
        raise ExportMismatch(
            f"The exported {what} tower differs from the torch network (max abs difference {diff:.2e} > "
            f"{PARITY_ATOL:.0e}); the ONNX file was not installed."
        )
    return diff


def _install(stage: Path, out: Path) -> None:
    """Swap the freshly built parts into ``out``, leaving anything else there (a README, say) alone."""
    out.mkdir(parents=True, exist_ok=True)
    for name in (mr.TEXT_MODEL, mr.VISUAL_MODEL, mr.CARD_FILE):
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        shutil.move(str(stage / name), str(target))


def build_default_model(out: Path, **options) -> mr.ModelCard:
    """No source named: ``DEFAULT_MODEL_SOURCE`` from the hub; when the hub cannot be reached, the packaged offline
    model, said once."""
    try:
        return build_model(DEFAULT_MODEL_SOURCE, out, **options)
    except ModelNotFound as hub_error:
        try:
            from .offline_model import sources

            sources()  # raises ModelNotFound when a package of the offline model is missing
        except (ImportError, ModelNotFound):
            raise hub_error from None
        step(
            f"{DEFAULT_MODEL_SOURCE} cannot be downloaded here; building the packaged offline model instead "
            "(category-level, not a CLIP-style model). Set MODEL_SOURCE to choose another."
        )
        return build_model("offline", out, **options)


def _convert(stage: Path, fields: dict, precision: str, calibration: Path | None, calibration_rows: int) -> None:
    """Replace both FP32 towers in ``stage`` by their ``precision`` versions, each checked against FP32; the worst
    cosine and, for static INT8, the calibration source and recipe go into the card's ``extra``."""
    from .quantize import STATIC_RECIPE, quantize_tower

    text_in, pixels = _check_inputs(stage, fields)
    text_checks, image_checks = [text_in], [{mr.VISUAL_INPUT: pixels}]
    text_batches = image_batches = None
    extra = fields.setdefault("extra", {})
    if precision == "int8-static":
        from .calibration import load_calibration

        calib = load_calibration(calibration, stage, fields, calibration_rows)
        step(
            f"calibrating static INT8 on {calib.source['images']} photos and {calib.source['texts']} texts "
            f"from {calib.source['file']}"
        )
        text_batches, image_batches = calib.text_batches, calib.image_batches
        # Real inputs as well as the random ones: the ranges were measured on photos, and photos are what must agree.
        text_checks.append(text_batches[0])
        image_checks.append(image_batches[0])
        extra["calibration"] = calib.source
        extra["quantization"] = dict(STATIC_RECIPE)
    step(f"converting both towers to {precision} and checking them against fp32")
    text_cos = quantize_tower(mr.onnx_path(stage, mr.TEXT_MODEL), precision, text_checks, text_batches)
    image_cos = quantize_tower(mr.onnx_path(stage, mr.VISUAL_MODEL), precision, image_checks, image_batches)
    extra["min_cosine_to_fp32"] = {mr.TEXT_MODEL: round(text_cos, 6), mr.VISUAL_MODEL: round(image_cos, 6)}


def build_model(
    source: str = DEFAULT_MODEL_SOURCE,
    out: Path = Path("model_repository"),
    precision: str = "fp32",
    revision: str | None = None,
    triton_backend: str = "python",
    max_batch_size: int = 64,
    calibration: Path | None = None,
    calibration_rows: int | None = None,
    pretrained: str | None = None,
) -> mr.ModelCard:
    """Export ``source`` into the model repository ``out`` at ``precision``.

    ``source``: a CLIP or SigLIP hub id or ``save_pretrained`` folder, ``hf-hub:ORG/NAME`` (open_clip), an open_clip
    architecture with ``pretrained`` (a tag or a weights file), a folder in open_clip's hub layout, or ``offline``.

    ``calibration``: the catalogue whose photos and product texts static INT8 (``int8-static``, and only it) measures
    its activation ranges on; ``calibration_rows`` of them, spread over the file (default ``DEFAULT_ROWS``).
    """
    from .calibration import DEFAULT_ROWS, check_catalogue

    if precision not in PRECISIONS:
        raise PipelineError(f"Unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}.")
    calibration = check_catalogue(calibration, precision)  # before minutes of export, not after
    out = Path(out)
    stage = out.parent / f".{out.name}.staging"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    try:
        if source == "offline":
            text_path = mr.onnx_path(stage, mr.TEXT_MODEL)
            visual_path = mr.onnx_path(stage, mr.VISUAL_MODEL)
            from .offline_model import export_offline

            step("building the offline model from packaged weights")
            fields = export_offline(text_path, visual_path, mr.tokenizer_dir(stage), mr.processor_dir(stage), step)
            fields.setdefault("family", "offline")
        else:
            from .families import load

            step(f"loading {source}" + (f" ({pretrained})" if pretrained else ""))
            loaded = load(source, revision, pretrained)
            fields = _fields(loaded, source)
            loaded.save_tokenizer(mr.tokenizer_dir(stage))
            processor_dir = mr.processor_dir(stage)
            processor_dir.mkdir(parents=True, exist_ok=True)
            (processor_dir / PROCESSOR_FILE).write_text(json.dumps(loaded.processor_config, indent=2) + "\n")
            steps = ImageSteps.load(processor_dir / PROCESSOR_FILE, fields["image_size"])
            fields["preprocessing"] = steps.describe()
            step(f"{loaded.family}: checking the saved tokenizer against the library's")
            check_tokenizer(stage, fields, loaded.reference_tokens, loaded.reference_unpadded)
            step("exporting the text and image towers to ONNX and checking them against the library's forward pass")
            _export(loaded, stage, fields)
        if precision != "fp32":
            _convert(stage, fields, precision, calibration, calibration_rows or DEFAULT_ROWS)
        fields["precision"] = precision
        fields["sha256"] = {m: mr.sha256_file(mr.onnx_path(stage, m)) for m in (mr.TEXT_MODEL, mr.VISUAL_MODEL)}
        card = mr.ModelCard(**fields)
        step(f"writing Triton configs ({triton_backend} backend)")
        write_clip_models(stage, card, backend=triton_backend, max_batch_size=max_batch_size)
        card.save(stage)
        _install(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    step(f"model {card.label} written to {out} (identity {card.identity}, {card.embedding_dim}-d)")
    return card
