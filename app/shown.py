"""Every failure in a handler becomes a short message in the page (and in the API client), never a stack trace."""

from __future__ import annotations

import functools
import html
import logging
from collections.abc import Callable

import gradio as gr

from pipeline.errors import PipelineError

from .handlers import GENERIC_ERROR

log = logging.getLogger("app")


def shown_to_people(fn: Callable) -> Callable:
    """Turn every failure into a short message in the page (and in the API client), never a stack trace."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except PipelineError as err:
            raise gr.Error(html.escape(str(err), quote=False), print_exception=False) from None
        except Exception:
            log.exception("Unexpected error in %s", fn.__name__)
            raise gr.Error(GENERIC_ERROR, print_exception=False) from None

    return wrapper
