"""Reading a shard's files ahead (pipeline/storage/vectors/page_cache.py): what is asked for, and that nothing it
meets can break an open. The names themselves are checked against a shard built by the pinned engine in
test_vector_store.py (test_edge_quantized_storage_searches_the_graph_and_rescores)."""

from __future__ import annotations

import json

import pytest

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
    assert names(page_cache.hot_list(pinned)) == {"payload_storage/page_0.dat"}  # read right after the open
    later = ["vector_storage-image/matrix.dat", "vector_storage-text/matrix.dat"]  # then only with warm_after_open
    assert [f"{p.parent.name}/{p.name}" for p in page_cache.originals_on_disk(pinned)] == later
    in_ram = shard(tmp_path / "b", memory="cached", compact="cold")
    opened = names(page_cache.files_read_on_open(in_ram))  # the originals held in RAM: read whole on opening
    assert "vector_storage-image/matrix.dat" in opened and "vector_storage-image/quantized.data" not in opened
    hot = [f"{p.parent.name}/{p.name}" for p in page_cache.compact_on_disk(in_ram)]  # mapped: read after the open
    assert hot == ["vector_storage-image/quantized.data", "vector_storage-text/quantized.data"]
    assert names(page_cache.hot_list(in_ram)) == {*hot, "payload_storage/page_0.dat"}  # a few KB: they fit
    assert page_cache.originals_on_disk(in_ram) == page_cache.compact_on_disk(pinned) == []


def test_read_ahead_asks_for_every_byte_and_skips_what_went_away(tmp_path):
    root = shard(tmp_path)
    files = page_cache.files_read_on_open(root)
    gone = root / "segments" / "s1" / "vanished.data"
    size = sum(f.stat().st_size for f in files)
    assert page_cache.read_ahead([*files, gone]) == size
    assert page_cache.read_ahead([gone, *files], steady=True) == size
    assert page_cache.files_read_on_open(tmp_path / "no-such-shard") == []


def test_originals_are_warmed_only_when_they_fit_in_free_memory(tmp_path):
    originals = page_cache.originals_on_disk(shard(tmp_path))  # 8,000 bytes
    assert page_cache.fits(originals, available=16_000)
    assert not page_cache.fits(originals, available=15_999)
    assert not page_cache.fits(originals, available=None)
    assert page_cache.warm_list(tmp_path / "no-such-shard") == page_cache.hot_list(tmp_path / "no-such-shard") == []


def test_large_files_are_read_by_a_child_and_small_ones_here(tmp_path, monkeypatch):
    files = page_cache.files_read_on_open(shard(tmp_path))
    assert page_cache.read_in_background(files) is None  # a few KB: read ahead in this process
    monkeypatch.setattr(page_cache, "IN_PROCESS_BELOW", 0)
    child = page_cache.read_in_background(files)
    assert child is not None and child.wait(timeout=60) == 0  # the module runs as the child, standard library only
    assert child.args[4:] == [str(p) for p in files]
    later = page_cache.originals_on_disk(shard(tmp_path / "b"))
    both = page_cache.read_in_background(files, later)  # the second list steadily, after the first
    assert both is not None and both.wait(timeout=60) == 0
    assert both.args[4:] == [*map(str, files), "--steady", *map(str, later)]
    assert page_cache.read_in_background([]) is None and page_cache.read_in_background([], []) is None


@pytest.mark.parametrize("compact", ["cold", "pinned"])
def test_an_opened_shard_is_read_ahead_then_its_hot_files_then_the_originals_if_told(tmp_path, monkeypatch, compact):
    """A real Edge shard: one child reads the open's files while the engine opens it; once open, another reads at full
    speed what every first query reads (compact copies left on disk, payloads), then, only with warm_after_open, the
    float32 originals steadily."""
    import numpy as np

    from pipeline.model_repo import ModelCard
    from pipeline.storage.vectors import IndexedProduct, IndexTuning
    from pipeline.storage.vectors.edge import EdgeVectorStore

    root = tmp_path / "v"
    store = EdgeVectorStore(root, IndexTuning(compact_memory=compact))
    try:
        store.ensure(ModelCard("m", "clip", "s", "-", "fp32", 8, 77, 224, {"s": "0"}))
        vectors = np.eye(8, dtype=np.float32)
        with store.changing():
            store.upsert([IndexedProduct(f"p{i}", vectors[i], vectors[i], {"category": "Shoes"}) for i in range(8)])
    finally:
        store.close()
    shard_dir = root / "shard"
    # an appendable chunk for each dense vector (image, text and the stored fused one) and the row offsets of the two
    # held per photo
    assert len(page_cache.compact_on_disk(shard_dir)) == (5 if compact == "cold" else 0)
    assert page_cache.payloads(shard_dir) and page_cache.originals_on_disk(shard_dir)
    monkeypatch.setattr(page_cache, "IN_PROCESS_BELOW", 0)  # children even for a tiny shard
    for warm in (True, False):
        again = EdgeVectorStore(root, IndexTuning(warm_after_open=warm))  # the shard keeps how it was built
        try:
            # the text vectors, searched only at another weight than the stored fused vectors', are not read ahead
            skip = ("text",)
            hot = [str(p) for p in page_cache.compact_on_disk(shard_dir, skip) + page_cache.payloads(shard_dir)]
            originals = [str(p) for p in page_cache.originals_on_disk(shard_dir, skip)]
            assert not any("vector_storage-text" in a for a in hot + originals)
            assert any("vector_storage-fused" in a for a in originals)
            opening, after = (r.args[4:] for r in again._read_ahead.children)
            assert any("quantized" in a for a in opening) is (compact == "pinned")
            assert after == ([*hot, "--steady", *originals] if warm else hot)
            assert again.warmed(timeout=60)
            assert [r.returncode for r in again._read_ahead.children] == [0, 0]
            assert [h.product_id for h in again.search(vectors[3], "image", 1)] == ["p3"]
        finally:
            again.close()
