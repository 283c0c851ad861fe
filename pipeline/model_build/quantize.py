"""FP16 and INT8 versions of an exported tower, checked against the FP32 graph they replace.

On CPU, onnxruntime's FP16 kernels mostly cast back to FP32 (smaller file, rarely faster). INT8 comes in two kinds:

* ``int8`` (dynamic): weights quantised ahead of time, each activation's scale computed at run time. Needs no data.
  On transformer towers (CLIP ViT, MiniLM) onnxruntime fuses it into MatMulIntegerToFloat: 2.2-3.2x FP32 here.
  Convolutions stay in float (``DYNAMIC_OP_TYPES``): as ConvInteger, the offline model's EfficientNet-Lite0 image tower
  ran at 0.10x FP32's speed and kept 0.61 of FP32's top-10 photo neighbours (compare-models, fashion catalogue).
* ``int8-static``: weights and activations quantised with scales measured once on calibration data (a catalogue's
  photos and texts, ``calibration.py``), QDQ format (QuantizeLinear/DequantizeLinear pairs that onnxruntime fuses into
  integer kernels, and that any ONNX runtime can read), per-channel weights. Per-channel is what makes convolutions
  work: on the offline image tower, 96 fashion photos gave a mean cosine to FP32 of 0.986 per channel against 0.817
  per tensor.

Which ops static INT8 quantises depends on the tower (``static_op_types``), measured on the offline model's towers with
fashion photos and names: a convolutional tower (EfficientNet-Lite0) needs its activations (Clip = ReLU6) quantised
with the convolutions, so that onnxruntime folds them into one integer kernel: every op quantised gave a mean cosine
to FP32 of 0.986 and 1.9-2.6x FP32's speed at batch 32, Conv/MatMul/Gemm alone 0.874. A transformer tower must keep
its Add/Mul ops in float: the attention mask adds -1e4 (or -3.4e38) to the scores, and an 8-bit scale fitted to that
range zeroes everything else (MiniLM: mean cosine 0.38 with Add quantised, 0.95 without; the CLIP text tower went
negative), and LayerNormalization has no per-channel INT8 form.

Either way the converted graph must still rank like the original: we compare the embeddings of the same inputs and
refuse a conversion whose cosine similarity falls below a floor (``MIN_COSINE``).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .. import model_repo as mr
from ..errors import PipelineError
from ..inference.onnx_session import cpu_session

PRECISIONS = ("fp32", "fp16", "int8", "int8-static")
# Worst cosine to FP32 allowed on the build's check inputs (a few texts and random-noise images; for static INT8 also a
# batch of the calibration photos and texts). Static INT8 gets a lower floor than dynamic: its activation ranges are
# fixed, so the noise images, unlike any photo it was calibrated on, are clipped. Seen at build time: ViT-B/32 (random
# weights) 0.9989 text / 0.9997 image, the offline model 0.924 / 0.940, the tests' small CLIP 0.9986 / 0.9986. How well
# a variant ranks real products is what compare-models measures.
MIN_COSINE = {"fp16": 0.999, "int8": 0.95, "int8-static": 0.9}
#: How static INT8 is made; written into the model card beside the calibration source.
STATIC_RECIPE = {
    "tool": "onnxruntime.quantization.quantize_static",
    "format": "QDQ",
    "activations": "uint8",
    "weights": "int8",
    "per_channel": True,
    "calibration_method": "MinMax",
    "op_types": "convolutional towers: every op onnxruntime quantises; transformer towers: MatMul, Gemm, Conv",
    "pre_process": "quant_pre_process (no symbolic shape inference)",
}


def _embed(path: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    return cpu_session(path).run([mr.OUTPUT], inputs)[0]


#: What dynamic INT8 quantises: onnxruntime's dynamic (IntegerOps) set less Conv (see the module docstring).
DYNAMIC_OP_TYPES = ["MatMul", "Attention", "Gather", "EmbedLayerNormalization", "LSTM", "Transpose"]
#: What a transformer tower quantises in static INT8: the matrix products, which are where its time goes.
TRANSFORMER_OP_TYPES = ["MatMul", "Gemm", "Conv"]


def static_op_types(path: Path) -> list[str] | None:
    """Op types static INT8 quantises in the graph at ``path``: None (every supported op) for a convolutional tower,
    the matrix products only for a transformer tower (more MatMul than Conv nodes; see the module docstring)."""
    import onnx

    ops = [node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node]
    return None if ops.count("Conv") > ops.count("MatMul") else list(TRANSFORMER_OP_TYPES)


class _Batches:
    """onnxruntime's ``CalibrationDataReader`` protocol over a list of input batches (``get_next`` until None)."""

    def __init__(self, batches: list[dict[str, np.ndarray]]) -> None:
        self._items: Iterator[dict[str, np.ndarray]] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


def _static(path: Path, converted: Path, calibration: list[dict[str, np.ndarray]], work: Path) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(_Batches, CalibrationDataReader):
        pass

    prepared = work / "prepared.onnx"
    # Constant folding and shape inference first, as onnxruntime advises, so Q/DQ land on the ops that remain. The
    # symbolic shape pass is skipped: it fails on CLIP's Expand of a dynamic shape (onnxruntime 1.32).
    quant_pre_process(str(path), str(prepared), skip_symbolic_shape=True)
    quantize_static(
        str(prepared),
        str(converted),
        Reader(calibration),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        op_types_to_quantize=static_op_types(prepared),
    )


def _convert(path: Path, precision: str, converted: Path, calibration: list | None, work: Path) -> None:
    import onnx

    if precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
        onnx.save(model, str(converted))
    elif precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(path), str(converted), weight_type=QuantType.QInt8, op_types_to_quantize=DYNAMIC_OP_TYPES)
    elif precision == "int8-static":
        if not calibration:
            raise PipelineError("Static INT8 needs calibration batches (build-model --calibration CATALOG).")
        _static(path, converted, calibration, work)
    else:
        raise PipelineError(f"Unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}.")


def check_loads(path: Path, precision: str, tower: str) -> None:
    """Open ``path`` in onnxruntime in a child process first: a converted graph can crash onnxruntime itself while
    the session is created (seen: the FP16 text tower of open_clip's SigLIP-style models, in onnxruntime 1.32's
    optimiser at the default level; with the NCHWc layout pass off it loads), and that must be a refusal, not the
    end of the build (or, later, of the app)."""
    import subprocess
    import sys

    code = "import sys; from pipeline.inference.onnx_session import cpu_session; cpu_session(sys.argv[1])"
    root = str(Path(__file__).resolve().parents[2])
    proc = subprocess.run([sys.executable, "-c", code, str(path)], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        why = f"signal {-proc.returncode}" if proc.returncode < 0 else (proc.stderr.strip().splitlines() or ["?"])[-1]
        raise PipelineError(
            f"The {precision} version of {tower} cannot be opened by onnxruntime ({why[:200]}); keep fp32 or choose "
            "another precision for this model."
        )


def min_cosine(got: np.ndarray, reference: np.ndarray) -> float:
    """Worst row-wise cosine between two embedding batches (the reference rows are unit length)."""
    return float(np.min(np.sum(got * reference, axis=1) / np.linalg.norm(got, axis=1)))


def quantize_tower(
    path: Path,
    precision: str,
    check_inputs: dict[str, np.ndarray] | list[dict[str, np.ndarray]],
    calibration: list[dict[str, np.ndarray]] | None = None,
) -> float:
    """Replace the FP32 graph at ``path`` by its ``precision`` version; returns the worst cosine to FP32.

    ``check_inputs``: one batch or several (several widths of token batches, or random and real photos); the floor
    applies to the worst row of all of them. ``calibration``: the input batches static INT8 measures its ranges on.
    """
    checks = [check_inputs] if isinstance(check_inputs, dict) else list(check_inputs)
    references = [_embed(path, inputs) for inputs in checks]
    with tempfile.TemporaryDirectory() as tmp:
        converted = Path(tmp) / "model.onnx"
        _convert(path, precision, converted, calibration, Path(tmp))
        check_loads(converted, precision, path.parent.parent.name)
        cosine = min(min_cosine(_embed(converted, x), ref) for x, ref in zip(checks, references, strict=True))
        if not cosine >= MIN_COSINE[precision]:
            raise PipelineError(
                f"The {precision} version of {path.parent.parent.name} drifts too far from FP32 "
                f"(cosine {cosine:.4f} < {MIN_COSINE[precision]}); keep fp32 for this model."
            )
        shutil.move(str(converted), str(path))
    return cosine
