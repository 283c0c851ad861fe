"""Progress output for long commands: tqdm bars on a terminal, plain step lines otherwise (logs, CI)."""

from __future__ import annotations

import sys


def step(message: str) -> None:
    """One line per stage of a long command, on stderr so ``--json`` output on stdout stays clean."""
    print(f"· {message}", file=sys.stderr, flush=True)


def counter(total: int, desc: str, unit: str = "it", enabled: bool = True):
    """A progress bar to ``update(n)``; silent when disabled (tests, library use), automatic on a terminal."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not enabled or None, dynamic_ncols=True)
