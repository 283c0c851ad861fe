import sys

from .settings import apply_process_defaults

apply_process_defaults()  # before anything imports numpy

from .cli import main  # noqa: E402

sys.exit(main())
