"""``compare-models``: precisions of one model compared on a catalogue (issue 15). Filled in by its own change."""

from __future__ import annotations

import argparse

from ..errors import PipelineError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("repos", nargs="+", metavar="REPO", help="model repositories; the first is the reference")
    p.add_argument("--catalog", required=True, help="catalogue whose photos and product texts are the queries")
    p.add_argument("--queries", help="labelled queries (JSONL) for recall@k of each variant")
    p.add_argument("--json", help="also write the comparison as JSON to this file")


def run_from_args(args: argparse.Namespace, settings) -> int:
    raise PipelineError("compare-models is not available yet.")
