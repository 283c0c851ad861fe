"""Benchmarks: each one command, ``python -m bench.NAME``, printing ratios measured in one run (see README.md).

Every entry runs with the app's process defaults (one BLAS thread, quiet tokenizers), set here, before any benchmark
module imports numpy: README's commands then give README's numbers.
"""

from pipeline.settings import apply_process_defaults

apply_process_defaults()
