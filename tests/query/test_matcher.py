"""Queries end to end on real components: ranking, filters, levels, caching, model identity and a lost MongoDB."""

from __future__ import annotations

import json
import logging

import pytest

from pipeline.errors import InvalidInput, ModelMismatch
from pipeline.ingestion.ingest import ingest
from pipeline.model_build.build_model import build_model
from pipeline.processes.mongo_server import LocalMongoServer
from pipeline.service import Pipeline
from pipeline.types import Filters

from ..conftest import shared


@pytest.fixture
def seeded(pipeline):
    ingest(pipeline, shared("seed_sample", "catalog.jsonl"), progress=False)
    return pipeline


def _rows():
    return [json.loads(line) for line in shared("seed_sample", "catalog.jsonl").read_text().splitlines()]


def test_own_text_and_own_photo_come_first(seeded):
    for row in _rows():
        by_text = seeded.matcher.match_text(row["text"], top_k=3)
        assert by_text.matches[0].id == row["id"]
        by_photo = seeded.matcher.match_image(shared("seed_sample", row["image_path"]), top_k=3)
        assert by_photo.matches[0].id == row["id"]
        assert by_photo.matches[0].score == pytest.approx(1.0, abs=1e-4)
        assert by_photo.matches[0].level == "match"
    first = by_photo.matches[0]
    assert first.brand and first.category and first.price and first.image.endswith(".jpg")


def test_filters(seeded):
    only_apparel = seeded.matcher.match_text("headphones", top_k=10, filters=Filters(categories=("Apparel / Jackets",)))
    assert only_apparel.matches and {m.category for m in only_apparel.matches} == {"Apparel / Jackets"}
    cheap = seeded.matcher.match_text("headphones", top_k=10, filters=Filters(max_price=100))
    assert cheap.matches and all(m.price <= 100 for m in cheap.matches)
    sony = seeded.matcher.match_text("jacket", top_k=10, filters=Filters(brands=("Sony",), min_price=350))
    assert {m.brand for m in sony.matches} == {"Sony"} and all(m.price >= 350 for m in sony.matches)
    nothing = seeded.matcher.match_text("jacket", filters=Filters(brands=("NoSuchBrand",)))
    assert nothing.matches == [] and nothing.best_level == "none"


def test_levels_follow_the_thresholds(settings, seeded):
    result = seeded.matcher.match_image(shared("seed_sample", "images", "Test_image.jpg"), top_k=10)
    scores = [m.score for m in result.matches]
    assert scores == sorted(scores, reverse=True)
    seeded.close()  # one process may open a local Qdrant folder once
    strict = Pipeline(settings.with_(match_threshold=1.01, similar_threshold=1.01))
    try:
        assert {
            m.level for m in strict.matcher.match_image(shared("seed_sample", "images", "Test_image.jpg")).matches
        } == {"none"}
    finally:
        strict.close()


def test_bad_queries_are_clear(seeded):
    with pytest.raises(InvalidInput, match="type a description"):
        seeded.matcher.match_text("   ")
    long = seeded.matcher.match_text("x" * 100_000)
    assert long.matches and "only its first 1000 characters" in long.warnings[0]
    with pytest.raises(InvalidInput, match="not a supported image"):
        seeded.matcher.match_image(b"GIF89a garbage")
    with pytest.raises(InvalidInput, match="upload a photo"):
        seeded.matcher.match_image(None)
    with pytest.raises(InvalidInput, match="between 1 and 100"):
        seeded.matcher.match_text("jacket", top_k=0)
    long_text = "black jacket with many pockets " * 30  # within the character limit, beyond 77 tokens: truncated
    assert seeded.matcher.match_text(long_text).matches
    seeded.events.flush()
    errors = list(seeded.mongo["log_db"]["system_logs"].find({"kind": "error"}))
    assert len(errors) == 4 and all(e["error"] for e in errors)  # the long text is answered (cut), not an error


def test_cache_survives_restart_and_re_ingest_invalidates(settings, seeded):
    first = seeded.matcher.match_text("black noise cancelling headphones")
    again = seeded.matcher.match_text("black noise cancelling headphones")
    assert not first.cache_hit and again.cache_hit
    assert [m.id for m in again.matches] == [m.id for m in first.matches]
    seeded.close()
    restarted = Pipeline(settings)
    try:
        after_restart = restarted.matcher.match_text("black noise cancelling headphones")
        assert after_restart.cache_hit and [m.to_json() for m in after_restart.matches] == [
            m.to_json() for m in first.matches
        ]
        # Re-ingest a catalogue where the top product changed: the cache must not serve the old answer.
        rows = _rows()
        top = first.matches[0].id
        folder = settings.data_dir / "changed"
        folder.mkdir()
        for row in rows:
            row["image_path"] = str(shared("seed_sample", row["image_path"]))
            if row["id"] == top:
                row["name"] = "Renamed product"
        (folder / "catalog.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
        ingest(restarted, folder / "catalog.jsonl", images_dir=shared("seed_sample", "images"), progress=False)
        fresh = restarted.matcher.match_text("black noise cancelling headphones")
        assert not fresh.cache_hit
        assert {m.id: m.name for m in fresh.matches}[top] == "Renamed product"
    finally:
        restarted.close()


def test_index_built_by_another_model_is_an_error(settings, seeded, clip_folder, tmp_path):
    other_repo = tmp_path / "other"
    build_model(source=str(clip_folder), out=other_repo, precision="int8")
    seeded.close()
    other = Pipeline(settings.with_(model_repository=other_repo))
    try:
        with pytest.raises(ModelMismatch, match="another model"):
            other.matcher.match_text("jacket")
    finally:
        other.close()


def test_mongo_stopped_while_matching(tmp_path, model_repo, caplog):
    from pipeline.settings import Settings

    server = LocalMongoServer(tmp_path / "mongo")
    uri = server.start()
    pipe = Pipeline(
        Settings(data_dir=tmp_path / "data", model_repository=model_repo, mongodb_uri=uri, mongo_timeout_ms=500)
    )
    try:
        ingest(pipe, shared("seed_sample", "catalog.jsonl"), progress=False)
        assert pipe.matcher.match_text("beige headphones").matches
        server.stop()
        caplog.set_level(logging.INFO, logger="pipeline.events")
        result = pipe.matcher.match_text("navy track jacket with gold stripes")
        assert result.matches and result.matches[0].name and result.matches[0].category
        assert "details are unavailable" in result.warnings[0]
        pipe.events.flush()
        assert any("event" in r.getMessage() and "match" in r.getMessage() for r in caplog.records)
        with pytest.raises(InvalidInput):
            pipe.matcher.match_text("")
        pipe.events.flush()
        assert pipe.events.fallbacks >= 2
    finally:
        pipe.close()
        server.stop()


def _catalogue_file(folder, rows, name="catalog.jsonl"):
    """The rows as a catalogue in ``folder``, beside a copy of the seed photos (relative paths, as users write them)."""
    import shutil

    if not (folder / "images").is_dir():
        shutil.copytree(shared("seed_sample", "images"), folder / "images")
    path = folder / name
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def test_two_collections_never_share_cached_answers(settings):
    """Same query, same result cache, same catalogue version (1) in both: the collection's own id keeps them apart,
    whether the second collection is another QDRANT_COLLECTION or the same name after its folder was deleted."""
    rows = _rows()
    query = rows[0]["text"]
    first = _catalogue_file(settings.data_dir / "cat", rows[:5], "a.jsonl")
    second = _catalogue_file(settings.data_dir / "cat", rows[5:], "b.jsonl")
    with Pipeline(settings) as pipe:
        ingest(pipe, first, progress=False)
        answer_a = pipe.matcher.match_text(query)
        assert pipe.matcher.match_text(query).cache_hit and answer_a.catalog_version == 1
    ids_b = {r["id"] for r in rows[5:]}
    with Pipeline(settings.with_(qdrant_collection="other")) as pipe:
        ingest(pipe, second, progress=False)
        answer_b = pipe.matcher.match_text(query)
        assert not answer_b.cache_hit and answer_b.catalog_version == 1
        assert {m.id for m in answer_b.matches} == ids_b
    import shutil

    shutil.rmtree(settings.vectors_path / "products")
    with Pipeline(settings) as pipe:
        ingest(pipe, second, progress=False)
        rebuilt = pipe.matcher.match_text(query)
        assert not rebuilt.cache_hit and {m.id for m in rebuilt.matches} == ids_b


def test_sync_and_delete_are_never_answered_again(pipeline, settings):
    seeded = pipeline
    rows = _rows()
    ingest(seeded, _catalogue_file(settings.data_dir / "cat", rows, "all.jsonl"), progress=False)
    query = rows[3]["text"]
    before = seeded.matcher.match_text(query, top_k=10)
    assert before.matches[0].id == rows[3]["id"] and seeded.matcher.match_text(query, top_k=10).cache_hit
    kept = [r for r in rows if r["id"] != rows[3]["id"]]
    report = ingest(seeded, _catalogue_file(settings.data_dir / "cat", kept, "kept.jsonl"), sync=True, progress=False)
    assert (report.deleted, report.unchanged, report.added) == (1, 9, 0)
    assert report.catalog_version > before.catalog_version
    after = seeded.matcher.match_text(query, top_k=10)
    assert not after.cache_hit and rows[3]["id"] not in {m.id for m in after.matches}
    assert seeded.index.count() == 9 and seeded.store.count() == 9
    photo = seeded.matcher.match_image(shared("seed_sample", rows[3]["image_path"]), top_k=10)
    assert rows[3]["id"] not in {m.id for m in photo.matches}

    from pipeline.ingestion.ingest import delete_products

    gone, unknown = delete_products(seeded, [rows[0]["id"], "no-such-id"])
    assert (gone, unknown) == ([rows[0]["id"]], ["no-such-id"])
    assert rows[0]["id"] not in {m.id for m in seeded.matcher.match_text(rows[0]["text"], top_k=10).matches}
    assert seeded.store.get_many([rows[0]["id"]]) == {} and seeded.index.count() == 8
    two = _catalogue_file(settings.data_dir / "cat", rows[:2], "two.jsonl")
    report = ingest(seeded, two, reset=True, progress=False)
    assert report.added == 2 and seeded.index.count() == 2 and seeded.store.count() == 2, "--reset empties MongoDB too"


def test_filter_choices_are_the_index_facets_with_counts(seeded):
    from app.handlers import filter_choices

    categories, brands = filter_choices(seeded)
    assert ("Apparel / Jackets (3)", "Apparel / Jackets") in categories
    assert dict((v, label) for label, v in brands)["Sony"] == "Sony (4)"
