"""The held-out split README's quality table is measured on: stable, disjoint, complete."""

from __future__ import annotations

from bench.holdout import half_of, split_data

from .conftest import shared


def test_split_is_disjoint_complete_and_stable():
    data = shared("fashion").parent
    first, again = split_data(data), split_data(data)
    for name in ("fashion", "grocery_store"):
        tune = {r["id"] for r in first["tune"][name].catalog}
        held = {r["id"] for r in first["heldout"][name].catalog}
        everything = {r["id"] for r in first["all"][name].catalog}
        assert tune and held and not tune & held and tune | held == everything
        assert held == {r["id"] for r in again["heldout"][name].catalog}
        assert all(half_of(pid) == "heldout" for pid in held)
        for queries in first["heldout"][name].queries.values():
            for q in queries:
                relevant = q.get("relevant") or [q["product_id"]]
                assert relevant and set(relevant) <= held, "a held-out query only names held-out products"
