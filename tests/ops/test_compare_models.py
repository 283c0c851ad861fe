"""compare-models: the documented fields for each variant, through the command line, and one sentence per mistake."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.model_build.build_model import build_model
from pipeline.ops.compare_models import agreement, self_rankings

from ..conftest import DEMO_CATALOG, shared

VARIANT_FIELDS = {"repo", "model", "precision", "identity", "calibration", "size_mib", "cosine_to_reference",
                  "agreement", "speed", "speedup_vs_reference"}  # fmt: skip
SPEEDS = {"images_per_s@1", "images_per_s@32", "texts_per_s@1", "texts_per_s@32"}


@pytest.fixture(scope="module")
def variants(tmp_path_factory, clip_folder, model_repo) -> list:
    """fp32 (the session's small CLIP), dynamic and static INT8 of the same checkpoint."""
    out = [model_repo]
    for precision in ("int8", "int8-static"):
        repo = tmp_path_factory.mktemp(f"cmp-{precision}") / "model_repository"
        calibration = DEMO_CATALOG if precision == "int8-static" else None
        build_model(str(clip_folder), repo, precision, calibration=calibration, calibration_rows=20)
        out.append(repo)
    return out


def test_compare_models_writes_every_documented_field(variants, tmp_path, capsys):
    catalog = shared("fashion", "catalog.jsonl")
    queries = shared("fashion", "queries_names.jsonl")
    out = tmp_path / "compare.json"
    args = ["compare-models", *map(str, variants), "--catalog", str(catalog), "--queries", str(queries)]
    assert main([*args, "--limit", "40", "--rounds", "1", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "img/s@32" in table and "R@10" in table and "int8-static" in table
    report = json.loads(out.read_text())
    assert report["rows"] == 40 and report["agreement_k"] == 10 and report["reference"] == str(variants[0])
    assert report["queries"]["queries"] > 0 and report["machine"]["cores"] >= 1
    assert [v["precision"] for v in report["variants"]] == ["fp32", "int8", "int8-static"]
    for entry in report["variants"]:
        assert set(entry) >= VARIANT_FIELDS and set(entry["speed"]) == SPEEDS
        assert all(value > 0 for value in entry["speed"].values())
        assert set(entry["size_mib"]) == {"text", "image", "total"}
        for tower in ("image", "text"):
            assert -1 <= entry["cosine_to_reference"][tower]["min"] <= entry["cosine_to_reference"][tower]["mean"] <= 1
        for kind in ("photo_queries", "text_queries"):
            assert 0 <= entry["agreement"][kind]["top1"] <= 1 and 0 <= entry["agreement"][kind]["top10"] <= 1
        assert {"recall@1", "recall@5", "recall@10", "mrr"} <= set(entry["recall"]["overall"])
    reference = report["variants"][0]
    assert reference["cosine_to_reference"]["image"]["min"] > 0.9999
    assert reference["agreement"]["photo_queries"] == {"top1": 1.0, "top10": 1.0}
    assert reference["speedup_vs_reference"]["images_per_s@32"] == 1.0
    assert report["variants"][2]["calibration"]["file"] == DEMO_CATALOG.name
    sizes = [v["size_mib"]["image"] for v in report["variants"]]
    assert sizes[1] < sizes[0] and sizes[2] < sizes[0]


def test_rankings_leave_the_query_product_out_and_agreement_counts_overlap():
    rng = np.random.default_rng(0)
    images = rng.standard_normal((12, 8))
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    ranks = self_rankings(images, images.copy(), 0.5, 10)
    assert all(i not in row for i, row in enumerate(ranks["photo_queries"].tolist()))
    assert agreement(ranks["photo_queries"], ranks["photo_queries"]) == {"top1": 1.0, "top10": 1.0}
    shifted = np.roll(ranks["photo_queries"], 1, axis=1)  # same sets, another best product
    assert agreement(ranks["photo_queries"], shifted) == {"top1": 0.0, "top10": 1.0}


@pytest.mark.parametrize(
    ("change", "sentence"),
    [
        ({"repo": "missing"}, "The model repository {tmp}/missing does not exist."),
        ({"catalog": "nope.jsonl"}, "The catalogue file {tmp}/nope.jsonl does not exist."),
    ],
)
def test_a_bad_path_is_one_sentence(model_repo, tmp_path, capsys, change, sentence):
    repo = str(tmp_path / change["repo"]) if "repo" in change else str(model_repo)
    catalog = str(tmp_path / change["catalog"]) if "catalog" in change else str(DEMO_CATALOG)
    assert main(["compare-models", str(model_repo), repo, "--catalog", catalog]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {sentence.format(tmp=tmp_path)}\n"
