"""Reading a shard's files ahead (pipeline/storage/vectors/page_cache.py): what is asked for, and that nothing it
meets can break an open. The names themselves are checked against a shard built by the pinned engine in
test_vector_store.py (test_edge_quantized_storage_searches_the_graph_and_rescores)."""

from __future__ import annotations

import json

from pipeline.storage.vectors import page_cache


def shard(tmp_path, memory: str = "cold", compact: str = "pinned"):
    root = tmp_path / "shard"
    seg = root / "segments" / "s1"
    vectors = {}
    for name in ("image", "text"):
        (seg / f"vector_storage-{name}").mkdir(parents=True)
        (seg / f"vector_storage-{name}" / "matrix.dat").write_bytes(b"v" * 4000)
        (seg / f"vector_storage-{name}" / "quantized.data").write_bytes(b"q" * 1000)
        (seg / f"vector_index-{name}").mkdir()
        (seg / f"vector_index-{name}" / "links_compressed.bin").write_bytes(b"l" * 300)
        vectors[name] = {"memory": memory, "quantization_config": {"turbo": {"memory": compact, "bits": "bits8"}}}
    (seg / "id_tracker.mappings").write_bytes(b"i" * 50)
    (seg / "payload_index" / "f-category-map").mkdir(parents=True)
    (seg / "payload_index" / "f-category-map" / "point_to_values.bin").write_bytes(b"p" * 70)
    (seg / "payload_storage").mkdir()
    (seg / "payload_storage" / "page_0.dat").write_bytes(b"x" * 9000)
    (root / "edge_config.json").write_text(json.dumps({"vectors": vectors}))
    return root


def names(paths) -> set[str]:
    return {f"{p.parent.name}/{p.name}" for p in paths}


def test_what_is_read_on_opening_follows_the_built_config(tmp_path):
    pinned = shard(tmp_path / "a")
    assert names(page_cache.files_read_on_open(pinned)) == {
        "vector_storage-image/quantized.data",
        "vector_storage-text/quantized.data",
        "vector_index-image/links_compressed.bin",
        "vector_index-text/links_compressed.bin",
        "s1/id_tracker.mappings",
        "f-category-map/point_to_values.bin",
    }  # the payloads and the float32 originals stay on disk until asked for
    later = ["payload_storage/page_0.dat", "vector_storage-image/matrix.dat", "vector_storage-text/matrix.dat"]
    assert [f"{p.parent.name}/{p.name}" for p in page_cache.read_from_disk(pinned)] == later
    in_ram = shard(tmp_path / "b", memory="cached", compact="cold")
    opened = names(page_cache.files_read_on_open(in_ram))  # the originals held in RAM: read whole on opening
    assert "vector_storage-image/matrix.dat" in opened and "vector_storage-image/quantized.data" not in opened
    hot = [f"{p.parent.name}/{p.name}" for p in page_cache.compact_on_disk(in_ram)]  # mapped: read after the open
    assert hot == ["vector_storage-image/quantized.data", "vector_storage-text/quantized.data"]
    assert names(page_cache.hot_list(in_ram)) == set(hot)  # a few KB: they fit
    assert names(page_cache.read_from_disk(in_ram)) == {"payload_storage/page_0.dat"}
    assert page_cache.compact_on_disk(pinned) == page_cache.hot_list(pinned) == []


def test_read_ahead_asks_for_every_byte_and_skips_what_went_away(tmp_path):
    root = shard(tmp_path)
    files = page_cache.files_read_on_open(root)
    gone = root / "segments" / "s1" / "vanished.data"
    size = sum(f.stat().st_size for f in files)
    assert page_cache.read_ahead([*files, gone]) == size
    assert page_cache.read_ahead([gone, *files], steady=True) == size
    assert page_cache.files_read_on_open(tmp_path / "no-such-shard") == []


def test_originals_are_warmed_only_when_they_fit_in_free_memory(tmp_path):
    originals = page_cache.read_from_disk(shard(tmp_path))[1:]  # 8,000 bytes
    assert page_cache.fits(originals, available=16_000)
    assert not page_cache.fits(originals, available=15_999)
    assert not page_cache.fits(originals, available=None)
    assert page_cache.warm_list(tmp_path / "no-such-shard") == []


def test_large_files_are_read_by_a_child_and_small_ones_here(tmp_path, monkeypatch):
    files = page_cache.files_read_on_open(shard(tmp_path))
    assert page_cache.read_in_background(files) is None  # a few KB: read ahead in this process
    monkeypatch.setattr(page_cache, "IN_PROCESS_BELOW", 0)
    child = page_cache.read_in_background(files)
    assert child is not None and child.wait(timeout=60) == 0  # the module runs as the child, standard library only
    assert child.args[4:] == [str(p) for p in files]
    later = page_cache.read_from_disk(shard(tmp_path / "b"))
    both = page_cache.read_in_background(files, later)  # the second list steadily, after the first
    assert both is not None and both.wait(timeout=60) == 0
    assert both.args[4:] == [*map(str, files), "--steady", *map(str, later)]
    assert page_cache.read_in_background([]) is None and page_cache.read_in_background([], []) is None


def test_an_opened_shard_is_read_ahead_and_warmed_unless_told_not_to(tmp_path, monkeypatch):
    """A real Edge shard: the open's files read by one child, what queries read by another (VECTOR_WARM=0: none)."""
    import numpy as np

    from pipeline.model_repo import ModelCard
    from pipeline.storage.vectors import IndexedProduct, IndexTuning
    from pipeline.storage.vectors.edge import EdgeVectorStore

    root = tmp_path / "v"
    store = EdgeVectorStore(root, IndexTuning())
    try:
        store.ensure(ModelCard("m", "clip", "s", "-", "fp32", 8, 77, 224, {"s": "0"}))
        vectors = np.eye(8, dtype=np.float32)
        with store.changing():
            store.upsert([IndexedProduct(f"p{i}", vectors[i], vectors[i], {"category": "Shoes"}) for i in range(8)])
    finally:
        store.close()
    monkeypatch.setattr(page_cache, "IN_PROCESS_BELOW", 0)  # children even for a tiny shard
    for warm, children in ((True, 2), (False, 1)):
        again = EdgeVectorStore(root, IndexTuning(warm_after_open=warm))
        try:
            assert len(again._readers) == children and again.warmed(timeout=60)
            assert [r.returncode for r in again._readers] == [0] * children
            assert [h.product_id for h in again.search(vectors[3], "image", 1)] == ["p3"]
        finally:
            again.close()


def test_compact_copies_left_on_disk_are_read_after_the_open_even_without_warming(tmp_path, monkeypatch):
    """compact_memory cold: the open skips the compact copies and every query reads them, so a child reads them at
    full speed once the shard is open, before (and without) the steady warming."""
    import numpy as np

    from pipeline.model_repo import ModelCard
    from pipeline.storage.vectors import IndexedProduct, IndexTuning
    from pipeline.storage.vectors.edge import EdgeVectorStore

    root = tmp_path / "v"
    store = EdgeVectorStore(root, IndexTuning(compact_memory="cold"))
    try:
        store.ensure(ModelCard("m", "clip", "s", "-", "fp32", 8, 77, 224, {"s": "0"}))
        vectors = np.eye(8, dtype=np.float32)
        with store.changing():
            store.upsert([IndexedProduct(f"p{i}", vectors[i], vectors[i], {"category": "Shoes"}) for i in range(8)])
    finally:
        store.close()
    compact = [str(p) for p in page_cache.compact_on_disk(root / "shard")]
    assert len(compact) == 2  # image and text (an appendable segment's chunk)
    monkeypatch.setattr(page_cache, "IN_PROCESS_BELOW", 0)
    for warm in (True, False):
        again = EdgeVectorStore(root, IndexTuning(warm_after_open=warm))
        try:
            after = again._readers[-1].args[4:]
            assert after[: len(compact)] == compact and ("--steady" in after) is warm
            assert again.warmed(timeout=60)
            assert [h.product_id for h in again.search(vectors[3], "image", 1)] == ["p3"]
        finally:
            again.close()
