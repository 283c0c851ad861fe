"""Lists cut into consecutive slices: the ingest's embedding batches, and the bounded requests the stores send."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """``items`` in slices of ``size`` (the last one shorter), in order."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
