"""Errors a person can read.

Every failure that reaches a user (command line, Gradio page, API) is a ``PipelineError`` whose message is one or two
plain sentences saying what went wrong and what to do. Anything else escaping the pipeline is a bug.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class: ``str(err)`` is the message shown to a person."""


class InvalidInput(PipelineError):
    """The query itself is unusable (empty or huge text, unreadable image, bad filter)."""


class BackendUnavailable(PipelineError):
    """A server the pipeline needs (Triton, Qdrant, MongoDB) does not answer."""


class ModelMismatch(PipelineError):
    """The index or a server was built by another model than the one loaded here."""


class ModelNotFound(PipelineError):
    """No usable model in the model repository, or the model source cannot be read."""


class ExportMismatch(ModelNotFound):
    """An exported ONNX graph does not reproduce the torch network it came from: the build is not installed."""


class CatalogError(PipelineError):
    """The catalogue file as a whole cannot be read (a single bad row is reported, not raised)."""


class StorageFull(PipelineError):
    """The disk holding the data folder is full: what was stored before stays, nothing is half-written."""
