"""The search endpoints as plain functions, without a page or a server: the flat signature the API shows, and how the
shared parameters reach the pipeline."""

from __future__ import annotations

import inspect
from pathlib import Path
from types import SimpleNamespace

import pytest

from app import endpoints as e
from app import handlers as h
from pipeline.types import Filters, MatchResult

SHARED = ["top_k", "categories", "brands", "min_price", "max_price"]


class FakeMatcher:
    def __init__(self):
        self.calls = []

    def match_text(self, text, top_k, filters, diverse):
        self.calls.append((text, top_k, filters, diverse))
        return MatchResult(kind="text", matches=[], cache_hit=False, timings_ms={"total": 1.0}, catalog_version=1)


@pytest.fixture
def search(tmp_path: Path):
    pipe = SimpleNamespace(settings=SimpleNamespace(photos_path=tmp_path), matcher=FakeMatcher())
    return e.Search(pipe, info=h.PageInfo("model", "backend", "vectors", "metadata"))


@pytest.mark.parametrize(
    ("fn", "query", "own"),
    [
        (e.match_image, "image", ["refine", "refine_weight", "diverse"]),
        (e.match_text, "text", ["diverse"]),
        (e.similar, "product_id", ["diverse"]),
    ],
)
def test_the_api_takes_the_query_then_the_shared_parameters_then_its_own(search, fn, query, own):
    signature = inspect.signature(e.api(fn, search, top_k=5, refine_weight=0.25))
    assert list(signature.parameters) == [query, *SHARED, *own]
    assert signature.parameters[query].default is inspect.Parameter.empty
    defaults = {name: p.default for name, p in signature.parameters.items() if name != query}
    assert defaults["top_k"] == 5
    assert all(defaults[name] is None for name in SHARED[1:])
    assert defaults["diverse"] is False
    if "refine_weight" in defaults:
        assert defaults["refine_weight"] == 0.25


def test_the_shared_parameters_become_the_filters(search):
    endpoint = e.api(e.match_text, search, top_k=5)
    gallery, data, state = endpoint("red shirt", 3, ["Shirts"], "Acme", 0, 20, True)
    assert search.pipe.matcher.calls == [
        ("red shirt", 3, Filters(categories=("Shirts",), brands=("Acme",), min_price=None, max_price=20.0), True)
    ]
    assert gallery == [] and data["matches"] == [] and state["matches"] == []
    endpoint("blue shirt")  # every parameter after the query has a default
    assert search.pipe.matcher.calls[-1] == ("blue shirt", 5, Filters(), False)
