"""Triton model configurations (``config.pbtxt``) for the two CLIP towers.

Two flavours of the same repository:

* ``backend="python"`` (default, CPU): what the ``nvidia-pytriton`` wheel can serve, since it ships Triton's Python
  backend only. ``1/model.py`` (a copy of ``pipeline/inference/triton_python_model.py``) runs onnxruntime on the
  ``1/model.onnx`` beside it, one call per dynamic batch.
* ``backend="onnxruntime"`` (GPU): for NVIDIA's Triton container, which has the onnxruntime backend; Triton runs the
  ONNX file itself on the GPU, so no ``model.py`` is written (and a stale one is removed).

The text is written by hand rather than through protobuf so that building a model needs neither tritonclient[grpc] nor
protobuf in the app's environment; the format is small and fixed.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from ..model_repo import (
    IDENTITY_PARAMETER,
    OUTPUT,
    TEXT_INPUTS,
    TEXT_MODEL,
    VISUAL_INPUT,
    VISUAL_MODEL,
    ModelCard,
    text_sequence_dim,
)

#: file copied to ``<model>/1/model.py`` for the Python backend
PYTHON_MODEL_SOURCE = Path(__file__).resolve().parents[1] / "inference" / "triton_python_model.py"

BACKENDS = ("python", "onnxruntime")

#: How long Triton may hold a request to wait for company. Measured here (2 cores, one CPU instance, tiny test model,
#: 1 client / 8 clients): 0 us: 0.5 ms per query, 3300 req/s; 1 ms: 1.7 ms, 2800 req/s; 2 ms: 3.2 ms, 1950 req/s; 5 ms:
#: 7.0 ms, 1130 req/s. With one instance, requests that arrive while it computes are batched anyway (even at 0 us:
#: 441 executions for 620 requests), so the delay mostly adds latency for a lone client. With the ViT-B/32 towers
#: (bench/triton_vs_inprocess.py) the mean batch at 8 clients was 4.0 at 0 us, 4.1 at 200 us and 4.2 at 1 ms, while
#: 1 ms cost a lone text query (11.6 ms in-process) 8 %: 100 us lets requests that arrive together merge, for ~1 %.
DEFAULT_QUEUE_DELAY_US = 100

#: Triton string parameter holding ``ModelCard.identity``: lets a client tell which weights a running server holds

_DATA_TYPES = {"TYPE_FP32", "TYPE_FP16", "TYPE_INT64", "TYPE_INT32", "TYPE_INT8", "TYPE_UINT8", "TYPE_BOOL"}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a Triton model; ``dims`` exclude the batch axis (Triton adds it: max_batch_size > 0)."""

    name: str
    data_type: str  # Triton spelling: "TYPE_INT64", "TYPE_FP32", ...
    dims: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.data_type not in _DATA_TYPES:
            raise ValueError(f"unknown Triton data type {self.data_type!r} for tensor {self.name!r}")
        object.__setattr__(self, "dims", tuple(int(d) for d in self.dims))

    def to_pbtxt(self) -> str:
        dims = ", ".join(str(d) for d in self.dims)
        return f'  {{\n    name: "{self.name}"\n    data_type: {self.data_type}\n    dims: [ {dims} ]\n  }}'


def text_specs(card: ModelCard) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs/outputs of ``clip_text``: token ids and mask (the client pads a batch to one length)."""
    inputs = [TensorSpec(name, "TYPE_INT64", (text_sequence_dim(card),)) for name in TEXT_INPUTS]
    return inputs, [TensorSpec(OUTPUT, "TYPE_FP32", (card.embedding_dim,))]


def visual_specs(card: ModelCard) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs/outputs of ``clip_visual``: preprocessed pixels [3, S, S]."""
    size = card.image_size
    inputs = [TensorSpec(VISUAL_INPUT, "TYPE_FP32", (3, size, size))]
    return inputs, [TensorSpec(OUTPUT, "TYPE_FP32", (card.embedding_dim,))]


def render_config(
    name: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    max_batch_size: int = 64,
    backend: str = "python",
    instances: int = 1,
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
    intra_op_threads: int | None = None,
    parameters: dict[str, str] | None = None,
) -> str:
    """The ``config.pbtxt`` text for one model (see the module docstring for the two backends)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown Triton backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if max_batch_size < 1 or instances < 1:
        raise ValueError("max_batch_size and instances must be at least 1")
    if backend == "python":
        head = 'backend: "python"'
        kind = "KIND_CPU"
    else:
        head = 'platform: "onnxruntime_onnx"\nbackend: "onnxruntime"'
        kind = "KIND_GPU"
    lines = [
        f'name: "{name}"',
        head,
        f"max_batch_size: {max_batch_size}",
        "input [\n" + ",\n".join(spec.to_pbtxt() for spec in inputs) + "\n]",
        "output [\n" + ",\n".join(spec.to_pbtxt() for spec in outputs) + "\n]",
        f"instance_group [\n  {{\n    kind: {kind}\n    count: {instances}\n  }}\n]",
        f"dynamic_batching {{\n  max_queue_delay_microseconds: {max_queue_delay_us}\n}}",
    ]
    params = dict(parameters or {})
    if backend == "python" and intra_op_threads:
        # read by triton_python_model.py; without it the model splits the machine's cores between its instances
        params["intra_op_thread_count"] = str(int(intra_op_threads))
    for key, value in params.items():
        lines.append(f'parameters {{\n  key: "{key}"\n  value: {{ string_value: "{value}" }}\n}}')
    return "\n".join(lines) + "\n"


def write_triton_model(
    model_dir: Path,
    name: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    max_batch_size: int = 64,
    backend: str = "python",
    instances: int = 1,
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
    intra_op_threads: int | None = None,
    parameters: dict[str, str] | None = None,
) -> None:
    """Write ``model_dir/config.pbtxt`` and, for the Python backend, ``model_dir/1/model.py``.

    ``model_dir/1/model.onnx`` is written by the caller (build-model); it is not checked here so that the config can be
    written before or after the export. ``parameters`` become Triton string parameters (e.g. ``model_identity``, which
    the Triton backend's ``check()`` compares with the local model card).
    """
    model_dir = Path(model_dir)
    text = render_config(
        name, inputs, outputs, max_batch_size, backend, instances, max_queue_delay_us, intra_op_threads, parameters
    )
    version_dir = model_dir / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(text)
    model_py = version_dir / "model.py"
    if backend == "python":
        shutil.copyfile(PYTHON_MODEL_SOURCE, model_py)
    elif model_py.exists():
        model_py.unlink()  # the onnxruntime backend needs none, and a stale one would only confuse a reader


def write_clip_models(
    repo: Path,
    card: ModelCard,
    backend: str = "python",
    max_batch_size: int = 64,
    instances: int = 1,
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
) -> None:
    """Write the configs of both towers from the model card: the one call build-model needs."""
    for model, specs in ((TEXT_MODEL, text_specs(card)), (VISUAL_MODEL, visual_specs(card))):
        inputs, outputs = specs
        write_triton_model(
            Path(repo) / model,
            model,
            inputs,
            outputs,
            max_batch_size=max_batch_size,
            backend=backend,
            instances=instances,
            max_queue_delay_us=max_queue_delay_us,
            parameters={IDENTITY_PARAMETER: card.identity},
        )
