"""evaluate: metrics through the real pipeline, the brute-force check (it catches a broken one), calibration."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from pipeline.model_repo import ModelCard
from pipeline.ops import evaluate as ev
from pipeline.service import Pipeline
from pipeline.storage.vectors import Hit, VectorStore

from ..conftest import shared


@pytest.fixture
def own_queries(tmp_path):
    """Each seed product's own text and own photo, plus bad rows; paths relative to the queries file."""
    seed = shared("seed_sample")
    rows = [json.loads(line) for line in (seed / "catalog.jsonl").read_text().splitlines()]
    (tmp_path / "queries").symlink_to(seed / "images")
    lines = [json.dumps({"text": r["text"], "relevant": [r["id"]]}) for r in rows]
    lines += [json.dumps({"image": "queries/" + r["image_path"].split("/")[-1], "product_id": r["id"]}) for r in rows]
    lines += [
        "{broken",
        json.dumps({"text": "no labels"}),
        json.dumps({"image": "queries/nope.jpg", "product_id": "1"}),
    ]
    path = tmp_path / "queries.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def isolated_settings(settings, tmp_path, clip_folder):
    """A model repository of this test's own, since calibration rewrites the model card."""
    import shutil

    repo = tmp_path / "models"
    shutil.copytree(settings.model_repository, repo)
    return settings.with_(model_repository=repo)


def test_known_answers_and_check(isolated_settings, own_queries):
    report = ev.run(isolated_settings, shared("seed_sample", "catalog.jsonl"), own_queries, check=True, progress=False)
    assert report["overall"]["queries"] == 20
    assert report["overall"]["recall@1"] == 1.0 and report["overall"]["mrr"] == 1.0
    assert set(report["by_kind"]) == {"text", "image"}
    assert report["check"]["ok"]
    assert len(report["bad_rows"]) == 3
    assert any("not valid JSON" in b for b in report["bad_rows"])
    assert any("not found beside the queries file" in b for b in report["bad_rows"])
    assert "Electronics / Audio / Headphones" in report["by_category"]
    text = ev.render(report)
    assert "R@1" in text and "check: the pipeline equals" in text


def test_check_fails_on_a_shuffled_id_mapping(isolated_settings, own_queries, monkeypatch):
    real_search, real_text = VectorStore.search, VectorStore.search_text

    def shuffle(hits):
        ids = [h.product_id for h in hits]
        random.Random(0).shuffle(ids)
        return [Hit(pid, h.score, h.payload) for pid, h in zip(ids, hits, strict=True)]

    monkeypatch.setattr(VectorStore, "search", lambda self, *a, **k: shuffle(real_search(self, *a, **k)))
    monkeypatch.setattr(VectorStore, "search_text", lambda self, *a, **k: shuffle(real_text(self, *a, **k)))
    with pytest.raises(ev.CheckFailed, match="disagrees with the brute-force reference"):
        ev.run(isolated_settings, shared("seed_sample", "catalog.jsonl"), own_queries, check=True, progress=False)


def test_calibration_writes_thresholds_the_matcher_uses(isolated_settings, own_queries):
    assert not ModelCard.load(isolated_settings.model_repository).thresholds_calibrated
    report = ev.run(
        isolated_settings, shared("seed_sample", "catalog.jsonl"), own_queries, do_calibrate=True, progress=False
    )
    found = report["calibrated_thresholds"]
    card = ModelCard.load(isolated_settings.model_repository)
    assert card.thresholds_calibration.startswith("evaluate --calibrate on catalog.jsonl (text from 10 labelled")
    from app import handlers as h

    with Pipeline(isolated_settings) as pipe:
        assert h.UNCALIBRATED_NOTICE not in h.page_info(pipe).problems
    assert card.threshold("image") == (found["image"]["match"], found["image"]["similar"])
    assert card.threshold("text") == (found["text"]["match"], found["text"]["similar"])
    # Every own-photo query is right at rank 1, so its score (1.0) is at or above the calibrated match threshold.
    assert report["levels_after_calibration"]["first_relevant"].get("match") == 20
    from pipeline.ingestion.ingest import ingest

    with Pipeline(isolated_settings) as pipe:
        ingest(pipe, shared("seed_sample", "catalog.jsonl"), progress=False)
        result = pipe.matcher.match_image(shared("seed_sample", "images", "Mango-1.jpg"), top_k=3)
        assert result.matches[0].level == "match"
        below = [m for m in result.matches[1:] if m.score < found["image"]["similar"]]
        assert all(m.level == "none" for m in below)


def test_calibrate_unit():
    q = ev.Query(1, "image", "x", {"a"})
    results = [
        ev.Ranked(q, ["a"], [0.95]),
        ev.Ranked(q, ["a"], [0.9]),
        ev.Ranked(q, ["b"], [0.8]),
        ev.Ranked(q, ["a"], [0.7]),
    ]
    thresholds = ev.calibrate(results)["image"]
    assert thresholds["match"] == 0.9  # precision 1.0 down to 0.9, 2/3 at 0.8
    assert thresholds["similar"] == 0.7  # 3/4 right at 0.7 >= 0.5


def test_check_accepts_float_level_ties_and_nothing_else():
    """The tie rule that failed on a 2,946-product catalogue: two products 1e-5 apart may come in either order (the
    pipeline's scores are float32, rounded to 6 decimals); a real misordering or a wrong score still fails."""
    q = ev.Query(1, "text", "x", {"b"})
    ids = ["a", "b", "c", "d"]
    scores = np.array([0.500010, 0.500000, 0.4, 0.3])
    ref = ev.Reference(ids, scores, ev.Ranked(q, ["a", "b", "c"], [0.50001, 0.5, 0.4]))
    assert ev.ranking_errors(ev.Ranked(q, ["a", "b", "c"], [0.50001, 0.5, 0.4]), ref) == []
    assert ev.ranking_errors(ev.Ranked(q, ["b", "a", "c"], [0.5, 0.50001, 0.4]), ref) == []
    assert ev.ranking_errors(ev.Ranked(q, ["a", "c", "b"], [0.50001, 0.4, 0.5]), ref)  # 0.1 apart: wrong order
    assert ev.ranking_errors(ev.Ranked(q, ["a", "b", "d"], [0.50001, 0.5, 0.3]), ref)  # d is not in the top 3
    assert ev.ranking_errors(ev.Ranked(q, ["c", "b", "a"], [0.50001, 0.5, 0.4]), ref)  # ids swapped under scores


def test_check_over_hnsw_reports_recall_and_still_checks_every_score():
    """Over an HNSW index a missed neighbour is reported as recall against exact search, not as a failure; a score
    that is not the product's true score fails either way."""
    q = ev.Query(1, "image", "x", {"a"})
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    ref = ev.Reference(["a", "b", "c", "d"], scores, ev.Ranked(q, ["a", "b"], [0.9, 0.8]))
    approximate = [ev.Ranked(q, ["a", "c"], [0.9, 0.7])]  # HNSW missed b
    check = ev._compare(approximate, [ref], exact=False)
    assert check["ok"] and check["recall_vs_exact"] == 0.5 and check["queries_differing"] == 1
    with pytest.raises(ev.CheckFailed):
        ev._compare(approximate, [ref], exact=True)
    with pytest.raises(ev.CheckFailed):
        ev._compare([ev.Ranked(q, ["a", "c"], [0.9, 0.8])], [ref], exact=False)  # c does not score 0.8


def _hybrid_reference(scores: dict[str, float], lexical: list[str], top_k: int, exact=()) -> ev.Reference:
    from pipeline.storage.vectors.lexical import fuse_rankings

    q = ev.Query(1, "text", "q", set())
    ids = list(scores)
    dense = sorted(ids, key=lambda p: -scores[p])
    names = {p: ("SKU-" + p, "name " + p) for p in ids}
    query = "name " + next(iter(exact)) if exact else "q"
    top = fuse_rankings(dense, lexical, names, query, top_k, 60)
    fusion = ev.Fusion(lexical, frozenset(exact), 60, len(ids))
    return ev.Reference(ids, np.array([scores[p] for p in ids]), ev.Ranked(q, top, [scores[p] for p in top]), fusion)


def test_the_hybrid_check_allows_dense_ties_and_nothing_else():
    """A near-tie in the dense scores (float32 against float64) may swap two fused ranks; a real change may not."""

    def errors(ref: ev.Reference, order: list[str]) -> list[str]:
        scores = dict(zip(ref.ids, ref.scores, strict=True))
        return ev.ranking_errors(ev.Ranked(ref.ranked.query, order, [float(scores[p]) for p in order]), ref)

    tie = _hybrid_reference({"a": 0.9, "b": 0.8, "c": 0.8 + 1e-7, "d": 0.5, "e": 0.1}, lexical=["d"], top_k=3)
    assert tie.ranked.ids == ["d", "a", "c"] and not errors(tie, tie.ranked.ids)
    assert not errors(tie, ["d", "a", "b"]), "b and c tie in the dense ranking: either may be third"
    clear = _hybrid_reference({"a": 0.9, "b": 0.8, "c": 0.85, "d": 0.5, "e": 0.1}, lexical=["d"], top_k=3)
    assert clear.ranked.ids == ["d", "a", "c"] and errors(clear, ["d", "a", "b"]), "c clearly outranks b"
    assert errors(clear, ["a", "d", "c"]), "a wrong order"
    assert errors(clear, ["d", "a", "e"]), "a product that outranks nothing kept"
    assert errors(clear, ["d", "a"]), "fewer results than the reference"
    assert errors(clear, ["d", "a", "a"]), "a product twice"

    pinned = _hybrid_reference({"a": 0.9, "b": 0.8, "e": 0.1}, lexical=["e", "b"], top_k=3, exact={"e"})
    assert pinned.ranked.ids[0] == "e" and not errors(pinned, pinned.ranked.ids)
    assert errors(pinned, [*pinned.ranked.ids[1:], "e"]), "the exact name match must come first"
