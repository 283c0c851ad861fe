"""The one way this project opens an onnxruntime session on the CPU (the app, the build's checks, quantisation).

Spinning is off: two towers are two intra-op pools, and a pool that spins after a run steals the other's cores (and the
vector search's): alternating text and photo queries ran 1.7x slower (bench/README.md). The Triton Python model opens
its own session (it runs in Triton's interpreter, which cannot import this package).
"""

from __future__ import annotations

from pathlib import Path


def cpu_session(path: Path, threads: int = 0):
    """An ``onnxruntime.InferenceSession`` for ``path``; ``threads`` 0 lets onnxruntime use every core."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
