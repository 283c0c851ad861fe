"""``python -m pipeline.storage.vectors.optimize_worker SHARD``: optimise a copy of an Edge shard in its own process
(the serving process keeps answering meanwhile; see ``edge_shard.ShardFolder.optimise_copy``). Niced, so that the
queries of the serving process come first on a small machine."""

from __future__ import annotations

import contextlib
import json
import sys
import time


def main(path: str) -> int:
    import qdrant_edge

    with contextlib.suppress(OSError):
        import os

        os.nice(10)
    started = time.perf_counter()
    shard = qdrant_edge.EdgeShard.load(path)
    try:
        changed = bool(shard.optimize())
        shard.flush()
    finally:
        shard.close()
    print(json.dumps({"optimized": changed, "seconds": round(time.perf_counter() - started, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
