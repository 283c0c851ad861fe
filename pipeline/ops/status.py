"""``status``: which model, which backends, whether each answers, and the catalogue's size and version."""

from __future__ import annotations

from ..errors import PipelineError
from ..model_repo import ModelCard


def _probe(fn) -> tuple[bool, object]:
    try:
        return True, fn()
    except PipelineError as err:
        return False, str(err)
    except Exception as err:  # status reports every failure instead of dying on the first
        return False, f"{type(err).__name__}: {err}"


def _model(settings) -> tuple[dict, ModelCard | None]:
    ok, card = _probe(lambda: ModelCard.load(settings.model_repository))
    if not ok:
        return {"ok": False, "error": card}, None
    return {
        "ok": True,
        "name": card.name,
        "kind": card.kind,
        "precision": card.precision,
        "identity": card.identity,
        "embedding_dim": card.embedding_dim,
        "source": card.source,
        "revision": card.revision,
        "repository": str(settings.model_repository),
    }, card


def collect(pipeline) -> dict:
    settings = pipeline.settings
    report: dict = {}
    report["model"], card = _model(settings)

    inference = {"backend": f"Triton at {settings.triton_url}" if settings.triton_url else "in-process onnxruntime"}
    if card is not None:
        ok, detail = _probe(lambda: pipeline.encoder.backend.description)
        inference.update(ok=ok, detail=detail)
    else:
        inference.update(ok=False, detail="no model")
    report["inference"] = inference

    ok, stats = _probe(lambda: pipeline.index.stats())
    qdrant: dict = {"ok": ok}
    if ok:
        info = pipeline.index.info()
        qdrant.update(
            stats,
            mode=f"{stats['engine']} at {stats['where']}",
            products=stats.get("points", 0),
            catalog_version=info.catalog_version,
            collection_id=info.collection_id,
            built_by=info.model_name,
            model_matches=not info.exists or card is None or info.model_identity == card.identity,
            fused_weight=info.fused_weight,
        )
    else:
        qdrant.update(mode="Qdrant server" if settings.qdrant_url else "Qdrant Edge", error=stats)
    report["qdrant"] = qdrant

    ok, count = _probe(lambda: pipeline.store.count())
    mongo = {"mode": pipeline.mongo_mode, "ok": ok}
    if ok:
        mongo.update(uri=_redact(pipeline.mongo_uri), products=count)
    else:
        mongo["error"] = count
    report["mongo"] = mongo
    report["cache"] = {"path": str(settings.cache_path), "entries": len(pipeline.cache)}
    return report


STORAGE_WORDS = {
    "ram": "in RAM (float32)",
    "disk": "on disk (float32, memory-mapped)",
    "int8": "as int8 in RAM, float32 on disk",
    "turbo8": "as TurboQuant 8-bit in RAM, float32 on disk",
}


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _redact(uri: str) -> str:
    """Never print a password from MONGODB_URI."""
    if "@" not in uri:
        return uri
    scheme, rest = uri.split("://", 1)
    return f"{scheme}://***@{rest.split('@', 1)[1]}"


def render(report: dict) -> str:
    model = report["model"]
    if model["ok"]:
        line = f"{model['name']} ({model['precision']}, {model['kind']}, {model['embedding_dim']}-d, "
        line += f"identity {model['identity']}) from {model['repository']}"
    else:
        line = f"MISSING: {model['error']}"
    lines = [f"model      {line}"]
    inf = report["inference"]
    lines.append(f"inference  {inf['backend']}: {'ok' if inf['ok'] else 'FAILED: ' + str(inf['detail'])}")
    q = report["qdrant"]
    if q["ok"]:
        indexed = "HNSW-indexed" if q.get("hnsw") else "searched exactly (no HNSW index)"
        state = f"ok, {q['products']} products, catalogue version {q['catalog_version']}, {indexed}"
        if "disk_bytes" in q:
            state += f", {_mib(q['disk_bytes'])} on disk, {_mib(q['mapped_resident_bytes'])} mapped in memory"
        state += f", vectors stored {STORAGE_WORDS.get(q.get('storage'), q.get('storage'))}"
        if q.get("products"):
            state += (
                f", text queries one search of the stored w·text + (1−w)·photo vectors (w {q['fused_weight']:g})"
                if q.get("fused_weight") is not None
                else ", text queries fused at query time (no stored fused vectors: --reset stores them)"
            )
        if not q["model_matches"]:
            state += f", BUILT BY ANOTHER MODEL ({q['built_by']}): re-ingest with --reset"
    else:
        state = f"FAILED: {q['error']}"
    lines.append(f"vectors    {q['mode']}: {state}")
    m = report["mongo"]
    state = f"ok, {m['products']} products ({m['uri']})" if m["ok"] else f"FAILED: {m['error']}"
    lines.append(f"mongodb    {m['mode']}: {state}")
    lines.append(f"cache      {report['cache']['entries']} entries at {report['cache']['path']}")
    return "\n".join(lines)
