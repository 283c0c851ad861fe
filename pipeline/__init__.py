"""Product matching: CLIP-style embeddings (ONNX, in-process or Triton), Qdrant vectors, MongoDB metadata."""
