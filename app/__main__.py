import sys

from pipeline.settings import apply_process_defaults

apply_process_defaults()  # before anything imports numpy

from .server import main  # noqa: E402

sys.exit(main())
