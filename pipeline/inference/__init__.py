"""Inference backends: the same ONNX towers run in-process (onnxruntime) or by a Triton server."""
