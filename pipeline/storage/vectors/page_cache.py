"""What of a Qdrant Edge shard is in memory: its files read into the page cache ahead of the engine, and the
resident memory of its mappings.

Qdrant reads what it keeps in RAM through memory maps, fault by fault, and drops a shard's files from the page cache
when it closes it; asked of the kernel in order, the same bytes come in several times faster. A child process asks for
them while the engine opens the shard (a thread could not: the engine's calls hold the GIL), and another reads what
the first queries would read once it is open; docs/vector-store.md ("Reading ahead") has the figures that chose this.
The file names are Qdrant's segment layout (qdrant-edge-py is pinned); a name that stops matching costs speed only,
and tests/storage/test_vector_store.py checks them against a shard built by the pinned engine. This file runs as the
child (``python -I -S page_cache.py FILE... [--steady FILE...]``): at module level it imports only the standard library.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

# An optimised segment's, an appendable one's; a vector held per photo (MaxSim) adds the offsets of each point's rows.
QUANTIZED = ("quantized.data", "quantized_data/chunk_*", "quantized.offsets.data", "quantized_offsets_data/chunk_*")
ORIGINALS = ("matrix.dat", "vectors/chunk_*", "offsets/chunk_*")
STEP = 128 * 1024  # bytes per request; the kernel reads at most the device's readahead (128 KiB default) per call
STEADY_READ = 4 * 2**20  # bytes asked for at a time when reading steadily (see read_ahead)
FREE_SHARE = 0.5  # files are warmed after the open only when they take at most this share of MemAvailable
IN_PROCESS_BELOW = 64 * 2**20  # smaller shards are read ahead here: starting a child would cost more


def _built(shard_dir: Path) -> dict:
    try:
        return json.loads((shard_dir / "edge_config.json").read_text())
    except (OSError, ValueError):
        return {}


def _segments(shard_dir: Path) -> list[Path]:
    folder = shard_dir / "segments"
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def _files(folder: Path, *patterns: str) -> list[Path]:
    return [p for pattern in patterns for p in sorted(folder.glob(pattern)) if p.is_file()]


def _vectors(shard_dir: Path) -> list[tuple[str, bool, bool | None]]:
    """(name, originals on disk, compact copy on disk or None without one) per dense vector, sorted by name."""
    out = []
    for name, params in sorted((_built(shard_dir).get("vectors") or {}).items()):
        quantizer = next(iter((params.get("quantization_config") or {}).values()), None)
        out.append(
            (name, params.get("memory") == "cold", None if quantizer is None else quantizer.get("memory") == "cold")
        )
    return out


def files_read_on_open(shard_dir: Path) -> list[Path]:
    """The files the engine reads whole when it opens the shard as it was built (``edge_config.json``), in the order
    it reads them, so that the child stays ahead of the engine."""
    out: list[Path] = []
    for segment in _segments(shard_dir):
        out += _files(segment, "payload_index/**/*", "id_tracker.*")
        for name, originals_on_disk, compact_on_disk in _vectors(shard_dir):
            storage = segment / f"vector_storage-{name}"
            if compact_on_disk is False:
                out += _files(storage, *QUANTIZED)
            if not originals_on_disk:
                out += _files(storage, *ORIGINALS)
            out += _files(segment / f"vector_index-{name}", "*")
        out += _files(segment, "vector_index-*/*")  # the sparse (lexical) index, read into RAM as well
    return list(dict.fromkeys(out))


def _stored_on_disk(shard_dir: Path, compact: bool, skip: tuple[str, ...] = ()) -> list[Path]:
    """Per segment and dense vector kept on disk (but those named in ``skip``), its compact copy's files
    (``compact``) or its originals'."""
    out: list[Path] = []
    for segment in _segments(shard_dir):
        for name, originals_cold, compact_cold in _vectors(shard_dir):
            if name not in skip and (compact_cold if compact else originals_cold):
                out += _files(segment / f"vector_storage-{name}", *(QUANTIZED if compact else ORIGINALS))
    return out


def compact_on_disk(shard_dir: Path, skip: tuple[str, ...] = ()) -> list[Path]:
    """The compact copies kept on disk (``compact_memory`` cold, the default): every query reads them (``skip``: the
    vectors no query searches)."""
    return _stored_on_disk(shard_dir, compact=True, skip=skip)


def payloads(shard_dir: Path) -> list[Path]:
    """The payload storage: every answer reads its products' payloads."""
    return [p for segment in _segments(shard_dir) for p in _files(segment, "payload_storage/*")]


def originals_on_disk(shard_dir: Path, skip: tuple[str, ...] = ()) -> list[Path]:
    """The float32 originals left on disk: rescoring reads a few candidates' at random."""
    return _stored_on_disk(shard_dir, compact=False, skip=skip)


def read_ahead(paths: list[str] | list[Path], steady: bool = False) -> int:
    """Have the kernel read ``paths`` into the page cache, in order; returns the bytes asked for. All at once (the
    fastest, for an open that waits for them), or ``steady``: STEADY_READ at a time, each window waited for (its last
    page read), so that a query's own reads queue behind a few MiB rather than behind gigabytes. Never raises: a file
    that went away (an optimisation swapped the shard) or a system without ``posix_fadvise`` only loses the speed-up."""
    if not hasattr(os, "posix_fadvise"):
        return 0
    asked = 0
    window = STEADY_READ if steady else None
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            size = os.fstat(fd).st_size
            for first in range(0, size, window or max(size, 1)):
                end = min(size, first + (window or size))
                for offset in range(first, end, STEP):
                    os.posix_fadvise(fd, offset, STEP, os.POSIX_FADV_WILLNEED)
                if window:
                    os.pread(fd, 1, end - 1)
            asked += size
        except OSError:
            pass
        finally:
            os.close(fd)
    return asked


def mem_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _size(paths: list[Path]) -> int:
    total = 0
    for p in paths:
        with contextlib.suppress(OSError):
            total += p.stat().st_size
    return total


def fits(paths: list[Path], available: int | None) -> bool:
    """Whether ``paths`` take at most FREE_SHARE of ``available`` bytes (unknown: no)."""
    return available is not None and _size(paths) <= available * FREE_SHARE


def read_in_background(first: list[Path], then_steadily: list[Path] | tuple = ()) -> subprocess.Popen | None:
    """``read_ahead(first)``, then ``read_ahead(then_steadily, steady=True)``, from a child (returned: its end is the
    end of the reading) when they are large, here when they are small (a child costs more than reading them)."""
    first, later = list(first), list(then_steadily)
    if not first and not later:
        return None
    if _size(first) + _size(later) < IN_PROCESS_BELOW:
        read_ahead(first)
        read_ahead(later, steady=True)
        return None
    try:
        command = [
            sys.executable,
            "-I",
            "-S",
            __file__,
            *map(str, first),
            *(["--steady", *map(str, later)] if later else []),
        ]
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:  # no process to spare: the engine reads the files itself, only slower
        return None


def hot_list(shard_dir: Path, skip: tuple[str, ...] = ()) -> list[Path]:
    """Read at full speed right after the open, whatever ``warm_after_open`` says: the compact copies on disk and the
    payloads, which the first queries read anyway, where they fit in free memory. ``skip``: dense vectors no query
    searches (``text`` beside a stored ``fused`` one)."""
    hot = compact_on_disk(shard_dir, skip) + payloads(shard_dir)
    return hot if fits(hot, mem_available()) else []


def warm_list(shard_dir: Path, skip: tuple[str, ...] = ()) -> list[Path]:
    """Read steadily after those where ``warm_after_open``: the originals, where they fit in free memory (else not:
    they would be thrashed)."""
    later = originals_on_disk(shard_dir, skip)
    return later if fits(later, mem_available()) else []


class ReadAhead:
    """The children reading one store's shard ahead; stopped before the shard is closed, swapped or dropped."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen] = []

    def start(self, first: list[Path], then_steadily: list[Path] | tuple = ()) -> None:
        child = read_in_background(first, then_steadily)
        if child is not None:
            self.children.append(child)

    def stop(self) -> None:
        from pipeline.processes.stopping import stop_child  # not at module level: this file also runs as the child

        children, self.children = self.children, []
        for child in children:
            stop_child(child, timeout_s=5)

    def wait(self, timeout: float | None = None) -> bool:
        """True once every child has ended (within ``timeout`` s)."""
        try:
            for child in list(self.children):
                child.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True


def disk_bytes(path: Path) -> int:
    """Bytes really on disk: Edge pre-allocates sparse chunks and WAL files, so file sizes overstate it."""
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def mapped_resident_bytes(path: Path) -> int:
    """Resident memory of this process's mappings of files under ``path`` (memory-mapped vectors and indexes)."""
    root, total, inside = str(path.resolve()), 0, False
    try:
        with open("/proc/self/smaps", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                first = line.split(maxsplit=1)[0]
                if "-" in first and not first.endswith(":"):  # a mapping's header line
                    parts = line.split()
                    inside = len(parts) >= 6 and parts[5].startswith(root)
                elif inside and first == "Rss:":
                    total += int(line.split()[1]) * 1024
    except OSError:
        return 0
    return total


if __name__ == "__main__":
    args = sys.argv[1:]
    cut = args.index("--steady") if "--steady" in args else len(args)
    read_ahead(args[:cut])
    if args[cut + 1 :]:
        os.nice(10)  # the app's queries first
        read_ahead(args[cut + 1 :], steady=True)
