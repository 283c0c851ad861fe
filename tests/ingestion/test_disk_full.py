"""A full disk during an ingest, for real: the data folder on a small tmpfs, filled up before and while the fashion
catalogue is imported. One sentence; the two stores hold the same products afterwards; queries keep working; with
space freed the same ingest completes the catalogue. Needs permission to mount a tmpfs (root here and in CI); skipped
otherwise."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from pipeline.errors import StorageFull
from pipeline.ingestion.ingest import MIN_FREE_MB, ingest
from pipeline.service import Pipeline
from pipeline.settings import Settings

from ..conftest import shared


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path, leave_bytes: int) -> Path:
    stat = os.statvfs(disk)
    filler = disk / "filler"
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - leave_bytes))
    return filler


@pytest.mark.parametrize("room_mb", [MIN_FREE_MB - 8, MIN_FREE_MB + 4])  # full before it starts; fills up halfway
def test_a_full_disk_is_one_sentence_and_the_same_ingest_completes_later(small_disk, model_repo, mongo_uri, room_mb):
    # MongoDB elsewhere: the disk that fills is the one of the vectors, the photos and the cache.
    settings = Settings(data_dir=small_disk / "data", model_repository=model_repo, mongodb_uri=mongo_uri,
                        ingest_batch_size=16)  # fmt: skip
    with Pipeline(settings) as pipe:
        pipe.store.clear()
        ingest(pipe, shared("seed_sample", "catalog.jsonl"), progress=False)
        filler = _fill(small_disk, room_mb * 2**20)
        with pytest.raises(StorageFull, match=r"is full \(.*\): free some space.*run the same import again"):
            ingest(pipe, shared("fashion", "catalog.jsonl"), progress=False)
        index_ids = set(pipe.index.all_vectors("image")[0])
        assert index_ids == set(pipe.store.ids()) and 10 <= len(index_ids) < 1010, "the stores agree"
        if room_mb > MIN_FREE_MB:
            assert len(index_ids) > 10, "some batches were written before the disk filled"
        assert pipe.matcher.match_text("grey t-shirt for men").matches, "queries keep working"

        filler.unlink()
        report = ingest(pipe, shared("fashion", "catalog.jsonl"), progress=False)
        assert not report.bad and pipe.index.count() == pipe.store.count() == 1010
