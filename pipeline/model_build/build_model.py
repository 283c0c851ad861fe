"""``build-model``: turn a CLIP checkpoint (or the offline model) into a Triton model repository.

Writes ``clip_text`` and ``clip_visual`` (ONNX + Triton config), the client-side tokenizer and image-processor files,
and the model card. Everything is built in a staging folder and moved into place only after the ONNX files were checked
against the torch network, so a failed build never leaves a half-written repository behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import warnings
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from .. import model_repo as mr
from ..errors import ExportMismatch, ModelNotFound, PipelineError
from ..inference.onnx_session import cpu_session
from ..progress import step
from ..settings import DEFAULT_MODEL_SOURCE
from .quantize import PRECISIONS
from .triton_repo import write_clip_models

OPSET = 18
PARITY_ATOL = 1e-4


def hub_unreachable(timeout_s: float = 3.0) -> str | None:
    """Why the Hugging Face hub cannot be reached from here, or None. One quick connection attempt: without it,
    huggingface_hub retries for ~30 s and prints each retry twice before giving up."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return "HF_HUB_OFFLINE is set"
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT", "").strip() or "https://huggingface.co")
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as err:
        return f"{host} cannot be reached: {err.strerror or err}"
    return None


def _hub_error(source: str, why: str) -> ModelNotFound:
    return ModelNotFound(
        f"Could not download '{source}' from the Hugging Face hub ({why}). "
        "Use a local CLIP folder saved with save_pretrained (--source /path/to/clip), "
        "or the packaged offline model (--source offline)."
    )


def _load_clip(source: str, revision: str | None):
    """Load model + tokenizer + processor from a local folder or a hub id; one clear sentence when that fails."""
    local = Path(source).expanduser()
    is_local = local.is_dir()
    if not is_local and (source.startswith((".", "/", "~")) or local.suffix):
        raise ModelNotFound(f"The model folder {source} does not exist.")
    if not is_local and (why := hub_unreachable()):
        raise _hub_error(source, why)
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    where = str(local if is_local else source)
    kwargs = {} if is_local else {"revision": revision or "main"}
    try:
        model = CLIPModel.from_pretrained(where, **kwargs).eval()
        tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
        processor = CLIPImageProcessor.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as err:
        if is_local:
            raise ModelNotFound(
                f"{source} is not a CLIP checkpoint saved with save_pretrained (config, weights, tokenizer and "
                f"preprocessor files): {str(err).splitlines()[0]}"
            ) from err
        raise _hub_error(source, str(err).splitlines()[0][:200]) from err
    if is_local:
        digest = hashlib.sha256()
        for weights in sorted(p for p in local.iterdir() if p.suffix in {".safetensors", ".bin"}):
            digest.update(mr.sha256_file(weights).encode())
        rev = "local-" + digest.hexdigest()[:12]
    else:
        rev = getattr(model.config, "_commit_hash", None) or revision or "main"
    return model, tokenizer, processor, rev


def _towers(model):
    import torch

    class TextTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.text_model = model.text_model
            self.proj = model.text_projection

        def forward(self, input_ids, attention_mask):
            pooled = self.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
            emb = self.proj(pooled)
            return emb / emb.norm(dim=-1, keepdim=True)

    class VisualTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vision_model = model.vision_model
            self.proj = model.visual_projection

        def forward(self, pixel_values):
            emb = self.proj(self.vision_model(pixel_values=pixel_values).pooler_output)
            return emb / emb.norm(dim=-1, keepdim=True)

    return TextTower().eval(), VisualTower().eval()


def _sample_inputs(tokenizer, length: int, size: int, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    texts = ["men's black puffer jacket", "a red coffee mug", "wireless noise cancelling headphones, over-ear"]
    tok = tokenizer(texts, padding="max_length", truncation=True, max_length=length, return_tensors="np")
    rng = np.random.default_rng(seed)
    pixels = rng.standard_normal((3, 3, size, size)).astype(np.float32)
    return {k: tok[k].astype(np.int64) for k in mr.TEXT_INPUTS}, pixels


def _check_inputs(stage: Path, fields: dict) -> tuple[dict[str, np.ndarray], np.ndarray]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(mr.tokenizer_dir(stage)))
    return _sample_inputs(tokenizer, int(fields["text_max_length"]), int(fields["image_size"]))


def _export_clip(model, tokenizer, text_path: Path, visual_path: Path, length: int, size: int) -> None:
    import torch

    text_tower, visual_tower = _towers(model)
    text_in, pixels = _sample_inputs(tokenizer, length, size)
    text_path.parent.mkdir(parents=True, exist_ok=True)
    visual_path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter is the one that reproduces CLIP exactly here; its tracer warnings are expected.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            text_tower,
            (torch.from_numpy(text_in["input_ids"]), torch.from_numpy(text_in["attention_mask"])),
            str(text_path),
            input_names=list(mr.TEXT_INPUTS),
            output_names=[mr.OUTPUT],
            dynamic_axes={**{name: {0: "batch", 1: "sequence"} for name in mr.TEXT_INPUTS}, mr.OUTPUT: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
        torch.onnx.export(
            visual_tower,
            (torch.from_numpy(pixels),),
            str(visual_path),
            input_names=[mr.VISUAL_INPUT],
            output_names=[mr.OUTPUT],
            dynamic_axes={mr.VISUAL_INPUT: {0: "batch"}, mr.OUTPUT: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
        text_ref = text_tower(*(torch.from_numpy(text_in[k]) for k in mr.TEXT_INPUTS)).numpy()
        visual_ref = visual_tower(torch.from_numpy(pixels)).numpy()
    check_parity(text_path, text_in, text_ref, "text")
    # The client pads short batches to a few tokens, not to the full length: that must give the very same vectors.
    check_parity(text_path, shortest_padding(text_in), text_ref, "text (short padding)")
    check_parity(visual_path, {mr.VISUAL_INPUT: pixels}, visual_ref, "image")


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
    """No source named: CLIP from the hub; when the hub cannot be reached, the packaged offline model, said once."""
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
            "(category-level, not CLIP). Set MODEL_SOURCE to choose another."
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
) -> mr.ModelCard:
    """Export ``source`` into the model repository ``out`` at ``precision``.

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
        text_path = mr.onnx_path(stage, mr.TEXT_MODEL)
        visual_path = mr.onnx_path(stage, mr.VISUAL_MODEL)
        if source == "offline":
            from .offline_model import export_offline

            step("building the offline model from packaged weights")
            fields = export_offline(text_path, visual_path, mr.tokenizer_dir(stage), mr.processor_dir(stage), step)
        else:
            step(f"loading CLIP from {source}")
            model, tokenizer, processor, rev = _load_clip(source, revision)
            length = int(model.config.text_config.max_position_embeddings)
            size = int(model.config.vision_config.image_size)
            step("exporting the text and image towers to ONNX and checking them against torch")
            _export_clip(model, tokenizer, text_path, visual_path, length, size)
            tokenizer.model_max_length = length
            tokenizer.save_pretrained(mr.tokenizer_dir(stage))
            processor.save_pretrained(mr.processor_dir(stage))
            fields = {
                "name": Path(source).name if Path(source).is_dir() else source.rstrip("/").split("/")[-1],
                "kind": "clip",
                "source": source,
                "revision": rev,
                "embedding_dim": int(model.config.projection_dim),
                "text_max_length": length,
                "text_dynamic_length": True,
                "image_size": size,
            }
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
