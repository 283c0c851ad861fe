"""compare-models: the documented fields for each variant, through the command line, and one sentence per mistake;
repositories of different models (families, embedding sizes) side by side on recall, speed and size only."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from pipeline import model_repo as mr
from pipeline.cli import main
from pipeline.model_build.build_model import build_model
from pipeline.ops.compare_models import NOT_COMPARED, agreement, same_model, self_rankings
from tests.support.random_families import save_random_open_clip

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
    assert NOT_COMPARED not in table and "n/a" not in table  # precisions of one model: everything compared
    report = json.loads(out.read_text())
    assert report["rows"] == 40 and report["agreement_k"] == 10 and report["reference"] == str(variants[0])
    assert report["models_differ"] is False and all(v["same_model_as_reference"] for v in report["variants"])
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


@pytest.fixture(scope="module")
def open_clip_repo(tmp_path_factory) -> Path:
    """Another family beside the small CLIP: an open_clip SigLIP-style model (64-d, a fixed text length of 64,
    squash resize, 0.5 mean/std), built by build-model from open_clip's own config made small."""
    root = tmp_path_factory.mktemp("cmp-open-clip")
    folder = save_random_open_clip(root / "open_clip_siglip", kind="siglip")
    build_model(str(folder), root / "model_repository")
    return root / "model_repository"


def test_models_of_different_families_are_compared_on_recall_speed_and_size_only(
    variants, open_clip_repo, tmp_path, capsys
):
    """The CLIP reference, an open_clip SigLIP of another embedding size, and the CLIP's own INT8: the SigLIP gets
    recall, speed and size and no agreement (its vectors are in another space), the INT8 still its agreement."""
    catalog = shared("fashion", "catalog.jsonl")
    queries = shared("fashion", "queries_names.jsonl")
    out = tmp_path / "across.json"
    repos = [variants[0], open_clip_repo, variants[1]]
    args = ["compare-models", *map(str, repos), "--catalog", str(catalog), "--queries", str(queries)]
    assert main([*args, "--limit", "40", "--rounds", "1", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["models_differ"] is True
    clip, siglip, int8 = report["variants"]
    assert [(v["family"], v["embedding_dim"]) for v in (clip, siglip)] == [("clip", 32), ("open_clip", 64)]
    assert siglip["same_model_as_reference"] is False and siglip["not_compared"] == NOT_COMPARED
    assert siglip["cosine_to_reference"] is None and siglip["agreement"] is None
    assert int8["same_model_as_reference"] is True and int8["cosine_to_reference"]["image"]["mean"] > 0.9
    assert 0 <= int8["agreement"]["photo_queries"]["top10"] <= 1
    for entry in report["variants"]:
        assert set(entry["speed"]) == SPEEDS and all(value > 0 for value in entry["speed"].values())
        assert {"recall@1", "recall@5", "recall@10", "mrr"} <= set(entry["recall"]["overall"])
        assert entry["size_mib"]["total"] > 0
    assert siglip["speedup_vs_reference"]["images_per_s@32"] > 0
    lines = table.splitlines()
    assert lines[1].split()[:2] == ["model", "MiB"] and "x ref" in lines[1] and "x fp32" not in lines[1]
    # every repository is a "model_repository": the table names each by its last two path parts
    name = f"open_clip open_clip_siglip (fp32), 64-d ({open_clip_repo.parent.name}/model_repository)"
    siglip_row = next(line for line in lines if line.startswith(name))
    assert siglip_row.split()[-7:-3] == ["n/a"] * 4  # cos img, cos txt, photo and text agreement; then R@1/5/10
    int8_row = next(line for line in lines if line.startswith(f"clip {clip['model'].split(' (')[0]} (int8), 32-d"))
    assert "n/a" not in int8_row
    note = next(line for line in lines if line.startswith(NOT_COMPARED))
    assert note == (
        f"{NOT_COMPARED} for {name}: another model than the reference (family, weights or embedding size), whose "
        "vectors are in another space; recall, speed and size are side by side."
    )


def test_without_queries_a_cross_family_report_says_where_recall_comes_from(model_repo, open_clip_repo, capsys):
    assert main(["compare-models", str(model_repo), str(open_clip_repo), "--catalog", str(DEMO_CATALOG),
                 "--limit", "8", "--rounds", "1"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    assert captured.err.count("error") == 0
    assert captured.out.rstrip().endswith("; pass --queries for recall@k, the quality measure across models.")


def test_same_model_means_same_weights_family_and_size(model_repo):
    card = mr.ModelCard.load(model_repo)
    assert same_model(card, dataclasses.replace(card, precision="int8", sha256={"clip_text": "x"}))
    assert same_model(card, dataclasses.replace(card, source="/elsewhere/same-folder"))  # local: the weights' digest
    assert not same_model(card, dataclasses.replace(card, revision="local-0123456789ab"))  # other weights
    assert not same_model(card, dataclasses.replace(card, family="open_clip"))
    assert not same_model(card, dataclasses.replace(card, embedding_dim=card.embedding_dim * 2))
    tagged = dataclasses.replace(card, family="open_clip", revision="webli", source="ViT-B-16-SigLIP")
    assert same_model(tagged, dataclasses.replace(tagged, precision="fp16"))
    assert not same_model(tagged, dataclasses.replace(tagged, source="ViT-L-16-SigLIP-384"))  # a tag names no weights


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
