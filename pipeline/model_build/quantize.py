"""FP16 and INT8 versions of an exported tower, checked against the FP32 graph they replace.

On CPU, onnxruntime's FP16 kernels mostly cast back to FP32 (smaller file, rarely faster); dynamic INT8 quantisation of
the MatMul weights is the CPU speed lever. Either way the converted graph must still rank like the original: we compare
the embeddings of the same inputs and refuse a conversion whose cosine similarity falls below a floor.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from .. import model_repo as mr
from ..errors import PipelineError
from ..inference.onnx_session import cpu_session

MIN_COSINE = {"fp16": 0.999, "int8": 0.95}


def _embed(path: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    return cpu_session(path).run([mr.OUTPUT], inputs)[0]


def quantize_tower(path: Path, precision: str, check_inputs: dict[str, np.ndarray]) -> float:
    """Replace the FP32 graph at ``path`` by its ``precision`` version; returns the worst cosine to FP32."""
    import onnx

    reference = _embed(path, check_inputs)
    with tempfile.TemporaryDirectory() as tmp:
        converted = Path(tmp) / "model.onnx"
        if precision == "fp16":
            from onnxruntime.transformers.float16 import convert_float_to_float16

            model = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
            onnx.save(model, str(converted))
        elif precision == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(path), str(converted), weight_type=QuantType.QInt8)
        else:
            raise PipelineError(f"Unknown precision {precision!r}.")
        got = _embed(converted, check_inputs)
        cosine = float(np.min(np.sum(got * reference, axis=1) / np.linalg.norm(got, axis=1)))
        if not cosine >= MIN_COSINE[precision]:
            raise PipelineError(
                f"The {precision} version of {path.parent.parent.name} drifts too far from FP32 "
                f"(cosine {cosine:.4f} < {MIN_COSINE[precision]}); keep fp32 for this model."
            )
        shutil.move(str(converted), str(path))
    return cosine
