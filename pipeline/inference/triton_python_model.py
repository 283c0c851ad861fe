"""Triton Python-backend model: runs the ``model.onnx`` beside it with onnxruntime, one call per dynamic batch.

``pipeline.model_build.triton_repo.write_triton_model`` copies this file to ``<model>/1/model.py``. It runs inside
Triton's Python stub, whose interpreter sees only the Triton venv (numpy, onnxruntime) and
``triton_python_backend_utils``, so it imports nothing from ``pipeline``. Tensor names and types come from the model
config, so one file serves both towers.

Why one onnxruntime call per ``execute``: Triton's dynamic batcher hands over all the requests it merged; running them
as one batch is what makes batching pay off (better GEMM shapes, one pass of overhead) instead of N small runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

_ONNX_TYPES = {"TYPE_FP32": "tensor(float)", "TYPE_FP16": "tensor(float16)", "TYPE_INT64": "tensor(int64)"}


def _parameter(config: dict, key: str) -> str | None:
    value = config.get("parameters", {}).get(key, {}).get("string_value")
    return value or None


def _instance_count(config: dict) -> int:
    return max(1, sum(int(group.get("count", 1)) for group in config.get("instance_group", [])) or 1)


class TritonPythonModel:
    """One instance = one onnxruntime session (Triton starts one stub process per instance)."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        self.model_name = args.get("model_name", config.get("name", "?"))
        self.input_names = [spec["name"] for spec in config["input"]]
        self.output_names = [spec["name"] for spec in config["output"]]
        self.input_dtypes = {
            spec["name"]: pb_utils.triton_string_to_numpy(spec["data_type"]) for spec in config["input"]
        }

        path = Path(__file__).resolve().parent / "model.onnx"
        if not path.is_file():  # fall back to what Triton says, should the stub have loaded us from elsewhere
            path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"

        threads = _parameter(config, "intra_op_thread_count")
        options = ort.SessionOptions()
        # Split the cores between instances instead of letting each one spawn a thread per core and fight.
        options.intra_op_num_threads = (
            int(threads) if threads else max(1, (os.cpu_count() or 1) // _instance_count(config))
        )
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle intra-op threads that spin after a batch take the cores tritonserver needs to receive the next one.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])

        # Raised here, a mismatch lands in Triton's log and the model fails to load: better than failing per request.
        onnx_types = {t.name: t.type for t in [*self.session.get_inputs(), *self.session.get_outputs()]}
        wrong = []
        for spec in [*config["input"], *config["output"]]:
            want = _ONNX_TYPES.get(spec["data_type"])
            got = onnx_types.get(spec["name"])
            if got is None or (want and got != want):
                wrong.append(f"{spec['name']} {spec['data_type']} (ONNX: {got or 'absent'})")
        if wrong:
            raise RuntimeError(
                f"{self.model_name}: config.pbtxt and {path} disagree on {', '.join(wrong)}; "
                "rebuild the model repository with build-model."
            )

    def _run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.output_names, feed)

    def execute(self, requests: list) -> list:
        """Concatenate every request of the dynamic batch, run once, split the outputs back per request."""
        arrays: dict[str, list[np.ndarray]] = {name: [] for name in self.input_names}
        sizes: list[int] = []
        for request in requests:
            for name in self.input_names:
                tensor = pb_utils.get_input_tensor_by_name(request, name)
                arrays[name].append(np.asarray(tensor.as_numpy(), dtype=self.input_dtypes[name]))
            sizes.append(int(arrays[self.input_names[0]][-1].shape[0]))

        feed = {name: parts[0] if len(parts) == 1 else np.concatenate(parts) for name, parts in arrays.items()}
        try:
            outputs = self._run(feed)
        except Exception as exc:  # reported to the client, never crashes the stub
            if len(requests) == 1:
                return [self._error(exc)]
            # One bad request must not fail the others it was batched with: retry them one by one.
            return [
                self._execute_one({name: arrays[name][i] for name in self.input_names}) for i in range(len(requests))
            ]

        bounds = np.cumsum(sizes)[:-1]
        per_output = [np.split(out, bounds) for out in outputs]
        return [
            pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor(name, np.ascontiguousarray(per_output[j][i]))
                    for j, name in enumerate(self.output_names)
                ]
            )
            for i in range(len(requests))
        ]

    def _execute_one(self, feed: dict[str, np.ndarray]):
        try:
            outputs = self._run(feed)
        except Exception as exc:  # reported to the client
            return self._error(exc)
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(name, out) for name, out in zip(self.output_names, outputs, strict=True)]
        )

    def _error(self, exc: Exception):
        message = f"{self.model_name}: onnxruntime failed: {type(exc).__name__}: {exc}"
        return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))

    def finalize(self) -> None:
        self.session = None
