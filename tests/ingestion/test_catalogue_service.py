"""The catalogue service the CLI and the app both call: modes, deletion with the version, the near-duplicate report."""

from __future__ import annotations

import pytest

from pipeline.errors import InvalidInput
from pipeline.ingestion.catalogue import Catalogue, DuplicatesReport

from ..conftest import shared


def test_ingest_delete_and_duplicates_through_the_service(pipeline):
    catalogue = Catalogue(pipeline)
    report = catalogue.ingest(shared("seed_sample", "catalog.jsonl"), progress=False)
    assert (report.rows, report.added, report.bad) == (10, 10, [])
    done = catalogue.delete(["1", "nope"])
    assert (done.deleted, done.unknown, done.catalog_version) == (["1"], ["nope"], pipeline.index.version())
    found = catalogue.duplicates(0.5)  # a random model sees every photo alike: pairs, with the products' names
    assert found.pairs and found.to_json() == {"threshold": 0.5, "pairs": found.pairs}
    first = found.pairs[0]
    assert f"  {first['cosine']:.4f}  {first['a']} ({found.names[first['a']]})  ~  {first['b']}" in found.render()
    with pytest.raises(InvalidInput, match="Choose how to import: update, sync, replace"):
        catalogue.ingest_upload(None, None, mode="merge")


def test_the_duplicates_report_in_words():
    none = DuplicatesReport(0.995, [], {})
    assert none.render() == "No two products have near-identical photos (cosine >= 0.995)."
    one = DuplicatesReport(0.99, [{"a": "a1", "b": "b2", "cosine": 0.99912}], {"a1": "Tee"})
    assert one.render() == ("1 pair of products with near-identical photos (cosine >= 0.99):\n"
                            "  0.9991  a1 (Tee)  ~  b2 ()")  # fmt: skip
