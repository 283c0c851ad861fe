"""The quantization notebook runs top to bottom (code cells in order, as a kernel would) on a tiny CLIP: it builds the
four precisions, compares them with compare-models on the demo catalogue and draws speed against agreement."""

from __future__ import annotations

import contextlib
import io
import json

from PIL import Image

from ..conftest import REPO_ROOT


def test_quantization_notebook_runs(tmp_path, clip_folder, monkeypatch):
    for name, value in {"SOURCE": str(clip_folder), "WORK": str(tmp_path), "LIMIT": "20", "ROUNDS": "1",
                        "CALIBRATION_ROWS": "20"}.items():  # fmt: skip
        monkeypatch.setenv(f"NOTEBOOK_{name}", value)
    notebook = json.loads((REPO_ROOT / "notebooks" / "quantization.ipynb").read_text())
    namespace: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for cell in notebook["cells"]:
            if cell["cell_type"] == "code":
                exec(compile("".join(cell["source"]), "quantization.ipynb", "exec"), namespace)
    table = out.getvalue()
    assert "img/s@32" in table and "photo t1/t10" in table
    assert all(f"{p} (repo-{p})" in table for p in ("fp32", "fp16", "int8", "int8-static"))
    assert [r[0] for r in namespace["rows"]] == ["fp32", "fp16", "int8", "int8-static"]
    sizes = {r[0]: r[1] for r in namespace["rows"]}
    assert sizes["int8"] < sizes["fp32"] and sizes["fp16"] < sizes["fp32"] and sizes["int8-static"] < sizes["fp32"]
    assert namespace["cards"]["int8-static"].extra["calibration"]["rows"] == 20
    assert namespace["report"]["rows"] == 20 and all(0 <= r[4] <= 1 for r in namespace["rows"])
    with Image.open(namespace["plot"]) as plot:
        assert plot.size == (640, 420)
