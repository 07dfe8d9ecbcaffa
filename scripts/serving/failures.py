"""Why a request got no entities: what a service raises, and the HTTP app answers with its status.

A local batcher and a Ray replica raise the same ones, worded once here, so a client reads the
same message whichever serves it.
"""

from __future__ import annotations


class Overloaded(Exception):
    """The queue has no room for the request's texts: answered with 503 at once."""


class TimedOut(Exception):
    """The request waited longer than timeout_s: answered with 503."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            f"The server did not answer within its timeout of {timeout_s:g} s: it is overloaded. Retry later."
        )


class NotReady(Exception):
    """The model is still loading: answered with 503."""


class ModelFailed(Exception):
    """nlp.pipe raised on the request's texts: answered with 500; the traceback goes to the log only."""

    def __init__(self, message: str = "The model failed on this request's text.") -> None:
        super().__init__(message)
