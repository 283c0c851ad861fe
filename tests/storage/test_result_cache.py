"""The result cache damaged under a running pipeline, for real: its folder deleted, its database overwritten. A query
never fails because of it; the folder is rebuilt and answers are cached again."""

from __future__ import annotations

import logging
import shutil

from pipeline.ingestion.ingest import ingest
from pipeline.storage.result_cache import DB_FILE, ResultCache

from ..conftest import shared

QUERY = "navy track jacket with gold stripes"


def _answer(pipe) -> list[str]:
    return [m.id for m in pipe.matcher.match_text(QUERY).matches]


def test_a_deleted_cache_folder_is_rebuilt_and_queries_keep_working(pipeline, caplog):
    ingest(pipeline, shared("seed_sample", "catalog.jsonl"), progress=False)
    first = _answer(pipeline)
    folder = pipeline.settings.cache_path
    assert (folder / DB_FILE).is_file() and len(pipeline.cache) > 0
    shutil.rmtree(folder)
    with caplog.at_level(logging.WARNING, logger="pipeline.cache"):
        assert _answer(pipeline) == first
        assert pipeline.matcher.match_text("beige headphones").matches  # a new answer is stored: the folder comes back
    assert (folder / DB_FILE).is_file() and pipeline.cache.rebuilds == 1
    assert any("is damaged" in r.getMessage() for r in caplog.records)
    assert _answer(pipeline) == first and len(pipeline.cache) > 0, "answers are cached again"


def test_a_corrupted_cache_database_is_rebuilt(pipeline, caplog):
    ingest(pipeline, shared("seed_sample", "catalog.jsonl"), progress=False)
    first = _answer(pipeline)
    db = pipeline.settings.cache_path / DB_FILE
    db.write_bytes(b"this is not an SQLite database" * 1000)
    others = ["beige headphones", "red cap", "white sneakers", "leather bag"]
    with caplog.at_level(logging.WARNING, logger="pipeline.cache"):
        assert _answer(pipeline) == first
        answers = [pipeline.matcher.match_text(q).matches for q in others]
        assert all(answers)
        len(pipeline.cache)  # SQLite notices the damage once it reads the overwritten pages (here at the latest)
    assert pipeline.cache.rebuilds == 1 and any("is damaged" in r.getMessage() for r in caplog.records)
    assert _answer(pipeline) == first and len(pipeline.cache) > 0


def test_a_cache_corrupted_while_stopped_opens_empty(tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / DB_FILE).write_bytes(b"\x00garbage" * 512)
    cache = ResultCache(tmp_path / "cache")
    cache.set("k", [1, 2])
    assert cache.get("k") == [1, 2] and cache.rebuilds == 1
    cache.close()
