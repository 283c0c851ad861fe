"""The quantization notebook runs top to bottom (code cells in order, as a kernel would) on a tiny CLIP."""

from __future__ import annotations

import contextlib
import io
import json

from ..conftest import REPO_ROOT


def test_quantization_notebook_runs(tmp_path, clip_folder, monkeypatch):
    monkeypatch.setenv("NOTEBOOK_SOURCE", str(clip_folder))
    monkeypatch.setenv("NOTEBOOK_WORK", str(tmp_path))
    notebook = json.loads((REPO_ROOT / "notebooks" / "quantization.ipynb").read_text())
    namespace: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for cell in notebook["cells"]:
            if cell["cell_type"] == "code":
                exec(compile("".join(cell["source"]), "quantization.ipynb", "exec"), namespace)
    table = out.getvalue()
    assert "precision" in table and "int8" in table and "fp16" in table
    assert {r[0] for r in namespace["rows"]} == {"fp32", "fp16", "int8"}
    sizes = {r[0]: r[1] for r in namespace["rows"]}
    assert sizes["int8"] < sizes["fp32"] and sizes["fp16"] < sizes["fp32"]
