"""Search that shoppers expect: hybrid keyword + vector, more like this, photo + words, diversity, near-duplicates.

With the tests' random small CLIP (it knows nothing: only the lexical side can put the right product first) and,
where meaning is needed, the offline model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pipeline.ingestion.duplicates import near_duplicates, threshold_for
from pipeline.ingestion.ingest import ingest
from pipeline.service import Pipeline
from pipeline.types import Filters

from ..conftest import shared


def _rows(name="seed_sample"):
    return [json.loads(x) for x in shared(name, "catalog.jsonl").read_text().splitlines() if x.strip()]


@pytest.fixture
def seeded(pipeline):
    ingest(pipeline, shared("seed_sample", "catalog.jsonl"), progress=False)
    return pipeline


def test_sku_and_exact_name_come_first_even_with_a_model_that_knows_nothing(seeded):
    for row in _rows():
        for query in (row["SKU"], row["name"], row["SKU"].lower().replace("-", " ")):
            result = seeded.matcher.match_text(query, top_k=5)
            assert result.matches[0].id == row["id"], (query, [m.id for m in result.matches])


def test_stop_words_alone_fall_back_to_the_dense_ranking(seeded):
    dense = seeded.index.search_text(seeded.encoder.encode_texts(["the and of"])[0], seeded.card.text_weight, 5)
    result = seeded.matcher.match_text("the and of", top_k=5)
    assert [m.id for m in result.matches] == [h.product_id for h in dense] and len(result.matches) == 5


def test_hybrid_scores_stay_dense_cosines_and_levels_follow_them(seeded):
    row = _rows()[6]
    result = seeded.matcher.match_text(row["SKU"], top_k=10)
    q = seeded.encoder.encode_texts([row["SKU"]])[0]
    exact = {h.product_id: h.score for h in seeded.index.search_text(q, seeded.card.text_weight, 10)}
    for m in result.matches:
        assert m.score == pytest.approx(exact[m.id], abs=1e-5)  # the dense cosine, whatever the rank
        match_t, similar_t = seeded.card.threshold("text")
        assert m.level == (
            "match" if m.score + 1e-6 >= match_t else "similar" if m.score + 1e-6 >= similar_t else "none"
        )


def test_hybrid_can_be_switched_off(settings):
    with Pipeline(settings.with_(hybrid_search=False)) as pipe:
        ingest(pipe, shared("seed_sample", "catalog.jsonl"), progress=False)
        row = _rows()[2]
        dense = pipe.index.search_text(pipe.encoder.encode_texts([row["SKU"]])[0], pipe.card.text_weight, 5)
        assert [m.id for m in pipe.matcher.match_text(row["SKU"], top_k=5).matches] == [h.product_id for h in dense]


def test_more_like_this_excludes_the_product_and_honours_filters(seeded):
    rows = _rows()
    result = seeded.matcher.similar(rows[0]["id"], top_k=5)
    assert rows[0]["id"] not in [m.id for m in result.matches] and len(result.matches) == 5
    vectors = seeded.index.vectors([r["id"] for r in rows], "image")
    others = sorted((r["id"] for r in rows[1:]), key=lambda pid: -float(vectors[pid] @ vectors[rows[0]["id"]]))
    assert [m.id for m in result.matches] == others[:5], "nearest by the stored photo vectors"
    jackets = seeded.matcher.similar(rows[0]["id"], top_k=5, filters=Filters(categories=("Apparel / Jackets",)))
    assert jackets.matches and {m.category for m in jackets.matches} == {"Apparel / Jackets"}
    with pytest.raises(Exception, match="no product"):
        seeded.matcher.similar("nope")


def test_photo_plus_words_moves_the_results(seeded):
    rows = _rows()
    photo = shared("seed_sample", rows[0]["image_path"])
    plain = seeded.matcher.match_image(photo, top_k=3)
    words = seeded.matcher.match_image(photo, top_k=3, refine=rows[6]["text"], refine_weight=1.0)
    text = seeded.matcher.match_text(rows[6]["text"], top_k=3)
    assert plain.matches[0].id == rows[0]["id"]
    # weight 1: the words alone (dense), as the text query's dense side
    dense = seeded.index.search_text(seeded.encoder.encode_texts([rows[6]["text"]])[0], seeded.card.text_weight, 3)
    assert [m.id for m in words.matches] == [h.product_id for h in dense]
    assert text.matches[0].id == rows[6]["id"]
    with pytest.raises(Exception, match="from 0 to 1"):
        seeded.matcher.match_image(photo, refine="red", refine_weight=1.5)


def test_diversity_lowers_near_copies_in_the_top_ten(pipeline, tmp_path):
    """Five copies of one photo under five ids: without MMR they fill the top of a query for that photo, with it the
    page shows one of them and then other products."""
    source = shared("seed_sample")
    folder = tmp_path / "cat"
    shutil.copytree(source / "images", folder / "images")
    rows = _rows()
    copies = [dict(rows[4], id=f"copy-{i}", SKU=f"SKU-COPY-{i}") for i in range(5)]
    (folder / "catalog.jsonl").write_text("\n".join(json.dumps(r) for r in rows + copies))
    ingest(pipeline, folder / "catalog.jsonl", progress=False)
    photo = folder / rows[4]["image_path"]
    twins = {rows[4]["id"], *(c["id"] for c in copies)}
    plain = pipeline.matcher.match_image(photo, top_k=10)
    diverse = pipeline.matcher.match_image(photo, top_k=10, diverse=True)
    assert sum(m.id in twins for m in plain.matches[:6]) == 6
    assert sum(m.id in twins for m in diverse.matches[:6]) < 6 and diverse.matches[0].id in twins
    assert not plain.cache_hit and not diverse.cache_hit, "the option is part of the cache key"


def test_duplicates_finds_the_byte_identical_fashion_pairs(pipeline):
    ingest(pipeline, shared("fashion", "catalog.jsonl"), progress=False)
    pairs = near_duplicates(pipeline.index, None, 0.9999)
    found = {(p["a"], p["b"]) for p in pairs}
    assert {("31102", "34260"), ("40925", "40926")} <= found
    assert all(p["cosine"] >= 0.9999 for p in pairs)
    report = ingest(pipeline, shared("seed_sample", "catalog.jsonl"), progress=False)
    threshold = threshold_for(pipeline.card)  # a random model sees every photo alike: pairs, all above it
    assert report.duplicates and all(d["cosine"] >= threshold for d in report.duplicates)
    assert "near-identical photos" in report.summary() and report.to_json()["duplicates"] == report.duplicates


def test_duplicates_command_and_match_options(cli_run):
    out = cli_run("duplicates", "--json")
    data = json.loads(out.stdout)
    assert {"threshold", "pairs"} <= set(data)
    similar = json.loads(cli_run("match", "--similar", "1", "--top-k", "3", "--json").stdout)
    assert "1" not in [m["id"] for m in similar["matches"]] and len(similar["matches"]) == 3
    refined = cli_run("match", "--image", str(shared("seed_sample", "images", "Adidas-1.jpg")), "--refine", "in red",
                      "--diverse", "--json")  # fmt: skip
    assert json.loads(refined.stdout)["matches"]


@pytest.fixture
def cli_run(tmp_path, model_repo):
    import os
    import subprocess
    import sys

    from ..conftest import REPO_ROOT

    env = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URI", "QDRANT_URL", "TRITON_URL")}
    env.update(DATA_DIR=str(tmp_path / "data"), MODEL_REPOSITORY=str(model_repo), HF_HUB_OFFLINE="1")

    def run(*args):
        proc = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return proc

    run("ingest", str(shared("seed_sample", "catalog.jsonl")))
    return run


def test_unit_vectors_are_unit():  # the mixing of photo and words keeps a unit vector
    from pipeline.query.matcher import _towards

    v = _towards(np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), 0.3)
    assert np.linalg.norm(v) == pytest.approx(1.0)


def test_hybrid_order_needs_product_ids_only_for_its_contenders():
    """The store reads payloads only for the lexical matches and the contenders before pinning: the order must be
    the one every product id gives (sorted here over every key, as the definition says), ties (equal fused ranks)
    and pinned names included."""
    from pipeline.storage.vectors.lexical import RankFusion, fuse_rankings, pinned

    rng = np.random.default_rng(7)
    pinned_seen = 0
    for trial in range(300):
        keys = [f"k{i:03d}" for i in range(40)]
        dense = list(rng.permutation(keys)[: rng.integers(0, 30)])
        lexical = list(rng.permutation(keys)[: rng.integers(0, 30)])
        ids = {k: f"id-{rng.integers(0, 10**6):06d}" for k in keys}  # tie-break order unlike the keys'
        query = "red scarf"
        names = {k: (None, "Red  Scarf!" if rng.random() < 0.05 else f"thing {k} red") for k in lexical}
        limit = int(rng.integers(1, 12))
        rrf = {k: sum(1.0 / (20 + r.index(k) + 1) for r in (dense, lexical) if k in r) for k in set(dense + lexical)}
        first = pinned(lexical, names, query)
        pinned_seen += bool(first)
        full = sorted(rrf, key=lambda k: (k not in first, -rrf[k], ids[k]))[:limit]
        assert fuse_rankings(dense, lexical, names, query, limit, 20, ids) == full, trial
        before = RankFusion(dense, lexical, 20).contenders(limit)  # what the store reads, before it knows the names
        known = {k: ids[k] for k in before | set(lexical)}
        assert fuse_rankings(dense, lexical, names, query, limit, 20, known) == full, trial
    assert pinned_seen > 10  # the pinned names were exercised


def test_a_pinned_name_is_the_query_whatever_its_case_spacing_and_punctuation():
    from pipeline.storage.vectors.lexical import pinned

    names = {"a": (None, "Red  Scarf!"), "b": ("RS-1", "scarf red"), "c": (None, "red scarfs"), "d": (None, None)}
    assert pinned(list(names), names, "red scarf") == {"a"}
    assert pinned(list(names), names, "rs 1") == {"b"}  # the SKU
    assert pinned(list(names), names, "  ") == set()
